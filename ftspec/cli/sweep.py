"""`ftspec sweep`: trials of a spec, the winner chosen on validation and scored once on test."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ftspec.cli.common import EXIT_INTERRUPTED, reports_errors, spec_options, strict_option, warn
from ftspec.commands.sweep import dry_run, sweep
from ftspec.commands.sweep_pool import MAX_WORKERS, parse_gpus, pool_size, sweep_with_workers
from ftspec.core.errors import EXIT_GATE
from ftspec.spec.sweep import MAX_TRIALS


@click.command("sweep")
@spec_options
@click.option("--over", "over", multiple=True, metavar="FIELD=V1,V2,…",
              help="A field to sweep and its values, read as YAML (repeatable): "
                   "--over training.learning_rate=1.0e-4,3.0e-4. Replaces that field in the spec's sweep: section.")
@click.option("--method", type=click.Choice(["grid", "random", "tpe"]), default=None,
              help="grid: every combination (default); random: --trials seeded draws; tpe: Optuna's TPE sampler.")
@click.option("--trials", type=click.IntRange(1, MAX_TRIALS), default=None, help="Trials of random and tpe.")
@click.option("--objective", metavar="METRIC", default=None,
              help="The metric the winner is chosen by, on the validation split (default: the first of eval.metrics).")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=None, help="Seed of random's draws and of TPE.")
@click.option("--prune", type=click.Choice(["none", "median", "halving"]), default=None,
              help="Stop trials whose validation loss lags (Optuna's pruners); shown as pruned.")
@click.option("--dry-run", "dry_run_", is_flag=True,
              help="List every trial and which steps it runs or reuses; run nothing, write nothing.")
@click.option("--worker", is_flag=True, help="Run trials until none is left to start, then exit without choosing "
                                            "the winner (for parallel workers and job arrays).")
@click.option("--max-trials", type=click.IntRange(1, MAX_TRIALS), default=None, metavar="K",
              help="Run at most K trials in this process, then stop.")
@click.option("--store", metavar="URL", default=None, help="A shared step store, as for `ftspec run --store`.")
# --workers/--gpus (helper S2: ftspec.commands.sweep_pool): trials N at a time in worker processes.
@click.option("--workers", type=click.IntRange(1, MAX_WORKERS), default=None, metavar="N",
              help="Run trials N at a time, each worker a `ftspec sweep … --worker` process (default: sweep.workers); "
                   "the winner is chosen and scored once all have exited.")
@click.option("--gpus", default=None, metavar="0,1,…",
              help="GPUs shared among the workers (CUDA_VISIBLE_DEVICES): each worker its own when there are "
                   "enough, else in turn.")
@strict_option
@reports_errors
def sweep_cmd(spec: Path, profiles: tuple[str, ...], sets: tuple[str, ...], over: tuple[str, ...],
              method: str | None, trials: int | None, objective: str | None, seed: int | None, prune: str | None,
              dry_run_: bool = False, worker: bool = False, max_trials: int | None = None, store: str | None = None,
              workers: int | None = None, gpus: str | None = None, strict: bool = False,
              allow: tuple[Path, ...] = ()) -> None:
    """Run trials of SPEC with other values of some fields (--over, or the spec's sweep:
    section), choose the winner on the validation split, and score it once on test.

    Each trial is a variant run (`--set FIELD=VALUE ... --set eval.split=validation`) sharing
    every step its key shares with the others: the data is prepared once, the base model
    evaluated once. The sweep folder (the run directory's name + `.sweep`) keeps the study, so an
    interrupted sweep resumes with the same command; it also holds sweep.md, sweep.html,
    results.csv and winner.json. Needs the `sweep` extra (pip install 'ftspec[sweep]')."""
    options = dict(over=over, method=method, trials=trials, objective=objective, seed=seed, prune=prune, allow=allow,
                   strict=strict)
    if dry_run_:
        for line in dry_run(spec, profiles, sets, **options):
            click.echo(line)
        return
    try:
        gpu_list = parse_gpus(gpus)
        pool = 0 if worker else pool_size(spec, profiles, sets, workers, gpu_list, options)
        if pool:
            result = sweep_with_workers(spec, profiles, sets, workers=pool, gpus=gpu_list, options=options,
                                        max_trials=max_trials, store=store, echo=click.echo, warn=warn)
        else:
            result = sweep(spec, profiles, sets, worker=worker, max_trials=max_trials, store=store, echo=click.echo,
                           warn=warn, **options)
    except KeyboardInterrupt:
        click.echo("\nftspec: interrupted; run the same command again to resume the sweep", err=True)
        sys.exit(EXIT_INTERRUPTED)
    if result.winner is not None and result.winner.gates_failed:
        click.echo(f"ftspec: the winner's evaluation gates not met: {', '.join(result.winner.gates_failed)}",
                   err=True)
        sys.exit(EXIT_GATE)
