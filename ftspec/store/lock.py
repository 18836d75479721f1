"""The run lock: one ftspec run per run directory at a time.

The lock is the run directory's ``.lock``, an OS lock (:mod:`ftspec.core.locks`: never
followed through a link, never truncated), which the OS drops when its holder dies.
``.lock-holder.json`` names the holder (pid, host, start time), so that a second run is
refused with one line naming the first. A command that only reads (``gc --dry-run``)
asks :meth:`RunLock.check_free` instead, which creates and writes nothing.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from ftspec.core.errors import Pos, SpecError
from ftspec.core.io import read_json, write_json
from ftspec.core.locks import FileLock, held
from ftspec.store.records import LockHolder
from ftspec.store.rundir import now

HOLDER = ".lock-holder.json"


class RunLock:
    """Held for as long as a run (or ``gc``) works in ``run_dir``; entered, it is refused
    with a SpecError naming the holder when another process holds it."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / ".lock"
        self.holder_path = self.run_dir / HOLDER
        self._lock: FileLock | None = None

    def __enter__(self) -> "RunLock":
        self.run_dir.mkdir(parents=True, exist_ok=True)
        lock = FileLock(self.path)
        if not lock.acquire(blocking=False):
            raise self.refusal()
        self._lock = lock
        try:
            # Written whole and renamed into place: a link planted under the name is replaced, not followed.
            write_json(self.holder_path, {"pid": os.getpid(), "host": host(), "started_at": now()})
        except BaseException:
            lock.release()
            self._lock = None
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self._lock is None:
            return
        try:
            holder = read_json(self.holder_path, dict, lenient=True, schema=LockHolder)
            if holder is not None and holder.pid == os.getpid() and holder.host == host():
                self.holder_path.unlink()
        except OSError:
            pass
        finally:
            self._lock.release()
            self._lock = None

    def in_use(self) -> bool:
        """Whether another process holds the lock now (asked without creating or writing anything)."""
        return held(self.path)

    def check_free(self) -> None:
        """Raise the refusal a run would meet if another process holds the lock; touches nothing."""
        if self.in_use():
            raise self.refusal()

    def holder(self) -> dict | None:
        """Who holds (or last held) the lock, as its holder file says."""
        # Checked on the way in: a hand-written holder (pid "1", 1e30, a list) is not trusted.
        holder = read_json(self.holder_path, dict, lenient=True, schema=LockHolder)
        return holder.model_dump() if holder is not None else None

    def refusal(self) -> SpecError:
        holder = self.holder()
        if holder is not None:
            who = f"pid {holder['pid']} on {holder.get('host', '?')}, since {holder.get('started_at', '?')}"
        else:
            who = "another process"
        return SpecError.one(Pos(str(self.run_dir)), "",
                             f"in use by another ftspec run ({who}); wait for it to finish or stop it")


def host() -> str:
    return socket.gethostname()
