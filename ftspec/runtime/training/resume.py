"""Stopping and resuming training without losing more than the work since the last
checkpoint.

- A checkpoint counts only when the trainer finished writing it: weights,
  optimizer, scheduler and, written last, ``trainer_state.json``. One cut off by a
  crash is removed before resuming, so the run resumes from the one before it.
- The first Ctrl-C asks the trainer to save a checkpoint at the end of the current
  step and stop; the run then exits 130 and the same command resumes. A second
  Ctrl-C stops at once.
- No checkpoint is written at the last step: the recipe saves the finished model
  right after, and the train step's checkpoints are removed once it is complete.
"""

from __future__ import annotations

import re
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path

from transformers import TrainerCallback

from ftspec.core.folders import refuse_links, remove_own

REQUIRED = ("trainer_state.json", "optimizer.pt", "scheduler.pt")
WEIGHTS = ("model.safetensors", "adapter_model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def is_complete_checkpoint(folder: Path) -> bool:
    return all((folder / name).is_file() for name in REQUIRED) and any((folder / w).is_file() for w in WEIGHTS)


def last_checkpoint(folder: Path) -> str | None:
    """The newest complete checkpoint in ``folder``; incomplete ones are removed."""
    if not folder.is_dir():
        return None
    found = []
    for path in folder.iterdir():
        m = re.fullmatch(r"checkpoint-(\d+)", path.name)
        if m and (path.is_dir() or path.is_symlink()):
            refuse_links(path, folder, "writes its checkpoints")  # never resumed from, nor removed, through a link
            found.append((int(m.group(1)), path))
    for _, path in sorted(found, reverse=True):
        if is_complete_checkpoint(path):
            return str(path)
        remove_own(path, folder)  # cut off while being written
    return None


def checkpoint_step(path: str | None) -> int:
    return int(path.rsplit("-", 1)[1]) if path else 0


@contextmanager
def on_sigint(handler):
    """``handler`` for SIGINT while the block runs (in the main thread: Python lets no
    other thread set one), the previous handler again after it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class Interrupt(TrainerCallback):
    """Turn the first Ctrl-C into "save a checkpoint after this step, then stop"."""

    def __init__(self):
        self.requested = False

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nftspec: stopping after this step and saving a checkpoint (Ctrl-C again to stop at once)",
              file=sys.stderr, flush=True)

    @contextmanager
    def installed(self):
        with on_sigint(self._handler):
            yield self

    def on_step_end(self, args, state, control, **kwargs):
        if self.requested:
            control.should_save = True
            control.should_training_stop = True
        return control


class NoFinalCheckpoint(TrainerCallback):
    """Skip the trainer's checkpoint at the last step.

    The trainer saves one there by default (weights and optimizer state: about three
    times the model for AdamW), only for the recipe to save the model next and the
    step's checkpoints to be deleted. A run that keeps the best checkpoint needs it.
    Listed before :class:`Interrupt`, which asks for a save after Ctrl-C.
    """

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps and not args.load_best_model_at_end:
            control.should_save = False
        return control
