"""Reward models (method.kind: reward_model) on a tiny model: the base model with a one-output score
head, trained on preference pairs with TRL's RewardTrainer. Its held-out pair accuracy beats chance
on a separable toy set; its settings reach the trainer; it has no baseline; a later GRPO stage uses it
as a reward; what cannot be done with it (export, generate) is refused in one line."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("trl")

from click.testing import CliRunner  # noqa: E402
from helpers import preempted_at, run_job  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from ftspec.cli import main  # noqa: E402

WORDS = ["alpha", "beta", "gamma", "delta", "omega", "kappa"]

HEAD = """\
ftspec: 1
name: rm
model: {kind: tiny, hidden_size: 32, num_layers: 2, num_heads: 4, max_position_embeddings: 256, init_seed: 1,
        tokenizer: {kind: byte}}
compute: {device: cpu}
"""

PAIRS = """\
data:
  train: pairs.jsonl
  split: {test: 0.2, seed: 1}
format: {kind: preference, prompt: "{{ text }}:", chosen: " {{ good }}", rejected: " {{ bad }}"}
"""

PROMPTS = """\
data:
  train: prompts.jsonl
  split: {test: 0.1, seed: 1}
format: {kind: prompt_completion, prompt: "{{ text }}:", completion: " {{ answer }}"}
"""


def write_data(tmp_path: Path, rows: int = 120) -> None:
    """Pairs whose chosen answer always holds the word 'yes', which no rejected answer does."""
    (tmp_path / ".git").mkdir(parents=True, exist_ok=True)
    rnd = random.Random(0)
    with open(tmp_path / "pairs.jsonl", "w", encoding="utf-8") as fh, \
            open(tmp_path / "prompts.jsonl", "w", encoding="utf-8") as prompts:
        for i in range(rows):
            text = " ".join(rnd.choice(WORDS) for _ in range(2)) + f" {i}"
            filler = rnd.choice(WORDS)
            good, bad = (f"yes {filler}", f"no {filler}") if i % 2 else (f"{filler} yes", f"{filler} no")
            fh.write(json.dumps({"text": text, "good": good, "bad": bad}) + "\n")
            prompts.write(json.dumps({"text": text, "answer": "yes"}) + "\n")


def write_spec(tmp_path: Path, body: str) -> Path:
    write_data(tmp_path)
    spec = tmp_path / "rm.yaml"
    spec.write_text(HEAD + body, encoding="utf-8")
    return spec


class Captured(TrainerCallback):
    def __init__(self):
        self.args, self.model = None, None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.args, self.model = args, model


def test_a_reward_model_beats_chance_on_held_out_pairs_with_a_margin(tmp_path):
    spec = write_spec(tmp_path, PAIRS + """\
method: {kind: reward_model, adapter: full}
training: {max_steps: 40, batch_size: 8, learning_rate: 3.0e-3, max_length: 64, logging_steps: 5}
""")
    result, lines = run_job(spec)
    plan = result.plan
    assert [m.name for m in plan.eval.metrics] == ["pair_accuracy", "pair_margin"]  # the defaults of a reward model
    assert plan.eval.baseline is False  # an untrained score head is noise: compared with chance instead
    assert "generate_base" not in {s.name for s in plan.steps}
    tuned = json.loads((result.run_dir / "eval-tuned" / "metrics.json").read_text())
    assert tuned["rows"] == 24
    assert tuned["metrics"]["pair_accuracy"] >= 0.9, tuned  # chance is 0.5
    assert tuned["metrics"]["pair_margin"] > 0.5, tuned
    assert tuned["details"]["reward_model"]["chance"] == 0.5
    rows = [json.loads(x) for x in (result.run_dir / "eval-tuned" / "predictions.jsonl").read_text().splitlines()]
    assert all({"chosen_score", "rejected_score"} <= set(r) and r["scores"]["pair_margin"] ==
               pytest.approx(r["chosen_score"] - r["rejected_score"]) for r in rows)
    assert result.report["tuned"]["pair_accuracy"] == tuned["metrics"]["pair_accuracy"]


def test_the_settings_reach_the_reward_trainer_and_a_lora_adapter_trains_the_score_head(tmp_path):
    spec = write_spec(tmp_path, PAIRS + """\
method:
  kind: reward_model
  adapter: {kind: lora, r: 4, target_modules: [q_proj, v_proj]}
  center_rewards_coefficient: 0.25
training: {max_steps: 1, batch_size: 4, max_length: 48, gradient_checkpointing: false}
eval: {limit: 4}
""")
    captured = Captured()
    result, _ = run_job(spec, callbacks=[captured])
    assert result.plan.method.reward_model.center_rewards_coefficient == 0.25
    assert captured.args.center_rewards_coefficient == 0.25
    assert captured.args.max_length == 48 and captured.args.gradient_checkpointing is False
    config = json.loads((result.run_dir / "model" / "adapter_config.json").read_text())
    assert config["task_type"] == "SEQ_CLS"  # peft keeps the new score head trainable, and saves it
    trainable = {n for n, p in captured.model.named_parameters() if p.requires_grad}
    assert any("score" in n for n in trainable) and any("lora_" in n for n in trainable)
    assert "pair_accuracy" in json.loads((result.run_dir / "eval-tuned" / "metrics.json").read_text())["metrics"]


def test_a_center_rewards_coefficient_of_zero_is_no_centring(tmp_path):
    spec = write_spec(tmp_path, PAIRS + """\
method: {kind: reward_model, adapter: full}
training: {max_steps: 1, batch_size: 4, max_length: 48}
eval: {limit: 4}
""")
    captured = Captured()
    run_job(spec, callbacks=[captured])
    assert captured.args.center_rewards_coefficient is None


STAGES = """\
stages:
  - name: rm
    data: {train: pairs.jsonl, split: {test: 0.2, seed: 1}}
    format: {kind: preference, prompt: "{{ text }}:", chosen: " {{ good }}", rejected: " {{ bad }}"}
    method: {kind: reward_model, adapter: full}
    training: {max_steps: 30, batch_size: 8, learning_rate: 3.0e-3}
  - name: policy
    from: base
    method:
      kind: grpo
      adapter: {kind: full}
      group_size: 4
      max_completion_tokens: 3
      rewards: [{reward_model: rm, weight: 2}]
    training: {max_steps: 2, batch_size: 8, learning_rate: 1.0e-3, logging_steps: 1}
    eval: {max_new_tokens: 3, limit: 4, stop: []}
"""


def staged_spec(tmp_path: Path, stages: str = STAGES) -> Path:
    write_data(tmp_path)
    spec = tmp_path / "staged.yaml"
    spec.write_text(HEAD + PROMPTS + "training: {max_length: 64}\n" + stages, encoding="utf-8")
    return spec


def test_a_grpo_stage_learns_from_an_earlier_stages_reward_model(tmp_path):
    spec = staged_spec(tmp_path)
    result, _ = run_job(spec)
    plan = result.plan
    rm = next(p for p in plan.stages if p.stage == "rm")
    reward = plan.method.grpo.rewards[0]
    assert (reward.kind, reward.stage, reward.weight) == ("reward_model", "rm", 2.0)
    assert reward.model.train == rm.step("train").key  # a change to the reward model trains this stage again
    logged = [json.loads(x) for x in (result.run_dir / "model" / "metrics.jsonl").read_text().splitlines()]
    assert len(logged) == 2 and all("rewards/rm/mean" in r and "rewards/rm/std" in r for r in logged)
    assert all(r["rewards/rm/mean"] == r["rewards/rm/mean"] for r in logged)  # a number, not NaN


def test_a_change_to_the_reward_model_trains_the_grpo_stage_again(tmp_path):
    from ftspec.plan.compile import compile_spec

    spec = staged_spec(tmp_path)
    plan, _ = compile_spec(spec)
    spec.write_text(spec.read_text().replace("method: {kind: reward_model, adapter: full}",
                                             "method: {kind: reward_model, adapter: full, "
                                             "center_rewards_coefficient: 0.5}"), encoding="utf-8")
    changed, _ = compile_spec(spec)
    assert changed.step("train").key != plan.step("train").key
    assert changed.step("prepare_data").key == plan.step("prepare_data").key


def test_export_and_generate_of_a_reward_model_are_refused_in_one_line(tmp_path):
    spec = write_spec(tmp_path, PAIRS + """\
method: {kind: reward_model, adapter: full}
training: {max_steps: 1, batch_size: 4, max_length: 48}
eval: {limit: 4}
""")
    run_job(spec)
    runner = CliRunner()
    out = tmp_path / "exported"
    result = runner.invoke(main, ["export", str(spec), "--output", str(out)])
    assert result.exit_code == 2, result.output
    assert "a reward model is a score head" in result.output and "Traceback" not in result.output
    assert not out.exists()
    result = runner.invoke(main, ["generate", str(spec), "hello"])
    assert result.exit_code == 2, result.output
    assert "nothing to generate" in result.output and "Traceback" not in result.output
    result = runner.invoke(main, ["chat", str(spec)], input="hello\n")
    assert result.exit_code == 2, result.output
    assert "nothing to chat with" in result.output and "Traceback" not in result.output


def test_a_reward_model_cut_off_resumes_to_the_weights_of_an_uninterrupted_run(tmp_path):
    import hashlib

    body = PAIRS + """method: {kind: reward_model, adapter: {kind: full}}
training: {max_steps: 5, batch_size: 8, learning_rate: 1.0e-3, max_length: 64, logging_steps: 1, save_every: 2}
"""
    spec = write_spec(tmp_path / "cut", body)
    with pytest.raises(SystemExit):
        run_job(spec, callbacks=[preempted_at(3)])
    resumed, _ = run_job(spec)
    assert json.loads((resumed.step_dir("train") / "train.json").read_text())["resumed_from"] == "checkpoint-2"
    whole, _ = run_job(write_spec(tmp_path / "whole", body))

    def weights(result):
        return hashlib.sha256((result.step_dir("train") / "model.safetensors").read_bytes()).hexdigest()

    assert weights(resumed) == weights(whole)
