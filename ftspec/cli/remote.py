"""The commands about the shared step store: push and pull (a run fetches and uploads by
itself; `ftspec gc --remote` is with gc)."""

from __future__ import annotations

from pathlib import Path

import click

from ftspec.cli.common import reports_errors, spec_options
from ftspec.commands import remote as R

store_option = click.option("--store", metavar="URL", default=None,
                            help="The shared step store: s3://bucket/prefix or a folder on a shared filesystem "
                                 f"(default: {R.ENV}, else the spec's output.store).")


@click.command()
@spec_options
@store_option
@reports_errors
def push(spec: Path, profiles: tuple[str, ...], sets: tuple[str, ...], store: str | None,
         allow: tuple[Path, ...] = ()) -> None:
    """Upload the steps of SPEC's plan computed here that the shared store lacks."""
    R.push(spec, profiles, sets, allow, store=store, echo=click.echo)


@click.command()
@spec_options
@store_option
@reports_errors
def pull(spec: Path, profiles: tuple[str, ...], sets: tuple[str, ...], store: str | None,
         allow: tuple[Path, ...] = ()) -> None:
    """Fetch the steps of SPEC's plan that the shared store has and this machine lacks
    (each checked against its sha256 manifest); `ftspec run` then reuses them."""
    R.pull(spec, profiles, sets, allow, store=store, echo=click.echo)
