"""The plan says where the LM head runs in training and what it skips: SFT's label answers
carry loss on a small share of the text, measured on the sample rows; DPO's head runs at the
chosen and rejected answers only, its share measured with the prompt read once per answer; a
sharded head (FSDP, DeepSpeed) is left to trl at every position."""

from __future__ import annotations

import pytest
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


DPO = BASE_BODY.replace('split: {validation: 0.1, test: 0.1, seed: 1}', 'split: {validation: 0.1, test: 0.1, seed: 1}\n'
                        "  derive: {wrong: \"{{ 'billing' if queue != 'billing' else 'account' }}\"}").replace(
    'kind: prompt_completion', 'kind: preference').replace(
    'completion: " {{ queue }}"', 'chosen: " {{ queue }}"\n  rejected: " {{ wrong }}"')


def test_dpo_runs_the_head_at_the_answers_and_says_the_share(tmp_path):
    plan = _plan(tmp_path, DPO + "method: {kind: dpo, adapter: {kind: lora, r: 4}}\n")
    positions = plan.training.loss_positions
    assert positions.mode == "supervised"
    # Two queue names against a support request read twice: a small share, below SFT's.
    sft = _plan(tmp_path / "sft", BASE_BODY + "method: {kind: sft, adapter: full}\n").training.loss_positions
    assert 0 < positions.share < 0.5 and positions.share < 2 * sft.share
    assert "the chosen and rejected answers' tokens" in positions.reason
    assert f"{1 - positions.share:.0%} of the head's work is skipped" in positions.reason
    assert "loss at supervised positions" in render_plan(plan)


@pytest.mark.parametrize("method", ["{kind: sft, adapter: full}", "{kind: dpo, adapter: full}"])
def test_a_sharded_head_is_left_to_trl_at_every_position(tmp_path, method):
    body = (DPO if "dpo" in method else BASE_BODY).replace(
        "compute: {device: cpu}", "compute: {device: cuda, strategy: fsdp, num_processes: 2}")
    positions = _plan(tmp_path, body + f"method: {method}\n").training.loss_positions
    assert positions.mode == "all" and positions.share is None
    assert "compute.strategy fsdp" in positions.reason
