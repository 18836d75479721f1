"""ftspec's Python API, for notebooks and CI scripts: validate, plan, run and diff a spec.

Each function takes a spec's path and the same choices as the command line (profiles,
``--set`` overrides, allowed folders outside the repository) as keyword arguments, and
returns data rather than printing it::

    import ftspec.api as ft

    checked = ft.validate("specs/quickstart.yaml")
    if not checked.ok:
        print("\\n".join(issue.format() for issue in checked.errors))
    plan = ft.plan("specs/quickstart.yaml", profiles=["smoke"])
    change = ft.diff("specs/quickstart.yaml", git="HEAD~1")
    result = ft.run("specs/quickstart.yaml", profiles=["smoke"])

A mistake in what is given (a spec with errors, an unknown profile, a malformed override)
raises :class:`ftspec.core.errors.SpecError`, whose ``issues`` each name a place
(FILE:LINE:COL) and a key; :func:`validate` returns them instead. Importing this module
does not import torch: :func:`run` imports the training stack when it is called.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ftspec.commands.diff import diff_files, diff_revision
from ftspec.commands.plan import effective_plan
from ftspec.commands.run import UnknownStep, forced_steps
from ftspec.commands.run import run as run_spec
from ftspec.commands.validate import validate as validate_spec
from ftspec.core.errors import Issue, Pos, RunFailed, SpecError
from ftspec.plan.diff import PlanDiff
from ftspec.plan.model import Plan

if TYPE_CHECKING:  # the executor imports the runtime; only its result type is named here
    from ftspec.runtime.result import RunResult

__all__ = ["Validation", "validate", "plan", "run", "diff", "Issue", "Plan", "PlanDiff", "RunFailed", "SpecError"]

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class Validation:
    """What :func:`validate` found in one spec: ``ok`` when it compiles (under ``strict``:
    without warnings too); ``issues``: every error and warning, in file order."""

    spec: Path
    ok: bool
    issues: list[Issue]

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.is_error]

    @property
    def warnings(self) -> list[Issue]:
        return [i for i in self.issues if not i.is_error]


def validate(spec: PathLike, *, profiles: Iterable[str] = (), sets: Iterable[str] = (),
             allow: Iterable[PathLike] = (), strict: bool = False) -> Validation:
    """Load, validate and check a spec as ``ftspec validate`` does: every problem at once,
    each at its FILE:LINE:COL. Never raises for the spec's own mistakes; they are the
    result's ``issues``."""
    path = Path(spec)
    try:
        warnings = validate_spec(path, tuple(profiles), tuple(sets), strict, _paths(allow))
    except SpecError as exc:
        return Validation(path, False, list(exc.issues))
    return Validation(path, True, list(warnings))


def plan(spec: PathLike, *, profiles: Iterable[str] = (), sets: Iterable[str] = (), allow: Iterable[PathLike] = (),
         strict: bool = False) -> Plan:
    """The spec's effective plan, as ``ftspec plan`` shows it (``plan(...).to_json()`` is
    ``ftspec plan --json``'s output). Warnings do not stop it unless ``strict``; see them
    with :func:`validate`. Raises SpecError."""
    compiled, _ = effective_plan(Path(spec), tuple(profiles), tuple(sets), strict, _paths(allow))
    return compiled


def run(spec: PathLike | None = None, *, profiles: Iterable[str] = (), sets: Iterable[str] = (),
        allow: Iterable[PathLike] = (), strict: bool = False, force: Iterable[str] | str = (), locked: bool = False,
        echo: Callable[[str], None] | None = print, plan: PathLike | None = None,
        store: str | None = None) -> RunResult:
    """Run the spec's plan as ``ftspec run`` does: steps already done under the same key
    are reused, a training step cut off resumes from its last checkpoint. ``force`` names
    steps to run again anyway ("all" for every one); ``locked`` refuses a run whose lock
    file drifted. Progress lines and the spec's warnings go to ``echo`` (None: nowhere).
    ``plan``: a plan file ``ftspec plan -o`` wrote, run exactly or not at all (``run --plan``;
    ``spec`` may then be None). ``store``: a shared step store (``--store``; default
    FTSPEC_STORE, else the spec's ``output.store``).

    Returns the run's result: ``steps`` (each ``ran``, ``reused`` or ``fetched``), ``report``
    (the metrics and gates), ``failed_gates``. Raises SpecError for the spec, its data or an
    unknown step in ``force``; RunFailed when the run stops on something else."""
    say = echo if echo is not None else _silent
    return run_spec(Path(spec) if spec is not None else None, tuple(profiles), tuple(sets), strict,
                    force=_steps(force), locked=locked, allow=_paths(allow), echo=say,
                    warn=lambda issue: say(issue.format()), plan_file=Path(plan) if plan is not None else None,
                    store=store)


def diff(old: PathLike, new: PathLike | None = None, *, git: str | None = None, profiles: Iterable[str] = (),
         sets: Iterable[str] = (), allow: Iterable[PathLike] = ()) -> PlanDiff:
    """What a change does to the effective plan, as ``ftspec diff`` shows it: ``diff(OLD,
    NEW)`` compares two specs (or plan JSON files written by ``ftspec plan -o``), and
    ``diff(SPEC, git=REV)`` compares a spec with its version at git revision REV. Both
    sides are compiled with the same profiles and overrides.

    The result's ``changes`` name each changed field (``path``, ``old``, ``new`` and where
    the value came from), ``rerun`` the steps that would run again; ``is_empty()`` says
    whether anything changed. Raises SpecError."""
    if (new is None) == (git is None):
        raise ValueError("give diff(OLD, NEW) or diff(SPEC, git=REV)")
    if git is not None:
        return diff_revision(git, Path(old), tuple(profiles), tuple(sets), _paths(allow))
    return diff_files(Path(old), Path(new), tuple(profiles), tuple(sets), _paths(allow))


def _paths(values: Iterable[PathLike]) -> tuple[Path, ...]:
    return tuple(Path(v) for v in values)


def _silent(line: str) -> None:
    pass


def _steps(force: Iterable[str] | str) -> set[str]:
    """The step names ``force`` gives, checked: "all" is every step."""
    try:
        return forced_steps(force)
    except UnknownStep as exc:
        raise SpecError.one(Pos("force"), "", f"unknown step {', '.join(exc.unknown)}",
                            f"steps: {', '.join(exc.known)}") from None
