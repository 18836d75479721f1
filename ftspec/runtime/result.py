"""What a run did, step by step: made by the executor (ftspec.backends.executor), read by
the run's closing lines (ftspec.runtime.report.console), the CLI and tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ftspec.catalog import steps
from ftspec.plan.model import Plan


@dataclass
class StepOutcome:
    name: str
    key: str
    folder: Path
    state: str  # "ran", "reused" or "fetched" (from the shared step store)
    seconds: float | None = None
    result: dict | None = None  # what the step returned, when it ran


@dataclass
class RunResult:
    """What a run did, for the CLI to decide its exit status and for tests to read."""

    plan: Plan
    run_dir: Path
    steps: list[StepOutcome]
    report: dict | None  # the report step's metrics.json: metrics, gates
    seconds: float
    stages: list["RunResult"] = field(default_factory=list)  # a spec with stages: the earlier stages' runs

    def outcome(self, name: str) -> StepOutcome:
        return next(s for s in self.steps if s.name == name)

    def step_dir(self, name: str) -> Path:
        return self.run_dir / steps.folder(name)

    @property
    def failed_gates(self) -> list[dict]:
        """The gates not met, of this run and of its earlier stages (named ``stage:gate``)."""
        failed = [{**g, "gate": f"{s.plan.stage}:{g.get('gate')}"} for s in self.stages for g in s.failed_gates]
        own = [g for g in (self.report or {}).get("gates", []) if not g.get("passed")]
        if self.plan.stage is not None:
            own = [{**g, "gate": f"{self.plan.stage}:{g.get('gate')}"} for g in own]
        return failed + own

    @property
    def fetched(self) -> list[str]:
        return [s.name for s in self.steps if s.state == "fetched"]

    @property
    def ran(self) -> list[str]:
        return [s.name for s in self.steps if s.state == "ran"]
