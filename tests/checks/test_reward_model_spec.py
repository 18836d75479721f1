"""A reward-model spec (method.kind: reward_model) is checked at validate, each problem at its line,
and planned as it runs: preference pairs only, its own metrics (pair accuracy against chance, no
baseline), its settings in the plan; a GRPO stage names an earlier reward-model stage as a reward,
and nothing else."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ftspec.cli import main
from ftspec.core.errors import SpecError
from ftspec.plan.compile import compile_spec

HEAD = """\
ftspec: 1
name: r
model: {kind: tiny, hidden_size: 32, num_layers: 2, num_heads: 4, max_position_embeddings: 256, init_seed: 1}
data:
  train: rows.jsonl
  split: {validation: 0.1, test: 0.1, seed: 1}
training: {max_steps: 4, batch_size: 8, max_length: 128}
"""
PAIRS = 'format: {kind: preference, prompt: "{{ q }}", chosen: " {{ chosen }}", rejected: " {{ rejected }}"}\n'
PROMPTS = 'format: {kind: prompt_completion, prompt: "{{ q }}", completion: " {{ a }}"}\n'
RM = "method: {kind: reward_model, adapter: full}\n"


def write(tmp_path: Path, body: str, head: str = HEAD) -> Path:
    (tmp_path / ".git").mkdir(parents=True, exist_ok=True)
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps({"q": f"what is {i}+{i}", "a": str(2 * i),
                                                             "chosen": "x", "rejected": "y"}) + "\n"
                                                 for i in range(60)))
    spec = tmp_path / "job.yaml"
    spec.write_text(head + body)
    return spec


def errors(spec: Path) -> list[str]:
    with pytest.raises(SpecError) as info:
        compile_spec(spec)
    return [i.format() for i in info.value.issues if i.is_error]


def line_of(spec: Path, text: str) -> int:
    return next(n for n, line in enumerate(spec.read_text().splitlines(), 1) if text in line)


def test_a_reward_model_is_planned_with_its_settings_its_metrics_and_no_baseline(tmp_path):
    spec = write(tmp_path, PAIRS + "method: {kind: reward_model, center_rewards_coefficient: 0.01}\n")
    plan, _ = compile_spec(spec)
    assert plan.method.objective == "reward_model" and plan.method.adapter.kind == "lora"
    assert plan.method.reward_model.center_rewards_coefficient == 0.01
    assert [m.name for m in plan.eval.metrics] == ["pair_accuracy", "pair_margin"]
    assert list(plan.eval.outputs) == ["pair_scores"]
    assert plan.eval.baseline is False
    names = {s.name for s in plan.steps}
    assert "generate_tuned" in names and "generate_base" not in names and "eval_base" not in names
    assert plan.training.batching.mode == "padded" and plan.training.loss_positions.mode == "all"
    shown = CliRunner().invoke(main, ["plan", str(spec)]).output
    assert "reward_model + lora" in shown and "scores centred (coefficient 0.01)" in shown
    assert "no baseline (the base model has no trained score head" in shown and "chance, 0.5" in shown


def test_the_reward_models_center_coefficient_re_trains_and_its_metrics_only_re_score(tmp_path):
    spec = write(tmp_path, PAIRS + RM)
    before = {s.name: s.key for s in compile_spec(spec)[0].steps}
    spec.write_text(spec.read_text().replace("adapter: full}", "adapter: full, center_rewards_coefficient: 0.1}"))
    centred = {s.name: s.key for s in compile_spec(spec)[0].steps}
    assert [n for n in before if before[n] != centred[n]] == ["train", "generate_tuned", "eval_tuned", "report"]
    spec.write_text(spec.read_text() + "eval: {metrics: [pair_accuracy]}\n")
    rescored = {s.name: s.key for s in compile_spec(spec)[0].steps}
    assert rescored["train"] == centred["train"] and rescored["generate_tuned"] == centred["generate_tuned"]
    assert rescored["eval_tuned"] != centred["eval_tuned"]


@pytest.mark.parametrize("body, where, says", [
    (PROMPTS + RM, "kind: prompt_completion", "format.kind must be 'preference'"),
    (PAIRS + RM + "eval: {metrics: [preference_accuracy]}\n", "metrics:", "preference_accuracy cannot be computed"),
    (PAIRS + RM + "eval: {metrics: [exact_match]}\n", "metrics:", "exact_match cannot be computed"),
    (PAIRS + "method: {kind: dpo}\neval: {metrics: [pair_accuracy]}\n", "metrics:",
     "pair_accuracy scores pairs with a trained reward model"),
    (PAIRS + RM + "eval: {gates: {improvement.pair_accuracy: '>= 0.1'}}\n", "gates:", "no baseline to improve on"),
    (PAIRS + RM.replace("adapter: full", "adapter: {kind: qlora}"), "qlora", "qlora is not supported"),
    (PAIRS + "method: {kind: reward_model, center_rewards_coefficient: -1}\n", "center_rewards_coefficient", ""),
    (PAIRS + "method: {kind: reward_model, margin: 1}\n", "margin", ""),
    (PAIRS + RM.replace("training", "x") + "training: {max_steps: 4, batch_size: 8, batching: packed}\n",
     "batching: packed", "pads each batch of pairs"),
    (PAIRS + RM + "compute: {strategy: fsdp, num_processes: 2}\n", "strategy: fsdp", "not supported for it yet"),
    (PAIRS + RM + "compute: {strategy: ddp, num_processes: 2}\n", "num_processes: 2", "in one process for now"),
])
def test_bad_reward_model_specs_are_refused_at_their_line(tmp_path, body, where, says):
    head = HEAD.replace("training: {max_steps: 4, batch_size: 8, max_length: 128}\n", "") if "batching" in body \
        else HEAD
    spec = write(tmp_path, body, head)
    found = errors(spec)
    assert any(f"job.yaml:{line_of(spec, where)}" in e and says in e for e in found), found


STAGES = """\
stages:
  - name: rm
    format: {kind: preference, prompt: "{{ q }}", chosen: " {{ chosen }}", rejected: " {{ rejected }}"}
    method: {kind: reward_model, adapter: full}
  - name: policy
    from: base
    method: {kind: grpo, group_size: 4, rewards: [{reward_model: REF, weight: 0.5}]}
"""


def staged(tmp_path: Path, stages: str) -> Path:
    return write(tmp_path, PROMPTS + stages)


def test_a_grpo_stage_names_the_reward_model_stage_and_its_train_key(tmp_path):
    spec = staged(tmp_path, STAGES.replace("REF", "rm"))
    plan, _ = compile_spec(spec)
    reward = plan.method.grpo.rewards[0]
    rm = plan.stages[0]
    assert reward.kind == "reward_model" and reward.stage == "rm" and reward.weight == 0.5
    assert reward.model.train == rm.step("train").key and reward.model.adapter == "full"
    assert [m.name for m in plan.eval.metrics] == ["exact_match"]  # the policy's evaluation: its answers
    shown = CliRunner().invoke(main, ["plan", str(spec)]).output
    assert f"reward: stage rm's reward model (train key {rm.step('train').key[:8]})" in shown
    # A change to the reward model trains the GRPO stage again.
    spec.write_text(spec.read_text().replace("adapter: full}", "adapter: full, center_rewards_coefficient: 0.2}"))
    assert compile_spec(spec)[0].step("train").key != plan.step("train").key


@pytest.mark.parametrize("stages, where, says", [
    (STAGES.replace("REF", "nowhere"), "reward_model: nowhere", "'nowhere' is not an earlier stage"),
    (STAGES.replace("REF", "policy"), "reward_model: policy", "'policy' is not an earlier stage"),
    (STAGES.replace("REF", "sft").replace("  - name: rm", "  - name: sft\n    method: {kind: sft}\n  - name: rm"),
     "reward_model: sft", "stage sft trains a sft model, not a reward model"),
    (STAGES.replace("REF", "rm").replace("    from: base\n", ""), "name: policy", "starts from stage rm, a reward"),
    ("stages:\n  - name: rm\n    format: {kind: preference, prompt: '{{ q }}', chosen: '{{ chosen }}', rejected: "
     "'{{ rejected }}'}\n    method: {kind: reward_model}\n  - name: policy\n    from: base\n    method: {kind: grpo, "
     "group_size: 4, rewards: [{reward_model: later}]}\n  - name: later\n    from: base\n    method: {kind: sft}\n",
     "reward_model: later", "(it comes after this one)"),
    (STAGES.replace("REF", "rm").replace("weight: 0.5", "missing: 1"), "missing: 1", ""),
])
def test_a_reward_model_reward_is_refused_at_its_line(tmp_path, stages, where, says):
    spec = staged(tmp_path, stages)
    found = errors(spec)
    assert any(f"job.yaml:{line_of(spec, where)}" in e and says in e for e in found), found


def test_a_reward_model_reward_on_several_processes_is_refused_at_its_line(tmp_path):
    spec = staged(tmp_path, STAGES.replace("REF", "rm") + "compute: {strategy: ddp, num_processes: 2}\n")
    found = errors(spec)
    assert any(f"job.yaml:{line_of(spec, 'reward_model: rm')}" in e and "runs in one process for now" in e
               for e in found), found


def test_a_reward_model_reward_in_a_spec_without_stages_is_refused(tmp_path):
    spec = write(tmp_path, PROMPTS + "method: {kind: grpo, group_size: 4, rewards: [{reward_model: rm}]}\n")
    found = errors(spec)
    assert any(f"job.yaml:{line_of(spec, 'reward_model: rm')}" in e and "this spec has no stages" in e
               for e in found), found
