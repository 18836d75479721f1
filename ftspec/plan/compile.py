"""The compiler's pipeline: load -> validate -> check -> build.

:func:`check_spec` runs the first three and :func:`compile_plan` all four; both raise
:class:`SpecError` with every problem found, and keep the warnings beside the result.
``compile_spec``, ``compile_located`` and ``compile_sourced`` are the shapes the commands
take the result in: each is :func:`compile_plan` and one accessor of :class:`Compiled`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable

from ftspec.checks import Budgets, Context, check_single, check_stages, inspect, run_checks
from ftspec.core.errors import Issue, Pos, SpecError
from ftspec.core.paths import PathPolicy, find_root
from ftspec.plan.build import Checked, build
from ftspec.plan.model import Plan
from ftspec.plan.origins import Origin, StagedOrigin, origins
from ftspec.spec.load import LoadedSpec, display_path, load
from ftspec.spec.provenance import explain
from ftspec.spec.validate import salvage, validate


def _check_loaded(loaded: LoadedSpec, policy: PathPolicy,
                  budgets: Budgets) -> tuple[Context | None, list[Issue], tuple[str, ...]]:
    """validate -> check of one effective spec: its context (None when nothing could be
    checked), every issue, and the keys the schema refused and that were set aside.
    ``budgets``: the command's, shared by all its stages."""
    spec, issues = validate(loaded)
    aside: tuple[str, ...] = ()
    if spec is None:
        # The schema refused part of the spec: what it did not refuse is still checked
        # (its data, its templates), so schema, template and data errors show in one run.
        spec, aside = salvage(loaded)
        if spec is None:
            return None, issues, aside
    # The effective spec is valid (any errors so far are in unused profiles or were
    # refused by the loader), or was made so: the checks still run, so every problem shows at once.
    ctx = inspect(loaded, spec, policy, budgets)
    return ctx, issues + run_checks(ctx, aside), aside


def _raise_or_split(issues: list[Issue], aside: bool, strict: bool) -> list[Issue]:
    """The warnings, when nothing stops the spec; else a SpecError with every error
    (and, when ``strict``, every warning)."""
    errors = [i for i in issues if i.is_error]
    warnings = [i for i in issues if not i.is_error]
    if aside or errors or (strict and warnings):
        raise SpecError(errors + (warnings if strict else []))
    return warnings


def check_spec(path: str | Path, profiles: Iterable[str] = (), sets: Iterable[str] = (), strict: bool = False,
               allow: Iterable[str | Path] = ()) -> Checked:
    """load -> validate -> check. Raises SpecError with every error (and, when
    ``strict``, every warning too). ``allow`` names folders outside the spec's
    repository that its paths may reach (see ftspec.core.paths)."""
    policy = PathPolicy.for_spec(Path(path), allow)
    loaded = load(path, profiles, sets, policy)
    budgets = Budgets()  # one for the whole command: a spec of many stages spends no more than one
    if not loaded.stages:
        ctx, issues, aside = _check_loaded(loaded, policy, budgets)
        if ctx is None:
            raise SpecError(issues)
        issues = issues + list(check_single(ctx))
        return Checked(ctx, _raise_or_split(issues, bool(aside), strict))
    # Each stage is a whole spec, checked as one; what the stages share is said once.
    # The loader's own issues (a duplicate key, a refused tag) are the whole spec's.
    checked, issues, aside = [], list(loaded.issues), False
    for stage in loaded.stages:
        ctx, found, refused = _check_loaded(stage.loaded, policy, budgets)
        checked.append((stage, ctx, found))
        aside = aside or bool(refused) or ctx is None
    cross = check_stages([(st, ctx) for st, ctx, _ in checked])
    seen: set = set()
    per_stage = []
    for i, (st, ctx, found) in enumerate(checked):
        mine = found + cross.get(i, [])
        per_stage.append((st, ctx, [i for i in mine if not i.is_error]))
        for issue in mine:
            said = (issue.pos, issue.message, issue.severity)
            if said not in seen:
                seen.add(said)
                issues.append(_in_stage(issue, st.name))
    # What validate and run say: every stage's warnings (each once, named by its stage), not the last one's only.
    warnings = _raise_or_split(issues, aside, strict)
    return Checked(per_stage[-1][1], warnings, per_stage)


def _in_stage(issue: Issue, stage: str) -> Issue:
    """An issue of one stage's spec, named as a key of that stage when the value was
    written in the stage (``stages.dpo.method.beta``)."""
    if not issue.key or issue.key.startswith("stages."):
        return issue
    return replace(issue, key=f"{issue.key} (stage {stage})")


@dataclass(frozen=True)
class Compiled:
    """A compiled spec: its plan, the warnings that did not stop it, and what it was
    compiled from (for placing run-time issues and for telling where values came from)."""

    plan: Plan
    warnings: list[Issue]
    checked: Checked

    @property
    def store(self) -> str | None:
        """The spec's ``output.store`` (the shared step store; not part of the plan)."""
        return self.checked.ctx.spec.output.store

    def locator(self) -> Callable[[Issue], Issue]:
        """A function that places an issue found at run time (at a key path such as
        ``compute.device``) at that key's FILE:LINE:COL in the spec, its base, its profile
        or ``--set``, wherever the effective value came from."""
        loaded = self.checked.ctx.loaded

        def locate(issue: Issue) -> Issue:
            if not issue.key or issue.pos.line is not None or issue.pos.file != issue.key:
                return issue  # already placed (a data row, a file), or not at a key
            path = tuple(int(p) if p.isdigit() else p for p in issue.key.split("."))
            while path and path not in loaded.where:
                path = path[:-1]
            if not path:  # a default: the key is not written anywhere
                return replace(issue, pos=Pos(display_path(loaded.path)))
            return replace(issue, pos=loaded.where[path].pos)

        return locate

    def origins(self) -> Origin:
        """Where each field of the plan came from: a default, the spec, a base spec, a
        profile, ``--set``, or derived by ftspec. For a spec with stages, each stage's
        (a :class:`StagedOrigin`)."""
        checked = self.checked
        if not checked.stages:
            return origins(self.plan, explain(checked.ctx.loaded, checked.ctx.spec))
        by_name = {p.stage: p for p in (*self.plan.stages, self.plan)}
        return StagedOrigin({st.name: origins(by_name[st.name], explain(ctx.loaded, ctx.spec))
                             for st, ctx, _ in checked.stages}, self.plan.stage)


def compile_plan(path: str | Path, profiles: Iterable[str] = (), sets: Iterable[str] = (), strict: bool = False,
                 allow: Iterable[str | Path] = ()) -> Compiled:
    """load -> validate -> check -> build. Raises SpecError as :func:`check_spec` does."""
    checked = check_spec(path, profiles, sets, strict, allow)
    return Compiled(build(checked), checked.warnings, checked)


def compile_spec(path: str | Path, profiles: Iterable[str] = (), sets: Iterable[str] = (), strict: bool = False,
                 allow: Iterable[str | Path] = ()) -> tuple[Plan, list[Issue]]:
    """:func:`compile_plan` as (plan, warnings)."""
    compiled = compile_plan(path, profiles, sets, strict, allow)
    return compiled.plan, compiled.warnings


def compile_located(path: str | Path, profiles: Iterable[str] = (), sets: Iterable[str] = (), strict: bool = False,
                    allow: Iterable[str | Path] = ()) -> tuple[Plan, list[Issue], Callable[[Issue], Issue]]:
    """:func:`compile_plan` as (plan, warnings, :meth:`Compiled.locator`)."""
    compiled = compile_plan(path, profiles, sets, strict, allow)
    return compiled.plan, compiled.warnings, compiled.locator()


def compile_sourced(path: str | Path, profiles: Iterable[str] = (), sets: Iterable[str] = (),
                    allow: Iterable[str | Path] = ()) -> tuple[Plan, Origin]:
    """:func:`compile_plan` (never strict) as (plan, :meth:`Compiled.origins`), for ``ftspec diff``."""
    compiled = compile_plan(path, profiles, sets, False, allow)
    return compiled.plan, compiled.origins()


__all__ = ["Checked", "Compiled", "check_spec", "compile_plan", "compile_spec", "compile_located", "compile_sourced",
           "find_root"]
