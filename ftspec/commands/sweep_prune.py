"""A sweep's pruning (``sweep.prune``): Optuna's pruners on each trial's validation curve.

While a trial trains, every evaluation of the validation split (``training.eval_every``) is
reported to Optuna as the trial's intermediate value at that training step; the pruner compares
it with the other trials' values at the same step and may stop the trial. The training then stops
at once (ftspec.runtime.training.pruning) and the trial is recorded as *pruned*, not failed.

Intermediate values are in the study's direction: the validation loss as it is when the
objective is minimised, NEGATED when it is maximised (accuracy, F1…), so that a better curve is
always a better intermediate value for the pruner. A loss that is not finite (the training
diverged) is not reported: the trial is pruned at once.

- ``median``: Optuna's MedianPruner, once two trials are complete: a trial whose best value so far
  is worse than the median of the completed trials' values at the same step is stopped.
- ``halving``: Optuna's SuccessiveHalvingPruner (asynchronous successive halving, its defaults):
  at each rung of steps, only the best quarter of the trials that reached it go on.

What pruning needs of the spec is checked before any trial starts (ftspec.plan.pruning). Optuna
is imported inside the functions: it is the optional ``sweep`` extra.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ftspec.core.errors import Pruned
from ftspec.plan.pruning import PRUNE_CHOICES

__all__ = ["make_pruner", "intermediate_value", "reporting_to"]

# Completed trials the median pruner waits for before it stops any: with fewer, "the median"
# is one trial's luck. Small, because a sweep's grid is often four or six trials.
MEDIAN_STARTUP_TRIALS = 2


def make_pruner(kind: str) -> Any:
    """The Optuna pruner ``sweep.prune`` names (``none``: one that never prunes)."""
    import optuna

    if kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=MEDIAN_STARTUP_TRIALS, n_warmup_steps=0)
    if kind == "halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    if kind == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"unknown pruner {kind!r}; expected one of {', '.join(PRUNE_CHOICES)}")


def intermediate_value(validation_loss: float, maximize: bool) -> float:
    """What a trial reports to Optuna for a validation loss: in the study's direction."""
    return -validation_loss if maximize else validation_loss


@contextmanager
def reporting_to(trial: Any, maximize: bool, kind: str) -> Iterator[None]:
    """While the block runs, every training in this process reports its validation loss to
    ``trial`` and stops when the study's pruner says so; a stopped training leaves the block as
    ``optuna.TrialPruned`` (what Optuna records as a pruned trial). ``kind`` ``none``: nothing."""
    if kind == "none":
        yield
        return
    import optuna

    # Deferred: the pruning hook lives with the trainer callbacks, which import transformers.
    from ftspec.runtime.training import pruning

    def hook(step: int, loss: float) -> bool:
        if not math.isfinite(loss):  # diverged: no curve to compare, and nothing to wait for
            return True
        trial.report(intermediate_value(loss, maximize), step)
        return bool(trial.should_prune())

    previous = pruning.set_validation_hook(hook)
    try:
        yield
    except Pruned as exc:
        raise optuna.TrialPruned(str(exc)) from None
    finally:
        pruning.set_validation_hook(previous)
