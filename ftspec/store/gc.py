"""`ftspec gc`'s bookkeeping: what the step store holds, what no run refers to, and
removing it — only ever what ftspec itself put there.

The runs folder and its store must be real folders inside the repository (a link, or a
path that resolves elsewhere, is refused: gc would otherwise delete another folder's
contents). In the store, gc touches only the names it gives its entries — a known step's
folder holding ``<key>`` (16 hex characters) and its ``.partial``, ``.checkpoints`` and
``.lock`` siblings (and the ``.old`` / ``.gc-PID`` leftovers of a replacement or a
removal cut off) — each of the kind it makes; a link is never followed. Anything else is
left where it is, and listed with why.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import stat
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ftspec.catalog import steps
from ftspec.core.errors import Pos, SpecError
from ftspec.core.io import read_json
from ftspec.core.layout import STORE
from ftspec.store.lock import RunLock
from ftspec.store.promotions import list_records
from ftspec.store.rundir import KEY_CHARS, Store, read_marker

# <key>[.partial|.checkpoints|.lock|.old][.partial.old…][.gc-PID]: every name ftspec gives a store entry.
ENTRY_NAME = re.compile(rf"(?P<key>[0-9a-f]{{{KEY_CHARS}}})(?P<suffix>\.partial|\.checkpoints|\.lock)?"
                        r"(?P<leftover>\.old|\.gc-\d+)?")
KINDS = {None: "step", ".partial": "partial", ".checkpoints": "checkpoints", ".lock": "lock"}


@dataclass
class StoreEntry:
    """One thing in the store: a finished step, a cut-off one, a step's scratch folder or a lock."""

    step: str
    key: str  # the key's first KEY_CHARS characters, as the folder is named
    kind: str  # "step", "partial", "checkpoints", "lock" or "leftover"
    path: Path
    bytes: int
    when: str  # when it finished (steps) or was last written

    @property
    def label(self) -> str:
        return f"{self.step}/{self.path.name}"


@dataclass
class Foreign:
    """Something in the store that is not ftspec's to remove, and why."""

    path: Path
    label: str
    why: str


@dataclass
class Scan:
    entries: list[StoreEntry] = field(default_factory=list)
    foreign: list[Foreign] = field(default_factory=list)


def check_runs_folder(runs: Path) -> None:
    """Refuse (SpecError) a runs folder or step store that is a link or resolves outside the
    repository the runs folder is in (the nearest folder above it with ``.git``, else the
    folder it is in)."""
    runs = Path(os.path.abspath(runs))
    root = next((p for p in runs.parents if (p / ".git").exists()), runs.parent)
    real_root = root.resolve()
    for path in (runs, runs / STORE):
        if path.is_symlink():
            raise SpecError.one(Pos(str(path)), "", f"is a symbolic link (to {os.readlink(path)}); gc works only on "
                                "a real folder inside the repository, and follows no link")
        try:
            real = path.resolve()
        except (OSError, RuntimeError) as exc:  # a loop of links
            raise SpecError.one(Pos(str(path)), "", f"cannot be resolved ({exc}); gc follows no link") from None
        if real != real_root and real_root not in real.parents:
            raise SpecError.one(Pos(str(path)), "", f"resolves to {real}, outside the repository ({root}); "
                                "gc works only on a real folder inside it")


def scan(store: Store) -> Scan:
    """The store's entries, and what else is in it (nothing followed through a link)."""
    found = Scan()
    if not store.root.is_dir() or store.root.is_symlink():
        return found
    for step_dir in sorted(store.root.iterdir()):
        label = step_dir.name
        if step_dir.is_symlink():
            found.foreign.append(Foreign(step_dir, label, "a symbolic link, not followed"))
        elif not step_dir.is_dir() or step_dir.name not in steps.BY_NAME:
            found.foreign.append(Foreign(step_dir, label, "not a step's folder ftspec made"))
        else:
            for path in sorted(step_dir.iterdir()):
                entry = _entry(step_dir.name, path)
                if isinstance(entry, StoreEntry):
                    found.entries.append(entry)
                elif entry is not None:
                    found.foreign.append(Foreign(path, f"{step_dir.name}/{path.name}", entry))
    return found


def _entry(step: str, path: Path) -> StoreEntry | str | None:
    """The store entry at ``path``, or why it is not ftspec's (None: it went meanwhile)."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        return "a symbolic link, not followed"
    name = ENTRY_NAME.fullmatch(path.name)
    if name is None:
        return "not a name ftspec gives a store entry"
    kind = "leftover" if name["leftover"] else KINDS[name["suffix"]]
    wanted = stat.S_ISREG if name["suffix"] == ".lock" else stat.S_ISDIR
    if not wanted(st.st_mode):
        return f"not the {'file' if wanted is stat.S_ISREG else 'folder'} ftspec makes under that name"
    when = ""
    if kind == "step":
        marker = read_marker(path)
        when = (marker.finished_at or "") if marker is not None else ""
    when = when or datetime.fromtimestamp(st.st_mtime, timezone.utc).isoformat(timespec="seconds")
    return StoreEntry(step, name["key"], kind, path, _size(path), when)


def store_entries(store: Store) -> list[StoreEntry]:
    return scan(store).entries


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
    by the plan they last ran (so that a run cut off keeps its partial work); and the train
    steps the repository's promotion records name (``promoted NAME``)."""
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
    # A promoted model stays while its record names it, whichever run directory ran it last.
    root = next((p for p in Path(os.path.abspath(runs)).parents if (p / ".git").exists()), None)
    for record in list_records(root)[0] if root is not None else []:
        refs.setdefault((steps.TRAIN.name, record.train_key[:KEY_CHARS]), []).append(f"promoted {record.name}")
    return refs


@dataclass
class Collection:
    remove: list[StoreEntry]
    kept: list[StoreEntry]  # referenced, or kept by --keep
    busy: list[StoreEntry]  # being computed by a live run
    left: list[Foreign] = field(default_factory=list)  # not ftspec's: never removed

    @property
    def bytes(self) -> int:
        return sum(e.bytes for e in self.remove)


def collect(runs: Path, keep: int = 0) -> Collection:
    """What ``ftspec gc`` removes: the store's entries no run directory refers to,
    except, for each step, the ``keep`` most recently finished of them; a step being
    computed now, and its lock, are left alone, and so is anything ftspec did not make.
    Reads only: creates, writes and locks nothing."""
    store = Store(Path(runs) / STORE)
    refs = references(runs)
    found = scan(store)
    entries = found.entries
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
    return Collection(remove, kept + moved, busy, found.foreign)


def _in_progress(run_dir: Path) -> bool:
    return (run_dir / "manifest.json").exists() or (run_dir / ".lock").exists()


def hold_runs(runs: Path) -> contextlib.ExitStack:
    """Every run directory's lock, for as long as ``gc`` works (a run in progress: refused)."""
    stack = contextlib.ExitStack()
    try:
        for run_dir in run_dirs(runs):
            if _in_progress(run_dir):
                stack.enter_context(RunLock(run_dir))
    except BaseException:
        stack.close()
        raise
    return stack


def check_runs_free(runs: Path) -> None:
    """What :func:`hold_runs` would refuse, asked without taking, creating or writing anything."""
    for run_dir in run_dirs(runs):
        if _in_progress(run_dir):
            RunLock(run_dir).check_free()


def remove_entry(entry: StoreEntry) -> None:
    """Remove one entry, if it is still what :func:`scan` found (a link put in its place
    meanwhile is left, and never followed)."""
    path = entry.path
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if entry.kind == "lock":
        if stat.S_ISREG(st.st_mode):
            path.unlink(missing_ok=True)
        return
    if not stat.S_ISDIR(st.st_mode):
        return
    # Renamed first, so that a removal cut off half-way never leaves a folder that looks finished.
    doomed = path.with_name(path.name + f".gc-{os.getpid()}")
    os.replace(path, doomed)
    if not os.path.samestat(st, doomed.lstat()):
        os.replace(doomed, path)  # swapped for something else between the look and the rename: not ours
        return
    # shutil.rmtree refuses a link and, where the platform allows (shutil.rmtree.avoids_symlink_attacks),
    # walks by descriptor so that nothing below is followed either.
    shutil.rmtree(doomed, ignore_errors=True)


def human_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"
