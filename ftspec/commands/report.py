"""`ftspec report`: rebuild a finished run's report from its evaluation results."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from ftspec.catalog.steps import REPORT
from ftspec.commands.run import run
from ftspec.core.errors import Issue

if TYPE_CHECKING:  # the executor imports the runtime; only its result type is named here
    from ftspec.runtime.result import RunResult


def report(spec: Path, profiles: Iterable[str] = (), sets: Iterable[str] = (), *, allow: Iterable[str | Path] = (),
           echo: Callable[[str], None] = print, warn: Callable[[Issue], None] | None = None) -> RunResult:
    """Run the report step again, and only it. Raises as :func:`ftspec.commands.run.run` does."""
    return run(spec, profiles, sets, False, force={REPORT.name}, only={REPORT.name}, allow=allow, echo=echo, warn=warn)
