"""GRPO with two processes (compute.strategy: ddp): each samples its share of the step's
completions, the rewards of the whole step are logged once, the sampled completions are
written once (by the main process), and the saved model is the trained one."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("trl")

from helpers import TINY, run_job, write_job  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

TESTS = Path(__file__).resolve().parents[2]

BODY = TINY + """
data:
  train: tickets.jsonl
  split: {validation: 0.1, test: 0.1, seed: 1}
format:
  kind: prompt_completion
  prompt: "Request: {{ text }}\\nQueue:"
  completion: " {{ queue }}"
method:
  kind: grpo
  adapter: {kind: full}
  group_size: 4
  max_completion_tokens: 4
  sample_every: 1
  rewards: [chrf]
training: {max_steps: 3, batch_size: 4, learning_rate: 1.0e-2, max_length: 128, logging_steps: 1}
eval: {max_new_tokens: 4, limit: 8}
compute: {device: cpu, precision: fp32, num_processes: 2, strategy: ddp}
"""


@pytest.fixture(autouse=True)
def _workers_import_tests(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))


def test_grpo_under_ddp_trains_logs_and_samples_once(tmp_path):
    result, _ = run_job(write_job(tmp_path, BODY))
    rows = [json.loads(line) for line in (result.run_dir / "model" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "rewards/chrf/mean" in r] == [1, 2, 3]
    samples = [json.loads(line) for line in (result.step_dir("train") / "completions.jsonl").read_text().splitlines()]
    # batch 4 per process × 2 processes = 8 completions a step; the main process writes its own share once
    assert sorted({s["step"] for s in samples}) == [1, 2, 3]
    assert all(sum(s["step"] == step for s in samples) == 4 for step in (1, 2, 3))
    trained = load_file(result.run_dir / "model" / "model.safetensors")
    start = load_file(result.run_dir / "data" / "base-model" / "model.safetensors")
    assert max((trained[k] - start[k]).abs().max().item() for k in trained) > 1e-5
    assert result.report is not None and "chrf" in result.report["tuned"]
