"""Load a spec: YAML with the position of every key and value, then ``extends``,
``profiles`` and ``--set`` overrides, in that order.

PyYAML's own composer and constructors are not used for documents: they recurse
once per level of nesting, keep no positions, silently keep the last of two
duplicate keys, expand aliases without limit and resolve scalars by YAML 1.1
(``yes`` is true, ``1:30`` is 5400). Here PyYAML's event stream is composed into
nodes by an iterative loop that holds the limits on size, depth and node count
(:func:`_compose`), and the nodes are turned into plain dicts, lists and scalars by
:class:`_Builder`, which resolves scalars by YAML 1.2's core schema and refuses
application tags, duplicate keys, cycles, numbers that are not finite or bounded,
text that cannot be encoded, and documents that expand past a budget.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable

import yaml

from ftspec.core.errors import Issue, Pos, SpecError, did_you_mean

KeyPath = tuple  # of str (mapping keys) and int (list indices)

# A spec is a page or two of YAML; anything that expands far past this is an alias bomb.
MAX_NODES = 20_000
MAX_DEPTH = 64
MAX_SPEC_BYTES = 1_000_000
MAX_PROFILES = 64
MAX_STAGES = 16
# What a stage may set. A stage's `model`, `data`, `format` and `method` replace the
# spec's whole (a preference set does not inherit the SFT set's columns); its
# `training`, `eval`, `compute` and `tracking` merge key by key onto the spec's.
STAGE_REPLACES = ("model", "data", "format", "method")
STAGE_MERGES = ("training", "eval", "compute", "tracking")
STAGE_KEYS = ("name", "description", "from") + STAGE_REPLACES + STAGE_MERGES
_STAGE_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")

_CORE = "tag:yaml.org,2002:"
_SCALAR_TAGS = {_CORE + t for t in ("str", "int", "float", "bool", "null", "timestamp")}


@dataclass(frozen=True)
class Origin:
    """Where an effective value came from: its position, its key's position, and its
    key path in the file that holds it (``profiles.smoke.training.max_steps``)."""

    pos: Pos
    key_pos: Pos | None
    key: str
    # The layer it came from: "spec" (the spec file), "base" (a spec it extends),
    # "profile:NAME" (a chosen profile) or "set" (a --set override).
    layer: str = "spec"


@dataclass
class Document:
    """A loaded YAML mapping and the origin of each of its values, by key path."""

    data: dict
    where: dict[KeyPath, Origin]
    root: Pos
    # Problems that do not stop reading (duplicate keys, refused tags): reported
    # together with everything validation finds.
    issues: list[Issue] = field(default_factory=list)


@dataclass
class LoadedSpec:
    """The effective spec document, before validation, and how it was put together."""

    path: Path
    data: dict
    where: dict[KeyPath, Origin]
    root: Pos
    files: list[Path]
    profiles: list[str]
    overrides: list[str]
    # Profiles that were defined but not chosen, kept so that they can be validated too.
    unused_profiles: dict[str, Document] = field(default_factory=dict)
    issues: list[Issue] = field(default_factory=list)
    # A spec with `stages:`: each stage's effective spec, in order (empty: one stage, the spec itself).
    stages: list["LoadedStage"] = field(default_factory=list)

    def origin(self, path: KeyPath) -> Origin:
        """The origin of ``path``, or of its nearest ancestor that has one."""
        path = tuple(path)
        while path:
            if path in self.where:
                return self.where[path]
            path = path[:-1]
        return Origin(self.root, None, "")


@dataclass
class LoadedStage:
    """One stage of a spec with `stages:`: the spec without `stages`, with this stage's
    keys put over it, then the chosen profiles and `--set` overrides."""

    name: str
    index: int
    # What it starts from: an earlier stage's name, or None for its own model (the spec's
    # `model`, or the stage's when it sets one).
    start: str | None
    pos: Pos  # where the stage is written
    loaded: LoadedSpec


def dotted(path: Iterable) -> str:
    return ".".join(str(p) for p in path)


def display_path(path: Path) -> str:
    """A path as the user typed it relative to the working directory, when it is below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------- YAML
#
# Reading a document happens in two stages, so that no recursive code ever sees a
# document that breaks the limits:
#
# 1. :func:`_compose` pulls PyYAML's event stream (its scanner and parser are
#    iterative state machines) and builds a tree of :class:`_Node` with a stack of
#    its own, holding the document to MAX_DEPTH levels and MAX_NODES nodes as it
#    reads; it stops at the first event that breaks a limit.
# 2. :class:`_Builder` turns the nodes into plain values (recursively, but never
#    deeper than MAX_DEPTH), expands aliases and merge keys within the same budget,
#    refuses cycles, and resolves plain scalars by YAML 1.2's core schema.


class _Node:
    """A composed YAML node: ``kind`` is scalar, seq, map or alias (``value`` is then
    the aliased node). ``tag`` is the tag as written (None when there is none)."""

    __slots__ = ("kind", "tag", "value", "mark", "plain", "anchor")

    def __init__(self, kind: str, tag: str | None, value: Any, mark: Any, plain: bool = False, anchor: str | None = None):
        self.kind = kind
        self.tag = tag
        self.value = value
        self.mark = mark
        self.plain = plain
        self.anchor = anchor


def _tag_name(tag: str) -> str:
    return "!!" + tag[len(_CORE):] if tag.startswith(_CORE) else tag


def _mark_pos(file: str, mark: Any) -> Pos:
    return Pos(file, mark.line + 1, mark.column + 1)


def _compose(loader: yaml.SafeLoader, file: str, prefix: KeyPath) -> _Node | None:
    """The single document in ``loader``'s event stream as nodes, or None when there
    is none. Iterative: the limits hold before anything recursive runs."""
    loader.get_event()  # stream start
    if loader.check_event(yaml.StreamEndEvent):
        return None
    loader.get_event()  # document start
    anchors: dict[str, tuple[_Node, int]] = {}
    root: _Node | None = None
    # One frame per open collection: [node, key path, depth, pending mapping key or None].
    stack: list[list] = []
    count = 0
    while True:
        event = loader.get_event()
        if isinstance(event, yaml.DocumentEndEvent):
            break
        if isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            stack.pop()
            continue
        if not stack:
            path, depth, frame = (), 0, None
        else:
            frame = stack[-1]
            parent, ppath, pdepth, pending = frame
            depth = pdepth + 1
            if parent.kind == "seq":
                path = ppath + (len(parent.value),)
            elif pending is None:
                path = ppath  # a key: reported at its mapping
            else:
                path = ppath + (_key_text(pending),)
        count += 1
        pos = _mark_pos(file, event.start_mark)
        if count > MAX_NODES:
            raise SpecError.one(pos, dotted(prefix + path),
                                f"the document has more than {MAX_NODES} values; a spec is a page or two of YAML; refused")
        if depth > MAX_DEPTH:
            raise SpecError.one(pos, dotted(prefix + path), f"nested more than {MAX_DEPTH} levels deep; refused")
        if isinstance(event, yaml.AliasEvent):
            if event.anchor not in anchors:
                raise SpecError.one(pos, dotted(prefix + path), f"alias to an undefined anchor '{event.anchor}'")
            node = _Node("alias", None, anchors[event.anchor][0], event.start_mark, anchor=event.anchor)
        else:
            if isinstance(event, yaml.ScalarEvent):
                node = _Node("scalar", event.tag, event.value, event.start_mark,
                             plain=event.tag is None and bool(event.implicit[0]))
            else:
                node = _Node("seq" if isinstance(event, yaml.SequenceStartEvent) else "map", event.tag, [], event.start_mark)
            if event.anchor is not None:
                if event.anchor in anchors:
                    raise SpecError.one(pos, dotted(prefix + path),
                                        f"anchor '&{event.anchor}' is defined twice (first at line {anchors[event.anchor][1]})")
                anchors[event.anchor] = (node, pos.line)
        if frame is None:
            root = node
        elif frame[0].kind == "seq":
            frame[0].value.append(node)
        elif frame[3] is None:
            frame[3] = node
        else:
            frame[0].value.append((frame[3], node))
            frame[3] = None
        if node.kind in ("seq", "map"):
            stack.append([node, path, depth, None])
    if not loader.check_event(yaml.StreamEndEvent):
        event = loader.get_event()
        raise SpecError.one(_mark_pos(file, event.start_mark), "",
                            "more than one YAML document; a spec is a single document (remove '---')")
    return root


def _key_text(node: _Node) -> str:
    if node.kind == "alias":
        node = node.value
    return node.value if node.kind == "scalar" else "?"


# YAML 1.2 core schema (https://yaml.org/spec/1.2.2/#1032-tag-resolution): the only
# plain scalars that are not strings. `yes`, `on`, `1:30`, `2024-01-02` stay text.
_NULL = re.compile(r"null|Null|NULL|~|")
_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_INT10 = re.compile(r"[-+]?[0-9]+")
_INT8 = re.compile(r"0o[0-7]+")
_INT16 = re.compile(r"0x[0-9a-fA-F]+")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_INF = re.compile(r"[-+]?(\.inf|\.Inf|\.INF)")
_NAN = re.compile(r"\.nan|\.NaN|\.NAN")

# Every number in a spec is finite and bounded: nothing downstream has to guard
# against inf, nan, or an integer too long to print.
MAX_INT_DIGITS = 30
MAX_FLOAT = 1e300


class _Refused(ValueError):
    """A scalar that is not a value a spec may hold; the message says why."""


def _shown(text: str) -> str:
    return repr(text) if len(text) <= 40 else repr(text[:24] + "…") + f" ({len(text)} characters)"


def _integer(text: str, base: int = 10) -> int:
    digits = text.lstrip("+-")
    if base == 10:
        significant = digits.lstrip("0")
        if len(significant) > MAX_INT_DIGITS:
            raise _Refused(f"number {_shown(text)} is out of range; a spec's integers have at most {MAX_INT_DIGITS} digits")
        value = int(significant or "0")
        return -value if text.startswith("-") else value
    value = int(digits[2:], base)
    if value >= 10 ** MAX_INT_DIGITS:
        raise _Refused(f"number {_shown(text)} is out of range; a spec's integers have at most {MAX_INT_DIGITS} digits")
    return value


def _float(text: str) -> float:
    if _NAN.fullmatch(text) or _INF.fullmatch(text):
        raise _Refused(f"{text.lstrip('+')} is not allowed; every number in a spec must be finite")
    value = float(text)
    if not math.isfinite(value) or abs(value) > MAX_FLOAT:
        raise _Refused(f"number {_shown(text)} is out of range; a spec's numbers must be finite and at most 1e300 in size")
    return value


def resolve_plain(text: str) -> Any:
    """A plain (unquoted, untagged) scalar by YAML 1.2's core schema. Raises ValueError
    for a number a spec may not hold (inf, nan, or out of range)."""
    if _NULL.fullmatch(text):
        return None
    if text in _BOOL:
        return _BOOL[text]
    if _INT10.fullmatch(text):
        return _integer(text)
    if _INT8.fullmatch(text):
        return _integer(text, 8)
    if _INT16.fullmatch(text):
        return _integer(text, 16)
    if _FLOAT.fullmatch(text) or _INF.fullmatch(text) or _NAN.fullmatch(text):
        return _float(text)
    return text


def _resolve_tagged(text: str, tag: str) -> Any:
    """A scalar with an explicit core tag (``!!int 3``): it must be what the tag says."""
    name = tag[len(_CORE):]
    if name in ("str", "timestamp"):
        return text  # dates stay text: the plan is JSON
    value = resolve_plain(text)
    if name == "float" and isinstance(value, int) and not isinstance(value, bool):
        return _float(text)
    wanted = {"int": int, "float": float, "bool": bool, "null": type(None)}[name]
    if type(value) is not wanted:
        raise _Refused(f"{_shown(text)} is not a valid !!{name}")
    return value


def _lone_surrogate(text: str) -> str | None:
    """A message when ``text`` holds a lone surrogate (``"\\ud800"``), which no encoding can write."""
    for i, ch in enumerate(text):
        if "\ud800" <= ch <= "\udfff":
            return (f"text holds a lone surrogate \\u{ord(ch):04x} (at character {i + 1}), which cannot be "
                    "encoded; write characters beyond U+FFFF as \\UXXXXXXXX")
    return None


class _Builder:
    def __init__(self, file: str, key_prefix: KeyPath = ()):
        self.file = file
        self.prefix = key_prefix
        self.where: dict[KeyPath, Origin] = {}
        self.issues: list[Issue] = []
        self.count = 0
        self.active: set[int] = set()  # the collections being built: an alias to one of them is a cycle

    def pos(self, node: _Node) -> Pos:
        return _mark_pos(self.file, node.mark)

    def key(self, path: KeyPath) -> str:
        return dotted(self.prefix + path)

    def issue(self, node: _Node, path: KeyPath, message: str) -> None:
        self.issues.append(Issue(self.pos(node), self.key(path), message))

    def _enter(self, node: _Node, path: KeyPath, depth: int) -> None:
        """Count one more value against the budget: aliases and merges are counted each time they expand."""
        self.count += 1
        if self.count > MAX_NODES:
            raise SpecError.one(self.pos(node), self.key(path),
                                f"the document expands to more than {MAX_NODES} values (an alias bomb?); refused")
        if depth > MAX_DEPTH:
            raise SpecError.one(self.pos(node), self.key(path),
                                f"nested more than {MAX_DEPTH} levels deep (through aliases or merges); refused")

    def _target(self, node: _Node, path: KeyPath, what: str) -> _Node:
        """The node an alias stands for; an alias to one of its own containers is refused."""
        if node.kind != "alias":
            return node
        target = node.value
        if id(target) in self.active:
            raise SpecError.one(self.pos(node), self.key(path),
                                f"{what} '*{node.anchor}' refers to a value that contains it (a cycle); refused")
        return target

    def build(self, node: _Node, path: KeyPath, key_pos: Pos | None, depth: int = 0) -> Any:
        node = self._target(node, path, "alias")
        self._enter(node, path, depth)
        self.where[path] = Origin(self.pos(node), key_pos, self.key(path))
        if node.kind == "scalar":
            return self._scalar(node, path)
        if node.tag is not None and node.tag != "!" and node.tag != _CORE + node.kind:
            return self._bad_tag(node, path)
        self.active.add(id(node))
        try:
            if node.kind == "seq":
                return [self.build(item, path + (i,), None, depth + 1) for i, item in enumerate(node.value)]
            return self._mapping(node, path, depth)
        finally:
            self.active.discard(id(node))

    def _scalar(self, node: _Node, path: KeyPath) -> Any:
        text = node.value
        problem = _lone_surrogate(text)
        if problem:
            self.issue(node, path, problem)
            return None
        try:
            if node.plain:
                return resolve_plain(text)
            if node.tag is None or node.tag == "!":
                return text  # quoted, a block scalar, or tagged '!': a string
            if node.tag in _SCALAR_TAGS:
                return _resolve_tagged(text, node.tag)
        except _Refused as exc:
            self.issue(node, path, str(exc))
            return None
        return self._bad_tag(node, path)

    def _bad_tag(self, node: _Node, path: KeyPath) -> None:
        self.issue(node, path, f"YAML tag '{_tag_name(node.tag)}' is not allowed; a spec holds plain YAML values only")
        return None

    def _mapping(self, node: _Node, path: KeyPath, depth: int) -> dict:
        out: dict[str, Any] = {}
        first_seen: dict[str, int] = {}
        merges: list[_Node] = []
        for key_node, value_node in node.value:
            if key_node.kind == "scalar" and ((key_node.plain and key_node.value == "<<") or key_node.tag == _CORE + "merge"):
                merges.append(value_node)
                continue
            if key_node.kind == "alias":
                key_node = key_node.value
            if key_node.kind == "map" and len(node.value) == 1:  # `prompt: {{ text }}`
                self.issue(node, path, "an unquoted '{' starts a YAML mapping; a jinja template must be quoted: \"{{ … }}\"")
                continue
            if key_node.kind != "scalar":
                self.issue(key_node, path, "a key must be a plain string, not a list or mapping")
                continue
            if key_node.tag not in (None, "!") and key_node.tag not in _SCALAR_TAGS:
                self._bad_tag(key_node, path)
                continue
            # Keys stay as written: YAML 1.1 would turn `on:` or `yes:` into True.
            key = key_node.value
            kpos = self.pos(key_node)
            problem = _lone_surrogate(key)
            if problem:
                self.issues.append(Issue(kpos, self.key(path), f"a key {problem[5:]}"))
                continue
            if key in first_seen:
                self.issues.append(Issue(
                    kpos, self.key(path + (key,)),
                    f"duplicate key '{key}' (first at line {first_seen[key]}); "
                    "YAML would silently keep only the last one",
                ))
                continue
            first_seen[key] = kpos.line or 0
            out[key] = self.build(value_node, path + (key,), kpos, depth + 1)
        for value_node in merges:
            self._merge(out, value_node, path, depth)
        return out

    def _merge(self, out: dict, node: _Node, path: KeyPath, depth: int) -> None:
        """``<<: *a`` or ``<<: [*a, *b]``: keys not already in ``out`` come from each
        mapping in turn (earlier sources win, as YAML specifies). Each source counts
        against the budget like an alias, one level deeper."""
        holder = self._target(node, path, "merge")
        if holder.kind == "seq":
            self._enter(holder, path, depth + 1)
            sources = holder.value
        else:
            sources = [holder]
        for source in sources:
            target = self._target(source, path, "merge")
            if target.kind != "map" or (target.tag is not None and target.tag != _CORE + "map"):
                self.issue(target, path, "'<<' merges mappings only")
                continue
            self._enter(target, path, depth + 1)
            # Build the source on its own, so that only the keys it adds keep its positions.
            saved, self.where = self.where, {}
            self.active.add(id(target))
            try:
                merged = self._mapping(target, path, depth + 1)
            finally:
                self.active.discard(id(target))
                scratch, self.where = self.where, saved
            n = len(path)
            added = {k for k in merged if k not in out}
            for k in added:
                out[k] = merged[k]
            for p, origin in scratch.items():
                if len(p) > n and p[n] in added:
                    self.where[p] = origin


def _decode(raw: bytes, file: str) -> str:
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        line_start = raw.rfind(b"\n", 0, exc.start) + 1
        # Columns count characters, as an editor shows them, not bytes.
        col = len(raw[line_start:exc.start].decode("utf-8", errors="replace")) + 1
        raise SpecError.one(
            Pos(file, line, col), "",
            f"not valid UTF-8 (byte 0x{raw[exc.start]:02x}); save the file as UTF-8",
        ) from None


def _yaml_error(exc: yaml.MarkedYAMLError, file: str, text: str = "") -> SpecError:
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
    return SpecError.one(pos, "", f"YAML syntax error: {problem}" + (f" ({context})" if context and exc.context_mark else ""))


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
        return f"'{_shown_text(m.group(2) + ':' + m.group(3))}' needs a space after the colon: {m.group(2)}: {_shown_text(m.group(3))}"
    return None


def _tab(exc, lines):
    mark = exc.problem_mark
    before = _line(lines, mark.line)[:mark.column]
    if before.strip(" \t"):
        return (mark.line, mark.column), "a tab character here; YAML separates values with spaces only (replace the tab with a space)"
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
    if before is not None and not head.strip().startswith("-") and ": " not in head.strip() and _indent(line) > _indent(lines[before]):
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
        return (mark.line, mark.column), (f"this list item is indented less than '{_shown_text(key)}:' (line {before + 1}) "
                                          f"whose value it is meant to be; indent it by at least {_spaces(_indent(above))}")
    if item and indent == width and not above.lstrip().startswith("-"):
        return (mark.line, mark.column), (f"a list item among the keys of a mapping (line {before + 1}); a list is the "
                                          "value of a key: put it under a key ending with ':'")
    if (not item and above.lstrip().startswith("-") and indent == _indent(above)
            and not re.match(r"\s*-\s+[^\s:#]+:(\s|$)", above)):  # after `- b`; `- name: x` takes keys
        return (mark.line, mark.column), (f"this {what} follows list items at the same indentation (line {before + 1}); "
                                          "a block holds list items or keys, not both: indent it less to end the list")
    if indent < width:
        parent = next((i for i in range(before, -1, -1) if lines[i].strip() and not lines[i].lstrip().startswith("#")
                       and _column(lines[i]) < indent), None)
        out = f", or by {_column(lines[parent])} to end that block" if parent is not None else ""
        return (mark.line, mark.column), (f"this {what} is indented less than line {before + 1} above it ({_spaces(indent)}, "
                                          f"not {width}): indent it by {_spaces(width)} to stay in that block{out}")
    return (mark.line, mark.column), f"this {what} is indented more than line {before + 1} above it ({_spaces(indent)}, not {width})"


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
                                      f"and the {what} ends with '{close}' (found {got.group(1) if got else 'something else'})")


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


def _reader_error(exc: "yaml.reader.ReaderError", text: str, file: str) -> SpecError:
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


def parse_yaml(text: str, file: str, key_prefix: KeyPath = ()) -> tuple[Any, dict[KeyPath, Origin], Pos, list[Issue]]:
    """Parse one YAML document from text into plain values, their origins, and the
    problems that did not stop parsing."""
    if len(text) > MAX_SPEC_BYTES:
        raise SpecError.one(Pos(file), dotted(key_prefix), f"larger than {MAX_SPEC_BYTES} characters; is it a spec?")
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as exc:  # a control character, caught before any parsing
        raise _reader_error(exc, text, file) from None
    try:
        try:
            node = _compose(loader, file, key_prefix)
        except yaml.MarkedYAMLError as exc:
            raise _yaml_error(exc, file, text) from None
        except yaml.reader.ReaderError as exc:
            raise _reader_error(exc, text, file) from None
        except yaml.YAMLError as exc:
            raise SpecError.one(Pos(file), "", f"YAML error: {exc}") from None
    finally:
        loader.dispose()
    if node is None:
        return None, {}, Pos(file, 1, 1), []
    builder = _Builder(file, key_prefix)
    value = builder.build(node, (), None)
    return value, builder.where, builder.pos(node), builder.issues


def read_document(path: Path, shown: str | None = None) -> Document:
    """Read one spec file into a :class:`Document`; it must hold a mapping."""
    file = shown or display_path(path)
    try:
        from ftspec.core.paths import NotRegularFile, open_regular  # a FIFO would block, /dev/zero never end

        with open_regular(path) as fh:
            raw = fh.read(MAX_SPEC_BYTES + 1)
    except NotRegularFile as exc:
        raise SpecError.one(Pos(file), "", exc.strerror) from None
    except FileNotFoundError:
        raise SpecError.one(Pos(file), "", "file not found") from None
    except IsADirectoryError:
        raise SpecError.one(Pos(file), "", "is a directory, not a spec file") from None
    except OSError as exc:
        raise SpecError.one(Pos(file), "", f"cannot read: {exc.strerror}") from None
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecError.one(Pos(file), "", f"file is larger than {MAX_SPEC_BYTES} bytes; is it a spec?")
    value, where, root, issues = parse_yaml(_decode(raw, file), file)
    if value is None:
        raise SpecError.one(Pos(file, 1, 1), "", "the spec is empty; it needs at least 'ftspec', 'name', 'model' and 'data'")
    if not isinstance(value, dict):
        kind = {list: "a list", str: "a string", int: "a number", float: "a number", bool: "true/false"}.get(type(value), "a plain value")
        raise SpecError.one(root, "", f"the spec must be a mapping of keys to values, not {kind}")
    return Document(value, where, root, issues)


# --------------------------------------------------------------------------- layering


def merge(base: Document, over: Document) -> Document:
    """Deep-merge ``over`` onto ``base``: mappings merge key by key, anything else
    replaces, and so does an empty mapping (``eval.gates: {}`` clears the base's gates:
    merged into them, it would change nothing)."""
    data = _deep_copy(base.data)
    where = dict(base.where)

    def put(target: dict, path: KeyPath, value: Any, src_path: KeyPath) -> None:
        key = path[-1]
        if isinstance(value, dict) and value and isinstance(target.get(key), dict):
            origin = over.where.get(src_path)
            if origin is not None:
                where[path] = origin
            for k, v in value.items():
                put(target[key], path + (k,), v, src_path + (k,))
            return
        target[key] = _deep_copy(value)
        for stale in [p for p in where if p[: len(path)] == path]:
            del where[stale]
        for p, origin in over.where.items():
            if p[: len(src_path)] == src_path:
                where[path + p[len(src_path):]] = origin

    for k, v in over.data.items():
        put(data, (k,), v, (k,))
    return Document(data, where, base.root, base.issues + over.issues)


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def _subdocument(doc: Document, path: KeyPath) -> Document:
    value = doc.data
    for p in path:
        value = value[p]
    n = len(path)
    where = {p[n:]: o for p, o in doc.where.items() if p[:n] == path and len(p) > n}
    root = doc.where[path].pos if path in doc.where else doc.root
    return Document(value, where, root)


def _relabel(where: dict[KeyPath, Origin], layer: str) -> dict[KeyPath, Origin]:
    """The same origins, marked as coming from ``layer``."""
    return {p: replace(o, layer=layer) for p, o in where.items()}


def _load_with_bases(path: Path, chain: list[Path], policy=None, layer: str = "spec") -> tuple[Document, list[Path]]:
    doc = read_document(path)
    doc.where = _relabel(doc.where, layer)
    files = [path]
    if "extends" not in doc.data:
        return doc, files
    origin = doc.where[("extends",)]
    ref = doc.data.pop("extends")
    doc.where = {p: o for p, o in doc.where.items() if p[:1] != ("extends",)}
    if not isinstance(ref, str) or not ref.strip():
        raise SpecError.one(origin.pos, "extends", "must be the path of a base spec, relative to this file")
    base_path = (path.parent / ref).resolve()
    refusal = policy.outside(path.parent / ref, ref) if policy is not None else None
    if refusal:
        raise SpecError.one(origin.pos, "extends", refusal)
    if base_path in chain:
        names = " -> ".join(display_path(p) for p in chain + [base_path])
        raise SpecError.one(origin.pos, "extends", f"extends cycle: {names}")
    if not base_path.is_file():
        what = ("is a directory, not a spec file" if base_path.is_dir()
                else "is not a regular file (a FIFO or a device)" if base_path.exists() else "not found")
        raise SpecError.one(origin.pos, "extends", f"base spec '{ref}' {what}")
    base, base_files = _load_with_bases(base_path, chain + [base_path], policy, "base")
    return merge(base, doc), base_files + files


def _key_path(key: str) -> list:
    return [p for p in key.split(".") if p] if key else []


_SET_KEY = re.compile(r"^[A-Za-z_][\w-]*(\.([\w-]+))*$")


def parse_set(item: str) -> tuple[KeyPath, Document]:
    """Parse one ``--set a.b=VALUE``; the value is read as YAML (``5`` is a number)."""
    key, sep, text = item.partition("=")
    key = key.strip()
    # The override names itself in every line it causes; a long value is cut short there.
    shown = f"--set {item}" if len(item) <= 120 else f"--set {key}={text[:40]}…"
    if not sep or not _SET_KEY.match(key):
        raise SpecError.one(Pos(shown), "", "expected KEY=VALUE with a dotted key, e.g. --set training.epochs=3")
    # Components stay strings: whether `a.0` names a list item is known only against
    # the spec it is applied to (see _check_set_path).
    path = tuple(key.split("."))
    if path[0] in ("extends", "profiles"):
        raise SpecError.one(Pos(shown), key, f"'{path[0]}' cannot be set from the command line")
    pos = Pos(shown)
    try:
        value, inner, _, issues = parse_yaml(text, shown)
    except SpecError as exc:  # a YAML error in the value: its position is inside the value, not a file
        raise SpecError([Issue(pos, key, i.message, i.hint) for i in exc.issues]) from None
    if issues:
        raise SpecError([Issue(pos, dotted(path + tuple(_key_path(i.key))), i.message, i.hint) for i in issues])
    where = {path[: i + 1]: Origin(pos, None, dotted(path[: i + 1]), "set") for i in range(len(path))}
    for p in inner:
        where[path + p] = Origin(pos, None, dotted(path + p), "set")
    nested: Any = value
    for p in reversed(path):
        nested = {p: nested}
    return path, Document(nested, where, pos)


def _check_set_path(data: Any, path: KeyPath, pos: Pos) -> None:
    """``--set`` replaces values in mappings only: a path through a list (``eval.metrics.0``)
    would turn the list into a mapping, so it is refused, with the way to do it."""
    value: Any = data
    for i, part in enumerate(path):
        if isinstance(value, list) or (value is None and part.isdigit()):
            holder = dotted(path[:i]) or "KEY"
            what = ("list items cannot be set by index" if part.isdigit()
                    else f"'{holder}' is a list; its items cannot be set one by one")
            raise SpecError.one(pos, dotted(path), f"{what}; set the whole list, e.g. --set {holder}=[x, y]")
        value = value.get(part) if isinstance(value, dict) else None


def load(
    spec_path: str | Path,
    profiles: Iterable[str] = (),
    sets: Iterable[str] = (),
    policy=None,
) -> LoadedSpec:
    """Load a spec file with its bases, apply the chosen profiles and ``--set`` overrides.
    ``policy`` (a :class:`ftspec.core.paths.PathPolicy`) confines the bases it may read."""
    path = Path(spec_path)
    doc, files = _load_with_bases(path.resolve(), [path.resolve()], policy)
    # The spec's own file is named as the user gave it, bases relative to the cwd.
    profiles = list(profiles)
    sets = list(sets)

    defined: dict[str, Document] = {}
    if "profiles" in doc.data:
        raw = doc.data.pop("profiles")
        origin = doc.where[("profiles",)]
        holder = Document({"profiles": raw}, {p: o for p, o in doc.where.items() if p[:1] == ("profiles",)}, doc.root)
        doc.where = {p: o for p, o in doc.where.items() if p[:1] != ("profiles",)}
        if not isinstance(raw, dict):
            raise SpecError.one(origin.pos, "profiles", "must map profile names to overlays, e.g. profiles: {smoke: {training: {max_steps: 5}}}")
        if len(raw) > MAX_PROFILES:  # each is validated on its own: thousands would take minutes
            raise SpecError.one(origin.pos, "profiles", f"more than {MAX_PROFILES} profiles ({len(raw)}); a spec may define at most {MAX_PROFILES}")
        problems = []
        for name, overlay in raw.items():
            if not isinstance(overlay, dict):
                o = holder.where[("profiles", name)]
                problems.append(Issue(o.pos, f"profiles.{name}", "a profile must be a mapping of spec keys to override"))
            elif "extends" in overlay or "profiles" in overlay or "stages" in overlay:
                bad = next(k for k in ("extends", "profiles", "stages") if k in overlay)
                o = holder.where[("profiles", name, bad)]
                problems.append(Issue(o.key_pos or o.pos, f"profiles.{name}.{bad}", "not allowed inside a profile"))
            else:
                defined[name] = _subdocument(holder, ("profiles", name))
                defined[name].where = _relabel(defined[name].where, f"profile:{name}")
        if problems:
            raise SpecError(problems)

    problems = [
        Issue(Pos(f"--profile {name}"), "profiles",
              f"no profile named '{name}'" + (f" (defined: {', '.join(sorted(defined))})" if defined else " (the spec defines none)"),
              did_you_mean(name, list(defined)))
        for name in profiles if name not in defined
    ]
    overrides = []
    for item in sets:
        try:
            overrides.append(parse_set(item))
        except SpecError as exc:
            problems.extend(exc.issues)
    if problems:
        raise SpecError(problems)
    # `--set stages=[…]` replaces the stage list itself; every other override reaches each
    # stage after the stage's own keys.
    for set_path, override in [o for o in overrides if o[0][:1] == ("stages",)]:
        _check_set_path(doc.data, set_path, override.root)
        doc = merge(doc, override)
    overrides = [o for o in overrides if o[0][:1] != ("stages",)]
    stage_docs = _split_stages(doc)

    def layered(doc: Document) -> Document:
        for name in profiles:
            doc = merge(doc, defined[name])
        for set_path, override in overrides:
            _check_set_path(doc.data, set_path, override.root)
            doc = merge(doc, override)
        return doc

    def loaded_spec(doc: Document, issues: list[Issue]) -> LoadedSpec:
        return LoadedSpec(
            path=path,
            data=doc.data,
            where=doc.where,
            root=doc.root,
            files=files,
            profiles=profiles,
            overrides=sets,
            unused_profiles={k: v for k, v in defined.items() if k not in profiles},
            issues=issues,
        )

    shared = doc
    doc = layered(doc)
    top = loaded_spec(doc, doc.issues)
    for i, (name, start, pos, overlay) in enumerate(stage_docs):
        # Profiles and --set come after the stage's own keys: `--set training.max_steps=2`
        # reaches every stage. The loader's issues are reported once, by the whole spec.
        staged = layered(_put_stage(shared, overlay))
        top.stages.append(LoadedStage(name, i, start, pos, loaded_spec(staged, [])))
    return top


def _split_stages(doc: Document) -> list[tuple[str, str | None, Pos, Document]]:
    """Take `stages` out of the spec: each stage's name, what it starts from, where it is
    written, and its keys (without name and from; a stage's description is its plan's).
    Every mistake in the list is reported at once, each at its line."""
    if "stages" not in doc.data:
        return []
    raw = doc.data.pop("stages")
    origin = doc.where[("stages",)]
    holder = Document({"stages": raw}, {p: o for p, o in doc.where.items() if p[:1] == ("stages",)}, doc.root)
    doc.where = {p: o for p, o in doc.where.items() if p[:1] != ("stages",)}
    example = "stages: [{name: sft}, {name: dpo, method: {kind: dpo}, data: …, format: …}]"
    if not isinstance(raw, list) or not raw:
        raise SpecError.one(origin.pos, "stages", f"must be a list of stages, each a mapping with a name, e.g. {example}")
    if len(raw) > MAX_STAGES:
        raise SpecError.one(origin.pos, "stages", f"more than {MAX_STAGES} stages ({len(raw)})")
    problems: list[Issue] = []
    out = []
    seen: dict[str, int] = {}
    for i, stage in enumerate(raw):
        where = holder.where.get(("stages", i), origin)
        here = f"stages.{i}"
        if not isinstance(stage, dict):
            problems.append(Issue(where.pos, here, "a stage must be a mapping with a name and the keys it changes"))
            continue
        name = stage.get("name")
        key_pos = lambda k: (holder.where.get(("stages", i, k)) or where).pos  # noqa: E731
        if not isinstance(name, str) or not _STAGE_NAME.match(name):
            problems.append(Issue(key_pos("name") if "name" in stage else where.pos, f"{here}.name",
                                  "every stage needs a name: lower-case letters, digits, '.', '_' and '-'"
                                  + ("" if name is None else f" (got {str(name)[:40]!r})")))
            name = None
        elif name in seen:
            problems.append(Issue(key_pos("name"), f"{here}.name", f"stage '{name}' is named twice (first as stage {seen[name] + 1})"))
        else:
            seen[name] = i
        for key in stage:
            if key not in STAGE_KEYS:
                o = holder.where.get(("stages", i, key)) or where
                problems.append(Issue(o.key_pos or o.pos, f"{here}.{key}", f"a stage cannot set '{key}'",
                                      did_you_mean(str(key), list(STAGE_KEYS)) or f"a stage sets {', '.join(STAGE_KEYS[1:])}"))
        start = out[-1][0] if out else None
        if "from" in stage:
            ref = stage["from"]
            if "model" in stage:
                problems.append(Issue(key_pos("from"), f"{here}.from", "a stage with its own model starts from that model",
                                      "leave out 'from' or 'model'"))
            elif ref == "base":
                start = None
            elif not isinstance(ref, str) or ref not in seen or seen[ref] >= i:
                earlier = [n for n in seen if seen[n] < i]
                problems.append(Issue(key_pos("from"), f"{here}.from",
                                      f"'{str(ref)[:40]}' is not an earlier stage; a stage starts from an earlier stage "
                                      f"({', '.join(earlier) or 'none before this one'}) or from base",
                                      did_you_mean(str(ref), earlier)))
            else:
                start = ref
        if "model" in stage:
            start = None
        keys = {k: v for k, v in stage.items() if k in ("description",) + STAGE_REPLACES + STAGE_MERGES}
        overlay = _subdocument(Document({"s": keys}, {("s",) + p[2:]: o for p, o in holder.where.items()
                                                      if p[:2] == ("stages", i) and (len(p) == 2 or p[2] in keys)},
                                        holder.root), ("s",))
        overlay.where = _relabel(overlay.where, "spec")
        out.append((name, start, where.pos, overlay))
    if problems:
        raise SpecError(problems)
    return out


def _put_stage(spec: Document, overlay: Document) -> Document:
    """The spec with a stage's keys put over it: its model, data, format and method
    replace the spec's, its other sections merge key by key."""
    gone = [k for k in STAGE_REPLACES if k in overlay.data]
    base = Document({k: v for k, v in spec.data.items() if k not in gone},
                    {p: o for p, o in spec.where.items() if not (p and p[0] in gone)}, spec.root)
    return merge(base, overlay)
