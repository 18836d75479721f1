"""The commands that read a spec and run nothing: validate, plan (and --explain), schema,
templates, diff and lock."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ftspec.cli.common import (
    allow_option,
    fail,
    out,
    print_issues,
    profile_option,
    reports_errors,
    set_option,
    spec_options,
    strict_option,
)
from ftspec.commands import diff as D
from ftspec.commands.lock import write_lock
from ftspec.commands.output import write_output
from ftspec.commands.plan import explain as explain_values
from ftspec.commands.plan import planned, show_plan, write_plan
from ftspec.commands.remote import results_fetch
from ftspec.commands.schema import SCHEMA_FILES, schema_text, write_schemas
from ftspec.commands.templates import template_names
from ftspec.commands.validate import validate as validate_spec
from ftspec.core.errors import Issue, SpecError


@click.command()
@click.argument("specs", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@profile_option
@set_option
@allow_option
@strict_option
@click.option("--quiet", "-q", is_flag=True, help="Print problems only.")
def validate(specs: tuple[Path, ...], profiles: tuple[str, ...], sets: tuple[str, ...], strict: bool, quiet: bool,
             allow: tuple[Path, ...] = ()) -> None:
    """Check one or more specs: every problem at once, each at its line."""
    issues: list[Issue] = []
    failed = 0
    for path in specs:
        try:
            warnings = validate_spec(path, profiles, sets, strict, allow)
        except SpecError as exc:
            failed += 1
            issues.extend(exc.issues)
            continue
        print_issues(warnings)
        if not quiet:
            note = f" ({len(warnings)} warning{'s' if len(warnings) != 1 else ''})" if warnings else ""
            click.echo(f"{path}: ok{note}")
    if failed:
        fail(SpecError(issues))


@click.command()
@spec_options
@click.option("--json", "as_json", is_flag=True, help="Print the plan as canonical JSON.")
@click.option("--output", "-o", type=click.Path(path_type=Path), help="Write the plan's JSON to FILE.")
@strict_option
@click.option("--explain", is_flag=True, help="Instead of the plan, show where each effective value of the spec comes "
              "from: a default, the spec, a base spec, a profile or --set, with FILE:LINE (a JSON list with --json).")
@reports_errors
def plan(spec: Path, profiles: tuple[str, ...], sets: tuple[str, ...], as_json: bool, output: Path | None, strict: bool,
         allow: tuple[Path, ...] = (), explain: bool = False) -> None:
    """Compile a spec and show the effective plan: every default, every derived value.

    The text ends with how long each step that will run may take, where an earlier run
    beside it measured the same step of the same model (the most recent such run); the
    plan's JSON and id never hold these figures."""
    compiled, warnings, sweep = planned(spec, profiles, sets, strict, allow)
    print_issues(warnings)
    if output is not None:
        # -o FILE writes the file and nothing else (a user redirecting the output wants
        # nothing mixed in); -o - writes the plan's JSON to the standard output, once.
        write_plan(output, compiled, spec, out)
    if explain:
        out(explain_values(spec, profiles, sets, allow, as_json))
    elif output is None:
        click.echo(show_plan(compiled, as_json, color=sys.stdout.isatty(), spec=spec), nl=not as_json)
        if sweep is not None and not as_json:
            click.echo(sweep)


@click.command()
@click.option("--output", "-o", type=click.Path(path_type=Path), help="Write the schema to FILE.")
@click.option("--markdown", is_flag=True, help="Print the spec reference as Markdown instead.")
@click.option("--of", "of", type=click.Choice(list(SCHEMA_FILES)), default="spec", show_default=True,
              help="Which file's schema: a spec, plan.json, a run's manifest.json or the report's metrics.json.")
@click.option("--all", "all_dir", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Write every schema into DIR (as published in the repository's schema/).")
@reports_errors
def schema(output: Path | None, markdown: bool, of: str, all_dir: Path | None) -> None:
    """Print the JSON Schema of a spec (for editors), of plan.json, manifest.json or
    metrics.json, or the spec reference as Markdown."""
    if all_dir is not None:
        written = write_schemas(all_dir)
        click.echo(f"wrote {written} schemas into {all_dir}", err=True)
        return
    text = schema_text(of, markdown)
    if output is not None:
        write_output(output, text, out)
    else:
        out(text)


@click.command()
def templates() -> None:
    """List the built-in templates (use them as `{builtin: NAME}`)."""
    for name in template_names():
        click.echo(name)


@click.command()
@click.argument("specs", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--git", "rev", metavar="REV", help="Compare SPEC with its version at git revision REV.")
@click.option("--format", "fmt", type=click.Choice(["text", "markdown", "json"]), default="text", show_default=True)
@profile_option
@set_option
@allow_option
@click.option("--exit-code", is_flag=True, help="Exit 1 when the plans differ (for CI).")
@click.option("--results", is_flag=True, help="Add each side's evaluation results from the step store (base, old "
              "and new tuned metrics with their intervals, gates passed or failed): the pull-request comment.")
@click.option("--store", metavar="URL", default=None, help="With --results: the shared step store to look in when "
              "the local one lacks a side's results (default: FTSPEC_STORE, else the spec's output.store).")
@reports_errors
def diff(specs: tuple[Path, ...], rev: str | None, fmt: str, profiles: tuple[str, ...], sets: tuple[str, ...],
         exit_code: bool, allow: tuple[Path, ...] = (), results: bool = False, store: str | None = None) -> None:
    """What a change does to the effective plan: OLD NEW, or --git REV SPEC.

    Each changed value is shown as old → new, including values that changed through
    defaults, extends or profiles, with the steps that would run again.
    """
    if store is not None and not results:
        raise click.UsageError("--store goes with --results")
    fetch = results_fetch(store, specs[-1], profiles, sets, allow) if results else None
    if rev is not None:
        if len(specs) != 1:
            raise click.UsageError("with --git REV, give exactly one SPEC")
        result, found = (D.diff_revision_results(rev, specs[0], profiles, sets, allow, fetch=fetch) if results
                         else (D.diff_revision(rev, specs[0], profiles, sets, allow), None))
    else:
        if len(specs) != 2:
            raise click.UsageError("give OLD and NEW specs (or plan files), or --git REV SPEC")
        result, found = (D.diff_files_results(specs[0], specs[1], profiles, sets, allow, fetch=fetch) if results
                         else (D.diff_files(specs[0], specs[1], profiles, sets, allow), None))
    if fmt == "markdown":
        out(D.render_markdown(result, found))
    elif fmt == "json":
        out(D.render_json(result, found))
    else:
        out(D.render_text(result, color=sys.stdout.isatty(), results=found))
    if exit_code and not result.is_empty():
        sys.exit(1)


@click.command()
@spec_options
@reports_errors
def lock(spec: Path, profiles: tuple[str, ...], sets: tuple[str, ...], allow: tuple[Path, ...] = ()) -> None:
    """Pin what the spec leaves floating: model revision, data fingerprints, template
    hashes, library versions. Writes SPEC's .lock.json next to it (the only command
    that looks names up on the hub)."""
    path, warnings = write_lock(spec, profiles, sets, allow)
    print_issues(warnings)
    click.echo(f"wrote {path}")
