"""The run directory's bookkeeping, shared by the runtime and the light commands
(`ftspec status`, `ftspec runs`): which step writes where, when a step counts as
complete, and atomic writes."""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

MARKER = ".ftspec-step.json"
STEP_DIRS = {"prepare_data": "data", "eval_base": "eval-base", "train": "model", "eval_tuned": "eval-tuned", "report": "report"}


def write_json(path: Path, value) -> None:
    """Write JSON whole or not at all: temporary file, fsync, rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(value, fh, indent=2, sort_keys=True)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def is_complete(folder: Path, key: str) -> bool:
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return marker.get("key") == key


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
    manifest = read_json(run_dir / "manifest.json") or {}
    live = manifest.get("status") == "running" and _alive(manifest.get("pid"))
    states = {}
    for step in plan["steps"]:
        folder = run_dir / STEP_DIRS[step["name"]]
        marker = read_json(folder / MARKER)
        if marker and marker.get("key") == step["key"]:
            states[step["name"]] = "done"
        elif live and folder.with_name(folder.name + ".partial").exists():
            states[step["name"]] = "running"
        elif marker:
            states[step["name"]] = "stale"
        else:
            states[step["name"]] = "missing"
    return states


def read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


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




class RunLock:
    """One ftspec run per run directory at a time: an advisory lock on ``.lock``,
    which also names its holder for whoever finds it taken."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / ".lock"
        self.fh = None

    def __enter__(self) -> "RunLock":
        try:
            import fcntl
        except ImportError:  # no advisory locks on this platform: run unguarded
            return self
        import socket

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            from ftspec.errors import Pos, SpecError

            raise SpecError.one(Pos(str(self.path.parent)), "",
                                f"in use by another ftspec run ({holder}); wait for it to finish or stop it") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()}, since {now()}")
        fh.flush()
        self.fh = fh
        return self

    def __exit__(self, *exc) -> None:
        if self.fh is not None:
            self.fh.seek(0)
            self.fh.truncate()
            self.fh.close()  # closing releases the lock
            self.fh = None
