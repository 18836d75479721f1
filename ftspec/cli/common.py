"""What every `ftspec` command shares: the options that name a spec's plan, and how a
failure is printed and which exit status it gives."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NoReturn

import click

from ftspec.core.errors import EXIT_USAGE, Detached, Issue, RunFailed, SpecError

EXIT_INTERRUPTED = 130  # as a shell reports a process ended by Ctrl-C

profile_option = click.option("--profile", "-p", "profiles", multiple=True, metavar="NAME",
                              help="Apply a profile defined in the spec (repeatable; applied in order).")
allow_option = click.option("--allow-path", "allow", multiple=True, metavar="DIR",
                            type=click.Path(file_okay=False, path_type=Path),
                            help="Let the spec name files under DIR, outside its repository (repeatable; "
                                 "also FTSPEC_ALLOW_PATHS).")
set_option = click.option("--set", "-s", "sets", multiple=True, metavar="KEY=VALUE",
                          help="Override one value, parsed as YAML: --set training.epochs=3 (repeatable).")
strict_option = click.option("--strict", is_flag=True, help="Treat warnings as errors.")


def spec_options(command: Callable) -> Callable:
    """SPEC, --profile, --set and --allow-path: how every spec-reading command names its plan."""
    for option in (allow_option, set_option, profile_option,
                   click.argument("spec", type=click.Path(dir_okay=False, path_type=Path))):
        command = option(command)
    return command


def out(text: str) -> None:
    """Text as it is, on the standard output (it carries its own newlines)."""
    click.echo(text, nl=False)


def warn(issue: Issue) -> None:
    """One issue, one line on the standard error."""
    click.echo(issue.format(), err=True)


def print_issues(issues: Iterable[Issue]) -> None:
    for issue in issues:
        warn(issue)


def fail(exc: SpecError) -> NoReturn:
    """Every issue, a line each, then how many errors (and warnings, under --strict); exit 2."""
    print_issues(exc.issues)
    errors = sum(1 for i in exc.issues if i.is_error)
    warnings = len(exc.issues) - errors
    parts = [f"{errors} error{'s' if errors != 1 else ''}"]
    if warnings:
        parts.append(f"{warnings} warning{'s' if warnings != 1 else ''} (--strict)")
    click.echo(f"ftspec: {', '.join(parts)}", err=True)
    sys.exit(EXIT_USAGE)


def stopped(message: str, status: int = 1) -> NoReturn:
    """One line on the standard error, and exit."""
    click.echo(f"ftspec: {message}", err=True)
    sys.exit(status)


def reports_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Map what a command raises to its output and exit status: a SpecError is its issues
    and status 2; Detached (Ctrl-C while a Bedrock job runs on) says how to attach again,
    status 130; any other RunFailed is one line, status 1."""

    @functools.wraps(command)
    def reported(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except SpecError as exc:
            fail(exc)
        except Detached as exc:
            click.echo(f"\nftspec: {exc}", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except RunFailed as exc:
            stopped(str(exc))

    return reported
