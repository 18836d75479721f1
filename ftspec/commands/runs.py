"""`ftspec runs` and `ftspec gc`: the run directories under a folder, and its step store."""

from __future__ import annotations

import contextlib
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from ftspec.core.errors import SpecError
from ftspec.core.io import read_json
from ftspec.core.text import printable
from ftspec.store.gc import (
    Collection,
    check_runs_folder,
    check_runs_free,
    collect,
    hold_runs,
    human_bytes,
    remove_entry,
    store_entries,
)
from ftspec.store.promotions import list_records
from ftspec.store.rundir import STORE, RunInfo, Store, list_runs


@dataclass(frozen=True)
class Runs:
    """The runs under ``directory`` and what its step store holds: ``store_steps`` step
    outputs of ``store_bytes`` in all; ``spare_bytes`` of them no run refers to (None when
    every entry is referred to)."""

    directory: Path
    runs: list[RunInfo]
    store_steps: int = 0
    store_bytes: int = 0
    spare_bytes: int | None = None
    problems: tuple[str, ...] = ()  # about the folder itself (a store gc would refuse is not read)
    # What each variant run directory named by a hash was made with, and which promotions
    # (promoted/*.json) name runs here: a line each, shown after the table.
    notes: tuple[str, ...] = ()


def runs(directory: Path) -> Runs:
    """Every run directory under ``directory``, by name, with plan id, status, headline
    metric and gates; and the step store's size. A file that cannot be used is one line
    in its run's ``problems``."""
    directory = Path(directory)
    listed = list_runs(directory)
    notes, note_problems = run_notes(directory, listed)
    # What a run's files (and its folder's name) say is shown escaped: a pull request may carry them.
    found = [replace(r, name=printable(r.name), plan_id=printable(r.plan_id), status=printable(r.status),
                     when=printable(r.when), metric=printable(r.metric), gates=printable(r.gates),
                     problems=[printable(p) for p in r.problems]) for r in listed]
    if not found:
        return Runs(directory, found)
    try:
        check_runs_folder(directory)
    except SpecError as exc:
        return Runs(directory, found, problems=(printable(f"{exc}; its step store is not read"), *note_problems),
                    notes=notes)
    entries = [e for e in store_entries(Store(directory / STORE)) if e.kind == "step"]
    if not entries:
        return Runs(directory, found, problems=tuple(note_problems), notes=notes)
    spare = collect(directory)
    return Runs(directory, found, len(entries), sum(e.bytes for e in entries), spare.bytes if spare.remove else None,
                problems=tuple(note_problems), notes=notes)


# A variant run directory's name that does not spell out its profiles or --set values (ftspec.plan.build).
HASHED = re.compile(r"(?:^|\+)(?:set|profile)-[0-9a-f]{10}(?:\+|$)")


def repository_of(directory: Path) -> Path:
    """The repository a runs folder belongs to: the nearest folder above it with .git, else its parent."""
    real = Path(directory).resolve()
    return next((f for f in real.parents if (f / ".git").exists()), real.parent)


def run_notes(directory: Path, listed: list[RunInfo]) -> tuple[tuple[str, ...], list[str]]:
    """The lines after the table, escaped: for each run directory named by a hash
    (``job@set-c56f94ea4f``), the profiles and --set values it was made with (as its
    manifest records them); for each promotion (``promoted/*.json``) of a run here, the run
    it names. And the problems met reading them."""
    lines: list[str] = []
    problems: list[str] = []
    for info in listed:
        _, at, variant = info.name.partition("@")
        if not at or not HASHED.search(variant):
            continue
        try:
            manifest = read_json(Path(directory) / info.name / "manifest.json", dict, lenient=True) or {}
        except SpecError:
            manifest = {}  # the table's row already says what is wrong with it
        made = manifest.get("spec") if isinstance(manifest.get("spec"), dict) else {}
        words = [f"--profile {shlex.quote(p)}" for p in made.get("profiles") or [] if isinstance(p, str)]
        words += [f"--set {shlex.quote(v)}" for v in made.get("overrides") or [] if isinstance(v, str)]
        lines.append(printable(f"variant {info.name}: made with {' '.join(words) if words else '(not recorded)'}"))
    root = repository_of(directory)
    records, unread = list_records(root)
    problems += [printable(p) for p in unread]
    here = Path(directory).resolve()
    by_dir = {(here / info.name): info for info in listed}
    for record in records:
        run_dir = (root / record.run_dir).resolve()
        if run_dir.parent != here:
            continue
        info = by_dir.get(run_dir)
        forced = f"; forced past failed gates: {', '.join(record.failed_gates)}" if record.forced else ""
        if info is not None and record.plan_id.startswith(info.plan_id) and info.plan_id:
            lines.append(printable(f"promoted {record.name}: {info.name} (plan {record.plan_id[:12]}){forced}"))
        else:
            now_holds = f", which holds plan {info.plan_id} now" if info is not None and info.plan_id else ""
            lines.append(printable(f"promoted {record.name}: plan {record.plan_id[:12]} of {record.run_dir}"
                                   f"{now_holds or ' (not here)'}{forced}"))
    return tuple(lines), problems


def render_runs(listing: Runs) -> list[str]:
    """The lines `ftspec runs` prints: a row per run, then a line on the step store."""
    rows = [(r.name, r.plan_id, r.status, r.when, r.metric, r.gates) for r in listing.runs]
    if not rows:
        return [f"no runs in {listing.directory}"]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(r[i].ljust(widths[i]) for i in range(5)) + (f"  {r[5]}" if r[5] else "") for r in rows]
    lines += listing.notes
    if listing.store_steps:
        lines.append(f"step store {listing.directory / STORE}: {listing.store_steps} steps, "
                     f"{human_bytes(listing.store_bytes)}"
                     + (f"; `ftspec gc {listing.directory}` frees {human_bytes(listing.spare_bytes)} that no run "
                        "refers to" if listing.spare_bytes is not None else ""))
    return lines


# How `gc` names the kinds of store entry it removes (a finished step's output is plain).
ENTRY_KINDS = {"step": "", "partial": " (cut off)", "checkpoints": " (checkpoints)", "lock": " (lock)",
               "leftover": " (leftover)"}


def gc(directory: Path, dry_run: bool = False, keep: int = 0,
       echo: Callable[[str], None] = print) -> Collection | None:
    """Remove the step outputs in ``directory``'s store that no run directory refers to
    (all but the ``keep`` most recent of each step's), a line through ``echo`` for each and
    one for the total, and one for each thing in the store that is not ftspec's (left
    alone); with ``dry_run`` change nothing on disk. None when there is no store. Holds
    every run directory's lock meanwhile (``dry_run``: only asks): a run in progress is a
    SpecError, and so is a runs folder or store that is a link or lies outside the repository."""
    directory = Path(directory)
    shown = echo

    def echo(line: str) -> None:  # names in the store are a pull request's to choose: shown escaped
        shown(printable(line))

    check_runs_folder(directory)
    if not (directory / STORE).is_dir():
        echo(f"nothing to collect: {directory} has no step store ({STORE})")
        return None
    if dry_run:
        check_runs_free(directory)
    with hold_runs(directory) if not dry_run else contextlib.nullcontext():
        found = collect(directory, keep)
        for entry in found.remove:
            if not dry_run:
                remove_entry(entry)
            echo(f"{'would remove' if dry_run else 'removed'}  {entry.label}{ENTRY_KINDS.get(entry.kind, '')}  "
                 f"{human_bytes(entry.bytes)}")
    for thing in found.left:
        echo(f"left  {thing.label}: {thing.why} (not ftspec's; gc removes only what it made)")
    kept = [e for e in found.kept if e.kind == "step"]
    echo(f"{'would free' if dry_run else 'freed'} {human_bytes(found.bytes)} "
         f"({sum(e.kind == 'step' for e in found.remove)} steps); "
         f"kept {len(kept)} steps, {human_bytes(sum(e.bytes for e in kept))}"
         + (f"; {len(found.busy)} in use by a run now" if found.busy else ""))
    return found
