"""What a backend is to the executor: a table of step implementations, and the few things
the executor asks of the place a plan runs (what to set up before any step computes, and
how the run's header and manifest describe it). One :class:`Backend` per package under
ftspec/backends/, listed in :data:`ftspec.backends.BACKENDS`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from ftspec.plan.model import Plan
from ftspec.runtime.context import StepContext

# function(view of the plan, context, the step's output folder) -> what the step did
StepFunction = Callable[[Any, StepContext, Path], dict]


def _nothing_to_set(plan: Plan) -> None:
    return None


def _nothing_to_record(run_dir: Path) -> dict:
    return {}


@dataclass(frozen=True)
class Backend:
    name: str
    steps: Mapping[str, StepFunction]  # step name (ftspec.plan.keys) -> its implementation here
    # The header's device line: (plan, what setup returned, None when nothing runs) -> text.
    where: Callable[[Plan, dict | None], str]
    # The header's "how it trains" part of the data line.
    schedule: Callable[[Plan], str]
    # Called once before the first step computes (never when every step is complete);
    # what it returns is shown by ``where``.
    setup: Callable[[Plan], dict | None] = _nothing_to_set
    # Extra top-level entries of manifest.json, read from the finished run directory.
    manifest: Callable[[Path], dict] = _nothing_to_record

    def step(self, name: str) -> StepFunction:
        try:
            return self.steps[name]
        except KeyError:
            raise LookupError(f"backend {self.name} has no implementation of step {name}") from None
