"""The run directory's bookkeeping, shared by the runtime and the light commands
(`ftspec status`, `ftspec runs`): which step writes where, when a step counts as
complete, what the runs in a folder are (the run lock is :mod:`ftspec.store.lock`, gc's
bookkeeping :mod:`ftspec.store.gc`). Files are read and written through :mod:`ftspec.core.io`."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ftspec.catalog import steps
from ftspec.core.errors import Pos, SpecError
from ftspec.core.folders import refuse_links, remove_own
from ftspec.core.io import BadFileError, read_json, write_json  # noqa: F401  (read_json, write_json: the run's too)
from ftspec.core.layout import MARKER, STORE
from ftspec.core.locks import FileLock, held
from ftspec.store.records import Marker


def read_marker(folder: Path) -> Marker | None:
    """A step folder's marker; None when there is none, or it is cut short or of the wrong
    shape (not finished). A marker that is not a regular file (a FIFO), or too large, is a
    BadFileError: no crash leaves one."""
    return read_json(folder / MARKER, dict, lenient=True, schema=Marker)


def is_complete(folder: Path, key: str) -> bool:
    """Whether ``folder`` holds a finished step for ``key`` (a broken marker: not finished)."""
    marker = read_marker(folder)
    return marker is not None and marker.key == key


def finish_step(partial: Path, final: Path, name: str, key: str) -> None:
    """Make the step computed in ``partial`` the finished ``final`` (both in one step's folder
    of the store); the one it replaces goes, and nothing is removed through a link."""
    write_json(partial / MARKER, {"step": name, "key": key, "finished_at": now()})
    old = final.with_name(final.name + ".old")
    if final.exists() or final.is_symlink():
        remove_own(old, final.parent)
        os.replace(final, old)
    os.replace(partial, final)
    remove_own(old, final.parent)


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
# A step key as ftspec computes it (hex of a sha256); only such a key names a folder in the
# store (a key read from a file names no path through '..' or '/').
STEP_KEY = re.compile(rf"[0-9a-f]{{{KEY_CHARS},64}}")


def key_name(key: str) -> str:
    """The store's folder name for a step ``key``; ValueError for anything that is not a key."""
    if not isinstance(key, str) or not STEP_KEY.fullmatch(key):
        raise ValueError(f"{key!r} is not a step key")
    return key[:KEY_CHARS]


def run_dir_of(plan, root: Path) -> Path:
    """The plan's run directory: its ``output.dir``, relative to the spec's repository root."""
    return (root / plan.output.dir).resolve()


def store_of(run_dir: Path) -> "Store":
    return Store(Path(run_dir).parent / STORE)


@dataclass(frozen=True)
class Store:
    root: Path

    def path(self, step: str, key: str) -> Path:
        return self.root / steps.step(step).name / key_name(key)

    def partial(self, step: str, key: str) -> Path:
        return self.path(step, key).with_name(key_name(key) + ".partial")

    def scratch(self, step: str, key: str, what: str) -> Path:
        """A folder a step keeps across crashes until it is complete (the trainer's checkpoints)."""
        return self.path(step, key).with_name(f"{key_name(key)}.{what}")

    def lock_path(self, step: str, key: str) -> Path:
        return self.path(step, key).with_name(key_name(key) + ".lock")

    def check(self, step_keys: dict[str, str]) -> None:
        """Refuse (SpecError, one line) a store a run would write or remove through a link:
        the store, a step's folder in it, or a step's entry (``<key>``, ``.partial``,
        ``.checkpoints``, ``.old``) that is a symbolic link — a pull request can commit one
        pointing anywhere, and ftspec never makes one there — or the store or a step's
        folder that is not a folder."""
        for step, key in step_keys.items():
            final = self.path(step, key)
            refuse_links(final.parent, self.root, "writes and removes the step store's files")
            for entry in (final, final.with_name(final.name + ".old"), self.partial(step, key),
                          self.scratch(step, key, "checkpoints")):
                if entry.is_symlink():
                    refuse_links(entry, self.root, "writes and removes the step store's files")

    def complete(self, step: str, key: str) -> bool:
        return is_complete(self.path(step, key), key)

    def busy(self, step: str, key: str) -> bool:
        """Whether a live run is computing this step now (it holds the step's lock); creates nothing."""
        return held(self.lock_path(step, key))

    def step_lock(self, step: str, key: str) -> FileLock:
        path = self.lock_path(step, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        return FileLock(path)


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
    marker = read_marker(run_dir / folder)
    return marker.key if marker is not None else None


def adopt(run_dir: Path, folder: str, store: Store) -> None:
    """Move a step folder an older ftspec wrote inside the run directory into the store
    (under the key its marker names), so that nothing it computed is lost or recomputed.
    Nothing is deleted: a folder it cannot place is refused (:func:`adoption_problem`)."""
    path = run_dir / folder
    problem = adoption_problem(path, store)
    if problem:
        raise _refused([(path, problem)])
    marker = read_marker(path)
    assert marker is not None and marker.step is not None  # adoption_problem: it is a finished step's
    target = store.path(marker.step, marker.key)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(path, target)


def adoption_problem(path: Path, store: Store) -> str | None:
    """Why the step folder ``path`` cannot move into the store, or None: it holds no
    marker of a finished step (ftspec did not write it, or did not finish it), or the
    store already holds that step."""
    marker = read_marker(path)
    step, key = (marker.step, marker.key) if marker is not None else (None, None)
    if not (isinstance(step, str) and step in steps.BY_NAME and isinstance(key, str) and STEP_KEY.fullmatch(key)):
        return f"holds no marker of a finished step ({MARKER}): ftspec did not write it, or did not finish it"
    target = store.path(step, key)
    if target.exists() or target.is_symlink():
        return f"holds the {step} step (key {key[:8]}), which the step store already has at {target}"
    return None


def adopt_legacy(run_dir: Path, store: Store) -> None:
    """A run directory an older ftspec wrote: its step folders and its ``checkpoints/``
    move into the store. Everything is looked at first, and nothing is moved or deleted
    when anything is found that cannot move (a folder without a step marker, a step the
    store already has, a ``.partial`` or ``.old`` leftover, a file in ``checkpoints/``):
    that is refused, in one line saying what was found where."""
    problems: list[tuple[Path, str]] = []
    moves = []
    for step_def in steps.STEPS:
        path = run_dir / step_def.folder
        if path.is_dir() and not path.is_symlink():
            problem = adoption_problem(path, store)
            if problem:
                problems.append((path, problem))
            else:
                moves.append(step_def.folder)
        for leftover in (path.with_name(path.name + ".partial"), path.with_name(path.name + ".old")):
            if leftover.exists() and not leftover.is_symlink():
                problems.append((leftover, "is left from a step an older ftspec did not finish, or is not ftspec's"))
    old = run_dir / "checkpoints"
    children = sorted(old.iterdir()) if old.is_dir() and not old.is_symlink() else []
    for child in children:  # checkpoints/<train key>: a cut-off training run resumes from them
        if not child.is_dir() or child.is_symlink() or not STEP_KEY.fullmatch(child.name):
            problems.append((child, "is not a folder of checkpoints"))
            continue
        target = store.scratch(steps.TRAIN.name, child.name, "checkpoints")
        if target.exists() or target.is_symlink():
            problems.append((child, f"holds checkpoints the step store already has at {target}"))
    if problems:
        raise _refused(problems)
    for folder in moves:
        adopt(run_dir, folder, store)
    for child in children:
        target = store.scratch(steps.TRAIN.name, child.name, "checkpoints")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(child, target)
    if old.is_dir() and not old.is_symlink():
        old.rmdir()  # empty now: each of its folders moved into the store


def _refused(problems: list[tuple[Path, str]]) -> SpecError:
    """The refusal of an adoption: the first thing found, and how many more."""
    path, problem = problems[0]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return SpecError.one(Pos(str(path)), "", f"cannot adopt what an older ftspec left in the run directory: "
                         f"'{path.name}' {problem}{more}",
                         "ftspec deletes nothing it did not write: move it out of the run directory and run again")


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
