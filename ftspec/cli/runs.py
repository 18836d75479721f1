"""The commands about a folder of runs: runs (list them) and gc (free the step store)."""

from __future__ import annotations

from pathlib import Path

import click

from ftspec.cli.common import reports_errors
from ftspec.commands.remote import gc_remote
from ftspec.commands.runs import gc as collect_garbage
from ftspec.commands.runs import render_runs
from ftspec.commands.runs import runs as list_runs


@click.command()
@click.argument("directory", required=False, default="runs", type=click.Path(file_okay=False, path_type=Path))
def runs(directory: Path) -> None:
    """List the runs in DIRECTORY (default: runs/) with plan ids and headline metrics."""
    listing = list_runs(directory)
    for problem in listing.problems:
        click.echo(f"ftspec: {problem}", err=True)
    for run in listing.runs:
        for problem in run.problems:
            click.echo(f"ftspec: {problem}", err=True)
    for line in render_runs(listing):
        click.echo(line)


@click.command()
@click.argument("directory", required=False, default="runs", type=click.Path(file_okay=False, path_type=Path))
@click.option("--dry-run", "-n", is_flag=True, help="Say what would be removed, and remove nothing.")
@click.option("--keep", type=click.IntRange(min=0), default=0, show_default=True, metavar="N",
              help="Also keep, for each step, the N most recently finished outputs no run refers to.")
@click.option("--remote", is_flag=True, help="Collect the shared step store (--store or FTSPEC_STORE) instead: what "
              "no run directory in DIRECTORY and no promotion record refers to, uploaded before --older-than.")
@click.option("--store", metavar="URL", default=None, help="The shared step store, with --remote (default: "
              "FTSPEC_STORE).")
@click.option("--older-than", "older_than", type=click.IntRange(min=0), default=30, show_default=True,
              metavar="DAYS", help="With --remote: keep every entry uploaded in the last DAYS days (other machines' "
              "runs may need them).")
@reports_errors
def gc(directory: Path, dry_run: bool, keep: int, remote: bool, store: str | None, older_than: int) -> None:
    """Remove the step outputs in DIRECTORY's store (default: runs/) that no run directory refers to."""
    if remote:
        gc_remote(directory, store, dry_run, keep, older_than, echo=click.echo)
        return
    if store is not None:
        raise click.UsageError("--store goes with --remote")
    collect_garbage(directory, dry_run, keep, echo=click.echo)
