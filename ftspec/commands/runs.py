"""`ftspec runs` and `ftspec gc`: the run directories under a folder, and its step store."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from ftspec.core.errors import SpecError
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


def runs(directory: Path) -> Runs:
    """Every run directory under ``directory``, by name, with plan id, status, headline
    metric and gates; and the step store's size. A file that cannot be used is one line
    in its run's ``problems``."""
    directory = Path(directory)
    # What a run's files (and its folder's name) say is shown escaped: a pull request may carry them.
    found = [replace(r, name=printable(r.name), plan_id=printable(r.plan_id), status=printable(r.status),
                     when=printable(r.when), metric=printable(r.metric), gates=printable(r.gates),
                     problems=[printable(p) for p in r.problems]) for r in list_runs(directory)]
    if not found:
        return Runs(directory, found)
    try:
        check_runs_folder(directory)
    except SpecError as exc:
        return Runs(directory, found, problems=(printable(f"{exc}; its step store is not read"),))
    entries = [e for e in store_entries(Store(directory / STORE)) if e.kind == "step"]
    if not entries:
        return Runs(directory, found)
    spare = collect(directory)
    return Runs(directory, found, len(entries), sum(e.bytes for e in entries), spare.bytes if spare.remove else None)


def render_runs(listing: Runs) -> list[str]:
    """The lines `ftspec runs` prints: a row per run, then a line on the step store."""
    rows = [(r.name, r.plan_id, r.status, r.when, r.metric, r.gates) for r in listing.runs]
    if not rows:
        return [f"no runs in {listing.directory}"]
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  ".join(r[i].ljust(widths[i]) for i in range(5)) + (f"  {r[5]}" if r[5] else "") for r in rows]
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
