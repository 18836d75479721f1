"""Stopping a sweep's trial on its validation curve.

A sweep (ftspec.commands.sweep) runs each trial in its own process's memory and may stop one whose
validation loss is going nowhere (Optuna's pruners). It sets one process-wide hook here; every
training of that process then calls it after each evaluation of the validation split
(``training.eval_every``) with the step and the validation loss. The hook answers True to stop:
the training stops at once, before another step, and :class:`~ftspec.core.errors.Pruned` is raised
out of the recipe and the executor, so the train step is never made complete (nor its model saved).
The trainer's checkpoints stay in the store, as after any stop, and are removed by ``ftspec gc``.

Only the main process of one-process training is watched: the sweep refuses pruning for a trial
that trains in several processes (the hook would be asked on one of them only).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from transformers import TrainerCallback

from ftspec.core.errors import Pruned

__all__ = ["ValidationHook", "set_validation_hook", "validation_hook", "PruneOnValidation", "pruning_callbacks"]

# fn(step, validation_loss) -> True to stop this training.
ValidationHook = Callable[[int, float], bool]

_hook: ValidationHook | None = None


def set_validation_hook(fn: ValidationHook | None) -> ValidationHook | None:
    """Make ``fn`` the hook every training in this process calls after each validation (None: no
    hook, the default); returns the hook it replaces, so that a caller can put it back."""
    global _hook
    if fn is not None and not callable(fn):
        raise TypeError(f"a validation hook is a function (step, validation_loss) -> bool, not {type(fn).__name__}")
    previous, _hook = _hook, fn
    return previous


def validation_hook() -> ValidationHook | None:
    """The hook set now (None when none is)."""
    return _hook


class PruneOnValidation(TrainerCallback):
    """Ask the hook after each evaluation; raise :class:`Pruned` when it says stop.

    Raising here (rather than asking the trainer to stop after the step) is what makes the stop
    immediate and keeps the recipe from saving the half-trained model as the step's output: the
    exception leaves ``trainer.train`` with nothing saved after it. The hook read is the one set
    when the training began, so a trial is judged by the sweep that started it.
    """

    def __init__(self, hook: ValidationHook):
        self.hook = hook

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not state.is_world_process_zero or not metrics or "eval_loss" not in metrics:
            return control
        loss = float(metrics["eval_loss"])  # a loss that diverged (NaN, inf) is asked about as it is
        if self.hook(int(state.global_step), loss):
            shown = f"{loss:.4f}" if math.isfinite(loss) else str(loss)
            raise Pruned(state.global_step, loss, f"train: stopped at step {state.global_step} by the sweep's pruner "
                                                  f"(validation loss {shown}); the train step is not complete")
        return control


def pruning_callbacks() -> list:
    """The callback to train with while a hook is set (none otherwise: a plain run never pays for it)."""
    return [PruneOnValidation(_hook)] if _hook is not None else []
