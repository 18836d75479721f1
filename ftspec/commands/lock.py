"""The lockfile: what a spec leaves floating, pinned.

``ftspec lock SPEC`` writes ``<spec>.lock.json`` next to the spec with the model
revision (the commit a hub id resolves to, a content hash for a local folder, the
config hash of a tiny model), each data source's fingerprint (a file's sha256, a
hub dataset's commit), each template's hash, and the versions of ftspec and the
training libraries. ``ftspec run --locked SPEC`` compares the same items with the
lock before anything runs and refuses, naming every item that drifted.

Hub look-ups happen here, in ``lock``, and nowhere else: ``validate`` and ``plan``
never touch the network, and ``run --locked`` uses the locked commits instead of
resolving names again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Callable, Iterable, Literal, Mapping, Optional

from pydantic import BaseModel, ConfigDict, Field, StrictStr

from ftspec.core.errors import Issue, Pos, SpecError
from ftspec.core.io import BadFileError, read_json, validated, write_json
from ftspec.core.paths import find_root
from ftspec.core.versions import versions
from ftspec.plan.compile import compile_spec
from ftspec.plan.model import Plan, digest, thaw
from ftspec.plan.stages import root_model
from ftspec.store.protect import refuse_target

LOCK_VERSION = 1


def lock_path(spec: Path, profiles: tuple[str, ...] = ()) -> Path:
    suffix = "".join(f"+{p}" for p in profiles)
    return spec.with_name(f"{spec.stem}{suffix}.lock.json")


def folder_hash(folder: Path) -> str:
    """sha256 over every file's relative path and content, in sorted order."""
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(path.relative_to(folder).as_posix().encode("utf-8") + b"\0")
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()


def _templates(plan: Plan) -> dict[str, str]:
    """Every template the plan embeds, by its place in the plan, with its hash."""
    found: dict[str, str] = {}

    def walk(value: Any, path: str) -> None:
        if isinstance(value, Mapping):
            if "text" in value and "sha256" in value:
                found[path] = value["sha256"]
                return
            for k, v in value.items():
                walk(v, f"{path}.{k}" if path else k)
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                walk(v, f"{path}.{i}")

    # Walked as JSON: templates sit at many depths of these sections.
    for name, section in (("data", plan.data), ("format", plan.format), ("eval", plan.eval)):
        walk(thaw(section), name)
    # A source's own templates are those of a mixture's part (its derived columns).
    return {k: v for k, v in found.items() if not k.startswith("data.sources") or ".derive." in k}


HubResolver = Callable[[str, str, str | None], str]  # (kind "model"|"dataset", repo id, revision) -> commit


def hub_resolver(kind: str, repo: str, revision: str | None) -> str:
    """The commit a hub name resolves to (network)."""
    try:
        from huggingface_hub import HfApi
    except ImportError:
        raise SpecError.one(Pos(repo), "",
                            "resolving hub revisions needs huggingface_hub (pip install 'ftspec[train]')") from None
    api = HfApi()
    try:
        info = api.model_info(repo, revision=revision) if kind == "model" else api.dataset_info(repo, revision=revision)
    except Exception as exc:  # offline, not found, gated: all end the lock with one line
        raise SpecError.one(Pos(f"hub:{repo}"), "",
                            f"cannot resolve the {kind} on the hub: {str(exc).splitlines()[0]}") from None
    return info.sha


def build(plan: Plan, root: Path, resolve: HubResolver | None, locked: Mapping | None = None) -> dict:
    """The lock of a plan. Hub names are resolved with ``resolve``; without one
    (``run --locked``), the commits recorded in ``locked`` are taken as they are."""
    m = root_model(plan.model)  # a later stage's model follows from the model its chain began with
    if m.kind == "tiny":
        model = {"kind": "tiny", "config_sha256": digest(m)}
    elif m.source == "local":
        model = {"kind": "local", "path": m.name_or_path, "content_sha256": folder_hash(root / m.name_or_path)}
    else:
        requested = m.revision
        if resolve is not None:
            commit = resolve("model", m.name_or_path, requested)
        else:
            commit = (locked or {}).get("model", {}).get("commit")
        model = {"kind": "hub", "id": m.name_or_path, "requested": requested, "commit": commit}
    data = {}
    for key, one in plan.data.named_sources():  # a mixture's parts each pinned on their own
        if one.kind == "file":
            data[key] = {"path": one.path, "sha256": one.sha256}
        else:
            commit = resolve("dataset", one.hub, one.revision) if resolve is not None else \
                (locked or {}).get("data", {}).get(key, {}).get("commit")
            data[key] = {"hub": one.hub, "requested": one.revision, "commit": commit}
    return {
        "lock_version": LOCK_VERSION,
        "spec": plan.spec.path,
        "profiles": list(plan.spec.profiles),
        "model": model,
        "data": data,
        "templates": _templates(plan),
        "versions": versions(),
    }


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def _short(value: Any) -> str:
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return value[:12] + "…"
    return json.dumps(value)


def drift(locked: Mapping, current: Mapping) -> list[tuple[str, Any, Any]]:
    """Every pinned item whose value differs: (key, locked value, current value)."""
    a = _flatten({k: v for k, v in locked.items() if k not in ("lock_version", "spec", "profiles")})
    b = _flatten({k: v for k, v in current.items() if k not in ("lock_version", "spec", "profiles")})
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


class _Locked(BaseModel):
    # Strict: a lock file holds exactly the types ftspec writes; fields a newer ftspec adds are kept.
    model_config = ConfigDict(strict=True, extra="allow")


Text = Annotated[StrictStr, Field(max_length=4096)]


class LockedModel(_Locked):
    kind: Literal["tiny", "local", "hub"]
    id: Optional[Text] = None
    requested: Optional[Text] = None
    commit: Optional[Text] = None
    path: Optional[Text] = None
    content_sha256: Optional[Text] = None
    config_sha256: Optional[Text] = None


class LockedData(_Locked):
    path: Optional[Text] = None
    sha256: Optional[Text] = None
    hub: Optional[Text] = None
    requested: Optional[Text] = None
    commit: Optional[Text] = None


class LockFile(_Locked):
    """``<spec>.lock.json``, as :func:`build` writes it: checked on the way in, so a
    hand-edited lock of the wrong shape is one line naming the key."""

    lock_version: Literal[1]
    spec: Text
    profiles: list[Text]
    model: LockedModel
    data: dict[Text, LockedData]
    templates: dict[Text, Text]
    versions: dict[Text, Optional[Text]]


def read(path: Path) -> dict:
    """The lock file's content; a missing, broken, other-version or wrongly shaped lock
    file is one line naming it (and the line or the key)."""
    shown = str(path)
    try:
        value = read_json(path, dict)
    except BadFileError as exc:
        raise SpecError.one(Pos(shown, exc.line), "", f"not a readable lock file: {exc.reason}") from None
    if value is None:
        raise SpecError.one(Pos(shown), "", "no lock file; write one with `ftspec lock SPEC`")
    if value.get("lock_version") != LOCK_VERSION or isinstance(value.get("lock_version"), bool):
        raise SpecError.one(Pos(shown), "", f"lock_version {value.get('lock_version')!r} is not supported "
                                            f"(this ftspec writes {LOCK_VERSION})")
    try:
        validated(path, value, LockFile)
    except BadFileError as exc:
        raise SpecError.one(Pos(shown), "", f"not a readable lock file: {exc.reason}") from None
    return value


def pinned_sets(locked: Mapping) -> list[str]:
    """--set overrides that make a plan load exactly the locked hub commits."""
    sets = []
    model = locked.get("model", {})
    if model.get("kind") == "hub" and model.get("commit") and not model.get("requested"):
        sets.append(f"model.revision={json.dumps(str(model['commit']))}")  # quoted: a commit of digits stays text
    for split, src in locked.get("data", {}).items():
        if "hub" in src and src.get("commit") and not src.get("requested"):
            if "." in split:  # a mixture's part: a list item, which --set cannot reach
                raise SpecError.one(Pos(f"hub:{src['hub']}"), f"data.{split}",
                                    "a mixture's hub source without a revision cannot be pinned to the locked commit",
                                    f"write revision: {src['commit']} in its entry of data.train")
            sets.append(f"data.{split}.revision={json.dumps(str(src['commit']))}")
    return sets


def check(locked: Mapping, current: Mapping, lock_file: Path) -> None:
    """Raise SpecError naming every drifted item."""
    changes = drift(locked, current)
    if changes:
        raise SpecError([Issue(Pos(str(lock_file)), key, f"drifted from the lock: locked {_short(old)}, "
                                                         f"now {_short(new)}",
                               "run `ftspec lock` again if the change is intended")
                         for key, old, new in changes])


def write_lock(spec: Path, profiles: Iterable[str] = (), sets: Iterable[str] = (),
               allow: Iterable[str | Path] = ()) -> tuple[Path, list[Issue]]:
    """Pin what the spec's plan leaves floating, looking its hub names up, into the lock
    file next to the spec; the file's path and the spec's warnings. Raises SpecError."""
    profiles = tuple(profiles)
    plan, warnings = compile_spec(spec, profiles, sets, allow=allow)
    path = lock_path(spec, profiles)
    # A data file or template named like the lock file is never written over (nor one it links to).
    refuse_target(path, plan, find_root(spec), str(path))
    pinned = build(plan, find_root(spec), hub_resolver)
    write_json(path, pinned)
    return path, warnings
