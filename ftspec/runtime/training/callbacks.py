"""Trainer callbacks shared by the recipes."""

from __future__ import annotations

import sys
from pathlib import Path

from transformers import TrainerCallback

from ftspec.core.io import dumps, iter_jsonl

# What metrics.jsonl keeps of each log line (the rest is the trainer's bookkeeping).
KEEP = ("loss", "eval_loss", "learning_rate", "grad_norm", "mean_token_accuracy", "eval_mean_token_accuracy",
        "rewards/accuracies", "rewards/margins", "eval_rewards/accuracies", "eval_rewards/margins", "num_tokens",
        "ce", "kl", "eval_ce", "eval_kl")  # logit distillation's two parts (ftspec.runtime.recipes.distill)
GRPO_KEEP = ("reward", "reward_std", "completions/mean_length", "completions/clipped_ratio", "frac_reward_zero_std",
             "entropy")


class MetricsLog(TrainerCallback):
    """Append one JSON line per logged step to ``metrics.jsonl``.

    On resume, lines past the checkpoint's step are dropped first: they belong to
    the part of the run that is about to be redone.
    """

    def __init__(self, path: Path, resume_step: int = 0):
        self.path = path
        if path.exists():
            kept = []
            for _, line, record in iter_jsonl(path, lenient=True):  # a line cut off by a crash: skipped
                step = record.get("step", 0)
                if isinstance(step, (int, float)) and not isinstance(step, bool) and step <= resume_step:
                    kept.append(line.rstrip("\r\n"))
            path.write_text("".join(l + "\n" for l in kept), encoding="utf-8")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or not state.is_world_process_zero:
            return
        record = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4)}
        record.update({k: logs[k] for k in KEEP if k in logs})
        # GRPO: each reward's mean and spread over the step's completions, and their sum's.
        record.update({k: v for k, v in logs.items() if k.startswith("rewards/") or k in GRPO_KEEP})
        if len(record) > 2:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(dumps(record) + "\n")  # a loss that diverged (NaN) is written as null


class ProgressBar(TrainerCallback):
    """One progress bar for the whole training, with the latest losses beside it,
    instead of the trainer's nested bars and printed log dictionaries. When the
    output is not a terminal (CI logs), one plain line per logged step instead."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.bar = None
        self.postfix: dict[str, str] = {}

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.stream.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="train", unit="step",
                            dynamic_ncols=True, file=self.stream)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or not state.is_world_process_zero:
            return
        fresh = {}
        for key, short in (("loss", "loss"), ("eval_loss", "val"), ("rewards/accuracies", "pref_acc"),
                           ("reward", "reward")):
            if key in logs:
                fresh[short] = f"{logs[key]:.4f}"
        if not fresh:
            return
        self.postfix.update(fresh)
        if self.bar is not None:
            self.bar.set_postfix(self.postfix, refresh=False)
        else:
            values = " ".join(f"{k} {v}" for k, v in fresh.items())
            print(f"  step {state.global_step}/{state.max_steps}  {values}", file=self.stream, flush=True)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def use_quiet_progress(trainer) -> None:
    """Swap the trainer's own progress output for :class:`ProgressBar`."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(ProgressBar())
