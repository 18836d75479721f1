"""JSON as ftspec reads it back, whatever the file: standard JSON only (no NaN or
Infinity), no key twice in an object, finite numbers, bounded nesting. Python's own
``json`` accepts the first three and raises RecursionError on the fourth; a file
from someone else (a hand-edited run directory, rows given to ``generate --file``,
a plan to diff) could hold any of them.

:func:`decode` is the one decoder: the C scanner with hooks that refuse what is not
standard, then, only when something was refused, a slower pass over the text that
finds where (:class:`BadJSON` carries the offset, line and column). The data layer's
row reader (:mod:`ftspec.data.jsonrows`) and the file reader (:mod:`ftspec.core.io`)
are both built on it.
"""

from __future__ import annotations

import json
import math
import re
import sys
from typing import Any

# Nesting of lists and objects in one document; as for a spec (ftspec.spec.limits).
MAX_DEPTH = 64
JSON_SPACE = " \t\n\r"
# An integer ftspec reads back from its own files fits in 64 bits (a pid, a count,
# seconds): anything larger was written by hand, and some callers hand it to the OS.
MAX_FILE_INT = 2**63 - 1


class BadValue(ValueError):
    """A JSON text that parses but holds what ftspec does not take (NaN, a key twice, a
    number too large, nesting too deep); ``pos``: its offset in the text, when known."""

    def __init__(self, message: str, pos: int | None = None):
        super().__init__(message)
        self.message = message
        self.pos = pos


def where(text: str, pos: int) -> tuple[int, int]:
    """(line, column), 1-based, of offset ``pos`` in ``text``."""
    line = text.count("\n", 0, pos) + 1
    return line, pos - (text.rfind("\n", 0, pos) + 1) + 1


# --------------------------------------------------------------------------- messages


def _shown(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def duplicate_message(key: str) -> str:
    return f"key {_shown(key, 40)!r} appears twice in one object; JSON readers would keep only the last"


def constant_message(name: str) -> str:
    return f"{name} is not a JSON number; write null, or a number"


def float_message(text: str) -> str:
    return f"number {_shown(text, 24)} is too large for a 64-bit float"


def int_message(text: str, limit: int | None) -> str:
    if limit is None:
        return f"a number with more than {sys.get_int_max_str_digits() or 4300} digits"
    return f"integer {_shown(text, 24)} is out of range (at most {limit} in magnitude)"


def depth_message(max_depth: int) -> str:
    return f"nests lists and objects more than {max_depth} levels deep"


# --------------------------------------------------------------------------- the decoder


def _pairs(pairs: list) -> dict:
    value = dict(pairs)
    if len(value) != len(pairs):
        seen: set = set()
        for key, _ in pairs:
            if key in seen:
                raise BadValue(duplicate_message(key))
            seen.add(key)
    return value


def _constant(name: str):
    raise BadValue(constant_message(name))


def _float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise BadValue(float_message(text))
    return value


def _bounded_int(text: str) -> int:
    value = int(text)
    if abs(value) > MAX_FILE_INT:
        raise BadValue(int_message(text, MAX_FILE_INT))
    return value


def _decoder(int_limit: bool) -> json.JSONDecoder:
    return json.JSONDecoder(object_pairs_hook=_pairs, parse_constant=_constant, parse_float=_float,
                            **({"parse_int": _bounded_int} if int_limit else {}))


_ROWS, _FILES = _decoder(False), _decoder(True)
# (text, index) -> (the value that starts at index, the index just past it): the row
# decoder's scanner, for a caller that scans rows at the scanner's speed.
scan_value = _ROWS.scan_once


def decode(text: str, *, max_depth: int = MAX_DEPTH, bounded_ints: bool = False) -> Any:
    """The JSON value of ``text``, read strictly: standard JSON only (no NaN or Infinity),
    no key twice in an object, finite floats, at most ``max_depth`` levels of lists and
    objects; with ``bounded_ints``, integers within 64 bits. Raises json.JSONDecodeError
    (not JSON at all) or :class:`BadValue` (JSON ftspec does not take), each with the
    offset of the problem where it can be found; never RecursionError."""
    scan = (_FILES if bounded_ints else _ROWS).scan_once
    start = len(text) - len(text.lstrip(JSON_SPACE))
    try:
        try:
            value, end = scan(text, start)
        except StopIteration as err:
            raise json.JSONDecodeError("Expecting value", text, err.value) from None
    except RecursionError:
        raise _located(text, depth_message(max_depth), max_depth, bounded_ints) from None
    except json.JSONDecodeError:
        raise
    except BadValue as exc:
        raise _located(text, exc.message, max_depth, bounded_ints) from None
    except ValueError as exc:  # Python's limit on the digits of an integer
        message = int_message("", None) if "digits" in str(exc) else str(exc)
        raise _located(text, message, max_depth, bounded_ints) from None
    if end != len(text) and text[end:].strip(JSON_SPACE):
        raise json.JSONDecodeError("Extra data", text, end + len(text[end:]) - len(text[end:].lstrip(JSON_SPACE)))
    if (text.count("[") + text.count("{") > max_depth) and too_deep(value, max_depth):
        raise _located(text, depth_message(max_depth), max_depth, bounded_ints)
    return value


def too_deep(value: Any, max_depth: int) -> bool:
    """Whether a parsed value nests lists and objects more than ``max_depth`` levels."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            node = node.values()
        elif not isinstance(node, list):
            continue
        if depth > max_depth:
            return True
        stack.extend((child, depth + 1) for child in node if isinstance(child, (dict, list)))
    return False


# --------------------------------------------------------------------------- where it is

# Strings, structural characters, the non-standard constants and numbers: enough of
# JSON's tokens to find the first thing the decoder refused, in a text that parses.
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[{}\[\]:]|-?Infinity|NaN|-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?', re.S)


def _located(text: str, fallback: str, max_depth: int, bounded_ints: bool) -> BadValue:
    """The first problem in ``text`` at its offset; ``fallback`` (the decoder's words,
    unplaced) when the pass finds none."""
    found = _first_problem(text, max_depth, bounded_ints)
    return BadValue(*found) if found else BadValue(fallback)


def _first_problem(text: str, max_depth: int, bounded_ints: bool) -> tuple[str, int] | None:
    stack: list[set | None] = []
    last: tuple[str, int] | None = None  # a string just read: an object's key when ':' follows
    for m in _TOKEN.finditer(text):
        token, pos = m.group(), m.start()
        head = token[0]
        if head == '"':
            last = (token, pos)
            continue
        if head in "{[":
            stack.append(set() if head == "{" else None)
            if len(stack) > max_depth:
                return depth_message(max_depth), pos
        elif head in "}]":
            if stack:
                stack.pop()
        elif head == ":":
            keys = stack[-1] if stack else None
            if last is not None and keys is not None:
                try:
                    key = json.loads(last[0])
                except ValueError:
                    key = last[0]
                if key in keys:
                    return duplicate_message(key), last[1]
                keys.add(key)
        elif token.lstrip("-") in ("Infinity", "NaN"):
            return constant_message(token), pos
        else:
            problem = _number_problem(token, bounded_ints)
            if problem:
                return problem, pos
        last = None
    return None


def _number_problem(token: str, bounded_ints: bool) -> str | None:
    if any(c in token for c in ".eE"):
        return float_message(token) if math.isinf(float(token)) else None
    digits = len(token.lstrip("-"))
    limit = sys.get_int_max_str_digits() or 0
    if limit and digits > limit:
        return int_message(token, None)
    if bounded_ints and digits > 18 and abs(int(token)) > MAX_FILE_INT:
        return int_message(token, MAX_FILE_INT)
    return None


_KINDS = {dict: "an object", list: "a list", str: "a string", int: "a number", float: "a number", bool: "a boolean",
          type(None): "null"}


def json_kind(value: Any) -> str:
    """What a parsed value is, in words ("an object", "a list", ...), for a message."""
    return _KINDS.get(type(value), type(value).__name__)
