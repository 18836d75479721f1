"""The layers of a spec, put together in order: the bases it ``extends``, the spec file,
the chosen ``profiles``, the ``--set`` overrides; and, for a spec with ``stages:``, each
stage's own spec (the spec without ``stages``, the stage's keys, then profiles and ``--set``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable

from ftspec.core.errors import Issue, Pos, SpecError, did_you_mean
from ftspec.core.paths import PathPolicy
from ftspec.spec.limits import MAX_PROFILES
from ftspec.spec.load.document import (
    Document,
    KeyPath,
    LoadedSpec,
    LoadedStage,
    Origin,
    display_path,
    dotted,
    merge,
    relabel,
    subdocument,
)
from ftspec.spec.load.positioned import parse_yaml, read_document
from ftspec.spec.load.stages import put_stage, split_stages

# A profile's name becomes part of file and folder names (spec+NAME.lock.json, runs/x@NAME):
# one pattern, checked where the profile is defined.
PROFILE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")


def _load_with_bases(path: Path, chain: list[Path], policy: PathPolicy | None = None,
                     layer: str = "spec") -> tuple[Document, list[Path]]:
    doc = read_document(path)
    doc.where = relabel(doc.where, layer)
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
    policy: PathPolicy | None = None,
) -> LoadedSpec:
    """Load a spec file with its bases, apply the chosen profiles and ``--set`` overrides.
    ``policy`` (a :class:`ftspec.core.paths.PathPolicy`) confines the bases it may read."""
    path = Path(spec_path)
    if policy is not None:  # the spec itself, as its bases: a link out of the repository is not read
        problem = policy.outside(path, str(spec_path))
        if problem:
            raise SpecError.one(Pos(str(spec_path)), "spec", problem)
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
            raise SpecError.one(origin.pos, "profiles", "must map profile names to overlays, "
                                "e.g. profiles: {smoke: {training: {max_steps: 5}}}")
        if len(raw) > MAX_PROFILES:  # each is validated on its own: thousands would take minutes
            raise SpecError.one(origin.pos, "profiles", f"more than {MAX_PROFILES} profiles ({len(raw)}); "
                                f"a spec may define at most {MAX_PROFILES}")
        problems = []
        for name, overlay in raw.items():
            if not isinstance(name, str) or not PROFILE_NAME.fullmatch(name):
                o = holder.where[("profiles", name)]
                problems.append(Issue(o.key_pos or o.pos, f"profiles.{str(name)[:40]}",
                                      f"{str(name)[:40]!r} cannot be a profile name: a profile's name is part of "
                                      "file and folder names (the lock file, the run directory)",
                                      "use letters, digits, '.', '_' and '-', not starting with '.', "
                                      "at most 64 characters"))
            elif not isinstance(overlay, dict):
                o = holder.where[("profiles", name)]
                problems.append(Issue(o.pos, f"profiles.{name}",
                                      "a profile must be a mapping of spec keys to override"))
            elif "extends" in overlay or "profiles" in overlay or "stages" in overlay:
                bad = next(k for k in ("extends", "profiles", "stages") if k in overlay)
                o = holder.where[("profiles", name, bad)]
                problems.append(Issue(o.key_pos or o.pos, f"profiles.{name}.{bad}", "not allowed inside a profile"))
            else:
                defined[name] = subdocument(holder, ("profiles", name))
                defined[name].where = relabel(defined[name].where, f"profile:{name}")
        if problems:
            raise SpecError(problems)

    problems = [
        Issue(Pos(f"--profile {name}"), "profiles",
              f"no profile named '{name}'"
              + (f" (defined: {', '.join(sorted(defined))})" if defined else " (the spec defines none)"),
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
    stage_docs = split_stages(doc)

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
        staged = layered(put_stage(shared, overlay))
        top.stages.append(LoadedStage(name, i, start, pos, loaded_spec(staged, [])))
    return top
