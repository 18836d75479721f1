"""The DPO recipe trains with the head at the answers' tokens when the plan says so
(tests/runtime/training/test_dpo_completion_head.py holds the trainer's equivalence to TRL's, and
that the reference always takes the policy's path)."""

from __future__ import annotations

import pytest

pytest.importorskip("trl")

from helpers import TINY, run_job, write_job  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from ftspec.runtime.training import dpo_trainer  # noqa: E402

BODY = TINY + """
data:
  train: tickets.jsonl
  split: {validation: 0.1, seed: 1}
  derive: {wrong: "{{ 'billing' if queue != 'billing' else 'account' }}"}
format: {kind: preference, prompt: "Request: {{ text }}\\nQueue:", chosen: " {{ queue }}", rejected: " {{ wrong }}"}
method: {kind: dpo, beta: 0.1, adapter: full}
training: {max_steps: 1, batch_size: 4, max_length: 128, logging_steps: 1}
eval: {limit: 2, max_new_tokens: 2, metrics: [accuracy]}
compute: {device: cpu, precision: fp32}
"""


class _Paths(TrainerCallback):
    """What path the trained model's head took, seen from inside the trainer."""

    def __init__(self):
        self.installed = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.installed = dpo_trainer.installed(model)


def test_the_recipe_runs_the_plans_loss_positions(tmp_path):
    seen = _Paths()
    ctx, _ = run_job(write_job(tmp_path, BODY), callbacks=[seen])
    assert ctx.plan.training.loss_positions.mode == "supervised"
    assert seen.installed is True
