"""The shared step store as a run uses it (the store itself: ftspec.store.remote).

Before a step is computed its key is looked up in the shared store and, when there, fetched
(checked file by file against its manifest); after it is computed, or when it was already
complete here, it is uploaded unless the shared store has it. A train step's checkpoints are
uploaded as the trainer writes them, and a train step that another machine started resumes
from the newest of them. A shared store that cannot be reached or refuses access is said
once, as a warning, and the run goes on here without it: every step can be computed locally.
An entry whose bytes do not match its manifest is refused, computed here, and replaced.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Callable, Iterator

from ftspec.catalog import steps
from ftspec.store.remote import CHECKPOINT, CorruptEntry, RemoteStore, RemoteUnavailable
from ftspec.store.rundir import Store

POLL_SECONDS = 2.0  # how often the checkpoints folder is looked at while training


class Shared:
    """A run's use of one shared store (``remote``; None: there is none, every call does nothing)."""

    def __init__(self, remote: RemoteStore | None, echo: Callable[[str], None]):
        self.remote = remote
        self.echo = echo
        self.corrupt: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    @property
    def on(self) -> bool:
        return self.remote is not None

    def _down(self, exc: Exception) -> None:
        with self._lock:
            if self.remote is None:
                return
            self.remote = None
        self.echo(f"warning: {exc}; the steps are computed here and nothing is shared this run")

    def has(self, step: str, key: str) -> bool:
        """Whether the shared store has the step's entry (False when there is no store, or it is down)."""
        if self.remote is None:
            return False
        try:
            return self.remote.has(step, key)
        except RemoteUnavailable as exc:
            self._down(exc)
            return False

    def fetch(self, step: str, key: str, store: Store) -> bool:
        """Whether the step's entry was fetched into ``store`` (complete there)."""
        if self.remote is None:
            return False
        try:
            got = self.remote.fetch(step, key, store)
        except RemoteUnavailable as exc:
            self._down(exc)
            return False
        except CorruptEntry as exc:
            self.corrupt.add((step, key))
            self.echo(f"warning: {step}: the shared store's entry is refused ({exc}); it is computed here and "
                      "the shared entry replaced")
            return False
        if got:
            self.echo(f"{step}: fetched from {self.remote.url} (key {key[:8]})")
        return got

    def share(self, step: str, key: str, folder: Path) -> None:
        """Upload the complete entry in ``folder`` unless the shared store has it."""
        if self.remote is None:
            return
        try:
            if (step, key) in self.corrupt:
                self.remote.replace(step, key, folder)
                self.corrupt.discard((step, key))
                pushed = True
            else:
                pushed = self.remote.push(step, key, folder)
            if step == steps.TRAIN.name:
                self.remote.drop_checkpoints(key)
        except RemoteUnavailable as exc:
            self._down(exc)
            return
        except CorruptEntry as exc:  # a folder here that is not ftspec's shape: not shared
            self.echo(f"warning: {step}: not uploaded to the shared store: {exc}")
            return
        if pushed:
            self.echo(f"{step}: uploaded to {self.remote.url} (key {key[:8]})")

    @contextlib.contextmanager
    def checkpoints(self, step: str, key: str, folder: Path) -> Iterator[None]:
        """While a train step runs: first fetch the shared store's newest checkpoint when it is
        newer than any here, then upload each checkpoint the trainer completes."""
        if self.remote is None or step != steps.TRAIN.name:
            yield
            return
        try:
            name = self.remote.fetch_checkpoint(key, folder)
            if name:
                self.echo(f"{step}: {name} fetched from {self.remote.url}: training resumes from it")
        except RemoteUnavailable as exc:
            self._down(exc)
        except CorruptEntry as exc:
            self.echo(f"warning: {step}: the shared store's checkpoint is refused ({exc}); training starts from "
                      "what is here")
        watcher = _Watcher(self, key, folder)
        watcher.start()
        try:
            yield
        except BaseException:
            watcher.stop(final=True)  # the checkpoint written last (Ctrl-C saves one, then the step stops)
            raise
        watcher.stop(final=False)  # finished: the whole entry is uploaded next, its checkpoints dropped


class _Watcher(threading.Thread):
    """Uploads the newest complete checkpoint in ``folder`` once it has stopped changing."""

    def __init__(self, shared: Shared, key: str, folder: Path):
        super().__init__(name="ftspec-checkpoint-upload", daemon=True)
        self.shared, self.key, self.folder = shared, key, folder
        self.done = threading.Event()
        self.pushed: int | None = None
        self.seen: dict[int, tuple] = {}

    def run(self) -> None:
        while not self.done.wait(POLL_SECONDS):
            self.look()

    def stop(self, final: bool) -> None:
        self.done.set()
        self.join()
        if final:
            self.look(final=True)

    def look(self, final: bool = False) -> None:
        remote = self.shared.remote
        if remote is None:
            return
        newest = self._newest()
        if newest is None or newest[0] == self.pushed:
            return
        number, state = newest
        # Written last by the trainer; uploaded once it has not changed since the last look.
        if not final and self.seen.get(number) != state:
            self.seen[number] = state
            return
        try:
            remote.push_checkpoint(self.key, self.folder, f"checkpoint-{number}")
        except RemoteUnavailable as exc:
            self.shared._down(exc)
            return
        except (FileNotFoundError, ValueError, CorruptEntry):
            return  # removed by the trainer's rotation meanwhile, or not a checkpoint's shape: the next one
        self.pushed = number

    def _newest(self) -> tuple[int, tuple] | None:
        best = None
        try:
            entries = list(self.folder.iterdir())
        except OSError:
            return None
        for path in entries:
            m = CHECKPOINT.fullmatch(path.name)
            state_file = path / "trainer_state.json"
            if m and not path.is_symlink() and state_file.is_file():
                st = state_file.stat()
                if best is None or int(m.group(1)) > best[0]:
                    best = (int(m.group(1)), (st.st_size, st.st_mtime_ns))
        return best
