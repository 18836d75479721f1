"""The shared step store: which one a command uses, and `ftspec push`, `ftspec pull` and
`ftspec gc --remote` (a run fetches and uploads by itself: ftspec.backends.shared).

Which store: ``--store URL``, else the ``FTSPEC_STORE`` environment variable, else the
spec's ``output.store``; none: only the local store beside the run directories.
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from ftspec.backends.remotes import folder_of, open_store
from ftspec.catalog import steps
from ftspec.core.errors import Pos, RunFailed, SpecError
from ftspec.core.io import write_json
from ftspec.core.layout import MARKER
from ftspec.core.paths import find_root, target_problem
from ftspec.core.storeurl import StoreURLError, parse
from ftspec.core.text import printable
from ftspec.plan.compile import compile_plan
from ftspec.plan.model import Plan
from ftspec.store.gc import human_bytes, references
from ftspec.store.promotions import list_records
from ftspec.store.protect import protected
from ftspec.store.remote import (
    CHECKPOINTS,
    ENTRY,
    FULL_KEY,
    LATEST,
    UPLOAD,
    CorruptEntry,
    RemoteStore,
    RemoteUnavailable,
)
from ftspec.store.results import ResultsError
from ftspec.store.rundir import now, run_dir_of, store_of

ENV = "FTSPEC_STORE"
# This machine's disk refusing a write (full, read-only, not ours): one line, never a traceback.
STORAGE_ERRORS = frozenset({errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.EFBIG})
# Uploads no manifest names are another machine's, in progress, until they are this old.
ABANDONED_AFTER = timedelta(days=1)


def store_url(option: str | None, spec_value: str | None = None) -> tuple[str, str] | None:
    """(URL, where it was set) of the shared store a command uses, or None."""
    if option:
        return option, "--store"
    if os.environ.get(ENV, "").strip():
        return os.environ[ENV].strip(), ENV
    if spec_value:
        return spec_value, "output.store"
    return None


def open_shared(setting: tuple[str, str] | None, root: Path, plan: Plan | None = None) -> RemoteStore | None:
    """The shared store ``setting`` names (None: none). A URL ftspec cannot use, or a folder
    store that is the repository, inside .git, an input of the plan, a run directory or the
    local store, is a SpecError at where it was set."""
    if setting is None:
        return None
    url, where = setting
    try:
        parsed = parse(url)
    except StoreURLError as exc:
        raise SpecError.one(Pos(where), where, str(exc)) from None
    if parsed.scheme == "file":
        folder = folder_of(parsed, root)
        guard = protected(plan, root) if plan is not None else None
        problem = target_problem(folder, guard, folder=True) if guard is not None else None
        if problem:
            raise SpecError.one(Pos(where), where, f"the store folder '{url}' {problem}; a shared store is a folder "
                                                   "of its own")
    try:
        return open_store(url, root)
    except RemoteUnavailable as exc:
        raise RunFailed(str(exc)) from None


@dataclass
class Moved:
    """What `push` or `pull` did, step by step: (plan's stage or name, step, key)."""

    moved: list[tuple[str, str, str]] = field(default_factory=list)
    present: list[tuple[str, str, str]] = field(default_factory=list)
    missing: list[tuple[str, str, str]] = field(default_factory=list)  # on neither side


def _plans(spec: Path, profiles: Iterable[str], sets: Iterable[str], allow: Iterable[str | Path]):
    compiled = compile_plan(spec, tuple(profiles), tuple(sets), False, tuple(allow))
    plan = compiled.plan
    return compiled, [*plan.stages, plan] if plan.stages else [plan]


def push(spec: Path, profiles: Iterable[str] = (), sets: Iterable[str] = (), allow: Iterable[str | Path] = (), *,
         store: str | None = None, echo: Callable[[str], None] = print) -> Moved:
    """Upload every step of the spec's plan that is complete here and not in the shared store."""
    return _move(spec, profiles, sets, allow, store, echo, upload=True)


def pull(spec: Path, profiles: Iterable[str] = (), sets: Iterable[str] = (), allow: Iterable[str | Path] = (), *,
         store: str | None = None, echo: Callable[[str], None] = print) -> Moved:
    """Fetch every step of the spec's plan that the shared store has and this machine lacks
    (`ftspec run` then reuses them, and links them into the run directory)."""
    return _move(spec, profiles, sets, allow, store, echo, upload=False)


def _move(spec, profiles, sets, allow, store, echo, upload: bool) -> Moved:
    compiled, plans = _plans(spec, profiles, sets, allow)
    root = find_root(Path(spec))
    setting = store_url(store, compiled.store)
    if setting is None:
        raise SpecError.one(Pos("--store"), "--store", f"no shared store: give --store URL, set {ENV}, or "
                                                       "output.store in the spec")
    remote = open_shared(setting, root, compiled.plan)
    done = Moved()
    try:
        for plan in plans:
            local = store_of(run_dir_of(plan, root))
            local.check({s.name: s.key for s in plan.steps})
            for step in plan.steps:
                item = (plan.stage or plan.name, step.name, step.key)
                here = local.complete(step.name, step.key)
                if upload:
                    if not here:
                        (done.present if remote.has(step.name, step.key) else done.missing).append(item)
                    elif remote.push(step.name, step.key, local.path(step.name, step.key)):
                        done.moved.append(item)
                        echo(f"uploaded  {item[0]}: {step.name} (key {step.key[:8]})")
                    else:
                        done.present.append(item)
                    continue
                if here:
                    done.present.append(item)
                    continue
                with local.step_lock(step.name, step.key):
                    got = local.complete(step.name, step.key) or remote.fetch(step.name, step.key, local)
                if got:
                    done.moved.append(item)
                    echo(f"fetched   {item[0]}: {step.name} (key {step.key[:8]})")
                else:
                    done.missing.append(item)
    except RemoteUnavailable as exc:
        raise RunFailed(str(exc)) from None
    except CorruptEntry as exc:
        raise RunFailed(f"store {remote.url}: {exc}; nothing of that entry was kept here (`ftspec run` computes "
                        "it and replaces the shared entry)") from None
    except OSError as exc:
        if exc.errno not in STORAGE_ERRORS:
            raise
        raise RunFailed(storage_failed(exc)) from None
    verb = "uploaded" if upload else "fetched"
    where = "in the shared store already" if upload else "here already"
    echo(f"{verb} {len(done.moved)} steps; {len(done.present)} {where}; {len(done.missing)} "
         + ("not computed here (run them first)" if upload else "not in the shared store"))
    return done


def storage_failed(exc: OSError) -> str:
    """A write this machine's disk refused, as one line."""
    where = f" {exc.filename}" if exc.filename else ""
    return (f"cannot write{where}: {exc.strerror}; nothing half-written is taken for complete, so the same command "
            "resumes once there is room")


# --------------------------------------------------------------------------- gc --remote


@dataclass
class RemoteCollection:
    remove: list[tuple[str, list[str], int]] = field(default_factory=list)  # (label, object names, bytes)
    kept: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)  # not ftspec's names: never removed

    @property
    def bytes(self) -> int:
        return sum(b for _, _, b in self.remove)


def promoted_keys(root: Path) -> set[str]:
    """The train step keys the repository's promotion records name (``promoted/*.json``)."""
    return {record.train_key for record in list_records(root)[0]}


def gc_remote(directory: Path, store: str | None, dry_run: bool = False, keep: int = 0, older_than_days: int = 30,
              echo: Callable[[str], None] = print) -> RemoteCollection:
    """Remove from the shared store the entries that no run directory in ``directory`` and no
    promotion record in the repository refers to, that were uploaded more than
    ``older_than_days`` ago and are not among each step's ``keep`` most recent; the checkpoints
    of train steps that are finished; uploads no manifest names, a day after they were
    written. Only ftspec's own names are touched (anything else under the prefix is listed
    and left)."""
    directory = Path(directory)
    root = next((p for p in directory.resolve().parents if (p / ".git").exists()), directory.resolve().parent)
    setting = store_url(store)
    if setting is None:
        raise SpecError.one(Pos("--store"), "--store", f"gc --remote needs the shared store: --store URL or {ENV}")
    remote = open_shared(setting, root)
    refs = {(step, key) for (step, key) in references(directory)} if directory.is_dir() else set()
    promoted = promoted_keys(root)
    now = datetime.now(timezone.utc)
    cutoff = now - timedelta(days=older_than_days)
    found = RemoteCollection()
    try:
        objects = list(remote.objects.list(""))
    except RemoteUnavailable as exc:
        raise RunFailed(str(exc)) from None
    groups: dict[tuple[str, str], list] = {}
    known = {s.name for s in steps.STEPS}
    for obj in objects:
        parts = obj.name.split("/")
        if len(parts) >= 3 and parts[0] in known and FULL_KEY.fullmatch(parts[1]):
            groups.setdefault((parts[0], parts[1]), []).append(obj)
        else:
            found.left.append(obj.name)
    finished: dict[str, list] = {}
    for (step, key), objs in sorted(groups.items()):
        label = f"{step}/{key[:16]}"
        names = {o.name: o for o in objs}
        top = f"{step}/{key}"
        manifest = None
        if f"{top}/{ENTRY}" in names:
            try:
                manifest = remote.manifest(step, key)
            except CorruptEntry:
                manifest = None
            except RemoteUnavailable as exc:
                raise RunFailed(str(exc)) from None
        referenced = (step, key[:16]) in refs or key in promoted
        entry_objs, rest = [], []
        for o in objs:
            rel = o.name[len(top) + 1:]
            first = rel.split("/", 1)[0]
            if rel == ENTRY or (manifest is not None and first == manifest["upload"]):
                entry_objs.append(o)
            elif first == CHECKPOINTS and _checkpoint_object(rel):
                rest.append(("checkpoints", o))
            elif UPLOAD.fullmatch(first) and "/" in rel:
                rest.append(("upload", o))
            else:
                found.left.append(o.name)
        if entry_objs and f"{top}/{ENTRY}" in names:
            when = names[f"{top}/{ENTRY}"].modified
            if referenced:
                found.kept.append(label)
            else:
                finished.setdefault(step, []).append((when, label, entry_objs))
        ckpt = [o for kind, o in rest if kind == "checkpoints"]
        if ckpt:
            latest = next((o for o in ckpt if o.name.endswith(f"/{CHECKPOINTS}/{LATEST}")), None)
            stale = latest is None or _when(latest.modified) < cutoff
            if f"{top}/{ENTRY}" in names or (stale and not referenced):
                found.remove.append((f"{label} checkpoints", [o.name for o in ckpt], sum(o.size for o in ckpt)))
        orphans = [o for kind, o in rest if kind == "upload"]
        if orphans and max(_when(o.modified) for o in orphans) < now - ABANDONED_AFTER:
            found.remove.append((f"{label} unfinished upload", [o.name for o in orphans],
                                 sum(o.size for o in orphans)))
    for group in finished.values():
        group.sort(key=lambda g: g[0], reverse=True)
        for i, (when, label, objs) in enumerate(group):
            if i < keep or _when(when) >= cutoff:
                found.kept.append(label)
            else:
                found.remove.append((label, [o.name for o in objs], sum(o.size for o in objs)))
    for label, names, size in found.remove:
        if not dry_run:
            # The manifest first: an entry half-removed is never taken for one that is there.
            first = [n for n in names if n.endswith(f"/{ENTRY}")]
            try:
                remote.objects.delete(first)
                remote.objects.delete(n for n in names if n not in first)
            except RemoteUnavailable as exc:
                raise RunFailed(str(exc)) from None
        echo(printable(f"{'would remove' if dry_run else 'removed'}  {label}  {human_bytes(size)}"))
    for name in found.left:
        echo(printable(f"left  {name}: not ftspec's (gc removes only what it made)"))
    echo(f"{'would free' if dry_run else 'freed'} {human_bytes(found.bytes)} in {remote.url}; kept {len(found.kept)} "
         f"entries (referenced by {directory}, promoted, the {keep} newest of each step, or uploaded in the last "
         f"{older_than_days} days)")
    return found


def _checkpoint_object(rel: str) -> bool:
    """Whether ``rel`` (under a train step's key) is a name push_checkpoint makes:
    checkpoints/latest.json, or a file under checkpoints/<upload>/."""
    parts = rel.split("/")
    return parts[1:] == [LATEST] or (len(parts) > 2 and UPLOAD.fullmatch(parts[1]) is not None)


def _when(iso: str) -> datetime:
    try:
        when = datetime.fromisoformat(re.sub(r"Z$", "+00:00", iso))
    except ValueError:
        return datetime.now(timezone.utc)
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


# --------------------------------------------------------------------------- diff --results


def results_fetch(option: str | None, spec: Path, profiles: Iterable[str] = (), sets: Iterable[str] = (),
                  allow: Iterable[str | Path] = ()) -> Callable[[str, str], Path | None]:
    """``ftspec diff --results``'s fetch: a report entry the local store lacks, downloaded from
    the shared store (--store, FTSPEC_STORE, else the spec's output.store, compiled only when
    it is asked for) into a temporary folder — the local store is not written — and checked
    file by file. A store that cannot be reached or an entry that does not match its manifest
    is a ResultsError: that side's results are not shown, and the diff still is."""
    opened: dict[str, RemoteStore | None] = {}
    kept: list[tempfile.TemporaryDirectory] = []

    def remote() -> RemoteStore | None:
        if "store" not in opened:
            setting = store_url(option)
            if setting is None and Path(spec).suffix != ".json":  # a plan file names no store
                try:
                    compiled = compile_plan(spec, tuple(profiles), tuple(sets), False, tuple(allow))
                except SpecError:
                    compiled = None  # the diff itself says what is wrong with the spec
                setting = store_url(None, compiled.store if compiled is not None else None)
            opened["store"] = open_shared(setting, find_root(Path(spec)))
        return opened["store"]

    def fetch(step: str, key: str) -> Path | None:
        try:
            store = remote()
            if store is None:
                return None
            folder = tempfile.TemporaryDirectory(prefix="ftspec-results-")
            kept.append(folder)
            if not store.download(step, key, Path(folder.name)):
                return None
        except (RemoteUnavailable, RunFailed) as exc:
            raise ResultsError.at(Path(option or ENV), f"the shared store is not reachable: {exc}") from None
        except CorruptEntry as exc:
            raise ResultsError.at(Path(store.url), f"the shared report is refused: {exc}") from None
        except OSError as exc:
            if exc.errno not in STORAGE_ERRORS:
                raise
            raise ResultsError.at(Path(exc.filename or tempfile.gettempdir()), "the shared report cannot be fetched: "
                                                     f"{storage_failed(exc)}") from None
        write_json(Path(folder.name) / MARKER, {"step": step, "key": key, "finished_at": now()})
        return Path(folder.name)

    fetch.kept = kept  # type: ignore[attr-defined]  # the downloads live as long as the function
    return fetch
