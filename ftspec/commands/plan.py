"""`ftspec plan`: a spec compiled into its plan, shown as text or JSON, or explained."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ftspec.commands.apply import plan_file_text
from ftspec.commands.output import write_output
from ftspec.core.errors import Issue
from ftspec.core.paths import find_root
from ftspec.plan.compile import compile_plan
from ftspec.plan.describe import render_plan
from ftspec.plan.model import Plan
from ftspec.plan.sweep import describe_sweep
from ftspec.spec.provenance import explain_spec, render_json, render_text
from ftspec.store.estimates import estimate_lines
from ftspec.store.protect import protected


def effective_plan(spec: Path, profiles: Iterable[str] = (), sets: Iterable[str] = (), strict: bool = False,
                   allow: Iterable[str | Path] = ()) -> tuple[Plan, list[Issue]]:
    """The effective plan and the spec's warnings. Raises SpecError."""
    plan, warnings, _ = planned(spec, profiles, sets, strict, allow)
    return plan, warnings


def planned(spec: Path, profiles: Iterable[str] = (), sets: Iterable[str] = (), strict: bool = False,
            allow: Iterable[str | Path] = ()) -> tuple[Plan, list[Issue], str | None]:
    """The effective plan, the spec's warnings, and the line that says what the spec's
    ``sweep:`` section would run (None without one: the sweep is not part of the plan). Raises SpecError."""
    compiled = compile_plan(spec, profiles, sets, strict, allow)
    return compiled.plan, compiled.warnings, describe_sweep(compiled.checked.ctx.spec.sweep)


def write_plan(output: Path, plan: Plan, spec: Path, echo) -> bool:
    """``plan -o FILE``: the plan file (ftspec.commands.apply: the plan's JSON and what it was
    made with) that ``run --plan FILE`` applies, never written over the spec, an input of the
    plan, a run directory or the store (``-`` writes to ``echo``). Returns whether a file was written."""
    root = find_root(Path(spec))
    return write_output(output, plan_file_text(plan, root), echo, protected(plan, root))


def show_plan(plan: Plan, as_json: bool = False, color: bool = False, spec: Path | None = None) -> str:
    """The plan as canonical JSON (no final newline), or as the summary a person reads; with
    ``spec``, the summary ends with how long the steps that will run may take, where an
    earlier run measured them (ftspec.store.estimates: shown only, never in the plan's JSON)."""
    if as_json:
        return plan.to_json()
    text = render_plan(plan, color=color)
    if spec is None:
        return text
    root = find_root(Path(spec))
    every = [*plan.stages, plan] if plan.stages else [plan]
    lines = [line for p in every for line in estimate_lines(p, root, f"stage {p.stage}: " if plan.stages else "")]
    return "\n".join([text, *lines])


def explain(spec: Path, profiles: Iterable[str] = (), sets: Iterable[str] = (), allow: Iterable[str | Path] = (),
            as_json: bool = False) -> str:
    """Where each effective value of the spec comes from (a default, the spec, a base spec,
    a profile or --set, with FILE:LINE), as a table or a JSON list. Raises SpecError."""
    rows = explain_spec(spec, profiles, sets, allow)
    return render_json(rows) if as_json else render_text(rows)
