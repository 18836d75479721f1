"""`ftspec eval`: score the base and the trained model again, without training."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from ftspec.catalog.steps import EVAL_BASE, EVAL_TUNED, GENERATE_BASE, GENERATE_TUNED, REPORT
from ftspec.commands.run import run
from ftspec.core.errors import Issue

if TYPE_CHECKING:  # the executor imports the runtime; only its result type is named here
    from ftspec.runtime.result import RunResult

# What evaluating again runs: both models' answers and scores, and the report built on them.
EVALUATION_STEPS = frozenset({GENERATE_BASE.name, EVAL_BASE.name, GENERATE_TUNED.name, EVAL_TUNED.name, REPORT.name})


def evaluate(spec: Path, profiles: Iterable[str] = (), sets: Iterable[str] = (), *, allow: Iterable[str | Path] = (),
             echo: Callable[[str], None] = print, warn: Callable[[Issue], None] | None = None) -> RunResult:
    """Generate and score with the base and the trained model again and rebuild the report,
    reusing the trained model (a spec that has not run yet is refused with a SpecError).
    Raises as :func:`ftspec.commands.run.run` does."""
    return run(spec, profiles, sets, False, force=EVALUATION_STEPS, only=EVALUATION_STEPS, allow=allow, echo=echo,
               warn=warn)
