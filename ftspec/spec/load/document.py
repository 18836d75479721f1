"""What the loader produces: documents whose every value knows where it was written.

A :class:`Document` is plain YAML data with an :class:`Origin` per key path; :func:`merge`
lays one over another (how ``extends``, profiles, stages and ``--set`` combine), and a
:class:`LoadedSpec` is the effective result with how it was put together.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable

from ftspec.core.errors import Issue, Pos

KeyPath = tuple  # of str (mapping keys) and int (list indices)


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


def merge(base: Document, over: Document) -> Document:
    """Deep-merge ``over`` onto ``base``: mappings merge key by key, anything else
    replaces, and so does an empty mapping (``eval.gates: {}`` clears the base's gates:
    merged into them, it would change nothing)."""
    data = deep_copy(base.data)
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
        target[key] = deep_copy(value)
        for stale in [p for p in where if p[: len(path)] == path]:
            del where[stale]
        for p, origin in over.where.items():
            if p[: len(src_path)] == src_path:
                where[path + p[len(src_path):]] = origin

    for k, v in over.data.items():
        put(data, (k,), v, (k,))
    return Document(data, where, base.root, base.issues + over.issues)


def deep_copy(value: Any) -> Any:
    """A copy of plain YAML data that shares no mapping or list with the original."""
    if isinstance(value, dict):
        return {k: deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [deep_copy(v) for v in value]
    return value


def subdocument(doc: Document, path: KeyPath) -> Document:
    """The part of ``doc`` at ``path``, its origins keyed from there."""
    value = doc.data
    for p in path:
        value = value[p]
    n = len(path)
    where = {p[n:]: o for p, o in doc.where.items() if p[:n] == path and len(p) > n}
    root = doc.where[path].pos if path in doc.where else doc.root
    return Document(value, where, root)


def relabel(where: dict[KeyPath, Origin], layer: str) -> dict[KeyPath, Origin]:
    """The same origins, marked as coming from ``layer``."""
    return {p: replace(o, layer=layer) for p, o in where.items()}
