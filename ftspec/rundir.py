"""The run directory's bookkeeping, shared by the runtime and the light commands
(`ftspec status`, `ftspec runs`): which step writes where, when a step counts as
complete, what the runs in a folder are, and the lock that keeps two runs out of
one run directory. Files are read and written through :mod:`ftspec.io`."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ftspec import steps
from ftspec.io import BadFileError, read_json, write_json  # noqa: F401  (read_json, write_json: the run's too)

MARKER = ".ftspec-step.json"


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


def step_states(plan, run_dir: Path) -> dict[str, str]:
    """Each step's state in a run directory: done, stale (done for another key),
    running (its ``.partial`` folder belongs to a live run) or missing."""
    manifest = read_json(run_dir / "manifest.json", dict, lenient=True) or {}
    live = manifest.get("status") == "running" and _alive(manifest.get("pid"))
    states = {}
    for step in plan.steps:
        folder = run_dir / steps.folder(step.name)
        marker = read_json(folder / MARKER, dict, lenient=True)
        if marker and marker.get("key") == step.key:
            states[step.name] = "done"
        elif live and folder.with_name(folder.name + ".partial").exists():
            states[step.name] = "running"
        elif marker:
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
        names = {str: "a string", dict: "an object", bool: "true or false"}
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
        from ftspec.errors import Pos, SpecError

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
