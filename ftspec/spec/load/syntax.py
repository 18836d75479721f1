"""YAML syntax errors in words a person would use, at the line that is wrong.

PyYAML reports what its scanner expected, often on the line after the mistake; each
entry of :data:`_SYNTAX` recognises one of its problems and says what to fix, where.
"""

from __future__ import annotations

import re

import yaml

from ftspec.core.errors import Pos, SpecError


def yaml_error(exc: yaml.MarkedYAMLError, file: str, text: str = "") -> SpecError:
    """A YAML syntax error in words a person would use, at the line that is wrong
    (PyYAML often notices a mistake on the line after it): see :data:`_SYNTAX`."""
    lines = text.split("\n")
    problem = (exc.problem or exc.context or "invalid YAML").strip()
    context = (exc.context or "").strip()
    for pattern, explain in _SYNTAX:
        if re.search(pattern, problem) and exc.problem_mark is not None:
            try:
                found = explain(exc, lines)
            except (IndexError, ValueError, AttributeError):  # a mark past the text: PyYAML's words then
                found = None
            if found is not None:
                mark, message = found
                return SpecError.one(Pos(file, mark[0] + 1, mark[1] + 1), "", message)
    mark = exc.problem_mark or exc.context_mark
    pos = Pos(file, mark.line + 1, mark.column + 1) if mark else Pos(file)
    return SpecError.one(pos, "", f"YAML syntax error: {problem}"
                         + (f" ({context})" if context and exc.context_mark else ""))


def _line(lines: list[str], n: int) -> str:
    return lines[n] if 0 <= n < len(lines) else ""


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _previous(lines: list[str], n: int) -> int | None:
    """The nearest line before line ``n`` (0-based) that holds something besides a comment."""
    for i in range(min(n, len(lines)) - 1, -1, -1):
        stripped = lines[i].strip()
        if stripped and not stripped.startswith("#"):
            return i
    return None


def _shown_text(text: str, most: int = 40) -> str:
    text = text.strip()
    return text if len(text) <= most else text[:most - 1] + "…"


_NO_SPACE = re.compile(r"^(\s*-?\s*)([^\s:#'\"][^:\s]*):(\S.*)$")  # `name:demo`, a key glued to its value


def _no_space_after_colon(line: str) -> str | None:
    m = _NO_SPACE.match(line)
    if m and not m.group(3).startswith(("//", "\\")):
        return (f"'{_shown_text(m.group(2) + ':' + m.group(3))}' needs a space after the colon: "
                f"{m.group(2)}: {_shown_text(m.group(3))}")
    return None


def _tab(exc, lines):
    mark = exc.problem_mark
    before = _line(lines, mark.line)[:mark.column]
    if before.strip(" \t"):
        return (mark.line, mark.column), ("a tab character here; YAML separates values with spaces only "
                                          "(replace the tab with a space)")
    return (mark.line, mark.column), "tab character in indentation; YAML indents with spaces only"


def _cannot_start(exc, lines):
    mark = exc.problem_mark
    char = _line(lines, mark.line)[mark.column:mark.column + 1]
    if not char or char == "\t":
        return None
    return (mark.line, mark.column), f"a plain value cannot start with '{char}'; put the value in quotes (\"{char}…\")"


def _simple_key(exc, lines):
    """`name demo` or `name:demo` (no ': '), or a block scalar's text not indented: PyYAML
    notices on the next line; the line to fix is the one it was scanning."""
    at = exc.context_mark or exc.problem_mark
    line = _line(lines, at.line)
    glued = _no_space_after_colon(line)
    if glued:
        return (at.line, _indent(line)), glued
    before = _previous(lines, at.line)
    if before is not None and re.search(r":\s*[|>][-+0-9]*\s*(#.*)?$", lines[before]):
        return (at.line, at.column), (f"the text of the block started on line {before + 1} must be indented more than "
                                      f"its key (indent '{_shown_text(line)}' by {_indent(lines[before]) + 2} spaces)")
    return (at.line, _indent(line)), (f"'{_shown_text(line)}' is not 'key: value': a key needs a colon and a space "
                                      "after it, and a list item starts with '- '")


def _mapping_values(exc, lines):
    """A ': ' where no key may start: a key indented under a key that has a value, a
    value that holds ': ' unquoted, or the line above glued its key to its value."""
    mark = exc.problem_mark
    line = _line(lines, mark.line)
    before = _previous(lines, mark.line)
    head = line[:mark.column]
    if before is not None and not head.strip().startswith("-") and ": " not in head.strip():
        glued = _no_space_after_colon(lines[before])
        if glued:
            return (before, _indent(lines[before])), glued
    if (before is not None and not head.strip().startswith("-") and ": " not in head.strip()
            and _indent(line) > _indent(lines[before])):
        above = lines[before].strip()
        if not above.endswith(":") and not above.startswith("-"):
            return (mark.line, _indent(line)), (f"this key is indented more than the key above it (line {before + 1}), "
                                               f"which already has a value; indent it by {_indent(lines[before])} "
                                               "spaces, like the key above")
    return (mark.line, mark.column), ("a second ': ' on one line; a value that holds ': ' must be quoted "
                                      f"(e.g. \"{_shown_text(head.split(': ', 1)[-1] + line[mark.column:], 30)}\")")


def _column(line: str) -> int:
    """Where a line's key or value starts, past any list dashes (`  - name: x` -> 4)."""
    m = re.match(r"^(\s*(?:-\s+)*)", line)
    return len(m.group(1)) if m else 0


def _block_end(exc, lines):
    """A line that ends the mapping (or list) above it without starting a valid one: a
    key or list item indented unlike its neighbours, a list in the middle of a mapping,
    or text after a closing quote."""
    mark = exc.problem_mark
    line = _line(lines, mark.line)
    indent = _indent(line)
    if mark.column > indent:
        return (mark.line, mark.column), "text after the end of the value; put the whole value inside quotes"
    item = line.lstrip().startswith("-")
    what = "list item" if item else "key" if re.match(r"\s*[^\s:#]+:(\s|$)", line) else "line"
    before = _previous(lines, mark.line)
    if before is None:
        return None
    above = lines[before]
    width = _indent(above) if item and above.lstrip().startswith("-") else _column(above)
    if item and above.rstrip().endswith(":") and indent < _indent(above):
        key = above.strip()[:-1].lstrip("- ")
        return (mark.line, mark.column), (f"this list item is indented less than '{_shown_text(key)}:' "
                                          f"(line {before + 1}) whose value it is meant to be; "
                                          f"indent it by at least {_spaces(_indent(above))}")
    if item and indent == width and not above.lstrip().startswith("-"):
        return (mark.line, mark.column), (f"a list item among the keys of a mapping (line {before + 1}); a list is the "
                                          "value of a key: put it under a key ending with ':'")
    if (not item and above.lstrip().startswith("-") and indent == _indent(above)
            and not re.match(r"\s*-\s+[^\s:#]+:(\s|$)", above)):  # after `- b`; `- name: x` takes keys
        return (mark.line, mark.column), (f"this {what} follows list items at the same indentation "
                                          f"(line {before + 1}); a block holds list items or keys, not both: "
                                          "indent it less to end the list")
    if indent < width:
        parent = next((i for i in range(before, -1, -1) if lines[i].strip() and not lines[i].lstrip().startswith("#")
                       and _column(lines[i]) < indent), None)
        out = f", or by {_column(lines[parent])} to end that block" if parent is not None else ""
        return (mark.line, mark.column), (f"this {what} is indented less than line {before + 1} above it "
                                          f"({_spaces(indent)}, not {width}): "
                                          f"indent it by {_spaces(width)} to stay in that block{out}")
    return (mark.line, mark.column), (f"this {what} is indented more than line {before + 1} above it "
                                      f"({_spaces(indent)}, not {width})")


def _spaces(n: int) -> str:
    return f"{n} space" if n == 1 else f"{n} spaces"


def _flow_unclosed(exc, lines):
    """`[a, b` or `{x: 1` without its closing bracket: PyYAML notices on a later line;
    the bracket to close is where the list or mapping opened."""
    opened, mark = exc.context_mark, exc.problem_mark
    if opened is None:
        return None
    close = "]" if "sequence" in (exc.context or "") else "}"
    what = "list" if close == "]" else "mapping"
    open_char = "[" if close == "]" else "{"
    if mark.line > opened.line or "<stream end>" in (exc.problem or ""):
        return (opened.line, opened.column), f"this '{open_char}' is never closed: end the {what} with '{close}'"
    got = re.search(r"but got (.*)$", exc.problem or "")
    return (mark.line, mark.column), (f"in the {what} opened at column {opened.column + 1}, items are separated by ',' "
                                      f"and the {what} ends with '{close}' "
                                      f"(found {got.group(1) if got else 'something else'})")


def _quote_unclosed(exc, lines):
    opened = exc.context_mark
    if opened is None:
        return None
    quote = _line(lines, opened.line)[opened.column:opened.column + 1] or '"'
    return (opened.line, opened.column), f"this {quote} is never closed: end the value with {quote}"


def _bad_escape(exc, lines):
    mark = exc.problem_mark
    m = re.search(r"escape character '(.)'", exc.problem or "")
    char = m.group(1) if m else "?"
    return (mark.line, mark.column), (f"'\\{char}' is not an escape in double quotes; write '\\\\{char}', or put "
                                      "the value in single quotes (a Windows path: use '/')")


# PyYAML's problems, matched in order, and what a person would say about each.
_SYNTAX = [
    (r"found character '\\t' that cannot start any token", _tab),
    (r"found character '.' that cannot start any token", _cannot_start),
    (r"could not find expected ':'", _simple_key),
    (r"mapping values are not allowed here", _mapping_values),
    (r"expected <block end>, but found", _block_end),
    (r"expected ',' or '[\]}]'", _flow_unclosed),
    (r"found unexpected end of stream", _quote_unclosed),
    (r"found unknown escape character", _bad_escape),
]


def reader_error(exc: "yaml.reader.ReaderError", text: str, file: str) -> SpecError:
    position = max(0, min(exc.position, len(text)))
    line = text.count("\n", 0, position) + 1
    col = position - (text.rfind("\n", 0, position) + 1) + 1
    if 0xDC80 <= exc.character <= 0xDCFF:  # a byte that was not UTF-8, kept by Python as a surrogate (argv)
        message = f"not valid UTF-8 (byte 0x{exc.character - 0xDC00:02x})"
    elif 0xD800 <= exc.character <= 0xDFFF:
        message = f"lone surrogate {exc.character:#06x} cannot be encoded"
    else:
        message = f"control character {exc.character:#06x} is not allowed in YAML"
    return SpecError.one(Pos(file, line, col), "", message)
