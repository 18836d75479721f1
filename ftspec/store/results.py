"""A plan's evaluation results, read from the step store: the ``report`` step's
``metrics.json``, found by the plan's own report key (``ftspec diff --results``).

Only the entry under that exact key is read, and only when its marker names that whole
key, so the numbers shown for a plan were computed for that plan (or for one whose every
step is the same). The run directory's ``metrics.json`` is never read: it is whichever run
last wrote there. An entry the repository itself holds (committed by a pull request) is
refused: results come from a run, not from a file in the change under review.
Light: the standard library and ftspec's store and plan modules only.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Callable, Optional

from ftspec.catalog import steps
from ftspec.core.errors import Issue, Pos, SpecError
from ftspec.core.folders import link_on_way
from ftspec.core.git import run_git
from ftspec.core.io import BadFileError, read_json
from ftspec.plan.artifacts import ReportMetrics
from ftspec.store.rundir import is_complete, key_name, run_dir_of, store_of

# fetch(step name, key) -> a local folder holding that store entry (downloaded), or None.
Fetch = Callable[[str, str], Optional[Path]]
METRICS = "metrics.json"


class ResultsError(SpecError):
    """A report entry that exists but cannot be trusted or read (one line: where and what)."""

    @classmethod
    def at(cls, path: Path, message: str) -> "ResultsError":
        return cls([Issue(Pos(str(path)), "", message)])


def report_key(plan) -> str | None:
    """The key of the plan's report step; None for a plan without one (evaluation off)."""
    return next((s.key for s in plan.steps if s.name == steps.REPORT.name), None)


def report_results(plan, root: Path, fetch: Fetch | None = None) -> ReportMetrics | None:
    """The report's metrics of ``plan`` (its run directory under ``root``), or None when the
    store holds no finished report for the plan's report key (nor does ``fetch``, asked only
    then). Raises ResultsError (a SpecError) for an entry that is there but is not to be
    trusted: reached through a symbolic link, held in the repository's git index, or a
    ``metrics.json`` that is not the report's (the reader's one-line error)."""
    key = report_key(plan)
    if key is None:
        return None
    store = store_of(run_dir_of(plan, Path(root)))
    entry = store.path(steps.REPORT.name, key)
    link = link_on_way(entry, store.root)
    if link is not None or entry.is_symlink():
        raise ResultsError.at(link or entry, "is a symbolic link; a step store entry never is, so its results "
                                  "are not shown")
    if is_complete(entry, key):
        _refuse_committed(Path(root), entry)
        return _read(entry)
    if fetch is None:
        return None
    fetched = fetch(steps.REPORT.name, key)
    if fetched is None:
        return None
    fetched = Path(fetched)
    if not is_complete(fetched, key):  # a download is key-verified exactly as a local entry
        raise ResultsError.at(fetched, f"is not the finished report of key {key_name(key)}")
    return _read(fetched)


def _read(entry: Path) -> ReportMetrics:
    try:
        metrics = read_json(entry / METRICS, dict, schema=ReportMetrics)
    except BadFileError as exc:
        raise ResultsError(exc.issues) from None
    if metrics is None:
        raise ResultsError.at(entry, f"a finished report without {METRICS}")
    return metrics


def _refuse_committed(root: Path, entry: Path) -> None:
    """A store entry inside the repository that git tracks came with the change: refused."""
    if not (root / ".git").exists():
        return
    try:
        inside = entry.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return  # a store outside the repository holds nothing a commit brought
    try:
        found = run_git(root, "ls-files", "-z", "--", inside)
    except (OSError, subprocess.SubprocessError):
        return  # no git here to ask; nothing committed can be told apart
    if found.returncode == 0 and found.stdout.strip("\0"):
        raise ResultsError.at(entry, "is committed to the repository; results are read only from a step "
                                  "store that runs wrote")
