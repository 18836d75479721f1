"""Trainer callbacks shared by the recipes."""

from __future__ import annotations

import json
from pathlib import Path

from transformers import TrainerCallback

# What metrics.jsonl keeps of each log line (the rest is the trainer's bookkeeping).
KEEP = ("loss", "eval_loss", "learning_rate", "grad_norm", "mean_token_accuracy", "eval_mean_token_accuracy",
        "rewards/accuracies", "rewards/margins", "eval_rewards/accuracies", "eval_rewards/margins", "num_tokens")


class MetricsLog(TrainerCallback):
    """Append one JSON line per logged step to ``metrics.jsonl``.

    On resume, lines past the checkpoint's step are dropped first: they belong to
    the part of the run that is about to be redone.
    """

    def __init__(self, path: Path, resume_step: int = 0):
        self.path = path
        if path.exists():
            kept = [l for l in path.read_text(encoding="utf-8").splitlines()
                    if l.strip() and json.loads(l).get("step", 0) <= resume_step]
            path.write_text("".join(l + "\n" for l in kept), encoding="utf-8")

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or not state.is_world_process_zero:
            return
        record = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4)}
        record.update({k: logs[k] for k in KEEP if k in logs})
        if len(record) > 2:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")
