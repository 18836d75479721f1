"""A GRPO run's report: each training reward per step (a chart and its first and last values), the
completions sampled last (escaped as any text of the run), and the reward hacking check — a reward
that clearly rose in training while the held-out evaluation did not improve is a warning, in the
report and in the run's closing lines. A run that is not GRPO gets none of it."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from ftspec.runtime.report.build import build_report
from ftspec.runtime.report.console import reward_lines
from ftspec.runtime.report.rewards import reward_hacking, trend

XSS = "<script>alert(1)</script>"


# --------------------------------------------------------------------------- the rule, on synthetic metrics


def rising(start=0.1, end=0.6, steps=20, std=0.2) -> list[dict]:
    return [{"step": s + 1, "rewards/exact_match/mean": start + (end - start) * s / (steps - 1),
             "rewards/exact_match/std": std} for s in range(steps)]


def flat(value=0.3, steps=20, std=0.2) -> list[dict]:
    # wobbling around one value, by much less than the spread between completions
    return [{"step": s + 1, "rewards/exact_match/mean": value + (0.01 if s % 2 else -0.01),
             "rewards/exact_match/std": std} for s in range(steps)]


def rewards_of(log: list[dict], kind="metric", metric="exact_match") -> dict:
    return {"exact_match": {"kind": kind, "metric": metric if kind == "metric" else None,
                            "trend": trend(log, "rewards/exact_match/mean", "rewards/exact_match/std")},
            "reward": {"kind": "sum", "trend": trend([{"step": e["step"], "reward": e["rewards/exact_match/mean"],
                                                       "reward_std": e["rewards/exact_match/std"]} for e in log],
                                                     "reward", "reward_std")}}


def held_out(base: float, tuned: float, low: float, high: float, metric="exact_match") -> dict:
    return {"base": {metric: base}, "tuned": {metric: tuned}, "delta": {metric: tuned - base},
            "intervals": {"method": "paired percentile bootstrap over rows", "tuned_minus_base": {metric: [low, high]}}}


def test_a_reward_that_rose_while_its_held_out_metric_did_not_improve_is_a_warning():
    check = reward_hacking(rewards_of(rising()), held_out(0.40, 0.41, -0.03, 0.05))
    assert check.warning is not None
    assert check.warning.startswith("The training reward exact_match rose from 0.")
    assert "held-out exact_match did not improve (+0.010, 95% CI -0.030 to +0.050)" in check.warning
    assert "exploiting the reward" in check.warning
    # worse on the held-out rows is not an improvement either
    assert reward_hacking(rewards_of(rising()), held_out(0.40, 0.30, -0.15, -0.05)).warning is not None


def test_a_reward_that_rose_with_its_held_out_metric_is_no_warning():
    check = reward_hacking(rewards_of(rising()), held_out(0.40, 0.60, 0.12, 0.28))
    assert check.warning is None
    assert "improved on the held-out rows too" in check.note


def test_a_flat_reward_is_no_warning():
    check = reward_hacking(rewards_of(flat()), held_out(0.40, 0.40, -0.05, 0.05))
    assert check.warning is None
    assert "No metric reward clearly rose" in check.note


def test_a_rise_within_the_spread_between_completions_is_not_a_clear_rise():
    # +0.05 over the run, against completions whose rewards spread by 0.4: noise, not learning
    assert trend(rising(0.30, 0.35, std=0.4), "rewards/exact_match/mean", "rewards/exact_match/std")["rose"] is False
    assert trend(rising(0.30, 0.35, std=0.02), "rewards/exact_match/mean", "rewards/exact_match/std")["rose"] is True
    # three logged steps have no quarters to compare
    assert trend(rising(steps=3), "rewards/exact_match/mean", "rewards/exact_match/std")["rose"] is False


def test_python_rewards_only_compare_the_summed_reward_with_every_held_out_metric():
    summary = held_out(0.40, 0.41, -0.03, 0.05, metric="json_valid")
    check = reward_hacking(rewards_of(rising(), kind="python"), summary)
    assert check.warning is not None and check.warning.startswith("The summed training reward rose from 0.")
    assert "no held-out metric improved (json_valid +0.010, 95% CI -0.030 to +0.050" in check.warning
    assert "Python functions or reward models, with no held-out counterpart" in check.warning
    assert reward_hacking(rewards_of(rising(), kind="python"), held_out(0.4, 0.7, 0.2, 0.4)).warning is None
    # nothing evaluated against the base model: said, not guessed
    none = reward_hacking(rewards_of(rising(), kind="python"), {"base": None, "tuned": {"json_valid": 0.5}})
    assert none.warning is None and "could not be checked" in none.note


def test_without_the_base_models_evaluation_a_metric_reward_is_not_checked():
    check = reward_hacking(rewards_of(rising()), {"base": None, "tuned": {"exact_match": 0.4}, "delta": {}})
    assert check.warning is None and check.note.startswith("Not checked")


# --------------------------------------------------------------------------- a run directory written by hand


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def lines(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def grpo_plan(objective="grpo") -> dict:
    method = {"objective": objective, "adapter": {"kind": "full"}}
    if objective == "grpo":
        method["grpo"] = {"rewards": [
            {"kind": "metric", "metric": {"name": "exact_match", "extract": None}, "weight": 1.0, "missing": 0.0},
            {"kind": "python", "path": "rewards.py", "sha256": "0" * 64, "function": "looks_right", "weight": 0.5,
             "missing": 0.0}], "group_size": 2, "sample_every": 5}
    return {"name": "extract", "model": {"kind": "tiny", "architecture": "llama"}, "method": method,
            "eval": {"split": "test", "metrics": [{"name": "exact_match", "extract": None}], "gates": []}}


def hand_run(tmp_path: Path, objective="grpo") -> Path:
    run = tmp_path / "run"
    predictions = [{"index": i, "prompt": f"p{i}", "reference": "yes", "prediction": p,
                    "scores": {"exact_match": float(p == "yes")}} for i, p in enumerate(["yes", "no", "no", "no"])]
    for side in ("eval-base", "eval-tuned"):
        write(run / side / "metrics.json", json.dumps({"metrics": {"exact_match": 0.25}, "rows": 4, "split": "test",
                                                       "details": {}}))
        write(run / side / "predictions.jsonl", lines(predictions))
    log = [{"step": s, "loss": 0.1, "rewards/exact_match/mean": 0.1 + 0.04 * s, "rewards/exact_match/std": 0.1,
            "rewards/looks_right/mean": 0.5, "rewards/looks_right/std": 0.0, "reward": 0.35 + 0.04 * s,
            "reward_std": 0.1} for s in range(1, 11)] if objective == "grpo" else [{"step": 1, "loss": 1.0}]
    write(run / "model" / "metrics.jsonl", lines(log))
    if objective == "grpo":
        samples = [{"step": step, "prompt": f"Extract {XSS}", "completion": completion, "reference": "yes",
                    "rewards": {"exact_match": score, "looks_right": 0.5}}
                   for step in (5, 10) for completion, score in ((f"yes {XSS}", 1.0), ("no\x1b[31m", 0.0))]
        write(run / "model" / "completions.jsonl", lines(samples) + '{"step": 10, "prompt": "cut sh')
    return run


def test_a_grpo_report_shows_each_reward_the_check_and_the_last_sampled_completions_escaped(tmp_path):
    run, out = hand_run(tmp_path), tmp_path / "report"
    summary = build_report(run, grpo_plan(), out)
    assert summary["training_rewards"]["exact_match"]["trend"]["rose"] is True
    assert summary["training_rewards"]["looks_right"]["trend"]["rose"] is False
    assert summary["reward_hacking"].startswith("The training reward exact_match rose from 0.")
    saved = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert saved["reward_hacking"] == summary["reward_hacking"]
    md = (out / "report.md").read_text(encoding="utf-8")
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "## Rewards" in md and "*Chart in report.html: Training rewards per step*" in md
    assert "| exact_match | metric exact_match | 0.140 (step 1) | 0.500 (step 10) |" in md
    assert "| looks_right | python rewards.py:looks_right | 0.500 (step 1) | 0.500 (step 10) |" in md
    assert "### Sampled completions, step 10" in md and "2 of the 2 completions sampled at step 10" in md
    assert "- **rewards:** exact_match 1.000 · looks_right 0.500 (weighted sum 1.250)" in md  # highest first
    assert "> **⚠ The training reward exact" in md
    # the run's text is shown, never interpreted: no tag, no escape sequence
    assert XSS not in md and XSS not in html and "\x1b" not in md and "\x1b" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "\\<script>" in md
    assert 'alt="Training rewards per step" src="data:image/png;base64,' in html
    assert (out / "rewards.png").read_bytes().startswith(b"\x89PNG")
    assert reward_lines(summary) == ["  rewards   exact_match 0.160 → 0.480 · looks_right 0.500 → 0.500 · "
                                     "reward 0.410 → 0.730 (training, mean of the first → last quarter of logged "
                                     "steps)"]


def test_sampled_completions_that_cannot_be_read_leave_the_report_whole(tmp_path):
    run, out = hand_run(tmp_path), tmp_path / "report"
    (run / "model" / "completions.jsonl").unlink()
    (run / "model" / "completions.jsonl").mkdir()  # not a file: not read, not a crash
    build_report(run, grpo_plan(), out)
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "## Rewards" in md and "No sampled completions" in md
    # a completion of a megabyte is shown cut, and a line of another shape is skipped
    (run / "model" / "completions.jsonl").rmdir()
    write(run / "model" / "completions.jsonl", lines([
        {"step": 3, "prompt": "p", "completion": "y" * 1_000_000, "reference": "yes", "rewards": {"exact_match": 0.0}},
        {"step": "3", "prompt": "q", "completion": "wrong shape", "rewards": []}]))
    build_report(run, grpo_plan(), out)
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "### Sampled completions, step 3" in md and "1 of the 1 completions" in md
    assert "y" * 399 + "…" in md and "y" * 401 not in md and "wrong shape" not in md


def test_a_run_that_is_not_grpo_has_no_rewards_in_its_report(tmp_path):
    run, out = hand_run(tmp_path, objective="sft"), tmp_path / "report"
    summary = build_report(run, grpo_plan("sft"), out)
    assert "training_rewards" not in summary and "reward_hacking" not in summary
    assert "Rewards" not in (out / "report.md").read_text(encoding="utf-8")
    assert not (out / "rewards.png").exists()
    assert reward_lines(summary) == []


# --------------------------------------------------------------------------- a real run


WORDS = ["alpha", "beta", "gamma", "delta", "omega", "kappa"]

# A reward that pays for the letter s, whatever the answer: it rises as the policy learns to write
# "ssss", while the held-out exact match of the answer "yes" stays where it was.
LETTER_S = '''
def letter_s(prompts, completions, references, **kwargs):
    return [c.count("s") / max(len(c), 1) for c in completions]
'''

SPEC = """\
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
method:
  kind: grpo
  adapter: {kind: full}
  group_size: 8
  max_completion_tokens: 4
  sample_every: 10
  rewards: [{python: "rewards.py:letter_s"}]
training: {max_steps: 30, batch_size: 16, learning_rate: 1.0e-2, max_length: 64, logging_steps: 1}
eval: {metrics: [exact_match], max_new_tokens: 4, limit: 20, stop: []}
"""


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("trl")
    from helpers import run_job

    repo = tmp_path_factory.mktemp("grpo-report")
    (repo / ".git").mkdir()
    rnd = random.Random(0)
    write(repo / "rows.jsonl", lines({"text": " ".join(rnd.choice(WORDS) for _ in range(3)) + f" {i}",
                                      "answer": "yes"} for i in range(200)))
    write(repo / "rewards.py", LETTER_S)
    write(repo / "job.yaml", SPEC)
    return run_job(repo / "job.yaml")


def test_a_real_grpo_run_reports_its_reward_chart_and_sampled_completions(real_run):
    result, _ = real_run
    md = (result.run_dir / "report.md").read_text(encoding="utf-8")
    html = (result.run_dir / "report.html").read_text(encoding="utf-8")
    assert "## Rewards" in md and "| letter_s | python rewards.py:letter_s |" in md
    assert "### Sampled completions, step 30" in md and "of the 16 completions sampled at step 30" in md
    assert 'alt="Training rewards per step" src="data:image/png;base64,' in html
    assert "Sampled completions, step 30" in html
    logged = result.report["training_rewards"]["letter_s"]["trend"]
    assert logged["steps"] == 30 and logged["rose"] is True, logged


def test_a_real_reward_that_rose_while_the_held_out_metric_did_not_is_a_warning_in_report_and_closing_lines(real_run):
    result, printed = real_run
    report = result.report
    assert report["delta"]["exact_match"] <= 0  # the answer "yes" was never what the reward paid for
    warning = report["reward_hacking"]
    assert warning and warning.startswith("The summed training reward rose from ")
    assert "no held-out metric improved (exact_match" in warning
    assert f"  warning   {warning}" in "\n".join(printed).splitlines()
    assert any(line.startswith("  rewards   letter_s ") for line in "\n".join(printed).splitlines())
    assert "> **⚠ The summed training reward rose" in (result.run_dir / "report.md").read_text(encoding="utf-8")


def test_groups_whose_completions_all_scored_alike_are_a_warning():
    from ftspec.runtime.report.rewards import flat_groups

    assert "In 95% of the groups every completion scored the same reward" in flat_groups(
        [{"step": s, "frac_reward_zero_std": 0.95} for s in range(1, 11)])
    assert flat_groups([{"step": s, "frac_reward_zero_std": 0.5} for s in range(1, 11)]) is None
    assert flat_groups([{"step": 1, "frac_reward_zero_std": 1.0}]) is None  # one step says nothing yet
    assert flat_groups([{"step": s, "loss": 1.0} for s in range(1, 11)]) is None  # not a GRPO log
