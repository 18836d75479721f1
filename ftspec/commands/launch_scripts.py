"""`ftspec launch-script`: batch scripts that run a spec on a cluster's nodes, one `ftspec run`
per node, each finding the others as ftspec.runtime.distributed.rendezvous reads them; and
(`--sweep`) a job array that runs a sweep's trials, one per array task."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Sequence
from pathlib import Path

from ftspec.commands.output import is_stdout
from ftspec.core.errors import Issue, Pos, SpecError
from ftspec.core.io import write_atomic
from ftspec.core.paths import find_root
from ftspec.plan.compile import compile_plan, compile_spec
from ftspec.plan.sweep import resolve as resolve_sweep
from ftspec.runtime.distributed.rendezvous import DEFAULT_PORT_BASE, PORT_SPREAD
from ftspec.store.protect import refuse_target

__all__ = ["run_words", "slurm_script", "write_script", "slurm_launch_script", "save_launch_script", "sweep_words",
           "slurm_sweep_script", "slurm_sweep_launch_script"]


def run_words(spec: str, profiles: Sequence[str], sets: Sequence[str], allow: Sequence[str]) -> list[str]:
    """The `ftspec run` command line that compiles the same plan on every node."""
    words = ["ftspec", "run", spec]
    for p in profiles:
        words += ["--profile", p]
    for s in sets:
        words += ["--set", s]
    for a in allow:
        words += ["--allow-path", a]
    return words


def slurm_script(*, name: str, plan_id: str, spec: str, profiles: Sequence[str] = (), sets: Sequence[str] = (),
                 allow: Sequence[str] = (), nodes: int, processes_per_node: int, device: str, strategy: str) -> str:
    """An sbatch script that runs `ftspec run` once on each of ``nodes`` nodes (each
    starts its node's processes itself). Every value from the command line is
    shell-quoted, and values only ever reach the script's comments and one quoted
    command line: a hostile profile name or --set value cannot run anything."""
    command = " ".join(shlex.quote(w) for w in run_words(spec, profiles, sets, allow))
    gpus = device != "cpu"
    total = nodes * processes_per_node
    job_name = re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "ftspec"
    lines = [
        "#!/bin/bash",
        "# Written by `ftspec launch-script --slurm`; regenerate it rather than editing it.",
        f"#   spec      {_comment(spec)}",
        f"#   profiles  {_comment(profiles)}",
        f"#   --set     {_comment(sets)}",
        f"#   plan      {plan_id}",
        (f"#   starts    {total} training process{'es' if total != 1 else ''}: {nodes} node{'s' if nodes != 1 else ''} "
         f"x {processes_per_node} process{'es' if processes_per_node != 1 else ''} per node"
         f"{' (one GPU each)' if gpus else ' (on the CPU)'}, strategy {strategy}"),
        "# Submit it from the directory the spec's path above is relative to: sbatch FILE",
        f"#SBATCH --job-name={job_name}",
        f"#SBATCH --nodes={nodes}",
        "#SBATCH --ntasks-per-node=1",
    ]
    if gpus:
        lines.append(f"#SBATCH --gpus-per-node={processes_per_node}")
    lines += [
        "",
        "set -euo pipefail",
        "",
        "# The nodes meet at the first node of the allocation (SLURM's node 0), on a port",
        f"# derived from the job id ({DEFAULT_PORT_BASE} + job id % {PORT_SPREAD}) unless MASTER_PORT is set; each",
        "# node's rank is SLURM_NODEID (ftspec reads it when NODE_RANK is not set).",
        'MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"',
        f'MASTER_PORT="${{MASTER_PORT:-$(( {DEFAULT_PORT_BASE} + SLURM_JOB_ID % {PORT_SPREAD} ))}}"',
        "export MASTER_ADDR MASTER_PORT",
        "",
        "# One `ftspec run` per node; it starts the node's processes itself. If one node",
        "# fails, srun stops the others instead of leaving them waiting for it.",
        f"srun --kill-on-bad-exit=1 {command}",
        "",
    ]
    return "\n".join(lines)


def sweep_words(spec: str, profiles: Sequence[str], sets: Sequence[str], allow: Sequence[str],
                worker: bool = False) -> list[str]:
    """The `ftspec sweep` command line of the same sweep (its definition is the spec's `sweep:`
    section, with the same profiles and overrides); ``worker``: one array task's, one trial."""
    words = ["ftspec", "sweep", *run_words(spec, profiles, sets, allow)[2:]]
    return words + (["--worker", "--max-trials", "1"] if worker else [])


def slurm_sweep_script(*, name: str, spec: str, profiles: Sequence[str] = (), sets: Sequence[str] = (),
                       allow: Sequence[str] = (), trials: int, at_a_time: int, method: str,
                       processes: int, device: str) -> str:
    """An sbatch script for a sweep: a job array of ``trials`` tasks, ``at_a_time`` of them
    running at once, each `ftspec sweep SPEC --worker --max-trials 1` (one trial: whichever the
    sweep's journal has next, so a task that fails or is requeued never runs another's). Values
    from the command line reach only the comments and quoted command lines, as in
    :func:`slurm_script`."""
    if trials < 1:
        raise ValueError(f"a sweep of {trials} trials has nothing to run")
    task = " ".join(shlex.quote(w) for w in sweep_words(spec, profiles, sets, allow, worker=True))
    select = " ".join(shlex.quote(w) for w in sweep_words(spec, profiles, sets, allow))
    gpus = device != "cpu"
    job_name = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{name}-sweep")
    limit = f"%{at_a_time}" if at_a_time < trials else ""
    lines = [
        "#!/bin/bash",
        "# Written by `ftspec launch-script --sweep --slurm`; regenerate it rather than editing it.",
        f"#   spec      {_comment(spec)}",
        f"#   profiles  {_comment(profiles)}",
        f"#   --set     {_comment(sets)}",
        (f"#   sweep     {trials} trial{'s' if trials != 1 else ''} ({method}), {min(at_a_time, trials)} at a time "
         f"(sweep.workers); each array task runs one trial in {processes} process{'es' if processes != 1 else ''}"
         f"{' (one GPU each)' if gpus else ' (on the CPU)'}"),
        "# Submit it from the directory the spec's path above is relative to: sbatch FILE",
        "#",
        "# The array tasks share the sweep's folder beside the run directories (the Optuna journal",
        "# there deals out the trials) and the step store (its per-key locks make one task compute a",
        "# step that several trials share, the others wait and reuse it): the spec's runs/ folder MUST",
        "# be on a filesystem every node of the cluster mounts (NFS, Lustre, GPFS...) with working file",
        "# locks. A node-local disk (/tmp, $TMPDIR) gives each task a sweep of its own.",
        "#",
        "# The tasks do not choose the winner. When the whole array has finished, run (same options):",
        f"#   {_comment(select)}",
        "# It runs any trial left, chooses the winner on the validation split and scores it once on",
        "# test. Or submit that as a job that waits for the array:",
        "#   array=$(sbatch --parsable FILE)",
        f"#   sbatch --dependency=afterany:$array --wrap {_comment(shlex.quote(select))}",
        f"#SBATCH --job-name={job_name}",
        f"#SBATCH --array=0-{trials - 1}{limit}",
        "#SBATCH --nodes=1",
        "#SBATCH --ntasks=1",
    ]
    if gpus:
        lines.append(f"#SBATCH --gpus-per-node={processes}")
    lines += [
        "",
        "set -euo pipefail",
        "",
        "# SLURM_ARRAY_TASK_ID does not pick the trial: the sweep's journal gives each task the next one",
        "# waiting. A trial cut off (preemption, a node lost) is queued again by the next task or sweep",
        "# that starts, and its training resumes from its last checkpoint in the step store.",
        'echo "ftspec sweep: array task ${SLURM_ARRAY_TASK_ID:-?} of job ${SLURM_ARRAY_JOB_ID:-?}" >&2',
        task,
        "",
    ]
    return "\n".join(lines)


def _comment(words: str | Sequence[str]) -> str:
    """Text safe inside a one-line shell comment: no line breaks or control characters;
    a list of words as the shell would read them ("(none)" for none)."""
    text = words if isinstance(words, str) else " ".join(shlex.quote(w) for w in words) or "(none)"
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def write_script(path, text: str) -> None:
    """Write an executable script whole or not at all (ftspec.core.io's atomic writer): mode
    0755 less the process's umask, set on the temporary file before it takes the name.
    A target that is a symbolic link, a folder or not a regular file is a ValueError
    (one line); a write that fails is an OSError, and nothing is replaced."""
    path = Path(path)
    if path.is_symlink():
        raise ValueError("is a symbolic link; give the file it points to")
    if path.exists() and not path.is_file():
        raise ValueError("is a directory" if path.is_dir() else "is not a regular file (a FIFO or a device)")
    if path.parent.exists() and not path.parent.is_dir():
        raise ValueError(f"{path.parent} is not a directory")
    write_atomic(path, text, mode=0o755)


def slurm_launch_script(spec: Path, profiles: Iterable[str] = (), sets: Iterable[str] = (),
                        allow: Iterable[str | Path] = (), strict: bool = False,
                        output: Path | None = None) -> tuple[str, list[Issue]]:
    """The sbatch script that runs `ftspec run SPEC` (with the same profiles, overrides and
    allowed paths) once on each of the plan's nodes, and the spec's warnings. Raises SpecError,
    also when ``output`` (the file it is to be written to) is the spec or another input of
    the plan, or lies in its run directories or store."""
    profiles, sets = tuple(profiles), tuple(sets)
    plan, warnings = compile_spec(spec, profiles, sets, strict, allow)
    if output is not None and not is_stdout(output):
        refuse_target(Path(output), plan, find_root(spec))
    c = plan.compute
    text = slurm_script(name=plan.name, plan_id=plan.short_id, spec=str(spec), profiles=profiles, sets=sets,
                        allow=[str(a) for a in allow], nodes=c.num_nodes, processes_per_node=c.num_processes,
                        device=c.device, strategy=c.strategy)
    return text, warnings


def slurm_sweep_launch_script(spec: Path, profiles: Iterable[str] = (), sets: Iterable[str] = (),
                              allow: Iterable[str | Path] = (), strict: bool = False,
                              output: Path | None = None) -> tuple[str, list[Issue]]:
    """The sbatch script of SPEC's sweep (its ``sweep:`` section, with the same profiles,
    overrides and allowed paths): a job array of one task per trial, ``sweep.workers`` at a
    time, and the spec's warnings. Raises SpecError for a spec, or a sweep, that is wrong (each
    at its line), a trial that would train on several nodes, and an ``output`` the plan must
    not have written over (as :func:`slurm_launch_script`)."""
    profiles, sets = tuple(profiles), tuple(sets)
    compiled = compile_plan(spec, profiles, sets, strict, allow)
    sweep = resolve_sweep(spec, profiles, sets, allow=allow, strict=strict)
    plan = sweep.plan
    if output is not None and not is_stdout(output):
        refuse_target(Path(output), plan, find_root(spec))
    c = plan.compute
    if c.num_nodes > 1:
        locate = compiled.locator()
        raise SpecError([locate(Issue(Pos("compute.num_nodes"), "compute.num_nodes",
                                      f"a sweep's array task runs one trial on one node, and this spec trains on "
                                      f"{c.num_nodes}; set compute.num_nodes: 1 for the sweep"))])
    text = slurm_sweep_script(name=plan.name, spec=str(spec), profiles=profiles, sets=sets,
                              allow=[str(a) for a in allow], trials=sweep.count, at_a_time=sweep.workers,
                              method=sweep.method, processes=c.num_processes, device=c.device)
    return text, list(compiled.warnings)


def save_launch_script(output: Path, text: str) -> None:
    """:func:`write_script`, with what goes wrong as a SpecError at ``--output``."""
    try:
        write_script(output, text)
    except ValueError as exc:
        raise SpecError.one(Pos(str(output)), "--output", str(exc)) from None
    except OSError as exc:
        raise SpecError.one(Pos(str(output)), "--output", f"cannot be written: {exc.strerror or exc}") from None
