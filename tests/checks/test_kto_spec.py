"""A KTO spec on feedback rows is checked at validate, each problem at its line (or a bad row at
FILE:ROW), and planned as it runs: the method's settings, the feedback format's templates, the
feedback metric, and what a change re-runs (beta re-trains; an eval-only change does not)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

from ftspec.core.errors import SpecError
from ftspec.plan.compile import compile_spec
from ftspec.plan.describe import render_plan

HEAD = """\
ftspec: 1
name: k
model: {kind: tiny, hidden_size: 32, num_layers: 2, num_heads: 4, max_position_embeddings: 256, init_seed: 1}
data:
  train: rows.jsonl
  split: {validation: 0.1, test: 0.1, seed: 1}
"""
FEEDBACK = """\
format:
  kind: feedback
  prompt: "Q: {{ q }}\\nA:"
  completion: " {{ a }}"
  label: "{{ up }}"
"""
KTO = """\
method:
  kind: kto
  beta: 0.25
  desirable_weight: 1.5
  undesirable_weight: 0.8
  loss_type: apo_zero_unpaired
"""
TRAINING = "training: {max_steps: 4, batch_size: 8, max_length: 128}\n"


def write(tmp_path: Path, method: str = KTO, fmt: str = FEEDBACK, training: str = TRAINING, extra: str = "",
          up=lambda i: i % 3 != 0) -> Path:
    (tmp_path / ".git").mkdir(parents=True, exist_ok=True)
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps({"q": f"what is {i}+{i}", "a": str(2 * i), "up": up(i),
                                                             "mood": "good"}) + "\n" for i in range(60)))
    spec = tmp_path / "job.yaml"
    spec.write_text(HEAD + fmt + method + training + extra)
    return spec


def errors(spec: Path) -> list[str]:
    with pytest.raises(SpecError) as info:
        compile_spec(spec)
    return [i.format() for i in info.value.issues if i.is_error]


def line_of(spec: Path, text: str) -> int:
    return next(n for n, line in enumerate(spec.read_text().splitlines(), 1) if text in line)


def test_the_plan_holds_the_kto_settings_the_feedback_templates_and_the_feedback_metric(tmp_path):
    plan, _ = compile_spec(write(tmp_path))
    k = plan.method.kto
    assert plan.method.objective == "kto"
    assert (k.beta, k.desirable_weight, k.undesirable_weight, k.loss_type) == (0.25, 1.5, 0.8, "apo_zero_unpaired")
    assert plan.format.kind == "feedback" and sorted(plan.format.templates) == ["completion", "label", "prompt"]
    assert [m.name for m in plan.eval.metrics] == ["feedback_margin"]
    assert plan.eval.outputs == ("completion_logprobs",)
    assert plan.training.batching.mode == "padded"
    shown = render_plan(plan)
    assert "kto + lora" in shown and "beta 0.25, loss apo_zero_unpaired, weights desirable 1.5 / undesirable 0.8" \
        in shown


def test_the_defaults_are_trls(tmp_path):
    k = compile_spec(write(tmp_path, method="method: {kind: kto}\n"))[0].method.kto
    assert (k.beta, k.desirable_weight, k.undesirable_weight, k.loss_type) == (0.1, 1.0, 1.0, "kto")


def test_a_beta_change_retrains_and_an_eval_change_does_not(tmp_path):
    spec = write(tmp_path, extra="eval: {baseline: true}\n")
    base = {s.name: s.key for s in compile_spec(spec)[0].steps}
    spec.write_text(spec.read_text().replace("beta: 0.25", "beta: 0.3"))
    beta = {s.name: s.key for s in compile_spec(spec)[0].steps}
    assert [n for n in base if base[n] != beta[n]] == ["train", "generate_tuned", "eval_tuned", "report"]
    spec.write_text(spec.read_text().replace("eval: {baseline: true}", "eval: {baseline: true, limit: 5}"))
    limited = {s.name: s.key for s in compile_spec(spec)[0].steps}
    assert limited["train"] == beta["train"] and limited["generate_tuned"] != beta["generate_tuned"]


@pytest.mark.parametrize("method, fmt, training, where, says", [
    ("method: {kind: kto}\n", 'format:\n  kind: prompt_completion\n  prompt: "{{ q }}"\n  completion: "{{ a }}"\n',
     TRAINING, "kind: prompt_completion", "KTO learns from thumbs up/down feedback: format.kind must be 'feedback'"),
    ("method: {kind: sft}\n", FEEDBACK, TRAINING, "kind: feedback", "train method.kind: kto, not sft"),
    ("method: {kind: grpo, group_size: 2, rewards: [exact_match]}\n", FEEDBACK, TRAINING, "kind: feedback",
     "train method.kind: kto, not grpo"),
    ("method: {kind: kto}\n", 'format:\n  kind: feedback\n  prompt: "{{ q }}"\n  completion: "{{ a }}"\n',
     TRAINING, "format:", "format.label: required key is missing"),
    ("method: {kind: kto}\n", FEEDBACK, "training: {max_steps: 4, batch_size: 1}\n", "batch_size: 1",
     "needs at least 2 rows per batch"),
    ("method: {kind: kto}\n", FEEDBACK, "training: {max_steps: 4, batch_size: 8, batching: length_grouped}\n",
     "batching", "is for SFT"),
    ("method: {kind: kto, beta: 0}\n", FEEDBACK, TRAINING, "beta: 0", "greater than 0"),
    ("method: {kind: kto, desirable_weight: -1}\n", FEEDBACK, TRAINING, "desirable_weight", "greater than 0"),
    ("method: {kind: kto, undesirable_weight: 5000}\n", FEEDBACK, TRAINING, "undesirable_weight",
     "must be at most 1000"),
    ("method: {kind: kto, loss_type: sigmoid}\n", FEEDBACK, TRAINING, "loss_type", "'kto' or 'apo_zero_unpaired'"),
    ("method: {kind: kto}\n", FEEDBACK, TRAINING + "compute: {num_processes: 2, strategy: fsdp}\n", "strategy: fsdp",
     "fsdp is not supported for it yet"),
])
def test_bad_kto_specs_are_refused_at_their_line(tmp_path, method, fmt, training, where, says):
    spec = write(tmp_path, method, fmt, training)
    found = errors(spec)
    assert any(f"job.yaml:{line_of(spec, where)}" in e and says in e for e in found), found


def test_apo_zero_unpaired_needs_no_second_row_per_batch(tmp_path):
    spec = write(tmp_path, training="training: {max_steps: 4, batch_size: 1}\n")
    assert compile_spec(spec)[0].training.batch_size == 1


@pytest.mark.parametrize("label", ["{{ mood }}", "mood", "{{ q }}"])
def test_a_label_that_is_not_a_boolean_is_a_bad_row_at_its_file_and_row(tmp_path, label):
    spec = write(tmp_path, fmt=FEEDBACK.replace("{{ up }}", label))
    found = errors(spec)
    assert found and all("rows.jsonl:1" in found[0] and "format.label" in e and "must render to true or false" in e
                         for e in found[:1]), found


def test_one_bad_label_row_is_reported_at_its_row_or_skipped(tmp_path):
    spec = write(tmp_path, up=lambda i: "maybe" if i == 3 else i % 2 == 0)
    found = errors(spec)
    assert len(found) == 1 and "rows.jsonl:4" in found[0] and "'maybe'" in found[0], found
    spec.write_text(spec.read_text().replace("  train: rows.jsonl\n", "  train: rows.jsonl\n  on_bad_row: skip\n"))
    assert compile_spec(spec)[0].data.on_bad_row == "skip"


@pytest.mark.parametrize("fmt, extra, where, says", [
    (FEEDBACK, "eval: {metrics: [exact_match]}\n", "exact_match", "an undesirable row's completion is what not"),
    ('format:\n  kind: prompt_completion\n  prompt: "{{ q }}"\n  completion: "{{ a }}"\n',
     "eval: {metrics: [feedback_margin]}\n", "feedback_margin", "feedback_margin scores feedback rows"),
    (FEEDBACK, "eval: {mode: choices}\n", "choices", "not feedback rows"),
])
def test_metrics_that_do_not_fit_feedback_rows_are_refused_at_their_line(tmp_path, fmt, extra, where, says):
    method = KTO if "feedback" in fmt else "method: {kind: sft}\n"
    spec = write(tmp_path, method, fmt, extra=extra)
    found = errors(spec)
    assert any(f"job.yaml:{line_of(spec, where)}" in e and says in e for e in found), found


def test_bedrock_refuses_kto_at_the_method_kind(tmp_path):
    (tmp_path / ".git").mkdir()
    shutil.copytree(ROOT / "specs" / "data", tmp_path / "specs" / "data")
    doc = yaml.safe_load((ROOT / "specs" / "bedrock-nova.yaml").read_text(encoding="utf-8"))
    doc.pop("profiles", None)
    doc["method"] = {"kind": "kto"}
    spec = tmp_path / "specs" / "kto.yaml"
    spec.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    found = errors(spec)
    assert any(f"kto.yaml:{line_of(spec, 'kind: kto')}" in e and "no KTO" in e for e in found), found
