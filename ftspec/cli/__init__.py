"""The `ftspec` command.

Light commands (validate, plan, schema) import only the spec compiler; anything
that needs torch imports it inside the command that needs it, so a typo in a spec
is reported in a fraction of the time it takes to import torch.
"""

from __future__ import annotations

import errno
import json
import sys
from pathlib import Path

import click

from ftspec import __version__
from ftspec.core.errors import EXIT_GATE, EXIT_USAGE, Issue, Pos, RunFailed, SpecError
from ftspec.core.io import write_atomic, write_json

_profile_option = click.option("--profile", "-p", "profiles", multiple=True, metavar="NAME",
                               help="Apply a profile defined in the spec (repeatable; applied in order).")
_allow_option = click.option("--allow-path", "allow", multiple=True, metavar="DIR",
                             type=click.Path(file_okay=False, path_type=Path),
                             help="Let the spec name files under DIR, outside its repository (repeatable; also FTSPEC_ALLOW_PATHS).")
_set_option = click.option("--set", "-s", "sets", multiple=True, metavar="KEY=VALUE",
                           help="Override one value, parsed as YAML: --set training.epochs=3 (repeatable).")


def _spec_options(command):
    """SPEC, --profile, --set and --allow-path: how every spec-reading command names its plan."""
    for option in (_allow_option, _set_option, _profile_option,
                   click.argument("spec", type=click.Path(dir_okay=False, path_type=Path))):
        command = option(command)
    return command


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


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="ftspec")
def main() -> None:
    """ftspec: one YAML spec per fine-tuning job, validated, planned, reviewed and run."""


@main.command()
@click.argument("specs", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@_profile_option
@_set_option
@_allow_option
@click.option("--strict", is_flag=True, help="Treat warnings as errors.")
@click.option("--quiet", "-q", is_flag=True, help="Print problems only.")
def validate(specs: tuple[Path, ...], profiles: tuple[str, ...], sets: tuple[str, ...], strict: bool, quiet: bool, allow: tuple[Path, ...] = ()) -> None:
    """Check one or more specs: every problem at once, each at its line."""
    from ftspec.plan.build import check_spec

    issues: list[Issue] = []
    failed = 0
    for path in specs:
        try:
            checked = check_spec(path, profiles, sets, strict, allow)
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
@_spec_options
@click.option("--json", "as_json", is_flag=True, help="Print the plan as canonical JSON.")
@click.option("--output", "-o", type=click.Path(path_type=Path), help="Write the plan's JSON to FILE.")
@click.option("--strict", is_flag=True, help="Treat warnings as errors.")
@click.option("--explain", is_flag=True, help="Instead of the plan, show where each effective value of the spec comes from: "
              "a default, the spec, a base spec, a profile or --set, with FILE:LINE (a JSON list with --json).")
def plan(spec: Path, profiles: tuple[str, ...], sets: tuple[str, ...], as_json: bool, output: Path | None, strict: bool, allow: tuple[Path, ...] = (), explain: bool = False) -> None:
    """Compile a spec and show the effective plan: every default, every derived value."""
    from ftspec.plan.build import compile_spec
    from ftspec.plan.describe import render_plan

    try:
        result, warnings = compile_spec(spec, profiles, sets, strict, allow)
    except SpecError as exc:
        _fail(exc)
        return
    _print_issues(warnings)
    if output is not None:
        # -o FILE writes the file and nothing else (a user redirecting the output wants
        # nothing mixed in); -o - writes the plan's JSON to the standard output, once.
        _write_output(output, result.to_json())
    if explain:
        from ftspec.spec.provenance import explain_spec, render_json, render_text

        rows = explain_spec(spec, profiles, sets, allow)
        click.echo(render_json(rows) if as_json else render_text(rows), nl=False)
    elif output is None:
        click.echo(result.to_json() if as_json else render_plan(result, color=sys.stdout.isatty()), nl=not as_json)


def _write_output(output: Path, text: str) -> bool:
    """Write a command's output file whole (atomically), or to the standard output for
    ``-`` and ``/dev/stdout``. Returns whether a file was written. A target that is not a
    regular file (a FIFO, a device, a folder, a symbolic link) or cannot be written is one
    line and exit status 2: nothing is replaced."""
    shown = str(output)
    if shown == "-" or shown in ("/dev/stdout", "/dev/fd/1", "/proc/self/fd/1"):
        click.echo(text, nl=False)
        return False
    problem = None
    if output.is_symlink():
        problem = "is a symbolic link; give the file it points to"
    elif output.exists() and not output.is_file():
        problem = "is a directory" if output.is_dir() else "is not a regular file (a FIFO or a device)"
    elif output.parent.exists() and not output.parent.is_dir():
        problem = f"{output.parent} is not a directory"
    if problem is None:
        try:
            write_atomic(output, text)
            return True
        except OSError as exc:
            problem = f"cannot be written: {exc.strerror or exc}"
    _fail(SpecError.one(Pos(shown), "--output", problem))
    return False


@main.command()
@click.option("--output", "-o", type=click.Path(path_type=Path), help="Write the schema to FILE.")
@click.option("--markdown", is_flag=True, help="Print the spec reference as Markdown instead.")
@click.option("--of", "of", type=click.Choice(["spec", "plan", "manifest", "metrics"]), default="spec", show_default=True,
              help="Which file's schema: a spec, plan.json, a run's manifest.json or the report's metrics.json.")
@click.option("--all", "all_dir", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="Write every schema into DIR (as published in the repository's schema/).")
def schema(output: Path | None, markdown: bool, of: str, all_dir: Path | None) -> None:
    """Print the JSON Schema of a spec (for editors), of plan.json, manifest.json or
    metrics.json, or the spec reference as Markdown."""
    import json

    from ftspec.plan.artifacts import schemas
    from ftspec.spec.reference import markdown_reference

    published = schemas()
    if all_dir is not None:
        for name, value in published.items():
            _write_output(all_dir / name, json.dumps(value, indent=2, sort_keys=True) + "\n")
        click.echo(f"wrote {len(published)} schemas into {all_dir}", err=True)
        return
    files = {"spec": "ftspec-v1.schema.json", "plan": "plan.schema.json", "manifest": "manifest.schema.json",
             "metrics": "metrics.schema.json"}
    text = markdown_reference() if markdown else json.dumps(published[files[of]], indent=2, sort_keys=True) + "\n"
    if output is not None:
        _write_output(output, text)
    else:
        click.echo(text, nl=False)


def _execute(spec: Path, profiles, sets, strict: bool, force=frozenset(), only=None, locked: bool = False, allow=()) -> None:
    """Compile, execute, and exit as the run ends: 0, 2 (the user's input), 3 (a gate), 130 (Ctrl-C)."""
    from ftspec.plan.build import compile_located, find_root

    lock_info = None
    try:
        plan_, warnings, locate = compile_located(spec, profiles, sets, strict, allow)
        if locked:
            from ftspec.commands import lock as L

            lock_file = L.lock_path(spec, tuple(profiles))
            pinned = L.read(lock_file)
            L.check(pinned, L.build(plan_, find_root(spec), None, pinned), lock_file)
            extra = L.pinned_sets(pinned)
            if extra:  # load exactly the locked hub commits
                plan_, warnings, locate = compile_located(spec, profiles, [*sets, *extra], strict, allow)
            lock_info = {"path": str(lock_file), "sha256": L.digest(pinned)}
    except SpecError as exc:
        _fail(exc)
        return
    _print_issues(warnings)
    from ftspec.runtime.execute import execute  # the heavy imports start here

    try:
        result = execute(plan_, find_root(spec), echo=lambda line: click.echo(line), force=force, only=only, lock=lock_info)
    except SpecError as exc:
        _fail(SpecError(locate(issue) for issue in exc.issues))
        return
    except KeyboardInterrupt:
        click.echo("\nftspec: interrupted; run the same command again to resume from the last checkpoint", err=True)
        sys.exit(130)
    except RunFailed as exc:
        if type(exc).__name__ == "Detached":  # Ctrl-C while a Bedrock job runs on: it is not stopped
            from ftspec.backends.bedrock.job import Detached

            click.echo(f"\nftspec: {Detached(exc.arn, str(spec))}", err=True)
            sys.exit(130)
        click.echo(f"ftspec: {exc}", err=True)
        sys.exit(1)
    except OSError as exc:
        if exc.errno not in _STORAGE_ERRORS:
            raise
        where = f" {exc.filename}" if exc.filename else ""
        click.echo(f"ftspec: cannot write{where}: {exc.strerror}; nothing half-written is taken for complete, "
                   "so the same command resumes once there is room", err=True)
        sys.exit(1)
    failed = result.failed_gates
    if failed:
        names = ", ".join(str(g.get("gate")) for g in failed)
        click.echo(f"ftspec: {len(failed)} evaluation gate{'s' if len(failed) != 1 else ''} not met: {names}", err=True)
        sys.exit(EXIT_GATE)


_STORAGE_ERRORS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT}

def _parse_force(value: str | None) -> set[str]:
    from ftspec.plan.steps import STEPS

    STEP_NAMES = [s.name for s in STEPS]
    if value is None:
        return set()
    if value == "all":
        return set(STEP_NAMES)
    names = {n.strip() for n in value.split(",") if n.strip()}
    unknown = sorted(names - set(STEP_NAMES))
    if unknown:
        raise click.BadParameter(f"unknown step {', '.join(unknown)} (steps: {', '.join(STEP_NAMES)})", param_hint="--force")
    return names


@main.command()
@_spec_options
@click.option("--strict", is_flag=True, help="Treat warnings as errors.")
@click.option("--force", "force", is_flag=False, flag_value="all", default=None, metavar="[STEP,…]",
              help="Run steps again even when they are up to date: all of them, or the named ones (--force train,eval_tuned).")
@click.option("--locked", is_flag=True, help="Refuse to run when anything pinned in the spec's lock file has drifted.")
def run(spec: Path, profiles: tuple[str, ...], sets: tuple[str, ...], strict: bool, force: str | None, locked: bool, allow: tuple[Path, ...] = ()) -> None:
    """Compile a spec and execute its plan: prepare data, evaluate, train, report.

    Steps already done under the same key are reused; a training step cut off by a
    crash resumes from its last checkpoint. Exits 3 when an evaluation gate is not met.
    """
    _execute(spec, profiles, sets, strict, force=_parse_force(force), locked=locked, allow=allow)


@main.command()
@_spec_options
def lock(spec: Path, profiles: tuple[str, ...], sets: tuple[str, ...], allow: tuple[Path, ...] = ()) -> None:
    """Pin what the spec leaves floating: model revision, data fingerprints, template
    hashes, library versions. Writes SPEC's .lock.json next to it (the only command
    that looks names up on the hub)."""
    from ftspec.commands import lock as L
    from ftspec.plan.build import compile_spec, find_root

    try:
        plan_, warnings = compile_spec(spec, profiles, sets, allow=allow)
        pinned = L.build(plan_, find_root(spec), L.hub_resolver)
    except SpecError as exc:
        _fail(exc)
        return
    _print_issues(warnings)
    path = L.lock_path(spec, tuple(profiles))
    write_json(path, pinned)
    click.echo(f"wrote {path}")


@main.command()
@_spec_options
def status(spec: Path, profiles: tuple[str, ...], sets: tuple[str, ...], allow: tuple[Path, ...] = ()) -> None:
    """Each step of the spec's plan with its key and state: done, stale, missing, running."""
    from ftspec.plan.build import compile_spec, find_root
    from ftspec.store.rundir import step_states

    try:
        plan_, _ = compile_spec(spec, profiles, sets, allow=allow)
    except SpecError as exc:
        _fail(exc)
        return
    root = find_root(spec)
    if plan_.stages:  # one block per stage, in the order they run, each in its own run directory
        every = [*plan_.stages, plan_]
        click.echo(f"{plan_.name}  plan {plan_.short_id}  {len(every)} stages: {' → '.join(p.stage for p in every)}")
    else:
        every = [plan_]
    for i, one in enumerate(every, 1):
        states = step_states(one, root / one.output.dir)
        head = f"stage {i}/{len(every)} {one.stage}" if plan_.stages else one.name
        click.echo(f"{head}  plan {one.short_id}  run directory {one.output.dir}")
        for step in one.steps:
            click.echo(f"  {step.name:<16} {step.key[:12]}  {states[step.name]}")


@main.command()
@_spec_options
def stop(spec: Path, profiles: tuple[str, ...], sets: tuple[str, ...], allow: tuple[Path, ...] = ()) -> None:
    """Stop the Amazon Bedrock customization job the spec's train step started (a local run
    stops with Ctrl-C). Running the spec again afterwards starts a new job."""
    from ftspec.plan.build import compile_spec, find_root
    from ftspec.store.rundir import store_of

    try:
        plan_, _ = compile_spec(spec, profiles, sets, allow=allow)
    except SpecError as exc:
        _fail(exc)
        return
    if plan_.compute.backend != "bedrock":
        _fail(SpecError.one(Pos(str(spec)), "compute.backend", "ftspec stop stops Bedrock jobs; a local run stops with Ctrl-C"))
        return
    key = plan_.step("train").key
    store = store_of(find_root(spec) / plan_.output.dir)
    if store.complete("train", key):
        click.echo(f"ftspec: the train step (key {key[:8]}) is complete: there is no job to stop", err=True)
        sys.exit(1)
    record = store.scratch("train", key, "checkpoints") / "job.json"
    try:
        job_arn = json.loads(record.read_text(encoding="utf-8"))["job_arn"]
    except (OSError, ValueError, KeyError):
        click.echo(f"ftspec: no Bedrock job was started for this plan's train step (key {key[:8]})", err=True)
        sys.exit(1)
    from ftspec.backends.bedrock import aws
    from ftspec.backends.bedrock import job

    try:
        job.stop(aws.client("bedrock", plan_.compute.bedrock.region), job_arn)
    except RunFailed as exc:
        click.echo(f"ftspec: {exc}", err=True)
        sys.exit(1)
    click.echo(f"asked Bedrock to stop {job_arn}; `ftspec run {spec}` afterwards starts a new job")


@main.command()
@click.argument("directory", required=False, default="runs", type=click.Path(file_okay=False, path_type=Path))
def runs(directory: Path) -> None:
    """List the runs in DIRECTORY (default: runs/) with plan ids and headline metrics."""
    from ftspec.store.rundir import list_runs

    found = list_runs(directory)
    for run in found:
        for problem in run.problems:
            click.echo(f"ftspec: {problem}", err=True)
    rows = [(r.name, r.plan_id, r.status, r.when, r.metric, r.gates) for r in found]
    if not rows:
        click.echo(f"no runs in {directory}")
        return
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        click.echo("  ".join(r[i].ljust(widths[i]) for i in range(5)) + (f"  {r[5]}" if r[5] else ""))
    from ftspec.store.rundir import STORE, collect, human_bytes, store_entries, Store

    entries = [e for e in store_entries(Store(directory / STORE)) if e.kind == "step"]
    if entries:
        spare = collect(directory)
        click.echo(f"step store {directory / STORE}: {len(entries)} steps, {human_bytes(sum(e.bytes for e in entries))}"
                   + (f"; `ftspec gc {directory}` frees {human_bytes(spare.bytes)} that no run refers to"
                      if spare.remove else ""))


@main.command()
@click.argument("directory", required=False, default="runs", type=click.Path(file_okay=False, path_type=Path))
@click.option("--dry-run", "-n", is_flag=True, help="Say what would be removed, and remove nothing.")
@click.option("--keep", type=click.IntRange(min=0), default=0, show_default=True, metavar="N",
              help="Also keep, for each step, the N most recently finished outputs no run refers to.")
def gc(directory: Path, dry_run: bool, keep: int) -> None:
    """Remove the step outputs in DIRECTORY's store (default: runs/) that no run directory refers to."""
    from ftspec.store.rundir import STORE, collect, hold_runs, human_bytes, remove_entry

    if not (directory / STORE).is_dir():
        click.echo(f"nothing to collect: {directory} has no step store ({STORE})")
        return
    try:
        held = hold_runs(directory)
    except SpecError as exc:
        _fail(exc)
        return
    with held:
        found = collect(directory, keep)
        for entry in found.remove:
            if not dry_run:
                remove_entry(entry)
            what = {"step": "", "partial": " (cut off)", "checkpoints": " (checkpoints)", "lock": " (lock)",
                    "leftover": " (leftover)"}.get(entry.kind, "")
            click.echo(f"{'would remove' if dry_run else 'removed'}  {entry.label}{what}  {human_bytes(entry.bytes)}")
    kept = [e for e in found.kept if e.kind == "step"]
    verb = "would free" if dry_run else "freed"
    click.echo(f"{verb} {human_bytes(found.bytes)} ({sum(e.kind == 'step' for e in found.remove)} steps); "
               f"kept {len(kept)} steps, {human_bytes(sum(e.bytes for e in kept))}"
               + (f"; {len(found.busy)} in use by a run now" if found.busy else ""))


@main.command("eval")
@_spec_options
def eval_(spec: Path, profiles: tuple[str, ...], sets: tuple[str, ...], allow: tuple[Path, ...] = ()) -> None:
    """Evaluate the base and the trained model again (generate and score), without training, and rebuild the report."""
    from ftspec.plan.steps import EVAL_BASE, EVAL_TUNED, GENERATE_BASE, GENERATE_TUNED, REPORT

    names = {GENERATE_BASE.name, EVAL_BASE.name, GENERATE_TUNED.name, EVAL_TUNED.name, REPORT.name}
    _execute(spec, profiles, sets, False, force=names, only=names, allow=allow)


@main.command()
@_spec_options
def report(spec: Path, profiles: tuple[str, ...], sets: tuple[str, ...], allow: tuple[Path, ...] = ()) -> None:
    """Rebuild the report of a finished run from its evaluation results."""
    from ftspec.plan.steps import REPORT

    _execute(spec, profiles, sets, False, force={REPORT.name}, only={REPORT.name}, allow=allow)


MAX_PLAN_BYTES = 50_000_000


def _plan_for_diff(path: Path, profiles, sets, allow=()):
    """A plan from a spec (compiled), with where each value came from, or from a plan
    JSON file written by `ftspec plan -o` (with no origins)."""
    from ftspec.plan.build import compile_sourced

    if path.suffix == ".json":
        from ftspec.core.paths import read_regular
        from ftspec.plan.model import Plan

        try:  # a FIFO or a device is refused at once, not read without end
            return Plan.from_json(read_regular(path, MAX_PLAN_BYTES).decode("utf-8")), None
        except OSError as exc:
            raise SpecError.one(Pos(str(path)), "", f"not a readable plan file: {exc.strerror or exc}") from None
        except ValueError as exc:  # not UTF-8, not JSON, not a plan of this version
            raise SpecError.one(Pos(str(path)), "", f"not a readable plan file: {exc}") from None
    return compile_sourced(path, profiles, sets, allow=allow)


@main.command()
@click.argument("specs", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--git", "rev", metavar="REV", help="Compare SPEC with its version at git revision REV.")
@click.option("--format", "fmt", type=click.Choice(["text", "markdown", "json"]), default="text", show_default=True)
@_profile_option
@_set_option
@_allow_option
@click.option("--exit-code", is_flag=True, help="Exit 1 when the plans differ (for CI).")
def diff(specs: tuple[Path, ...], rev: str | None, fmt: str, profiles: tuple[str, ...], sets: tuple[str, ...], exit_code: bool, allow: tuple[Path, ...] = ()) -> None:
    """What a change does to the effective plan: OLD NEW, or --git REV SPEC.

    Each changed value is shown as old → new, including values that changed through
    defaults, extends or profiles, with the steps that would run again.
    """
    from ftspec.commands import diff as D

    try:
        if rev is not None:
            if len(specs) != 1:
                raise click.UsageError("with --git REV, give exactly one SPEC")
            old, new, old_origin, new_origin = D.diff_git(rev, specs[0], profiles, sets, allow, with_origins=True)
        else:
            if len(specs) != 2:
                raise click.UsageError("give OLD and NEW specs (or plan files), or --git REV SPEC")
            (old, old_origin), (new, new_origin) = (_plan_for_diff(p, profiles, sets, allow) for p in specs)
    except SpecError as exc:
        _fail(exc)
        return
    result = D.diff_plans(old, new, old_origin, new_origin)
    if fmt == "markdown":
        text = D.render_markdown(result)
    elif fmt == "json":
        text = D.render_json(result)
    else:
        text = D.render_text(result, color=sys.stdout.isatty())
    click.echo(text, nl=False)
    if exit_code and not result.is_empty():
        sys.exit(1)


def _trained_plan(spec: Path, profiles, sets, allow):
    """The plan of a spec whose model is trained, with its locator and root; a spec that
    has not been trained is refused in one line naming the command that trains it."""
    import shlex

    from ftspec.plan.build import compile_located, find_root
    from ftspec.runtime.tools.generate import require_trained

    # The spec's warnings were for training it; trying the trained model does not repeat them.
    plan_, _, locate = compile_located(spec, profiles, sets, False, allow)
    words = ["ftspec", "run", str(spec)]
    for p in profiles:
        words += ["-p", p]
    for s in sets:
        words += ["--set", s]
    for a in allow:
        words += ["--allow-path", str(a)]
    root = find_root(spec)
    require_trained(plan_, root, str(spec), " ".join(shlex.quote(w) for w in words))
    return plan_, root, locate


def _columns(values: tuple[str, ...]) -> dict:
    out = {}
    for value in values:
        name, eq, text = value.partition("=")
        if not eq or not name:
            raise click.BadParameter(f"expected NAME=VALUE (got {value!r})", param_hint="--column")
        out[name] = text
    return out


@main.command()
@_spec_options
@click.argument("texts", nargs=-1, metavar="[TEXT]...")
@click.option("--column", "-c", "columns", multiple=True, metavar="NAME=VALUE",
              help="A column of the input row, as the spec's data files name it (repeatable); a TEXT fills the one column left.")
@click.option("--file", "-f", "file", type=click.Path(dir_okay=False, path_type=Path),
              help="JSON lines, one input row (the spec's columns) per line.")
@click.option("--base", "with_base", is_flag=True, help="Answer with the base model too, to compare.")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=None, help="Default: the plan's eval.max_new_tokens.")
@click.option("--json", "as_json", is_flag=True, help="One JSON line per input: input, prompt, tuned (and base).")
@click.option("--show-prompt", is_flag=True, help="Print the prompt the model was given too.")
def generate(spec: Path, profiles: tuple[str, ...], sets: tuple[str, ...], texts: tuple[str, ...], columns: tuple[str, ...],
             file: Path | None, with_base: bool, max_new_tokens: int | None, as_json: bool, show_prompt: bool,
             allow: tuple[Path, ...] = ()) -> None:
    """Answer TEXT with the trained model, formatted exactly as training formatted its rows
    (data.rename and derive, the prompt template or the chat template)."""
    import json

    fixed = _columns(columns)
    locate = None
    try:
        plan_, root, locate = _trained_plan(spec, profiles, sets, allow)
        from ftspec.runtime.tools import generate as G

        rows = G.rows_from_inputs(G.Prompter.from_plan(plan_), texts, fixed, file)
        results = G.generate_rows(plan_, root, rows, with_base, max_new_tokens)
    except SpecError as exc:
        _fail(SpecError(locate(i) for i in exc.issues) if locate else exc)
        return
    if as_json:
        for r in results:
            click.echo(json.dumps(r, ensure_ascii=False, sort_keys=True))
    else:
        click.echo(G.render_text(results, show_prompt), nl=False)


@main.command()
@_spec_options
@click.option("--base", "use_base", is_flag=True, help="Talk to the base model instead of the trained one.")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=None, help="Default: the plan's eval.max_new_tokens.")
def chat(spec: Path, profiles: tuple[str, ...], sets: tuple[str, ...], use_base: bool, max_new_tokens: int | None,
         allow: tuple[Path, ...] = ()) -> None:
    """Talk to the trained model of a chat-format spec: each line is a user turn, rendered
    with the spec's turns and chat template as in training. /reset starts again; /quit or Ctrl-D ends."""
    locate = None
    try:
        plan_, root, locate = _trained_plan(spec, profiles, sets, allow)
        from ftspec.runtime.tools import generate as G

        prompter = G.check_chat(plan_, str(spec))
        G.prepare_runtime(plan_)
        loaded = G.load(plan_, root, tuned=not use_base)
        interactive = sys.stdin.isatty()
        if interactive:
            click.echo(f"{plan_.name}: the {'base' if use_base else 'trained'} model; /reset starts again, "
                       "/quit or Ctrl-D ends", err=True)
        G.chat_loop(plan_, prompter, loaded, sys.stdin, lambda t: click.echo(t, nl=False),
                    lambda t: click.echo(t, nl=False, err=True), max_new_tokens, interactive)
    except SpecError as exc:
        _fail(SpecError(locate(i) for i in exc.issues) if locate else exc)
        return
    except KeyboardInterrupt:
        click.echo("", err=True)


@main.command()
@_spec_options
@click.option("--output", "-o", "output", required=True, type=click.Path(path_type=Path), metavar="DIR",
              help="The folder to write (new, or empty; --force replaces one).")
@click.option("--adapter", "keep_adapter", is_flag=True, help="Keep a LoRA adapter as an adapter instead of merging it into its base.")
@click.option("--force", is_flag=True, help="Replace DIR when it exists and is not empty.")
@click.option("--gguf", "gguf", is_flag=False, flag_value="f32", default=None, metavar="[f32|f16]",
              type=click.Choice(["f32", "f16"], case_sensitive=False),
              help="Also write DIR/model.gguf (llama architecture), checked as transformers reads it back.")
def export(spec: Path, profiles: tuple[str, ...], sets: tuple[str, ...], output: Path, keep_adapter: bool, force: bool,
           gguf: str | None = None, allow: tuple[Path, ...] = ()) -> None:
    """Write the trained model of SPEC's run to DIR as a model that stands alone: merged (or
    --adapter), in the base's dtype, with its tokenizer, chat template, a generation config
    that stops where training taught it to, and a model card; checked against the trained
    model's logits (exit 1 above the tolerance, and nothing is written)."""
    locate = None
    try:
        plan_, root, locate = _trained_plan(spec, profiles, sets, allow)
        from ftspec.runtime.tools.export import ParityError, export_model
        from ftspec.runtime.execute import quiet_libraries

        quiet_libraries()
        result = export_model(plan_, root, output, adapter=keep_adapter, force=force, echo=lambda t: click.echo(t),
                              gguf=gguf.upper() if gguf else None)
    except SpecError as exc:
        _fail(SpecError(locate(i) for i in exc.issues) if locate else exc)
        return
    except ParityError as exc:
        click.echo(f"ftspec: {exc}", err=True)
        sys.exit(1)
    what = {"merged": "LoRA merged into its base", "full": "full fine-tune", "adapter": "LoRA adapter"}[result.kind]
    click.echo(f"exported {plan_.name} ({what}, {result.dtype}) to {output}")


@main.command("launch-script")
@_spec_options
@click.option("--slurm", is_flag=True, help="Write an sbatch script for a SLURM cluster (the only kind for now).")
@click.option("--output", "-o", type=click.Path(path_type=Path), metavar="FILE",
              help="Write the script to FILE (executable) instead of the standard output.")
@click.option("--strict", is_flag=True, help="Treat warnings as errors.")
def launch_script(spec: Path, profiles: tuple[str, ...], sets: tuple[str, ...], slurm: bool, output: Path | None,
                  strict: bool, allow: tuple[Path, ...] = ()) -> None:
    """Write a batch script that runs SPEC on a cluster's nodes: one `ftspec run` per node,
    which starts the node's processes and finds the others from the environment."""
    from ftspec.runtime.distributed import rendezvous as R
    from ftspec.plan.build import compile_spec

    if not slurm:
        click.echo(f"ftspec: launch-script writes SLURM scripts only (--slurm); for other clusters set MASTER_ADDR, "
                   f"MASTER_PORT and NODE_RANK and run `ftspec run {spec}` on each node", err=True)
        sys.exit(EXIT_USAGE)
    try:
        plan_, warnings = compile_spec(spec, profiles, sets, strict, allow)
    except SpecError as exc:
        _fail(exc)
        return
    _print_issues(warnings)
    c = plan_.compute
    text = R.slurm_script(name=plan_.name, plan_id=plan_.short_id, spec=str(spec), profiles=profiles, sets=sets,
                          allow=[str(a) for a in allow], nodes=c.num_nodes, processes_per_node=c.num_processes,
                          device=c.device, strategy=c.strategy)
    shown = str(output) if output is not None else "-"
    if shown in ("-", "/dev/stdout", "/dev/fd/1", "/proc/self/fd/1"):
        click.echo(text, nl=False)
        return
    try:
        R.write_script(output, text)
    except ValueError as exc:
        _fail(SpecError.one(Pos(shown), "--output", str(exc)))
    except OSError as exc:
        _fail(SpecError.one(Pos(shown), "--output", f"cannot be written: {exc.strerror or exc}"))
    else:
        click.echo(f"wrote {output}; submit it with: sbatch {output}", err=True)


@main.command()
def templates() -> None:
    """List the built-in templates (use them as `{builtin: NAME}`)."""
    from ftspec.data.templates import builtin_names

    for name in builtin_names():
        click.echo(name)


if __name__ == "__main__":  # pragma: no cover
    main()
