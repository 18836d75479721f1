"""What a training recipe is given: the plan, and where to read and write."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# TrainJob.resume_from when the recipe is to look for the last checkpoint itself.
LOOK = "look"


@dataclass
class TrainJob:
    plan: Any  # the train step's view of the plan (ftspec.plan.keys.PlanView)
    root: Path  # the spec's repository root: plan paths are relative to it
    data_dir: Path  # prepare_data's outputs (splits, tokenizer, tiny base model)
    checkpoints: Path  # trainer checkpoints of this train step's key, kept across crashes
    out_dir: Path  # where the finished model is written (made final by the runner)
    metrics: Path  # metrics.jsonl, one line per logged step
    callbacks: list = field(default_factory=list)  # extra trainer callbacks (tests use them)
    # The tracker's run is named after the run directory that trains (the model itself
    # lives in the step store, under the step's key).
    run_name: str = "ftspec"
    # The checkpoint to resume from: LOOK (the recipe finds the last complete one), or
    # what the launcher found before starting several processes (None: from the start),
    # so that no two processes clean up or choose differently.
    resume_from: str | None = LOOK
    # How Ctrl-C reaches the recipe: None is ftspec.runtime.training.resume.Interrupt (one
    # process); a training worker gets the launcher's stop request instead.
    interrupt: Any = None
    # Training workers only: where the main process writes what the saved model must hold
    # (ftspec.runtime.distributed.launcher checks the saved files against it).
    expected: Path | None = None
    # Distillation only: the teach step's output, where it prepared the teacher (an earlier
    # stage's model merged, a GGUF file converted). The teacher is frozen and never saved.
    teach_dir: Path | None = None


@dataclass
class TrainResult:
    steps: int
    train_loss: float | None
    eval_loss: float | None
    resumed_from: str | None
    stopped_early: bool

    @classmethod
    def from_trainer(cls, trainer, resumed_from: str | None) -> "TrainResult":
        history = trainer.state.log_history
        losses = [h["loss"] for h in history if "loss" in h]
        evals = [h["eval_loss"] for h in history if "eval_loss" in h]
        return cls(
            steps=trainer.state.global_step,
            train_loss=losses[-1] if losses else None,
            eval_loss=evals[-1] if evals else None,
            resumed_from=resumed_from,
            stopped_early=trainer.state.global_step < trainer.state.max_steps,
        )
