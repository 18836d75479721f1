"""``ftspec plan --explain``: where each effective value of a spec comes from.

The effective spec is the validated spec with every default filled in. Each of
its values either is the schema's default or was written in one of the layers the
loader put together, in order: a base spec (``extends:``), the spec file, a chosen
profile (``--profile``), a ``--set`` override. The loader keeps an
:class:`~ftspec.spec.load.Origin` for every key path, marked with its layer; this
module reads them back. Light: no torch, nothing beyond the loader and the schema.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable

from ftspec.core.errors import SpecError
from ftspec.core.paths import PathPolicy
from ftspec.spec.load import KeyPath, LoadedSpec, Origin, dotted, load
from ftspec.spec.schema import Spec
from ftspec.spec.validate import validate

DEFAULT = "default"
# Layering instructions, not values: the loader takes them out of the effective spec.
_NOT_VALUES = ("extends", "profiles")


@dataclass(frozen=True)
class Row:
    """One effective value: its dotted key, its value (as JSON data), the kind of its
    origin ("default", "spec", "base", "profile:NAME" or "set") and, for anything but
    a default, where it was written ("FILE:LINE", or "--set KEY=VALUE")."""

    key: str
    value: Any
    kind: str
    where: str
    # A spec with stages: the stage whose effective spec holds the value.
    stage: str | None = None

    def to_dict(self) -> dict:
        out = {"key": self.key, "value": self.value, "origin": self.kind, "where": self.where or None}
        return out if self.stage is None else {"stage": self.stage, **out}


def _get(data: Any, path: KeyPath) -> Any:
    for part in path:
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data):
            data = data[part]
        else:
            return None
    return data


def _written(loaded: LoadedSpec, path: KeyPath) -> tuple[Origin | None, KeyPath | None]:
    """The origin of the value at ``path`` (None for a default), and the key path of the
    shorthand it was expanded from, if any (``adapter: lora`` for ``method.adapter.kind``)."""
    path = tuple(path)
    if path in loaded.where:
        return loaded.where[path], None
    for i in range(len(path) - 1, 0, -1):
        ancestor = path[:i]
        if ancestor in loaded.where:
            written = _get(loaded.data, ancestor)
            if isinstance(written, dict):
                return None, None  # the mapping is written, this key is not: a default
            return loaded.where[ancestor], (None if isinstance(written, list) else ancestor)
    return None, None


def source(loaded: LoadedSpec, path: KeyPath) -> Origin | None:
    """The origin of the effective value at ``path``, or None when it is a default.

    A value is written when its own key path has an origin, or when its nearest
    written ancestor is not a mapping: a shorthand (``adapter: lora`` gives
    ``method.adapter.kind``) or an item of a list written whole. Under a written
    mapping, a key that is not in it is the schema's default.
    """
    return _written(loaded, path)[0]


def _where(origin: Origin) -> str:
    pos = origin.pos
    return f"{pos.file}:{pos.line}" if pos.line is not None else pos.file


def describe(origin: Origin | None) -> str:
    """An origin in words: "spec (FILE:LINE)", "base (FILE:LINE)",
    "profile NAME (FILE:LINE)", "--set KEY=VALUE" or "default"."""
    if origin is None:
        return DEFAULT
    if origin.layer == "set":
        return origin.pos.file  # "--set training.epochs=3"
    label = "profile " + origin.layer.split(":", 1)[1] if origin.layer.startswith("profile:") else origin.layer
    return f"{label} ({_where(origin)})"


def key_path(data: Any, key: str) -> KeyPath:
    """A dotted key as a key path into ``data``: list indices become ints, and a mapping
    key that holds dots (a gate such as ``improvement.accuracy``) is matched whole."""
    parts = key.split(".") if key else []
    path: list = []
    node = data
    i = 0
    while i < len(parts):
        if isinstance(node, list) and parts[i].isdigit():
            path.append(int(parts[i]))
            node = _get(node, (int(parts[i]),))
            i += 1
            continue
        if isinstance(node, dict):
            for j in range(len(parts), i, -1):
                name = ".".join(parts[i:j])
                if name in node:
                    path.append(name)
                    node = node[name]
                    i = j
                    break
            else:
                path.extend(parts[i:])
                break
            continue
        path.extend(parts[i:])
        break
    return tuple(path)


def origin_of(loaded: LoadedSpec, key: str) -> str:
    """Where the spec key ``key`` (dotted) got its effective value, in words:
    "profile smoke (specs/quickstart.yaml:68)", "spec (spec.yaml:12)",
    "base (base.yaml:3)", "--set training.epochs=3", or "default"."""
    return describe(source(loaded, key_path(loaded.data, key)))


def _leaves(value: Any, path: KeyPath) -> Iterable[tuple[KeyPath, Any]]:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            yield from _leaves(v, path + (k,))
    elif isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        for i, v in enumerate(value):
            yield from _leaves(v, path + (i,))
    else:
        yield path, value  # a scalar, an empty mapping, or a list of scalars shown whole


def _same(a: Any, b: Any) -> bool:
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def explain(loaded: LoadedSpec, spec: Spec) -> list[Row]:
    """One row per effective value of ``spec`` (validated from ``loaded``), in the schema's order."""
    effective = spec.model_dump(mode="json", by_alias=True)
    leaves = list(_leaves({k: v for k, v in effective.items() if k not in _NOT_VALUES}, ()))
    found = [_written(loaded, path) for path, _ in leaves]
    # A shorthand writes one field of what it expands to (`train: FILE` is train.path):
    # that field is the spec's, its siblings are defaults. When no field shows the
    # shorthand's value as written, every field is put down to it.
    matched = {short for (path, value), (_, short) in zip(leaves, found)
               if short is not None and _same(value, _get(loaded.data, short))}
    rows = []
    for (path, value), (origin, short) in zip(leaves, found):
        if short in matched and not _same(value, _get(loaded.data, short)):
            origin = None
        if origin is None:
            rows.append(Row(dotted(path), value, DEFAULT, ""))
        else:
            rows.append(Row(dotted(path), value, origin.layer, _where(origin)))
    return rows


def explain_spec(spec_path: str | Path, profiles: Iterable[str] = (), sets: Iterable[str] = (),
                 allow: Iterable[str | Path] = ()) -> list[Row]:
    """Load and validate a spec (as ``plan`` does) and explain it. Raises SpecError."""
    loaded = load(spec_path, profiles, sets, PathPolicy.for_spec(Path(spec_path), allow))
    if loaded.stages:
        # Each stage is a whole spec of its own: its values, stage by stage, in the order they run.
        rows: list[Row] = []
        for stage in loaded.stages:
            spec, issues = validate(stage.loaded)
            if spec is None:
                raise SpecError(issues)
            rows += [replace(r, stage=stage.name) for r in explain(stage.loaded, spec) if r.key != "stages"]
        return rows
    spec, issues = validate(loaded)
    if spec is None:
        raise SpecError(issues)
    return explain(loaded, spec)


def _shown(value: Any, width: int = 48) -> str:
    """A value on one line, as JSON (strings quoted, so that "1" and 1 differ), cut at ``width``."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 1] + "…"


def label(row: Row, sep: str = " ") -> str:
    """A row's origin in words: "default", "--set KEY=VALUE", or "profile smoke FILE:LINE"."""
    if row.kind == DEFAULT:
        return DEFAULT
    if row.kind == "set":
        return row.where
    kind = "profile " + row.kind.split(":", 1)[1] if row.kind.startswith("profile:") else row.kind
    return f"{kind}{sep}{row.where}"


def _label(row: Row) -> str:
    return label(row, "  ")


def render_text(rows: list[Row]) -> str:
    """The rows as an aligned table: key, value, origin."""
    keys = [r.key for r in rows]
    values = [_shown(r.value) for r in rows]
    kw = min(max((len(k) for k in keys), default=0), 44)
    vw = min(max((len(v) for v in values), default=0), 48)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.kind] = counts.get(r.kind, 0) + 1
    lines = [f"{'key':<{kw}}  {'value':<{vw}}  from"]
    stages = list(dict.fromkeys(r.stage for r in rows if r.stage is not None))
    indent = "  " if stages else ""
    for i, (k, v, r) in enumerate(zip(keys, values, rows)):
        if stages and (i == 0 or rows[i - 1].stage != r.stage):  # a spec with stages: each under its name
            lines.append(f"stage {stages.index(r.stage) + 1}/{len(stages)} {r.stage}")
        lines.append(f"{indent}{k:<{kw}}  {v:<{vw}}  {_label(r)}".rstrip())
    summary = ", ".join(f"{n} {kind}" for kind, n in counts.items())
    lines.append(f"{len(rows)} values" + (f" in {len(stages)} stages" if stages else "") + f": {summary}")
    return "\n".join(lines) + "\n"


def render_json(rows: list[Row]) -> str:
    """The rows as a JSON list of {key, value, origin, where}."""
    return json.dumps([r.to_dict() for r in rows], indent=2, ensure_ascii=False) + "\n"
