"""A GRPO spec is checked at validate, each problem at its line, and planned as it runs: the
rewards (the spec's own metric definitions, or a Python file by path and sha256), the group,
the completions, and what a change re-runs (a reward weight re-trains; eval only re-scores)."""

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
name: g
model: {kind: tiny, hidden_size: 32, num_layers: 2, num_heads: 4, max_position_embeddings: 256, init_seed: 1}
data:
  train: rows.jsonl
  split: {validation: 0.1, test: 0.1, seed: 1}
"""
FORMAT = """\
format:
  kind: prompt_completion
  prompt: "Q: {{ q }}\\nA:"
  completion: " {{ a }}"
"""
TRAINING = "training: {max_steps: 4, batch_size: 8, max_length: 128}\n"
REWARD = "def score(prompts, completions, references, **kw):\n    return [1.0 for _ in completions]\n"


def write(tmp_path: Path, method: str, fmt: str = FORMAT, training: str = TRAINING, extra: str = "") -> Path:
    (tmp_path / ".git").mkdir(parents=True, exist_ok=True)
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps({"q": f"what is {i}+{i}", "a": str(2 * i),
                                                             "chosen": "x", "rejected": "y"}) + "\n"
                                                 for i in range(60)))
    (tmp_path / "rewards.py").write_text(REWARD)
    (tmp_path / "schema.json").write_text('{"type": "object"}')
    spec = tmp_path / "job.yaml"
    spec.write_text(HEAD + fmt + method + training + extra)
    return spec


def errors(spec: Path) -> list[str]:
    with pytest.raises(SpecError) as info:
        compile_spec(spec)
    return [i.format() for i in info.value.issues if i.is_error]


def line_of(spec: Path, text: str) -> int:
    return next(n for n, line in enumerate(spec.read_text().splitlines(), 1) if text in line)


GRPO = """\
method:
  kind: grpo
  group_size: 4
  max_completion_tokens: 12
  temperature: 0.7
  kl: 0.04
  loss_type: dr_grpo
  sample_every: 5
  rewards:
    - {name: exact_match, extract: {regex: "(\\\\d+)"}, weight: 2, missing: -1}
    - {name: json_schema, schema: schema.json, weight: 0.5}
    - {python: "rewards.py:score", weight: 0.25}
"""


def test_the_plan_holds_the_rewards_the_group_and_the_completions(tmp_path):
    spec = write(tmp_path, GRPO)
    plan, _ = compile_spec(spec)
    g = plan.method.grpo
    assert plan.method.objective == "grpo"
    assert (g.group_size, g.max_completion_tokens, g.temperature, g.kl, g.loss_type, g.sample_every) == \
        (4, 12, 0.7, 0.04, "dr_grpo", 5)
    exact, schema, code = g.rewards
    assert (exact.kind, exact.metric.name, exact.metric.extract.regex, exact.weight, exact.missing) == \
        ("metric", "exact_match", "(\\d+)", 2.0, -1.0)
    assert schema.metric.schema_.text == '{"type": "object"}' and schema.weight == 0.5 and schema.missing == 0.0
    import hashlib

    assert (code.kind, code.path, code.function, code.sha256) == \
        ("python", "rewards.py", "score", hashlib.sha256(REWARD.encode()).hexdigest())
    # The evaluation scores the reward metrics, on generated answers.
    assert [m.name for m in plan.eval.metrics] == ["exact_match", "json_schema"]
    assert plan.eval.mode == "generate"
    assert plan.training.eval_every is None and plan.training.batching.mode == "padded"
    shown = CliRunner().invoke(main, ["plan", str(spec)]).output
    assert "4 completions per prompt of at most 12 tokens" in shown
    assert "reward exact_match after extraction × 2" in shown
    assert "!! runs Python reward code in training: rewards.py:score" in shown


def test_max_completion_tokens_defaults_to_the_evaluations_answers(tmp_path):
    spec = write(tmp_path, GRPO.replace("  max_completion_tokens: 12\n", ""), extra="eval: {max_new_tokens: 20}\n")
    assert compile_spec(spec)[0].method.grpo.max_completion_tokens == 20


def test_a_reward_change_retrains_and_an_eval_change_only_rescores(tmp_path):
    spec = write(tmp_path, GRPO)
    base = {s.name: s.key for s in compile_spec(spec)[0].steps}
    spec.write_text(spec.read_text().replace("weight: 0.25", "weight: 0.3"))
    weight = {s.name: s.key for s in compile_spec(spec)[0].steps}
    assert [n for n in base if base[n] != weight[n]] == ["train", "generate_tuned", "eval_tuned", "report"]
    spec.write_text(spec.read_text() + "eval: {metrics: [exact_match, token_f1]}\n")
    rescored = {s.name: s.key for s in compile_spec(spec)[0].steps}
    assert rescored["train"] == weight["train"] and rescored["eval_tuned"] != weight["eval_tuned"]
    (tmp_path / "rewards.py").write_text(REWARD + "\n# changed\n")
    code = {s.name: s.key for s in compile_spec(spec)[0].steps}
    assert code["train"] != rescored["train"]  # the reward's code is in the train step's key (its sha256)


@pytest.mark.parametrize("method, where, says", [
    ("method:\n  kind: grpo\n  group_size: 4\n  rewards: [f1_macro]\n", "rewards: [f1_macro]",
     "f1_macro does not score one completion"),
    ("method:\n  kind: grpo\n  group_size: 4\n  rewards: [no_such_metric]\n", "rewards: [no_such_metric]", ""),
    ("method:\n  kind: grpo\n  group_size: 4\n  rewards: [{name: judge, model: x/y, rubric: 'r'}]\n", "rewards:",
     "an LLM judge is not offered as a reward"),
    ("method:\n  kind: grpo\n  group_size: 4\n  rewards: [{python: '../outside.py:f'}]\n", "python:",
     "outside"),
    ("method:\n  kind: grpo\n  group_size: 4\n  rewards: [{python: 'rewards.py:nothing'}]\n", "python:",
     "defines no function 'nothing'"),
    ("method:\n  kind: grpo\n  group_size: 3\n  rewards: [exact_match]\n", "group_size: 3",
     "3 completions per prompt do not divide the batch of 8"),
    ("method:\n  kind: grpo\n  group_size: 4\n  rewards: []\n", "rewards: []", ""),
    ("method:\n  kind: grpo\n  group_size: 4\n  rewards: [{name: json_schema, schema: missing.json}]\n", "schema:",
     "missing.json"),
    ("method:\n  kind: grpo\n  estimator: leave_one_out\n  loss_type: dapo\n  group_size: 4\n  rewards: [chrf]\n",
     "loss_type: dapo", "RLOO (estimator: leave_one_out) has no loss_type"),
])
def test_bad_rewards_and_groups_are_refused_at_their_line(tmp_path, method, where, says):
    (tmp_path / "outside.py").parent.mkdir(exist_ok=True)
    spec = write(tmp_path / "repo", method)
    (tmp_path / "outside.py").write_text(REWARD)
    found = errors(spec)
    line = line_of(spec, where)
    assert any(f"job.yaml:{line}" in e and says in e for e in found), found


def test_grpo_needs_prompts_with_answers_not_pairs(tmp_path):
    pairs = 'format:\n  kind: preference\n  prompt: "{{ q }}"\n  chosen: "{{ chosen }}"\n  rejected: "{{ rejected }}"\n'
    spec = write(tmp_path, "method:\n  kind: grpo\n  group_size: 4\n  rewards: [exact_match]\n", fmt=pairs)
    assert any("GRPO samples its own answers to prompts" in e and f"job.yaml:{line_of(spec, 'kind: preference')}" in e
               for e in errors(spec))


@pytest.mark.parametrize("training, where, says", [
    ("training: {max_steps: 4, batch_size: 8, eval_every: 2}\n", "eval_every", "no validation loss"),
    ("training: {max_steps: 4, batch_size: 8, early_stopping: {patience: 2}}\n", "early_stopping", "early stopping"),
    ("training: {max_steps: 4, batch_size: 8, batching: packed}\n", "batching", "cannot pack"),
])
def test_what_grpo_does_not_do_is_refused_at_its_line(tmp_path, training, where, says):
    spec = write(tmp_path, "method:\n  kind: grpo\n  group_size: 4\n  rewards: [exact_match]\n", training=training)
    assert any(says in e and f"job.yaml:{line_of(spec, where)}" in e for e in errors(spec)), errors(spec)


def test_validate_never_runs_the_reward_code(tmp_path):
    spec = write(tmp_path, "method:\n  kind: grpo\n  group_size: 4\n  rewards: [{python: 'rewards.py:score'}]\n")
    (tmp_path / "rewards.py").write_text("open('ran', 'w').close()\n" + REWARD)
    got = CliRunner().invoke(main, ["validate", str(spec)])
    assert got.exit_code == 0, got.output
    assert not (tmp_path / "ran").exists() and not Path("ran").exists()


def test_diff_names_new_reward_code_first(tmp_path):
    import subprocess

    spec = write(tmp_path, GRPO)
    for args in (["init", "-q"], ["add", "-A"], ["-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "one"]):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)
    (tmp_path / "rewards.py").write_text(REWARD.replace("1.0", "2.0"))
    got = CliRunner().invoke(main, ["diff", "--git", "HEAD", str(spec)])
    assert got.exit_code == 0, got.output
    lines = got.output.splitlines()
    assert lines[0].startswith("ftspec diff")
    assert "!! new or changed Python reward code will run in training: rewards.py:score" in lines[1]
    assert "steps to re-run: train" in got.output
    markdown = CliRunner().invoke(main, ["diff", "--git", "HEAD", str(spec), "--format", "markdown"]).output
    assert "New or changed Python reward code will run in training" in markdown


def test_a_grpo_spec_without_prompts_is_refused_at_its_line(tmp_path):
    empty = 'format:\n  kind: prompt_completion\n  prompt: ""\n  completion: " {{ a }}"\n'
    spec = write(tmp_path, "method:\n  kind: grpo\n  group_size: 4\n  rewards: [exact_match]\n", fmt=empty)
    line = line_of(spec, 'prompt: ""')
    assert any("every sampled row's prompt is empty" in e and f"job.yaml:{line}" in e for e in errors(spec)), \
        errors(spec)


def test_default_completions_that_fill_max_length_are_refused_at_validate(tmp_path):
    spec = write(tmp_path, "method:\n  kind: grpo\n  group_size: 4\n  rewards: [exact_match]\n",
                 training="training: {max_steps: 4, batch_size: 8, max_length: 64}\n",
                 extra="eval: {max_new_tokens: 64}\n")
    line = line_of(spec, "max_length: 64")
    assert any("completions of up to 64 tokens leave no room" in e and f"job.yaml:{line}" in e
               for e in errors(spec)), errors(spec)
