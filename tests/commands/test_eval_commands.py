"""Evaluation end to end: gates that fail exit 3, `ftspec eval` and `ftspec report`
re-run only their steps, choices mode, and an LLM judge wired through a local model
(run by the scoring step, on the answers the generation step saved)."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("trl")

from conftest import run_cli  # noqa: E402
from helpers import BASE_BODY, run_job, write_job  # noqa: E402

BODY = BASE_BODY.replace("max_steps: 4", "max_steps: 2") + "method: {kind: sft, adapter: full}\n"


def test_a_gate_not_met_exits_3_and_says_by_how_much(tmp_path):
    body = BODY.replace("metrics: [accuracy]}", "metrics: [accuracy], gates: {accuracy: '>= 0.99'}}")
    spec = write_job(tmp_path, body)
    out = run_cli(["run", str(spec)], cwd=tmp_path)
    assert out.returncode == 3, out.stderr
    assert "ftspec: 1 evaluation gate not met: accuracy" in out.stderr
    report = json.loads((tmp_path / "runs/job/metrics.json").read_text())
    value = report["tuned"]["accuracy"]
    assert value < 0.99
    assert f"gate      accuracy >= 0.99: {value:.3f} FAILED, margin {value - 0.99:+.3f}" in out.stdout
    assert report["gates_passed"] is False and report["gates"][0]["margin"] == pytest.approx(value - 0.99)
    assert "✗" in (tmp_path / "runs/job/report.md").read_text()


def test_eval_and_report_commands_rerun_only_their_steps(tmp_path):
    spec = write_job(tmp_path, BODY)
    out = run_cli(["eval", str(spec)], cwd=tmp_path)
    assert out.returncode == 2 and "has not run for this plan" in out.stderr, "nothing to score before a run"
    run_job(spec)
    model_marker = (tmp_path / "runs/job/model/.ftspec-step.json").read_text()
    out = run_cli(["eval", str(spec)], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    ran = [l.split(":")[0] for l in out.stdout.splitlines() if l.endswith(")") and ": running" in l]
    assert ran == ["generate_base", "eval_base", "generate_tuned", "eval_tuned", "report"]
    assert (tmp_path / "runs/job/model/.ftspec-step.json").read_text() == model_marker, "the model was not retrained"
    out = run_cli(["report", str(spec)], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert [l.split(":")[0] for l in out.stdout.splitlines() if ": running" in l] == ["report"]
    html = (tmp_path / "runs/job/report.html").read_text()
    assert html.lstrip().lower().startswith("<!doctype html>") and "data:image/png;base64," in html


def test_choices_mode_and_a_judge_through_a_local_model(tmp_path):
    from ftspec.plan.model import TinyModel
    from ftspec.runtime.models import build_tiny

    tiny = {"architecture": "llama", "hidden_size": 32, "num_layers": 1, "num_heads": 4, "num_kv_heads": 4,
            "intermediate_size": 64, "max_position_embeddings": 512, "tokenizer": {"kind": "byte"}, "init_seed": 5}
    build_tiny(TinyModel.model_validate({"kind": "tiny", **tiny}), [], tmp_path / "judge-model")
    body = BODY.replace("eval: {max_new_tokens: 12, limit: 8, metrics: [accuracy]}", """eval:
  mode: choices
  limit: 6
  metrics:
    - accuracy
    - f1_macro
    - perplexity
    - name: judge
      model: ./judge-model
      rubric: "Question: {{ prompt }}\\nAnswer: {{ prediction }}\\nExpected: {{ reference }}\\nScore from 1 to 10:"
""")
    spec = write_job(tmp_path, body)
    ctx, _ = run_job(spec)
    tuned = json.loads((ctx.run_dir / "eval-tuned/metrics.json").read_text())
    assert tuned["mode"] == "choices"
    assert set(tuned["metrics"]) == {"accuracy", "f1_macro", "perplexity", "judge"}
    assert tuned["metrics"]["perplexity"] > 1
    assert tuned["details"]["judge"]["model"]["name_or_path"] == "judge-model"
    assert 0 <= tuned["details"]["judge"]["unparsed"] <= 6
    labels = {"account", "billing", "returns", "shipping", "technical"}
    predictions = [json.loads(l) for l in (ctx.run_dir / "eval-tuned/predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 6 and all(p["prediction"] in labels for p in predictions), (
        "choices mode answers with a label")
