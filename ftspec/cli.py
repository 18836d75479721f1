"""The `ftspec` command.

Light commands (validate, plan, schema) import only the spec compiler; anything
that needs torch imports it inside the command that needs it, so a typo in a spec
is reported in a fraction of the time it takes to import torch.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import click

from ftspec import __version__
from ftspec.errors import EXIT_GATE, EXIT_USAGE, Issue, SpecError

_profile_option = click.option("--profile", "-p", "profiles", multiple=True, metavar="NAME",
                               help="Apply a profile defined in the spec (repeatable; applied in order).")
_set_option = click.option("--set", "-s", "sets", multiple=True, metavar="KEY=VALUE",
                           help="Override one value, parsed as YAML: --set training.epochs=3 (repeatable).")


def _print_issues(issues: list[Issue]) -> None:
    for issue in issues:
        click.echo(issue.format(), err=True)


def _fail(exc: SpecError) -> None:
    _print_issues(exc.issues)
    errors = sum(1 for i in exc.issues if i.is_error)
    warnings = len(exc.issues) - errors
    parts = [f"{errors} error{'s' if errors != 1 else ''}"]
    if warnings:
        parts.append(f"{warnings} warning{'s' if warnings != 1 else ''} (--strict)")
    click.echo(f"ftspec: {', '.join(parts)}", err=True)
    sys.exit(EXIT_USAGE)


def write_atomic(path: Path, text: str) -> None:
    """Write a file whole or not at all: temporary file, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="ftspec")
def main() -> None:
    """ftspec: one YAML spec per fine-tuning job, validated, planned, reviewed and run."""


@main.command()
@click.argument("specs", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@_profile_option
@_set_option
@click.option("--strict", is_flag=True, help="Treat warnings as errors.")
@click.option("--quiet", "-q", is_flag=True, help="Print problems only.")
def validate(specs: tuple[Path, ...], profiles: tuple[str, ...], sets: tuple[str, ...], strict: bool, quiet: bool) -> None:
    """Check one or more specs: every problem at once, each at its line."""
    from ftspec.compile import check_spec

    issues: list[Issue] = []
    failed = 0
    for path in specs:
        try:
            checked = check_spec(path, profiles, sets, strict)
        except SpecError as exc:
            failed += 1
            issues.extend(exc.issues)
            continue
        _print_issues(checked.warnings)
        if not quiet:
            note = f" ({len(checked.warnings)} warning{'s' if len(checked.warnings) != 1 else ''})" if checked.warnings else ""
            click.echo(f"{path}: ok{note}")
    if failed:
        _fail(SpecError(issues))


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False, path_type=Path))
@_profile_option
@_set_option
@click.option("--json", "as_json", is_flag=True, help="Print the plan as canonical JSON.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Write the plan's JSON to FILE.")
@click.option("--strict", is_flag=True, help="Treat warnings as errors.")
def plan(spec: Path, profiles: tuple[str, ...], sets: tuple[str, ...], as_json: bool, output: Path | None, strict: bool) -> None:
    """Compile a spec and show the effective plan: every default, every derived value."""
    from ftspec.compile import compile_spec
    from ftspec.summary import render_plan

    try:
        result, warnings = compile_spec(spec, profiles, sets, strict)
    except SpecError as exc:
        _fail(exc)
        return
    _print_issues(warnings)
    if output is not None:
        write_atomic(output, result.to_json())
        click.echo(f"wrote {output} (plan {result.short_id})", err=True)
    if as_json:
        click.echo(result.to_json(), nl=False)
    elif output is None:
        click.echo(render_plan(result, color=sys.stdout.isatty()))


@main.command()
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), help="Write the schema to FILE.")
@click.option("--markdown", is_flag=True, help="Print the spec reference as Markdown instead.")
def schema(output: Path | None, markdown: bool) -> None:
    """Print the JSON Schema of a spec (for editors), or the reference as Markdown."""
    import json

    from ftspec.reference import markdown_reference
    from ftspec.spec import json_schema

    text = markdown_reference() if markdown else json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"
    if output is not None:
        write_atomic(output, text)
    else:
        click.echo(text, nl=False)


def _execute(spec: Path, profiles, sets, strict: bool, force=frozenset(), only=None) -> None:
    """Compile, execute, and exit as the run ends: 0, 2 (the user's input), 3 (a gate), 130 (Ctrl-C)."""
    from ftspec.compile import compile_spec, find_root

    try:
        plan_, warnings = compile_spec(spec, profiles, sets, strict)
    except SpecError as exc:
        _fail(exc)
        return
    _print_issues(warnings)
    from ftspec.runtime.run import execute  # the heavy imports start here

    try:
        ctx = execute(plan_, find_root(spec), echo=lambda line: click.echo(line), force=force, only=only)
    except SpecError as exc:
        _fail(exc)
        return
    except KeyboardInterrupt:
        click.echo("\nftspec: interrupted; run the same command again to resume from the last checkpoint", err=True)
        sys.exit(130)
    report = ctx.run_dir / "metrics.json"
    if report.exists():
        import json

        failed = [g for g in json.loads(report.read_text(encoding="utf-8")).get("gates", []) if not g["passed"]]
        if failed:
            names = ", ".join(g["gate"] for g in failed)
            click.echo(f"ftspec: {len(failed)} evaluation gate{'s' if len(failed) != 1 else ''} not met: {names}", err=True)
            sys.exit(EXIT_GATE)


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False, path_type=Path))
@_profile_option
@_set_option
@click.option("--strict", is_flag=True, help="Treat warnings as errors.")
def run(spec: Path, profiles: tuple[str, ...], sets: tuple[str, ...], strict: bool) -> None:
    """Compile a spec and execute its plan: prepare data, evaluate, train, report.

    Steps already done under the same key are reused; a training step cut off by a
    crash resumes from its last checkpoint. Exits 3 when an evaluation gate is not met.
    """
    _execute(spec, profiles, sets, strict)


@main.command("eval")
@click.argument("spec", type=click.Path(dir_okay=False, path_type=Path))
@_profile_option
@_set_option
def eval_(spec: Path, profiles: tuple[str, ...], sets: tuple[str, ...]) -> None:
    """Score the base and the trained model again, without training, and rebuild the report."""
    _execute(spec, profiles, sets, False, force={"eval_base", "eval_tuned", "report"}, only={"eval_base", "eval_tuned", "report"})


@main.command()
@click.argument("spec", type=click.Path(dir_okay=False, path_type=Path))
@_profile_option
@_set_option
def report(spec: Path, profiles: tuple[str, ...], sets: tuple[str, ...]) -> None:
    """Rebuild the report of a finished run from its evaluation results."""
    _execute(spec, profiles, sets, False, force={"report"}, only={"report"})


@main.command()
def templates() -> None:
    """List the built-in templates (use them as `{builtin: NAME}`)."""
    from ftspec.templates import builtin_names

    for name in builtin_names():
        click.echo(name)


if __name__ == "__main__":  # pragma: no cover
    main()
