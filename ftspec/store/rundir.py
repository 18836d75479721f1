"""The run directory's bookkeeping, shared by the runtime and the light commands
(`ftspec status`, `ftspec runs`): which step writes where, when a step counts as
complete, what the runs in a folder are, and the lock that keeps two runs out of
one run directory. Files are read and written through :mod:`ftspec.core.io`."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ftspec.catalog import steps
from ftspec.core.errors import Pos, SpecError
from ftspec.core.io import BadFileError, read_json, write_json  # noqa: F401  (read_json, write_json: the run's too)
from ftspec.core.layout import MARKER, STORE


def is_complete(folder: Path, key: str) -> bool:
    """Whether ``folder`` holds a finished step for ``key`` (a broken marker: not finished)."""
    marker = read_json(folder / MARKER, dict, lenient=True)
    return marker is not None and marker.get("key") == key


def finish_step(partial: Path, final: Path, name: str, key: str) -> None:
    write_json(partial / MARKER, {"step": name, "key": key, "finished_at": now()})
    old = final.with_name(final.name + ".old")
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(partial, final)
    shutil.rmtree(old, ignore_errors=True)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- the step store
#
#   runs/
#     .ftspec-store/                  every step output computed for any run directory beside it
#       <step>/<key>/                 a finished step (its marker is the last file written)
#       <step>/<key>.partial/         a step being computed, or cut off
#       <step>/<key>.lock             held while a run computes it
#       train/<key>.checkpoints/      the trainer's checkpoints, kept until the step is complete
#     quickstart/                     a run directory: plan.json, manifest.json, the report's files…
#       data -> ../.ftspec-store/prepare_data/<key>
#     quickstart@smoke/               another variant's run directory, sharing what it can
#
# A run directory is a view of one plan's steps: each step folder is a link into the
# store, under the step's key. Switching between variants reuses every step already
# computed, and nothing computed for one variant is overwritten by another.

KEY_CHARS = 16  # of the sha256 key, in folder names


def run_dir_of(plan, root: Path) -> Path:
    """The plan's run directory: its ``output.dir``, relative to the spec's repository root."""
    return (root / plan.output.dir).resolve()


def store_of(run_dir: Path) -> "Store":
    return Store(Path(run_dir).parent / STORE)


@dataclass(frozen=True)
class Store:
    root: Path

    def path(self, step: str, key: str) -> Path:
        return self.root / step / key[:KEY_CHARS]

    def partial(self, step: str, key: str) -> Path:
        return self.root / step / (key[:KEY_CHARS] + ".partial")

    def scratch(self, step: str, key: str, what: str) -> Path:
        """A folder a step keeps across crashes until it is complete (the trainer's checkpoints)."""
        return self.root / step / f"{key[:KEY_CHARS]}.{what}"

    def lock_path(self, step: str, key: str) -> Path:
        return self.root / step / (key[:KEY_CHARS] + ".lock")

    def complete(self, step: str, key: str) -> bool:
        return is_complete(self.path(step, key), key)

    def busy(self, step: str, key: str) -> bool:
        """Whether a live run is computing this step now (it holds the step's lock)."""
        path = self.lock_path(step, key)
        if not path.exists():
            return False
        import filelock

        lock = filelock.FileLock(str(path))
        if not _acquire(lock):
            return True
        lock.release()
        return False

    def step_lock(self, step: str, key: str):
        import filelock

        path = self.lock_path(step, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        return filelock.FileLock(str(path))


def link_step(run_dir: Path, folder: str, target: Path) -> None:
    """Point the run directory's ``folder`` at ``target`` in the store (a relative link,
    so that the runs folder can be moved whole), replacing what was there atomically."""
    link = run_dir / folder
    rel_target = os.path.relpath(target, run_dir)
    if link.is_symlink() and os.readlink(link) == rel_target:
        return
    if link.exists() and not link.is_symlink():
        adopt(run_dir, folder, store_of(run_dir))
    tmp = run_dir / f".{folder}.link-{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(rel_target, tmp, target_is_directory=True)
    os.replace(tmp, link)


def linked_key(run_dir: Path, folder: str) -> str | None:
    """The key of the step output a run directory's folder shows (a link into the store,
    or a folder an older ftspec wrote in place), or None."""
    marker = read_json(run_dir / folder / MARKER, dict, lenient=True)
    key = marker.get("key") if marker else None
    return key if isinstance(key, str) else None


def adopt(run_dir: Path, folder: str, store: Store) -> None:
    """Move a step folder an older ftspec wrote inside the run directory into the store
    (under the key its marker names), so that nothing it computed is lost or recomputed;
    one without a marker was never finished and is removed."""
    path = run_dir / folder
    marker = read_json(path / MARKER, dict, lenient=True) or {}
    step, key = marker.get("step"), marker.get("key")
    if isinstance(step, str) and step in steps.BY_NAME and isinstance(key, str) and len(key) >= KEY_CHARS:
        target = store.path(step, key)
        if not store.complete(step, key):
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(target, ignore_errors=True)
            os.replace(path, target)
            return
    shutil.rmtree(path)


def adopt_legacy(run_dir: Path, store: Store) -> None:
    """A run directory an older ftspec wrote: its step folders, their ``.partial`` and
    ``.old`` leftovers and its ``checkpoints/`` move into the store (or go)."""
    for step_def in steps.STEPS:
        path = run_dir / step_def.folder
        if path.is_dir() and not path.is_symlink():
            adopt(run_dir, step_def.folder, store)
        for leftover in (path.with_name(path.name + ".partial"), path.with_name(path.name + ".old")):
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)
    old = run_dir / "checkpoints"
    if old.is_dir() and not old.is_symlink():
        for child in old.iterdir():  # checkpoints/<train key>: a cut-off training run resumes from them
            target = store.scratch(steps.TRAIN.name, child.name, "checkpoints")
            if child.is_dir() and not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(child, target)
        shutil.rmtree(old, ignore_errors=True)


def step_states(plan, run_dir: Path) -> dict[str, str]:
    """Each step's state for a run directory: done (computed under its key, in the store
    or in the run directory), running (a live run is computing it), stale (the run
    directory shows the step computed for another key) or missing."""
    run_dir = Path(run_dir)
    store = store_of(run_dir)
    states = {}
    for step in plan.steps:
        folder = steps.folder(step.name)
        shown = linked_key(run_dir, folder)
        if shown == step.key or store.complete(step.name, step.key):
            states[step.name] = "done"
        elif store.partial(step.name, step.key).exists() and store.busy(step.name, step.key):
            states[step.name] = "running"
        elif shown is not None:
            states[step.name] = "stale"
        else:
            states[step.name] = "missing"
    return states


def _alive(pid) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True



# --------------------------------------------------------------------------- ftspec gc


@dataclass
class StoreEntry:
    """One thing in the store: a finished step, a cut-off one, a step's scratch folder or a lock."""

    step: str
    key: str  # the key's first KEY_CHARS characters, as the folder is named
    kind: str  # "step", "partial", "checkpoints" (any scratch folder) or "lock"
    path: Path
    bytes: int
    when: str  # when it finished (steps) or was last written

    @property
    def label(self) -> str:
        return f"{self.step}/{self.path.name}"


def store_entries(store: Store) -> list[StoreEntry]:
    out = []
    if not store.root.is_dir():
        return out
    for step_dir in sorted(p for p in store.root.iterdir() if p.is_dir() and not p.is_symlink()):
        for path in sorted(step_dir.iterdir()):
            key, _, suffix = path.name.partition(".")
            kind = {"": "step", "partial": "partial", "lock": "lock"}.get(suffix, "checkpoints")
            if suffix.startswith(("gc-", "old")):
                kind = "leftover"  # a removal or a replacement that was cut off
            when = ""
            if kind == "step":
                marker = read_json(path / MARKER, dict, lenient=True) or {}
                when = marker.get("finished_at") if isinstance(marker.get("finished_at"), str) else ""
            if not when:
                try:
                    when = datetime.fromtimestamp(path.lstat().st_mtime, timezone.utc).isoformat(timespec="seconds")
                except OSError:
                    continue
            out.append(StoreEntry(step_dir.name, key, kind, path, _size(path), when))
    return out


def _size(path: Path) -> int:
    """Bytes under ``path``, links not followed."""
    try:
        if path.is_symlink() or not path.is_dir():
            return path.lstat().st_size
    except OSError:
        return 0
    total = 0
    for folder, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                pass
    return total


def run_dirs(runs: Path) -> list[Path]:
    """The run directories in a runs folder: every folder beside the store but the store."""
    if not Path(runs).is_dir():
        return []
    return sorted(p for p in Path(runs).iterdir() if p.is_dir() and not p.is_symlink() and p.name != STORE)


def references(runs: Path) -> dict[tuple[str, str], list[str]]:
    """(step, key) -> the run directories that refer to it: by a link into the store, or
    by the plan they last ran (so that a run cut off keeps its partial work)."""
    store = Store(Path(runs) / STORE)
    refs: dict[tuple[str, str], list[str]] = {}
    for run_dir in run_dirs(runs):
        found = set()
        for step_def in steps.STEPS:
            link = run_dir / step_def.folder
            if link.is_symlink():
                target = Path(os.path.normpath(run_dir / os.readlink(link)))
                if target.parent.parent == store.root:
                    found.add((target.parent.name, target.name))
        plan = read_json(run_dir / "plan.json", dict, lenient=True) or {}
        for entry in plan.get("steps") or []:
            if isinstance(entry, dict) and isinstance(entry.get("name"), str) and isinstance(entry.get("key"), str):
                found.add((entry["name"], entry["key"][:KEY_CHARS]))
        for ref in found:
            refs.setdefault(ref, []).append(run_dir.name)
    return refs


@dataclass
class Collection:
    remove: list[StoreEntry]
    kept: list[StoreEntry]  # referenced, or kept by --keep
    busy: list[StoreEntry]  # being computed by a live run

    @property
    def bytes(self) -> int:
        return sum(e.bytes for e in self.remove)


def collect(runs: Path, keep: int = 0) -> Collection:
    """What ``ftspec gc`` removes: the store's entries no run directory refers to,
    except, for each step, the ``keep`` most recently finished of them; a step being
    computed now, and its lock, are left alone."""
    store = Store(Path(runs) / STORE)
    refs = references(runs)
    entries = store_entries(store)
    busy_keys = {(e.step, e.key) for e in entries if e.kind == "lock" and store.busy(e.step, e.key)}
    remove, kept, busy = [], [], []
    spare: dict[str, list[StoreEntry]] = {}
    for e in entries:
        if e.kind == "leftover":
            remove.append(e)
        elif (e.step, e.key) in busy_keys:
            busy.append(e)
        elif (e.step, e.key) in refs:
            kept.append(e)
        elif e.kind == "step":
            spare.setdefault(e.step, []).append(e)
        else:
            remove.append(e)
    for group in spare.values():
        group.sort(key=lambda e: e.when, reverse=True)
        kept.extend(group[:keep])
        remove.extend(group[keep:])
    # A lock file goes only with the last of its key's entries.
    staying = {(e.step, e.key) for e in kept + busy if e.kind != "lock"}
    moved = [e for e in remove if e.kind == "lock" and (e.step, e.key) in staying]
    remove = [e for e in remove if e not in moved]
    return Collection(remove, kept + moved, busy)


def hold_runs(runs: Path):
    """Every run directory's lock, for as long as ``gc`` works (a run in progress: refused)."""
    import contextlib

    stack = contextlib.ExitStack()
    try:
        for run_dir in run_dirs(runs):
            if (run_dir / "manifest.json").exists() or (run_dir / ".lock").exists():
                stack.enter_context(RunLock(run_dir))
    except BaseException:
        stack.close()
        raise
    return stack


def remove_entry(entry: StoreEntry) -> None:
    if entry.path.is_dir() and not entry.path.is_symlink():
        # Renamed first, so that a removal cut off half-way never leaves a folder that looks finished.
        doomed = entry.path.with_name(entry.path.name + f".gc-{os.getpid()}")
        os.replace(entry.path, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
    else:
        entry.path.unlink(missing_ok=True)


def human_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


# --------------------------------------------------------------------------- ftspec runs


@dataclass
class RunInfo:
    """One run directory as ``ftspec runs`` lists it; ``problems``: one line per file
    that could not be used (the run is listed with what the other files say)."""

    name: str
    plan_id: str = ""
    status: str = "?"
    when: str = ""
    metric: str = "-"
    gates: str = ""
    problems: list[str] = field(default_factory=list)


def list_runs(directory: Path) -> list[RunInfo]:
    """Every run directory under ``directory`` (one with a manifest.json), by name."""
    return [read_run_info(manifest.parent) for manifest in sorted(Path(directory).glob("*/manifest.json"))]


def read_run_info(run_dir: Path) -> RunInfo:
    info = RunInfo(run_dir.name)
    manifest = _read_object(run_dir / "manifest.json", info.problems)
    report = _read_object(run_dir / "metrics.json", info.problems)
    m = _Fields(run_dir / "manifest.json", manifest, info.problems)
    r = _Fields(run_dir / "metrics.json", report, info.problems)

    plan_id = m.get("plan_id", str)
    info.plan_id = (plan_id or "")[:12]
    info.status = m.get("status", str) or "?"
    info.when = m.get("finished_at", str) or m.get("started_at", str) or ""
    headline = r.get("headline", str)
    tuned, base = r.get("tuned", dict) or {}, r.get("base", dict) or {}
    if headline and _number(tuned.get(headline)):
        info.metric = f"{headline} {tuned[headline]:.3f}"
        if _number(base.get(headline)):
            info.metric += f" (base {base[headline]:.3f})"
    info.gates = {True: "gates ok", False: "GATES FAILED", None: ""}[r.get("gates_passed", bool)]
    if info.gates and r.get("gates", list) == []:
        info.gates = "no gates"  # a smoke profile that switched them off passes nothing
    return info


def _read_object(path: Path, problems: list[str]) -> dict:
    try:
        return read_json(path, dict) or {}
    except BadFileError as exc:
        problems.append(f"{exc}; listed without it")
        return {}


class _Fields:
    """Fields of a run file, each of the type ftspec writes; a field of another type
    (a hand-edited file) reads as None and is one problem line."""

    def __init__(self, path: Path, data: dict, problems: list[str]):
        self.path, self.data, self.problems = path, data, problems

    def get(self, key: str, kind: type):
        value = self.data.get(key)
        if value is None or isinstance(value, kind):
            return value
        names = {str: "a string", dict: "an object", bool: "true or false", list: "a list"}
        self.problems.append(f"{self.path}: {key} should be {names.get(kind, kind.__name__)}, "
                             f"not {type(value).__name__} {str(value)[:40]!r}; ignored")
        return None


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# --------------------------------------------------------------------------- the run lock

HOLDER = ".lock-holder.json"


class RunLock:
    """One ftspec run per run directory at a time.

    The lock is ``.lock``, held through the ``filelock`` package: an OS lock (flock,
    or msvcrt on Windows) where the platform and the file system have one, which the
    OS drops when its holder dies; elsewhere a soft lock (the file's existence),
    which is taken over when its holder is a dead process on this machine.
    ``.lock-holder.json`` names the holder (pid, host, start time), so that a second
    run is refused with one line naming the first.
    """

    lock_class = None  # a filelock class; None: filelock.FileLock, the platform's best

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / ".lock"
        self.holder_path = self.run_dir / HOLDER
        self._lock = None

    def __enter__(self) -> "RunLock":
        import filelock

        self.run_dir.mkdir(parents=True, exist_ok=True)
        lock = (self.lock_class or filelock.FileLock)(str(self.path))
        if not _acquire(lock):
            soft = isinstance(lock, filelock.SoftFileLock)
            if not (soft and self._break_stale()) or not _acquire(lock):
                raise self._refusal(soft)
        self._lock = lock
        try:
            write_json(self.holder_path, {"pid": os.getpid(), "host": _host(), "started_at": now()})
        except BaseException:
            lock.release()
            self._lock = None
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self._lock is None:
            return
        try:
            holder = read_json(self.holder_path, dict, lenient=True) or {}
            if holder.get("pid") == os.getpid() and holder.get("host") == _host():
                self.holder_path.unlink()
        except OSError:
            pass
        finally:
            self._lock.release()
            self._lock = None

    def holder(self) -> dict | None:
        """Who holds (or last held) the lock, as its holder file says."""
        holder = read_json(self.holder_path, dict, lenient=True)
        return holder if holder and isinstance(holder.get("pid"), int) else None

    def _break_stale(self) -> bool:
        """Remove a soft lock whose holder is a dead process on this machine; whether it was."""
        holder = self.holder()
        if holder is None or holder.get("host") != _host() or _alive(holder["pid"]):
            return False
        try:
            # The holder file is written just after the lock is taken: a lock file newer
            # than it belongs to another, live, run that has not written its own yet.
            if self.path.stat().st_mtime > self.holder_path.stat().st_mtime:
                return False
            self.path.unlink()
        except FileNotFoundError:
            pass
        return True

    def _refusal(self, soft: bool):
        holder = self.holder()
        if holder is not None:
            who = f"pid {holder['pid']} on {holder.get('host', '?')}, since {holder.get('started_at', '?')}"
        elif soft:
            who = f"holder unknown; if no ftspec run is using it, remove {self.path}"
        else:
            who = "another process"
        return SpecError.one(Pos(str(self.run_dir)), "",
                             f"in use by another ftspec run ({who}); wait for it to finish or stop it")


def _acquire(lock) -> bool:
    import filelock

    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        return False
    return True


def _host() -> str:
    import socket

    return socket.gethostname()
