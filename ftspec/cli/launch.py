"""`ftspec launch-script`: a batch script that runs a spec on a cluster."""

from __future__ import annotations

from pathlib import Path

import click

from ftspec.cli.common import out, print_issues, reports_errors, spec_options, stopped, strict_option
from ftspec.commands.launch_scripts import save_launch_script, slurm_launch_script, slurm_sweep_launch_script
from ftspec.commands.output import is_stdout
from ftspec.core.errors import EXIT_USAGE


@click.command("launch-script")
@spec_options
@click.option("--slurm", is_flag=True, help="Write an sbatch script for a SLURM cluster (the only kind for now).")
@click.option("--sweep", "sweep", is_flag=True,
              help="Write a job array that runs the spec's sweep (its sweep: section): one array task per trial, "
                   "sweep.workers at a time; `ftspec sweep SPEC` afterwards selects and scores the winner.")
@click.option("--output", "-o", type=click.Path(path_type=Path), metavar="FILE",
              help="Write the script to FILE (executable) instead of the standard output.")
@strict_option
@reports_errors
def launch_script(spec: Path, profiles: tuple[str, ...], sets: tuple[str, ...], slurm: bool, sweep: bool,
                  output: Path | None, strict: bool, allow: tuple[Path, ...] = ()) -> None:
    """Write a batch script that runs SPEC on a cluster's nodes: one `ftspec run` per node,
    which starts the node's processes and finds the others from the environment. With --sweep,
    a job array that runs SPEC's sweep, a trial per array task."""
    if not slurm and sweep:
        stopped(f"launch-script writes SLURM scripts only (--slurm); on one machine run "
                f"`ftspec sweep {spec} --workers N`", EXIT_USAGE)
    if not slurm:
        stopped(f"launch-script writes SLURM scripts only (--slurm); for other clusters set MASTER_ADDR, "
                f"MASTER_PORT and NODE_RANK and run `ftspec run {spec}` on each node", EXIT_USAGE)
    make = slurm_sweep_launch_script if sweep else slurm_launch_script
    text, warnings = make(spec, profiles, sets, allow, strict, output)
    print_issues(warnings)
    if output is None or is_stdout(output):
        out(text)
        return
    save_launch_script(output, text)
    click.echo(f"wrote {output}; submit it with: sbatch {output}", err=True)
