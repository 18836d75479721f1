"""The plan says where the LM head runs in training and what it skips: SFT's label answers
carry loss on a small share of the text, measured on the sample rows; DPO leaves it to trl."""

from __future__ import annotations

from helpers import BASE_BODY, write_job

from ftspec.plan.compile import compile_spec
from ftspec.plan.describe import render_plan


def _plan(tmp_path, body: str):
    return compile_spec(write_job(tmp_path, body))[0]


def test_sft_runs_the_head_at_supervised_positions_and_says_the_share(tmp_path):
    plan = _plan(tmp_path, BASE_BODY + "method: {kind: sft, adapter: full}\n")
    positions = plan.training.loss_positions
    assert positions.mode == "supervised"
    assert 0 < positions.share < 0.5  # a queue name after a support request
    assert f"{1 - positions.share:.0%} of the head's work is skipped" in positions.reason
    assert "loss at supervised positions" in render_plan(plan)


def test_loss_on_all_text_skips_nothing(tmp_path):
    body = BASE_BODY.replace('completion: " {{ queue }}"', 'completion: " {{ queue }}"\n  loss: all')
    positions = _plan(tmp_path, body + "method: {kind: sft, adapter: full}\n").training.loss_positions
    assert positions.share == 1.0 and "none of it is skipped" in positions.reason
