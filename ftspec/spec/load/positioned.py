"""Positioned YAML: one spec file read into plain values, with the position of every
key and value, under limits a hostile file cannot get past.

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
from pathlib import Path
from typing import Any

import yaml

from ftspec.core.errors import Issue, Pos, SpecError
from ftspec.core.paths import NotRegularFile, open_regular
from ftspec.spec.limits import MAX_DEPTH, MAX_NODES, MAX_SPEC_BYTES
from ftspec.spec.load.document import Document, KeyPath, Origin, display_path, dotted
from ftspec.spec.load.syntax import reader_error, yaml_error

_CORE = "tag:yaml.org,2002:"
_SCALAR_TAGS = {_CORE + t for t in ("str", "int", "float", "bool", "null", "timestamp")}


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

    def __init__(self, kind: str, tag: str | None, value: Any, mark: Any, plain: bool = False,
                 anchor: str | None = None):
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
                                f"the document has more than {MAX_NODES} values; "
                                "a spec is a page or two of YAML; refused")
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
                node = _Node("seq" if isinstance(event, yaml.SequenceStartEvent) else "map", event.tag, [],
                             event.start_mark)
            if event.anchor is not None:
                if event.anchor in anchors:
                    raise SpecError.one(pos, dotted(prefix + path),
                                        f"anchor '&{event.anchor}' is defined twice "
                                        f"(first at line {anchors[event.anchor][1]})")
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
            raise _Refused(f"number {_shown(text)} is out of range; "
                           f"a spec's integers have at most {MAX_INT_DIGITS} digits")
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
        raise _Refused(f"number {_shown(text)} is out of range; "
                       "a spec's numbers must be finite and at most 1e300 in size")
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
            if key_node.kind == "scalar" and ((key_node.plain and key_node.value == "<<")
                                              or key_node.tag == _CORE + "merge"):
                merges.append(value_node)
                continue
            if key_node.kind == "alias":
                key_node = key_node.value
            if key_node.kind == "map" and len(node.value) == 1:  # `prompt: {{ text }}`
                self.issue(node, path,
                           "an unquoted '{' starts a YAML mapping; a jinja template must be quoted: \"{{ … }}\"")
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



def parse_yaml(text: str, file: str, key_prefix: KeyPath = ()) -> tuple[Any, dict[KeyPath, Origin], Pos, list[Issue]]:
    """Parse one YAML document from text into plain values, their origins, and the
    problems that did not stop parsing."""
    if len(text) > MAX_SPEC_BYTES:
        raise SpecError.one(Pos(file), dotted(key_prefix), f"larger than {MAX_SPEC_BYTES} characters; is it a spec?")
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as exc:  # a control character, caught before any parsing
        raise reader_error(exc, text, file) from None
    try:
        try:
            node = _compose(loader, file, key_prefix)
        except yaml.MarkedYAMLError as exc:
            raise yaml_error(exc, file, text) from None
        except yaml.reader.ReaderError as exc:
            raise reader_error(exc, text, file) from None
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
        with open_regular(path) as fh:  # a FIFO would block, /dev/zero never end
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
        raise SpecError.one(Pos(file, 1, 1), "",
                            "the spec is empty; it needs at least 'ftspec', 'name', 'model' and 'data'")
    if not isinstance(value, dict):
        kind = {list: "a list", str: "a string", int: "a number", float: "a number",
                bool: "true/false"}.get(type(value), "a plain value")
        raise SpecError.one(root, "", f"the spec must be a mapping of keys to values, not {kind}")
    return Document(value, where, root, issues)
