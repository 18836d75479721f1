"""The commands that run a spec's plan or look at its run: run, eval, report, status, stop."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ftspec.cli.common import (
    EXIT_INTERRUPTED,
    allow_option,
    profile_option,
    reports_errors,
    set_option,
    spec_options,
    strict_option,
    warn,
)
from ftspec.commands.evaluate import evaluate
from ftspec.commands.report import report as rebuild_report
from ftspec.commands.run import UnknownStep, forced_steps
from ftspec.commands.run import run as run_spec
from ftspec.commands.status import render_status
from ftspec.commands.status import status as spec_status
from ftspec.commands.stop import stop as stop_job
from ftspec.core.errors import EXIT_GATE

if TYPE_CHECKING:  # the executor imports the runtime; only its result type is named here
    from ftspec.runtime.result import RunResult


def _parse_force(value: str | None) -> set[str]:
    try:
        return forced_steps(value)
    except UnknownStep as exc:
        raise click.BadParameter(str(exc), param_hint="--force") from None


def _finish(execute: Callable[[], RunResult]) -> None:
    """Run, and exit as the run ends: 0, 2 (the user's input), 3 (a gate), 130 (Ctrl-C)."""
    try:
        result = execute()
    except KeyboardInterrupt:
        click.echo("\nftspec: interrupted; run the same command again to resume from the last checkpoint", err=True)
        sys.exit(EXIT_INTERRUPTED)
    failed = result.failed_gates
    if failed:
        names = ", ".join(str(g.get("gate")) for g in failed)
        click.echo(f"ftspec: {len(failed)} evaluation gate{'s' if len(failed) != 1 else ''} not met: {names}", err=True)
        sys.exit(EXIT_GATE)


@click.command()
@click.argument("spec", required=False, type=click.Path(dir_okay=False, path_type=Path))
@profile_option
@set_option
@allow_option
@strict_option
@click.option("--force", "force", is_flag=False, flag_value="all", default=None, metavar="[STEP,…]",
              help="Run steps again even when they are up to date: all of them, or the named ones "
                   "(--force train,eval_tuned).")
@click.option("--locked", is_flag=True, help="Refuse to run when anything pinned in the spec's lock file has drifted.")
@click.option("--plan", "plan_file", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Run exactly the plan `ftspec plan SPEC -o FILE` wrote: its spec is compiled again with the "
                   "profiles and --set values it records, and any difference (a data byte, a template, a model "
                   "file, a pinned library version) refuses the run. SPEC may be left out (then the plan's spec "
                   "in the repository of the working directory); given, it must be the plan's.")
@click.option("--store", metavar="URL", default=None,
              help="A step store shared by every machine that runs the spec: s3://bucket/prefix or a folder on a "
                   "shared filesystem; steps there are fetched, not computed, and what runs here is uploaded "
                   "(default: FTSPEC_STORE, else the spec's output.store).")
@reports_errors
def run(spec: Path | None, profiles: tuple[str, ...], sets: tuple[str, ...], strict: bool, force: str | None,
        locked: bool, allow: tuple[Path, ...] = (), plan_file: Path | None = None, store: str | None = None) -> None:
    """Compile a spec and execute its plan: prepare data, evaluate, train, report.

    Steps already done under the same key are reused; a training step cut off by a
    crash resumes from its last checkpoint. Exits 3 when an evaluation gate is not met.
    """
    if plan_file is None and spec is None:
        raise click.UsageError("give SPEC, or --plan FILE")
    if plan_file is not None and (profiles or sets):
        raise click.UsageError("--plan runs the plan as it was made: its --profile and --set values are recorded in "
                               "it; make a new plan to change them")
    if plan_file is not None and locked:
        raise click.UsageError("--plan and --locked cannot be combined: the plan file records the library versions "
                               "it was made with and refuses others; check the lock when making the plan")
    forced = _parse_force(force)
    _finish(lambda: run_spec(spec, profiles, sets, strict, force=forced, locked=locked, allow=allow, echo=click.echo,
                             warn=warn, plan_file=plan_file, store=store))


@click.command("eval")
@spec_options
@reports_errors
def eval_(spec: Path, profiles: tuple[str, ...], sets: tuple[str, ...], allow: tuple[Path, ...] = ()) -> None:
    """Evaluate the base and the trained model again (generate and score), without training, and rebuild the report."""
    _finish(lambda: evaluate(spec, profiles, sets, allow=allow, echo=click.echo, warn=warn))


@click.command()
@spec_options
@reports_errors
def report(spec: Path, profiles: tuple[str, ...], sets: tuple[str, ...], allow: tuple[Path, ...] = ()) -> None:
    """Rebuild the report of a finished run from its evaluation results."""
    _finish(lambda: rebuild_report(spec, profiles, sets, allow=allow, echo=click.echo, warn=warn))


@click.command()
@spec_options
@reports_errors
def status(spec: Path, profiles: tuple[str, ...], sets: tuple[str, ...], allow: tuple[Path, ...] = ()) -> None:
    """Each step of the spec's plan with its key and state: done, stale, missing, running."""
    for line in render_status(spec_status(spec, profiles, sets, allow)):
        click.echo(line)


@click.command()
@spec_options
@reports_errors
def stop(spec: Path, profiles: tuple[str, ...], sets: tuple[str, ...], allow: tuple[Path, ...] = ()) -> None:
    """Stop the Amazon Bedrock customization job the spec's train step started (a local run
    stops with Ctrl-C). Running the spec again afterwards starts a new job."""
    job_arn = stop_job(spec, profiles, sets, allow)
    click.echo(f"asked Bedrock to stop {job_arn}; `ftspec run {spec}` afterwards starts a new job")
