"""KTO on the paths a method must run on: two processes (ddp), after an SFT stage, and
resumed from a checkpoint to the weights of a run never cut off; its model exports."""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("trl")

from click.testing import CliRunner  # noqa: E402
from helpers import preempted_at, run_job  # noqa: E402

from ftspec.cli import main  # noqa: E402

TESTS = Path(__file__).resolve().parents[2]
HEAD = """\
ftspec: 1
name: toy
model: {kind: tiny, hidden_size: 32, num_layers: 2, num_heads: 4, max_position_embeddings: 256, init_seed: 1}
data:
  train: rows.jsonl
  split: {validation: 0.05, test: 0.1, seed: 1}
format:
  kind: feedback
  prompt: "{{ text }}:"
  completion: " {{ answer }}"
  label: "{{ thumbs_up }}"
"""


@pytest.fixture(autouse=True)
def _workers_import_tests(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))


def repo(tmp_path: Path, rest: str) -> Path:
    (tmp_path / ".git").mkdir(parents=True, exist_ok=True)
    rnd = random.Random(0)
    with open(tmp_path / "rows.jsonl", "w", encoding="utf-8") as fh:
        for i in range(80):
            liked = i % 2 == 0
            fh.write(json.dumps({"text": " ".join(rnd.choice(["a", "b", "c"]) for _ in range(3)) + f" {i}",
                                 "answer": "yes" if liked else "no", "thumbs_up": liked}) + "\n")
    spec = tmp_path / "job.yaml"
    spec.write_text(HEAD + rest, encoding="utf-8")
    return spec


def weights(result) -> str:
    return hashlib.sha256((result.step_dir("train") / "model.safetensors").read_bytes()).hexdigest()


def test_kto_trains_under_ddp(tmp_path):
    spec = repo(tmp_path, """method: {kind: kto, adapter: {kind: full}}
training: {max_steps: 3, batch_size: 4, learning_rate: 1.0e-3, max_length: 64, logging_steps: 1}
eval: {limit: 8}
compute: {device: cpu, precision: fp32, num_processes: 2, strategy: ddp}
""")
    result, _ = run_job(spec)
    rows = [json.loads(line) for line in (result.run_dir / "model" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3]
    assert "feedback_margin" in result.report["tuned"]


RESUMED = """method: {kind: kto, adapter: {kind: full}}
training: {max_steps: 5, batch_size: 4, learning_rate: 1.0e-3, max_length: 64, logging_steps: 1, save_every: 2}
eval: {limit: 8}
compute: {device: cpu}
"""


def test_kto_resumes_to_the_weights_of_an_uninterrupted_run_and_exports(tmp_path):
    spec = repo(tmp_path / "cut", RESUMED)
    with pytest.raises(SystemExit):
        run_job(spec, callbacks=[preempted_at(3)])
    resumed, _ = run_job(spec)
    assert json.loads((resumed.step_dir("train") / "train.json").read_text())["resumed_from"] == "checkpoint-2"
    whole, _ = run_job(repo(tmp_path / "whole", RESUMED))
    assert weights(resumed) == weights(whole)
    exported = CliRunner().invoke(main, ["export", str(spec), "-o", str(tmp_path / "exported")])
    assert exported.exit_code == 0, exported.output


def test_sft_then_kto_starts_from_the_sft_model(tmp_path):
    spec = repo(tmp_path, """method: {kind: kto, adapter: {kind: full}}
training: {max_steps: 2, batch_size: 4, max_length: 64, logging_steps: 1}
eval: {limit: 8}
compute: {device: cpu}
stages:
  - name: sft
    method: {kind: sft, adapter: {kind: full}}
    format: {kind: prompt_completion, prompt: "{{ text }}:", completion: " {{ answer }}"}
  - name: feedback
""")
    result, lines = run_job(spec)
    assert [s.plan.method.objective for s in result.stages] == ["sft"]
    assert result.plan.method.objective == "kto" and result.plan.model.kind == "stage"
    assert any("starts from stage sft's model" in line for line in lines)
