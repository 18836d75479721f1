"""Load a spec: YAML with the position of every key and value, then ``extends``,
``profiles`` and ``--set`` overrides, in that order.

PyYAML's own constructors are not used for documents: they keep no positions,
silently keep the last of two duplicate keys, and expand aliases without limit.
Here the YAML is only *composed* into nodes (safe loader) and the nodes are turned
into plain dicts, lists and scalars by :func:`_Builder.build`, which refuses
application tags, duplicate keys and documents that expand past a budget.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from ftspec.errors import Issue, Pos, SpecError, did_you_mean

KeyPath = tuple  # of str (mapping keys) and int (list indices)

# A spec is a page or two of YAML; anything that expands far past this is an alias bomb.
MAX_NODES = 20_000
MAX_DEPTH = 64
MAX_SPEC_BYTES = 1_000_000

_CORE = "tag:yaml.org,2002:"
_SCALAR_TAGS = {_CORE + t for t in ("str", "int", "float", "bool", "null", "timestamp")}


@dataclass(frozen=True)
class Origin:
    """Where an effective value came from: its position, its key's position, and its
    key path in the file that holds it (``profiles.smoke.training.max_steps``)."""

    pos: Pos
    key_pos: Pos | None
    key: str


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

    def origin(self, path: KeyPath) -> Origin:
        """The origin of ``path``, or of its nearest ancestor that has one."""
        path = tuple(path)
        while path:
            if path in self.where:
                return self.where[path]
            path = path[:-1]
        return Origin(self.root, None, "")


def dotted(path: Iterable) -> str:
    return ".".join(str(p) for p in path)


def display_path(path: Path) -> str:
    """A path as the user typed it relative to the working directory, when it is below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------- YAML


def _tag_name(tag: str) -> str:
    return "!!" + tag[len(_CORE):] if tag.startswith(_CORE) else tag


class _Builder:
    def __init__(self, loader: yaml.SafeLoader, file: str, key_prefix: KeyPath = ()):
        self.loader = loader
        self.file = file
        self.prefix = key_prefix
        self.where: dict[KeyPath, Origin] = {}
        self.issues: list[Issue] = []
        self.count = 0

    def pos(self, node: yaml.Node) -> Pos:
        return Pos(self.file, node.start_mark.line + 1, node.start_mark.column + 1)

    def build(self, node: yaml.Node, path: KeyPath, key_pos: Pos | None, depth: int = 0) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise SpecError.one(
                self.pos(node), dotted(self.prefix + path),
                f"the document expands to more than {MAX_NODES} values (an alias bomb?); refused",
            )
        if depth > MAX_DEPTH:
            raise SpecError.one(
                self.pos(node), dotted(self.prefix + path),
                f"nested more than {MAX_DEPTH} levels deep (a recursive alias?); refused",
            )
        self.where[path] = Origin(self.pos(node), key_pos, dotted(self.prefix + path))
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path, depth)
        if isinstance(node, yaml.SequenceNode):
            if node.tag != _CORE + "seq":
                return self._bad_tag(node, path)
            return [self.build(item, path + (i,), None, depth + 1) for i, item in enumerate(node.value)]
        if node.tag not in _SCALAR_TAGS:
            return self._bad_tag(node, path)
        if node.tag == _CORE + "timestamp":
            return node.value  # dates stay text: the plan is JSON
        return self.loader.construct_object(node, deep=True)

    def _bad_tag(self, node: yaml.Node, path: KeyPath) -> None:
        self.issues.append(Issue(
            self.pos(node), dotted(self.prefix + path),
            f"YAML tag '{_tag_name(node.tag)}' is not allowed; a spec holds plain YAML values only",
        ))
        return None

    def _mapping(self, node: yaml.MappingNode, path: KeyPath, depth: int) -> dict:
        if node.tag != _CORE + "map":
            return self._bad_tag(node, path)
        out: dict[str, Any] = {}
        first_seen: dict[str, int] = {}
        merged: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _CORE + "merge":
                merged.update(self._merge_sources(value_node, path, depth))
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self.issues.append(Issue(self.pos(key_node), dotted(self.prefix + path),
                                         "a key must be a plain string, not a list or mapping"))
                continue
            if key_node.tag not in _SCALAR_TAGS:
                self._bad_tag(key_node, path)
                continue
            # Keys stay as written: YAML 1.1 would turn `on:` or `yes:` into True.
            key = key_node.value
            kpos = self.pos(key_node)
            if key in first_seen:
                self.issues.append(Issue(
                    kpos, dotted(self.prefix + path + (key,)),
                    f"duplicate key '{key}' (first at line {first_seen[key]}); "
                    "YAML would silently keep only the last one",
                ))
                continue
            first_seen[key] = kpos.line or 0
            out[key] = self.build(value_node, path + (key,), kpos, depth + 1)
        for key, value in merged.items():
            out.setdefault(key, value)
        return out

    def _merge_sources(self, node: yaml.Node, path: KeyPath, depth: int) -> dict:
        sources = node.value if isinstance(node, yaml.SequenceNode) else [node]
        result: dict[str, Any] = {}
        for source in reversed(sources):  # earlier sources win, as YAML specifies
            if not isinstance(source, yaml.MappingNode):
                self.issues.append(Issue(self.pos(source), dotted(self.prefix + path),
                                         "'<<' merges mappings only"))
                continue
            # Build into a scratch builder so the merged values keep their own positions
            # under this mapping's path.
            value = self._mapping(source, path, depth + 1)
            if isinstance(value, dict):
                result.update(value)
        return result


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


def _yaml_error(exc: yaml.MarkedYAMLError, file: str) -> SpecError:
    mark = exc.problem_mark or exc.context_mark
    pos = Pos(file, mark.line + 1, mark.column + 1) if mark else Pos(file)
    problem = (exc.problem or exc.context or "invalid YAML").strip()
    if "expected a single document" in (exc.context or ""):
        problem = "more than one YAML document; a spec is a single document (remove '---')"
    elif "'\\t'" in problem:
        problem = "tab character in indentation; YAML indents with spaces only"
    elif "expected a single document" in problem:
        problem = "more than one YAML document; a spec is a single document (remove '---')"
    elif problem.startswith("found undefined alias"):
        problem = problem.replace("found undefined alias", "alias to an undefined anchor")
    else:
        context = (exc.context or "").strip()
        problem = f"YAML syntax error: {problem}" + (f" ({context})" if context and exc.context_mark else "")
    return SpecError.one(pos, "", problem)


def _reader_error(exc: "yaml.reader.ReaderError", text: str, file: str) -> SpecError:
    position = max(0, min(exc.position, len(text)))
    line = text.count("\n", 0, position) + 1
    col = position - (text.rfind("\n", 0, position) + 1) + 1
    return SpecError.one(Pos(file, line, col), "", f"control character {exc.character:#06x} is not allowed in YAML")


def parse_yaml(text: str, file: str, key_prefix: KeyPath = ()) -> tuple[Any, dict[KeyPath, Origin], Pos, list[Issue]]:
    """Parse one YAML document from text into plain values, their origins, and the
    problems that did not stop parsing."""
    try:
        loader = yaml.SafeLoader(text)
    except yaml.reader.ReaderError as exc:  # a control character, caught before any parsing
        raise _reader_error(exc, text, file) from None
    try:
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            raise _yaml_error(exc, file) from None
        except yaml.reader.ReaderError as exc:
            raise _reader_error(exc, text, file) from None
        except yaml.YAMLError as exc:
            raise SpecError.one(Pos(file), "", f"YAML error: {exc}") from None
        if node is None:
            return None, {}, Pos(file, 1, 1), []
        builder = _Builder(loader, file, key_prefix)
        value = builder.build(node, (), None)
        return value, builder.where, builder.pos(node), builder.issues
    finally:
        loader.dispose()


def read_document(path: Path, shown: str | None = None) -> Document:
    """Read one spec file into a :class:`Document`; it must hold a mapping."""
    file = shown or display_path(path)
    try:
        raw = path.read_bytes()
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
    """Deep-merge ``over`` onto ``base``: mappings merge key by key, anything else replaces."""
    data = _deep_copy(base.data)
    where = dict(base.where)

    def put(target: dict, path: KeyPath, value: Any, src_path: KeyPath) -> None:
        key = path[-1]
        if isinstance(value, dict) and isinstance(target.get(key), dict):
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


def _load_with_bases(path: Path, chain: list[Path], policy=None) -> tuple[Document, list[Path]]:
    doc = read_document(path)
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
        raise SpecError.one(origin.pos, "extends", f"base spec '{ref}' not found")
    base, base_files = _load_with_bases(base_path, chain + [base_path], policy)
    return merge(base, doc), base_files + files


def _key_path(key: str) -> list:
    return [p for p in key.split(".") if p] if key else []


_SET_KEY = re.compile(r"^[A-Za-z_][\w-]*(\.([\w-]+))*$")


def parse_set(item: str) -> tuple[KeyPath, Document]:
    """Parse one ``--set a.b=VALUE``; the value is read as YAML (``5`` is a number)."""
    shown = f"--set {item}"
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not _SET_KEY.match(key):
        raise SpecError.one(Pos(shown), "", "expected KEY=VALUE with a dotted key, e.g. --set training.epochs=3")
    path = tuple(int(p) if p.isdigit() else p for p in key.split("."))
    if path[0] in ("extends", "profiles"):
        raise SpecError.one(Pos(shown), key, f"'{path[0]}' cannot be set from the command line")
    pos = Pos(shown)
    try:
        value, inner, _, issues = parse_yaml(text, shown)
    except SpecError as exc:  # a YAML error in the value: its position is inside the value, not a file
        raise SpecError([Issue(pos, key, i.message, i.hint) for i in exc.issues]) from None
    if issues:
        raise SpecError([Issue(pos, dotted(path + tuple(_key_path(i.key))), i.message, i.hint) for i in issues])
    where = {path[: i + 1]: Origin(pos, None, dotted(path[: i + 1])) for i in range(len(path))}
    for p in inner:
        where[path + p] = Origin(pos, None, dotted(path + p))
    nested: Any = value
    for p in reversed(path):
        nested = {p: nested}
    return path, Document(nested, where, pos)


def load(
    spec_path: str | Path,
    profiles: Iterable[str] = (),
    sets: Iterable[str] = (),
    policy=None,
) -> LoadedSpec:
    """Load a spec file with its bases, apply the chosen profiles and ``--set`` overrides.
    ``policy`` (a :class:`ftspec.paths.PathPolicy`) confines the bases it may read."""
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
        problems = []
        for name, overlay in raw.items():
            if not isinstance(overlay, dict):
                o = holder.where[("profiles", name)]
                problems.append(Issue(o.pos, f"profiles.{name}", "a profile must be a mapping of spec keys to override"))
            elif "extends" in overlay or "profiles" in overlay:
                bad = "extends" if "extends" in overlay else "profiles"
                o = holder.where[("profiles", name, bad)]
                problems.append(Issue(o.key_pos or o.pos, f"profiles.{name}.{bad}", "not allowed inside a profile"))
            else:
                defined[name] = _subdocument(holder, ("profiles", name))
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
            overrides.append(parse_set(item)[1])
        except SpecError as exc:
            problems.extend(exc.issues)
    if problems:
        raise SpecError(problems)
    for name in profiles:
        doc = merge(doc, defined[name])
    for override in overrides:
        doc = merge(doc, override)

    return LoadedSpec(
        path=path,
        data=doc.data,
        where=doc.where,
        root=doc.root,
        files=files,
        profiles=profiles,
        overrides=sets,
        unused_profiles={k: v for k, v in defined.items() if k not in profiles},
        issues=doc.issues,
    )
