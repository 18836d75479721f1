"""Trainer callbacks handed to training workers in tests (they must be importable there:
the tests put this folder on the workers' PYTHONPATH)."""

from __future__ import annotations

import os
import signal

from transformers import TrainerCallback


class KillRankAt(TrainerCallback):
    """SIGKILL the worker of global rank ``rank`` when it ends step ``step``."""

    def __init__(self, rank: int, step: int):
        self.rank, self.step = rank, step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step and int(os.environ.get("RANK", "0")) == self.rank:
            os.kill(os.getpid(), signal.SIGKILL)
        return control


class StopFileAt(TrainerCallback):
    """Press Ctrl-C the way the launcher does (it leaves a stop file beside the workers' job)
    as rank 0 begins step ``step``."""

    def __init__(self, step: int):
        self.step = step

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.step and int(os.environ.get("RANK", "0")) == 0:
            open(os.path.join(args.output_dir, "workers", "stop"), "w").close()
        return control
