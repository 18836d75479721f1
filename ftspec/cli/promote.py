"""`ftspec promote`: record which run's model a name (prod, staging) means."""

from __future__ import annotations

from pathlib import Path

import click

from ftspec.cli.common import reports_errors, spec_options
from ftspec.commands.promote import promote as promote_run


@click.command()
@spec_options
@click.option("--to", "to", required=True, metavar="NAME",
              help="The name to promote the run's model as (prod, staging): written to promoted/NAME.json.")
@click.option("--force", is_flag=True, help="Promote a run whose gates failed (the record says forced: true).")
@reports_errors
def promote(spec: Path, profiles: tuple[str, ...], sets: tuple[str, ...], to: str, force: bool,
            allow: tuple[Path, ...] = ()) -> None:
    """Record in the repository (promoted/NAME.json, to commit and review) that the finished run
    of SPEC — SPEC@VARIANT for a run directory named `<name>@VARIANT`, or the same --profile and
    --set values as `ftspec run` — is NAME: its plan id, run directory, model sha256 and gates.
    A run whose gates failed is refused (exit 2) unless --force; `ftspec export --from NAME`
    exports that model."""
    click.echo(promote_run(spec, profiles, sets, allow, to=to, force=force).describe())
