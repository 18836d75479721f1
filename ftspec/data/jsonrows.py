"""JSON as ftspec reads rows of data: standard JSON only (no NaN or Infinity), no key
twice in an object, finite numbers, and rows of bounded nesting and size, each
problem named in words a user can act on. :mod:`ftspec.data.sources` reads the
files; this module decides what a JSON text holds.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

# Limits on one row, whatever file it comes from; a spec's data may come from someone
# the repository owner does not fully trust, like the spec itself.
MAX_ROW_DEPTH = 64  # nesting of lists and objects in one row (as in a spec)
MAX_ROW_VALUES = 100_000  # values in one row


class BadValue(ValueError):
    """A JSON text that parses but is not a row ftspec takes."""


def _pairs(pairs: list) -> dict:
    value = dict(pairs)
    if len(value) != len(pairs):
        seen: set = set()
        for key, _ in pairs:
            if key in seen:
                shown = key if len(key) <= 40 else key[:37] + "..."
                raise BadValue(f"key {shown!r} appears twice in one object; JSON readers would keep only the last")
            seen.add(key)
    return value


def _constant(name: str):
    raise BadValue(f"{name} is not a JSON number; write null, or a number")


def _float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        shown = text if len(text) <= 24 else text[:21] + "..."
        raise BadValue(f"number {shown} is too large for a 64-bit float")
    return value


_DECODER = json.JSONDecoder(object_pairs_hook=_pairs, parse_constant=_constant, parse_float=_float)
# (text, index) -> (the value that starts at index, the index just past it): the decoder's
# scanner, called directly on the common row to skip ``json.loads``'s overhead.
scan_value = _DECODER.scan_once
JSON_SPACE = " \t\n\r"


def _decode(text: str) -> Any:
    """``_DECODER.decode``, with less overhead per call (it runs once per row)."""
    start = len(text) - len(text.lstrip(JSON_SPACE))
    try:
        value, end = scan_value(text, start)
    except StopIteration as err:
        raise json.JSONDecodeError("Expecting value", text, err.value) from None
    if end != len(text) and text[end:].strip(JSON_SPACE):
        raise json.JSONDecodeError("Extra data", text, end + len(text[end:]) - len(text[end:].lstrip(JSON_SPACE)))
    return value


def shape_problem(value) -> str | None:
    """Whether a parsed value nests deeper or holds more values than a row may."""
    stack = [(value, 1)]
    count = 0
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > MAX_ROW_VALUES:
            return f"holds more than {MAX_ROW_VALUES} values; rows this large are refused"
        if isinstance(node, dict):
            node = node.values()
        elif not isinstance(node, list):
            continue
        if depth > MAX_ROW_DEPTH:
            return f"nests lists and objects more than {MAX_ROW_DEPTH} levels deep"
        stack.extend((child, depth + 1) for child in node)
    return None


def decode_json(text: str, whole: bool = False) -> Any:
    """Parse JSON as ftspec reads data: standard JSON only (no NaN or Infinity), no key
    twice in an object, finite numbers, bounded nesting and size (per row, unless
    ``whole``: a whole .json document, whose rows are checked one by one). Raises
    json.JSONDecodeError, or ValueError with a message for the user."""
    try:
        value = _decode(text)
    except RecursionError:
        raise BadValue(f"nests lists and objects more than {MAX_ROW_DEPTH} levels deep") from None
    except json.JSONDecodeError:
        raise
    except BadValue:
        raise
    except ValueError as exc:  # Python's limit on the digits of an integer
        if "digits" in str(exc):
            raise BadValue(f"a number with more than {sys.get_int_max_str_digits() or 4300} digits") from None
        raise BadValue(str(exc)) from None
    if not whole and (text.count("[") + text.count("{") > MAX_ROW_DEPTH or len(text) > MAX_ROW_VALUES):
        problem = shape_problem(value)
        if problem:
            raise BadValue(problem)
    return value


_KINDS = {dict: "an object", list: "a list", str: "a string", int: "a number", float: "a number", bool: "a boolean",
          type(None): "null"}


def json_kind(value) -> str:
    """What a parsed value is, in words ("an object", "a list", ...), for a message."""
    return _KINDS.get(type(value), type(value).__name__)

