"""`ftspec status`: each step of a spec's plan with its key and state."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ftspec.core.paths import find_root
from ftspec.plan.compile import compile_spec
from ftspec.plan.model import Plan
from ftspec.store.rundir import step_states


@dataclass(frozen=True)
class PlanStatus:
    """One plan (a spec's, or one stage's) and the state of each of its steps: done, stale,
    missing or running, by step name."""

    plan: Plan
    states: dict[str, str]


@dataclass(frozen=True)
class Status:
    """A spec's plan and, for each plan that runs (each stage, in order, or the one plan),
    its steps' states."""

    plan: Plan
    plans: list[PlanStatus]


def status(spec: Path, profiles: Iterable[str] = (), sets: Iterable[str] = (),
           allow: Iterable[str | Path] = ()) -> Status:
    """The state of every step of the spec's plan, read from its run directories (each
    stage has its own). Raises SpecError."""
    plan, _ = compile_spec(spec, profiles, sets, allow=allow)
    root = find_root(spec)
    every = [*plan.stages, plan]
    return Status(plan, [PlanStatus(one, step_states(one, root / one.output.dir)) for one in every])


def render_status(found: Status) -> list[str]:
    """The lines `ftspec status` prints: a block per stage, a line per step."""
    plan = found.plan
    lines = []
    if plan.stages:
        lines.append(f"{plan.name}  plan {plan.short_id}  {len(found.plans)} stages: "
                     f"{' → '.join(p.plan.stage for p in found.plans)}")
    for i, one in enumerate(found.plans, 1):
        head = f"stage {i}/{len(found.plans)} {one.plan.stage}" if plan.stages else one.plan.name
        lines.append(f"{head}  plan {one.plan.short_id}  run directory {one.plan.output.dir}")
        for step in one.plan.steps:
            lines.append(f"  {step.name:<16} {step.key[:12]}  {one.states[step.name]}")
    return lines
