"""JSON as ftspec reads rows of data: the strict decoder of :mod:`ftspec.core.jsonread`
(standard JSON only, no key twice in an object, finite numbers, bounded nesting) with
the limits of one row. :mod:`ftspec.data.sources` reads the files; this module decides
what a JSON text holds.
"""

from __future__ import annotations

from typing import Any

from ftspec.core.jsonread import JSON_SPACE, BadValue, decode, json_kind, scan_value

__all__ = ["JSON_SPACE", "MAX_ROW_DEPTH", "MAX_ROW_VALUES", "BadValue", "decode_json", "json_kind", "scan_value",
           "shape_problem"]

# Limits on one row, whatever file it comes from; a spec's data may come from someone
# the repository owner does not fully trust, like the spec itself.
MAX_ROW_DEPTH = 64  # nesting of lists and objects in one row (as in a spec)
MAX_ROW_VALUES = 100_000  # values in one row


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
    json.JSONDecodeError, or :class:`BadValue` with a message for the user."""
    # A whole document holds its rows in a list, perhaps under a key: two levels more than a row.
    value = decode(text, max_depth=MAX_ROW_DEPTH + 2 if whole else MAX_ROW_DEPTH)
    if not whole and len(text) > MAX_ROW_VALUES:
        problem = shape_problem(value)
        if problem:
            raise BadValue(problem)
    return value
