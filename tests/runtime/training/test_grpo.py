"""GRPO (method.kind: grpo) on a tiny model: the spec's metrics as rewards.

A metric reward rises on a task the model can learn in a few dozen steps; a reward function
is given exactly each completion (cut where evaluation cuts its answers) and its row's
answer; a reward that cannot score a completion gives the plan's `missing` value; the
completions of every `sample_every`-th step are written beside the model; a Python reward
that breaks stops the run in one line; the held-out evaluation scores the rewards' metrics."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("trl")

from click.testing import CliRunner  # noqa: E402
from helpers import preempted_at, run_job, seen_args  # noqa: E402

from ftspec.cli import main  # noqa: E402

WORDS = ["alpha", "beta", "gamma", "delta", "omega", "kappa"]

HEAD = """\
ftspec: 1
name: toy
model: {kind: tiny, hidden_size: 32, num_layers: 2, num_heads: 4, max_position_embeddings: 256, init_seed: 1}
data:
  train: rows.jsonl
  split: {validation: 0.05, test: 0.1, seed: 1}
format:
  kind: prompt_completion
  prompt: "{{ text }}:"
  completion: " {{ answer }}"
compute: {device: cpu}
"""


def repo(tmp_path: Path, method: str, training: str,
         evaluation: str = "eval: {max_new_tokens: 4, limit: 20, stop: []}", rows: int = 200,
         answer=lambda i: "yes") -> Path:
    (tmp_path / ".git").mkdir(parents=True, exist_ok=True)
    rnd = random.Random(0)
    with open(tmp_path / "rows.jsonl", "w", encoding="utf-8") as fh:
        for i in range(rows):
            text = " ".join(rnd.choice(WORDS) for _ in range(3)) + f" {i}"  # each prompt its own
            fh.write(json.dumps({"text": text, "answer": answer(i)}) + "\n")
    spec = tmp_path / "job.yaml"
    spec.write_text(HEAD + method + "\n" + training + "\n" + evaluation + "\n", encoding="utf-8")
    return spec


def logged(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "model" / "metrics.jsonl").read_text().splitlines()]


def test_a_metric_reward_rises_and_the_held_out_metric_with_it(tmp_path):
    spec = repo(tmp_path, """method:
  kind: grpo
  adapter: {kind: full}
  group_size: 8
  max_completion_tokens: 4
  rewards: [chrf]""",
                "training: {max_steps: 30, batch_size: 16, learning_rate: 1.0e-2, max_length: 64, logging_steps: 1}")
    result, _ = run_job(spec)
    rewards = [r["rewards/chrf/mean"] for r in logged(result.run_dir)]
    assert len(rewards) == 30
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert last > first + 0.03, rewards  # the policy learns towards the answers the reward scores higher
    # The held-out evaluation scores the reward's own metric (none was listed in eval.metrics).
    assert [m.name for m in result.plan.eval.metrics] == ["chrf"]
    assert result.report["tuned"]["chrf"] > result.report["base"]["chrf"]
    assert {"reward", "reward_std", "rewards/chrf/std"} <= set(logged(result.run_dir)[0])


RECORDER = '''
import json, os

def record(prompts, completions, references, **kwargs):
    with open(os.environ["REWARD_LOG"], "a") as fh:
        fh.write(json.dumps({"prompts": prompts, "completions": completions, "references": references}) + "\\n")
    return [None if c.startswith("x") else float(len(c)) for c in completions]
'''


def test_a_reward_function_gets_each_completion_cut_as_evaluation_cuts_it_and_its_rows_answer(tmp_path, monkeypatch):
    (tmp_path / "rewards.py").write_text(RECORDER)
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv("REWARD_LOG", str(log))
    spec = repo(tmp_path, """method:
  kind: grpo
  adapter: {kind: full}
  group_size: 4
  max_completion_tokens: 6
  sample_every: 2
  rewards:
    - {python: "rewards.py:record", weight: 0.5, missing: -3}
    - {name: exact_match, extract: {regex: "(zzz)"}, missing: -1}""",
                "training: {max_steps: 4, batch_size: 8, learning_rate: 1.0e-3, max_length: 64, logging_steps: 1}",
                "eval: {max_new_tokens: 6, limit: 8, stop: ['a']}", answer=lambda i: f"answer {i}")
    result, _ = run_job(spec)
    rows = {json.loads(line)["prompt"]: json.loads(line)["completion"].strip()
            for line in (result.step_dir("prepare_data") / "train.jsonl").read_text().splitlines()}
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(calls) == 4  # one per step: 8 completions, 2 prompts × group_size 4
    for call in calls:
        assert len(call["prompts"]) == len(call["completions"]) == len(call["references"]) == 8
        for prompt, completion, reference in zip(call["prompts"], call["completions"], call["references"]):
            assert reference == rows[prompt]  # exactly the row's answer
            assert "a" not in completion  # cut at the evaluation's stop string, as its answers are
        assert [p for p in call["prompts"][::4] for _ in range(4)] == call["prompts"]  # groups of 4 per prompt
    metrics = logged(result.run_dir)
    # The extraction finds nothing in any completion: every one scores that reward's `missing` value.
    assert all(m["rewards/exact_match/mean"] == -1 for m in metrics)
    # What TRL is given is what the plan says: weights 0.5 and 1.
    assert [r.weight for r in result.plan.method.grpo.rewards] == [0.5, 1.0]
    samples = [json.loads(line) for line in (result.step_dir("train") / "completions.jsonl").read_text().splitlines()]
    assert sorted({s["step"] for s in samples}) == [2, 4] and len(samples) == 16
    assert all(set(s["rewards"]) == {"record", "exact_match"} for s in samples)
    by_completion = {(s["prompt"], s["completion"]): s["rewards"]["record"] for s in samples}
    for (_prompt, completion), value in by_completion.items():
        assert value == (-3 if completion.startswith("x") else float(len(completion)))


BROKEN = '''
def wrong(prompts, completions, references, **kwargs):
    return [float("nan")] * len(completions)
'''


def test_a_reward_function_that_returns_no_number_stops_the_run_in_one_line(tmp_path):
    (tmp_path / "rewards.py").write_text(BROKEN)
    spec = repo(tmp_path, """method:
  kind: grpo
  adapter: {kind: full}
  group_size: 4
  rewards: [{python: "rewards.py:wrong"}]""",
                "training: {max_steps: 2, batch_size: 8, max_length: 64, logging_steps: 1}")
    got = CliRunner().invoke(main, ["run", str(spec)])
    assert got.exit_code == 1, got.output
    assert "reward rewards.py:wrong returned nan; each reward is a finite number" in got.output
    assert "Traceback" not in got.output


def test_a_reward_file_changed_after_planning_is_refused(tmp_path):
    from ftspec.backends.executor import execute
    from ftspec.core.errors import RunFailed
    from ftspec.plan.compile import compile_spec

    (tmp_path / "rewards.py").write_text(RECORDER)
    spec = repo(tmp_path, """method:
  kind: grpo
  adapter: {kind: full}
  group_size: 4
  rewards: [{python: "rewards.py:record"}]""",
                "training: {max_steps: 2, batch_size: 8, max_length: 64, logging_steps: 1}")
    plan, _ = compile_spec(spec)
    (tmp_path / "rewards.py").write_text(RECORDER + "\n# changed\n")
    with pytest.raises(RunFailed, match="changed since the plan was made"):
        execute(plan, tmp_path, echo=lambda line: None)


def test_the_group_completions_temperature_kl_and_loss_reach_the_trainer(tmp_path):
    seen = seen_args()
    spec = repo(tmp_path, """method:
  kind: grpo
  adapter: {kind: full}
  group_size: 4
  max_completion_tokens: 5
  temperature: 0.7
  kl: 0.04
  loss_type: dr_grpo
  rewards: [{name: chrf, weight: 2}]""",
                "training: {max_steps: 1, batch_size: 8, max_length: 64, logging_steps: 1}", rows=60)
    run_job(spec, callbacks=[seen])
    args = seen.args
    assert (args.num_generations, args.max_completion_length, args.temperature, args.beta, args.loss_type) == \
        (4, 5, 0.7, 0.04, "dr_grpo")
    assert list(args.reward_weights) == [2.0]


def test_sft_then_grpo_starts_from_the_sft_model(tmp_path):
    spec = repo(tmp_path, """method: {kind: sft, adapter: {kind: full}}
stages:
  - name: sft
  - name: grpo
    method:
      kind: grpo
      adapter: {kind: full}
      group_size: 4
      max_completion_tokens: 4
      kl: 0.1
      rewards: [chrf]""",
                "training: {max_steps: 3, batch_size: 8, learning_rate: 1.0e-2, max_length: 64, logging_steps: 1}",
                rows=60)
    result, lines = run_job(spec)
    assert [s.plan.stage for s in result.stages] == ["sft"] and result.plan.stage == "grpo"
    assert result.plan.method.objective == "grpo" and result.plan.model.kind == "stage"
    assert result.plan.model.stage == "sft"
    assert any("starts from stage sft's model" in line for line in lines)
    # The reference the KL pulls towards is the SFT model: at the first step, before any update, the
    # policy (the SFT model) is its reference, and the KL between them is nothing.
    rows = logged(result.run_dir)
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-6) and rows[-1]["kl"] > rows[0]["kl"]


RESUMED = """method:
  kind: grpo
  adapter: {kind: full}
  group_size: 4
  max_completion_tokens: 4
  sample_every: 1
  rewards: [chrf]"""


def test_a_grpo_run_cut_off_resumes_from_its_checkpoint_and_exports(tmp_path):
    import hashlib

    training = "training: {max_steps: 5, batch_size: 8, learning_rate: 1.0e-2, max_length: 64, logging_steps: 1, " \
               "save_every: 2}"
    spec = repo(tmp_path / "cut", RESUMED, training, rows=60)
    with pytest.raises(SystemExit):
        run_job(spec, callbacks=[preempted_at(3)])
    resumed, _ = run_job(spec)
    assert json.loads((resumed.step_dir("train") / "train.json").read_text())["resumed_from"] == "checkpoint-2"
    steps = [json.loads(line)["step"] for line in (resumed.step_dir("train") / "completions.jsonl").read_text()
             .splitlines()]
    assert sorted(set(steps)) == [1, 2, 3, 4, 5] and all(steps.count(s) == 8 for s in set(steps))  # none twice
    whole, _ = run_job(repo(tmp_path / "whole", RESUMED, training, rows=60))

    def weights(result):
        return hashlib.sha256((result.step_dir("train") / "model.safetensors").read_bytes()).hexdigest()

    assert weights(resumed) == weights(whole)  # the same as a run never cut off
    exported = CliRunner().invoke(main, ["export", str(spec), "-o", str(tmp_path / "exported")])
    assert exported.exit_code == 0, exported.output
    assert (tmp_path / "exported" / "model.safetensors").is_file()


def test_grpo_trains_a_lora_adapter_with_its_base_as_the_reference(tmp_path):
    seen = seen_args()
    spec = repo(tmp_path, """method:
  kind: grpo
  adapter: {kind: lora, r: 4}
  group_size: 4
  max_completion_tokens: 4
  kl: 0.1
  rewards: [chrf]""", "training: {max_steps: 2, batch_size: 8, max_length: 64, logging_steps: 1}", rows=60)
    result, _ = run_job(spec, callbacks=[seen])
    assert seen.args.beta == 0.1
    assert (result.step_dir("train") / "adapter_model.safetensors").is_file()
    rows = logged(result.run_dir)
    assert all("kl" in r for r in rows)  # the KL to the adapter-less base is measured every step


def test_rloo_trains_with_leave_one_out_advantages(tmp_path):
    from trl import RLOOConfig

    seen = seen_args()
    spec = repo(tmp_path, """method:
  kind: grpo
  estimator: leave_one_out
  adapter: {kind: full}
  group_size: 4
  max_completion_tokens: 4
  rewards: [chrf]""", "training: {max_steps: 2, batch_size: 8, max_length: 64, logging_steps: 1}", rows=60)
    result, _ = run_job(spec, callbacks=[seen])
    assert isinstance(seen.args, RLOOConfig) and seen.args.num_generations == 4
    assert result.plan.method.grpo.loss_type is None
    assert all("rewards/chrf/mean" in r for r in logged(result.run_dir))
