"""The run report: gates, the overfitting signal, and the files build_report writes,
from small hand-written run directories (no model, no torch)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from ftspec.runtime.report.build import build_report, check_gates, overfitting_signal

ROOT = Path(__file__).resolve().parents[3]
XSS = "<script>alert(1)</script>"


# --------------------------------------------------------------------------- fixtures


def write_json(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value), encoding="utf-8")


def write_jsonl(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def plan(name="routing", metrics=("accuracy", "f1_macro"), gates=(), split="test") -> dict:
    return {
        "name": name,
        "id": "0123456789abcdef" * 4,
        "model": {"kind": "tiny", "architecture": "llama", "num_layers": 2, "hidden_size": 128},
        "method": {"objective": "sft", "adapter": {"kind": "full"}},
        "eval": {"split": split, "metrics": [{"name": m, "extract": None} for m in metrics], "gates": list(gates)},
    }


def gate(metric, op, threshold, improvement=False):
    return {"gate": f"improvement.{metric}" if improvement else metric, "metric": metric,
            "improvement": improvement, "op": op, "threshold": threshold}


LABELS = ["billing", "shipping", "technical"]
# index, reference, base prediction, tuned prediction
CASES = [
    (0, "billing", "billing", "billing"),
    (1, "shipping", XSS, "shipping"),
    (2, "technical", "technical", "shipping"),
    (3, "billing", "shipping", "billing"),
    (4, "shipping", "shipping", "shipping"),
    (5, "technical", "billing", "technical"),
]


def prediction_rows(which: int) -> list[dict]:
    rows = []
    for index, ref, *preds in CASES:
        pred = preds[which]
        rows.append({"index": index, "prompt": f"Route this request #{index}:\nQueue:", "reference": ref,
                     "prediction": pred, "scores": {"accuracy": 1.0 if pred == ref else 0.0}})
    return rows


def classification_details(matrix, columns=LABELS, rows=LABELS, per_label=None):
    return {"classification": {
        "labels": LABELS,
        "per_label": per_label or {l: {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2} for l in LABELS},
        "confusion_matrix": {"labels": list(columns), "rows": list(rows), "matrix": matrix},
    }}


RISING_LOG = (
    [{"step": s, "epoch": s / 100, "loss": 2.0 - s / 100, "learning_rate": 1e-3} for s in range(10, 101, 10)]
    + [{"step": s, "epoch": s / 100, "eval_loss": v} for s, v in ((20, 1.0), (40, 0.8), (60, 0.82), (80, 0.85),
                                                                  (100, 0.9))]
)


@pytest.fixture
def classification_run(tmp_path):
    run = tmp_path / "run"
    write_json(run / "eval-base" / "metrics.json", {
        "metrics": {"accuracy": 0.5, "f1_macro": 0.45}, "rows": 6, "split": "test", "few_shot": 0,
        "details": classification_details([[1, 1, 0, 0], [0, 1, 0, 1], [1, 0, 1, 0]], columns=LABELS + ["(other)"]),
    })
    write_json(run / "eval-tuned" / "metrics.json", {
        "metrics": {"accuracy": 5 / 6, "f1_macro": 0.8}, "rows": 6, "split": "test", "few_shot": 0,
        "details": classification_details([[2, 0, 0], [0, 2, 0], [0, 1, 1]], per_label={
            "billing": {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2},
            "shipping": {"precision": 0.6667, "recall": 1.0, "f1": 0.8, "support": 2},
            "technical": {"precision": 1.0, "recall": 0.5, "f1": 0.6667, "support": 2},
        }),
    })
    write_jsonl(run / "eval-base" / "predictions.jsonl", prediction_rows(0))
    write_jsonl(run / "eval-tuned" / "predictions.jsonl", prediction_rows(1))
    write_jsonl(run / "model" / "metrics.jsonl", RISING_LOG)
    write_json(run / "model" / "train.json", {"steps": 100, "train_loss": 1.4321, "eval_loss": 0.9,
                                              "resumed_from": None, "stopped_early": False})
    split = lambda rows: {"rows": rows, "tokens": {"p50": 40, "p90": 55, "p99": 61, "max": 70, "mean": 41.5},  # noqa: E731
                          "truncated_rows": 1, "truncation_rate": 0.0125, "loss_token_fraction": 0.083}
    write_json(run / "data" / "stats.json", {"splits": {"train": split(80), "validation": split(10), "test": split(6)},
                                             "skipped_rows": 2, "skipped_examples": ["row 7: missing 'queue' " + XSS]})
    p = plan(gates=[gate("accuracy", ">=", 0.8), gate("accuracy", ">=", 0.5, improvement=True),
                    gate("f1_macro", ">", 0.9)])
    out = tmp_path / "report"
    out.mkdir()
    return run, p, out


@pytest.fixture
def generation_run(tmp_path):
    run = tmp_path / "run"
    write_json(run / "eval-tuned" / "metrics.json", {
        "metrics": {"exact_match": 0.5, "rouge_l": 0.75}, "details": {}, "rows": 4, "split": "validation",
        "few_shot": 0})
    write_jsonl(run / "eval-tuned" / "predictions.jsonl", [
        {"index": i, "prompt": f"Summarise text {i}", "reference": f"summary {i}", "prediction": p,
         "scores": {"exact_match": em, "rouge_l": rl}}
        for i, (p, em, rl) in enumerate([("summary 0", 1.0, 1.0), ("something else", 0.0, 0.2),
                                         ("summary 2", 1.0, 1.0), ("summary", 0.0, 0.8)])])
    write_jsonl(run / "model" / "metrics.jsonl", [{"step": s, "epoch": s / 30, "loss": 3.0 / s} for s in (10, 20, 30)])
    write_json(run / "model" / "train.json", {"steps": 30, "train_loss": 0.1, "eval_loss": None,
                                              "resumed_from": None, "stopped_early": False})
    p = plan(name="summaries", metrics=("exact_match", "rouge_l"), split="validation",
             gates=[gate("exact_match", ">=", 0.4), gate("exact_match", ">=", 0.1, improvement=True)])
    out = tmp_path / "report"
    out.mkdir()
    return run, p, out


class StrictParser(HTMLParser):
    """Checks that every element is closed in order (void elements aside)."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.images: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs).get("src") or "")
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def parse_html(text: str) -> StrictParser:
    parser = StrictParser()
    parser.feed(text)
    parser.close()
    assert parser.errors == []
    assert parser.stack == []
    return parser


# --------------------------------------------------------------------------- gates


def test_gate_passing_and_failing_with_margin():
    passed, failed = check_gates([gate("accuracy", ">=", 0.8), gate("accuracy", ">=", 0.95)], None, {"accuracy": 0.9})
    assert passed["passed"] is True and passed["value"] == 0.9 and passed["margin"] == pytest.approx(0.1)
    assert passed["reason"] is None
    assert failed["passed"] is False and failed["margin"] == pytest.approx(-0.05)
    assert failed["reason"] is None
    assert set(passed) == {"gate", "metric", "improvement", "op", "threshold", "value", "passed", "margin", "reason"}


def test_improvement_gate_uses_tuned_minus_base():
    [g] = check_gates([gate("accuracy", ">=", 0.05, improvement=True)], {"accuracy": 0.8}, {"accuracy": 0.85})
    assert g["gate"] == "improvement.accuracy"
    assert g["value"] == 0.05  # not 0.04999999999999993
    assert g["passed"] is True and g["margin"] == 0.0
    [g] = check_gates([gate("accuracy", ">=", 0.3, improvement=True)], {"accuracy": 0.7}, {"accuracy": 0.8})
    assert g["passed"] is False and g["margin"] == pytest.approx(-0.2)


@pytest.mark.parametrize("op, threshold, passed, margin", [
    (">=", 0.5, True, 0.0), (">=", 0.6, False, -0.1),
    (">", 0.5, False, 0.0), (">", 0.4, True, 0.1),
    ("<=", 0.5, True, 0.0), ("<=", 0.4, False, -0.1),
    ("<", 0.5, False, 0.0), ("<", 0.6, True, 0.1),
    ("==", 0.5, True, 0.0), ("==", 0.4, False, -0.1),
])
def test_every_op(op, threshold, passed, margin):
    [g] = check_gates([gate("loss_share", op, threshold)], None, {"loss_share": 0.5})
    assert g["passed"] is passed
    assert g["margin"] == pytest.approx(margin)
    assert g["op"] == op and g["threshold"] == threshold


def test_gates_that_cannot_be_checked_fail_with_a_reason():
    gates = [gate("bleu", ">=", 0.1), gate("accuracy", ">=", 0.1, improvement=True),
             gate("f1", ">=", 0.1, improvement=True)]
    missing, no_base, missing_in_base = check_gates(gates, {"accuracy": 0.5},
                                                    {"accuracy": 0.7, "bleu": None, "f1": 0.5})
    for g in (missing, missing_in_base):
        assert g["passed"] is False and g["value"] is None and g["margin"] is None and g["reason"]
    assert no_base["passed"] is True and no_base["value"] == pytest.approx(0.2)  # both have accuracy
    [nobase] = check_gates(gates[1:2], None, {"accuracy": 0.7})
    assert "baseline" in nobase["reason"]
    [notuned] = check_gates(gates[:1], None, None)
    assert notuned["passed"] is False and "tuned" in notuned["reason"]
    assert "base" in missing_in_base["reason"]
    assert check_gates([], None, None) == []


# --------------------------------------------------------------------------- overfitting


def test_overfitting_rising_validation_loss():
    message = overfitting_signal(RISING_LOG)
    assert message is not None
    assert "step 40" in message and "step 100" in message
    assert "0.8000" in message and "0.9000" in message


def test_overfitting_healthy_run():
    log = ([{"step": s, "loss": 2.0 - s / 100} for s in range(10, 101, 10)]
           + [{"step": s, "eval_loss": v} for s, v in ((20, 1.0), (40, 0.9), (60, 0.85), (80, 0.84), (100, 0.845))])
    assert overfitting_signal(log) is None  # 0.845 is within 2% of the lowest, 0.84


def test_overfitting_needs_enough_evaluations():
    log = [{"step": s, "loss": 2.0 - s / 100} for s in range(10, 101, 10)]
    assert overfitting_signal(log) is None
    assert overfitting_signal(log + [{"step": 50, "eval_loss": 0.8}, {"step": 100, "eval_loss": 1.2}]) is None
    # the lowest point is followed by only one evaluation
    assert overfitting_signal(log + [{"step": s, "eval_loss": v} for s, v in ((30, 1.0), (60, 0.8), (90, 1.2))]) is None
    assert overfitting_signal([]) is None


def test_overfitting_needs_falling_training_loss():
    log = ([{"step": s, "loss": 1.0 + s / 100} for s in range(10, 101, 10)]
           + [{"step": s, "eval_loss": v} for s, v in ((20, 1.0), (40, 0.8), (60, 0.82), (80, 0.85), (100, 0.9))])
    assert overfitting_signal(log) is None


# --------------------------------------------------------------------------- build_report, classification


def test_metrics_json(classification_run):
    run, p, out = classification_run
    result = build_report(run, p, out)
    saved = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert saved == json.loads(json.dumps(result))
    assert saved["plan_id"] == p["id"] and saved["name"] == "routing"
    assert saved["split"] == "test" and saved["rows"] == 6
    assert saved["base"] == {"accuracy": 0.5, "f1_macro": 0.45}
    assert saved["tuned"] == {"accuracy": pytest.approx(5 / 6), "f1_macro": 0.8}
    assert saved["delta"] == {"accuracy": pytest.approx(1 / 3), "f1_macro": pytest.approx(0.35)}
    gates = {g["gate"]: g for g in saved["gates"]}
    assert gates["accuracy"]["passed"] is True and gates["accuracy"]["margin"] == pytest.approx(5 / 6 - 0.8)
    assert gates["improvement.accuracy"]["passed"] is False
    assert gates["improvement.accuracy"]["value"] == pytest.approx(1 / 3)
    assert gates["improvement.accuracy"]["margin"] == pytest.approx(1 / 3 - 0.5)
    assert gates["f1_macro"]["passed"] is False and gates["f1_macro"]["margin"] == pytest.approx(-0.1)
    assert saved["gates_passed"] is False
    assert "step 40" in saved["overfitting"]
    assert saved["details"]["tuned"]["classification"]["confusion_matrix"]["matrix"][2] == [0, 1, 1]
    assert saved["details"]["base"]["classification"]["confusion_matrix"]["labels"][-1] == "(other)"


def test_predictions_merge_base_and_tuned(classification_run):
    run, p, out = classification_run
    build_report(run, p, out)
    rows = [json.loads(l) for l in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["index"] for r in rows] == [0, 1, 2, 3, 4, 5]
    assert rows[1] == {"index": 1, "input": "Route this request #1:\nQueue:", "reference": "shipping",
                       "base": {"prediction": XSS, "scores": {"accuracy": 0.0}},
                       "tuned": {"prediction": "shipping", "scores": {"accuracy": 1.0}}}
    assert rows[2]["base"]["prediction"] == "technical" and rows[2]["tuned"]["prediction"] == "shipping"


def test_report_md(classification_run):
    run, p, out = classification_run
    build_report(run, p, out)
    md = (out / "report.md").read_text(encoding="utf-8")
    assert md.startswith("# ftspec report: routing")
    # 6 rows: +0.333 is within the noise of so few (the paired bootstrap's interval holds 0)
    assert ("tuned is not shown to be better than base on accuracy (difference within noise): "
            "base 0.500 → tuned 0.833 (+0.333, 95% CI -0.333 to +0.833)") in md
    assert "| accuracy | 0.500 (0.167 to 0.833) | 0.833 (0.500 to 1.000) | +0.333 (-0.333 to +0.833) |" in md
    assert "| f1_macro | 0.450 (0.111 to 0.929) | 0.800 (0.486 to 1.000) | +0.350 (-0.333 to +0.889) |" in md
    assert "paired percentile bootstrap over rows (6 rows, 1000 resamples, seed 0)" in md
    assert "No most-frequent-answer baseline: the training split was not found." in md
    # gates: ✓/✗, value, threshold, margin
    assert "| ✓ | accuracy | 0.833 | >= 0.8 | +0.033 |  |" in md
    assert "| ✗ | improvement.accuracy | +0.333 | >= 0.5 | -0.167 |" in md
    assert "| ✗ | f1_macro | 0.800 | > 0.9 | -0.100 |" in md
    assert "gates: 2 of 3 failed" in md
    assert "overfitting" in md and "step 40" in md
    # training and data
    assert "final train loss:** 1.0000 (last logged, step 100)" in md and "final validation loss:** 0.9000" in md
    # the mean of the logged losses 1.9, 1.8, …, 1.0, not train.json's train_loss (the last logged loss)
    assert "mean train loss:** 1.4500 (mean of the 10 logged losses, steps 10–100)" in md and "1.4321" not in md
    assert "| train | 80 | 40 | 55 | 61 | 70 | 41.5 | 1.2% (1 row) | 8.3% |" in md
    assert "Skipped rows: 2." in md
    # classification
    assert "| technical | 2 | 0.500 | 0.500 | 0.500 | 1.000 | 0.500 | 0.667 |" in md
    assert "| technical | 0 | 1 | 1 |" in md  # tuned confusion row
    assert "| technical | 1 | 0 | 1 | 0 |" in md  # base confusion row, with the (other) column
    # examples: 1, 3 and 5 improved, 2 regressed
    improved, regressed = md.split("### Improved most (3)")[1].split("### Regressed most (1)")
    for i in (1, 3, 5):
        assert f"example {i}: accuracy 0.000 → 1.000 (+1.000)" in improved
    assert "example 2: accuracy 1.000 → 0.000 (-1.000)" in regressed
    assert "example 0" not in md and "example 4" not in md
    assert "**base:** technical" in regressed and "**tuned:** shipping" in regressed
    assert "Route this request #2: ⏎ Queue:" in regressed
    assert "\\<script>alert(1)\\</script>" in improved  # escaped for Markdown: no HTML tag
    # charts beside it, and in report.html; report.md links no file (it is also copied elsewhere)
    for png in ("loss.png", "metrics.png", "confusion-tuned.png", "confusion-base.png"):
        assert f"]({png})" not in md
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "*Chart in report.html: Base vs tuned per metric*" in md


def test_report_html(classification_run):
    run, p, out = classification_run
    build_report(run, p, out)
    text = (out / "report.html").read_text(encoding="utf-8")
    parser = parse_html(text)
    assert len(parser.images) == 4
    for src in parser.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:4] == b"\x89PNG"
    assert "<script" not in text.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "http://" not in text and "https://" not in text  # self-contained
    body = "".join(parser.text)
    assert ("tuned is not shown to be better than base on accuracy (difference within noise): "
            "base 0.500 → tuned 0.833 (+0.333, 95% CI -0.333 to +0.833)") in body
    assert XSS in body  # shown as text, after unescaping
    assert "row 7: missing 'queue' " + XSS in body


def test_long_text_is_truncated(classification_run):
    run, p, out = classification_run
    rows = prediction_rows(1)
    rows[1]["prediction"] = "x" * 5000
    rows[1]["scores"] = {"accuracy": 1.0}
    write_jsonl(run / "eval-tuned" / "predictions.jsonl", rows)
    build_report(run, p, out)
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "x" * 239 + "…" in md and "x" * 241 not in md
    assert len(json.loads((out / "predictions.jsonl").read_text().splitlines()[1])["tuned"]["prediction"]) == 5000


# --------------------------------------------------------------------------- generation, no baseline


def test_generation_without_baseline(generation_run):
    run, p, out = generation_run
    result = build_report(run, p, out)
    assert result["base"] is None and result["delta"] == {}
    assert result["tuned"] == {"exact_match": 0.5, "rouge_l": 0.75}
    assert result["split"] == "validation" and result["rows"] == 4
    assert result["overfitting"] is None
    assert result["details"] == {"base": None, "tuned": {}}
    em, improvement = result["gates"]
    assert em["passed"] is True and em["margin"] == pytest.approx(0.1)
    assert improvement["passed"] is False and "baseline" in improvement["reason"]
    assert result["gates_passed"] is False

    rows = [json.loads(l) for l in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 4 and all(r["base"] is None for r in rows)
    assert rows[3]["tuned"] == {"prediction": "summary", "scores": {"exact_match": 0.0, "rouge_l": 0.8}}

    md = (out / "report.md").read_text(encoding="utf-8")
    assert "tuned model: exact_match 0.500 on 4 validation rows (no baseline to compare with)" in md
    assert "| exact_match | — | 0.500 (0.000 to 1.000) | — |" in md
    assert "| rouge_l | — | 0.750 (0.250 to 1.000) | — |" in md  # the interval re-scores the predictions
    assert "Classification" not in md
    assert "example 1: exact_match 0.000" in md and "example 3: exact_match 0.000" in md
    assert "example 0:" not in md
    assert "no validation loss" in md
    assert not (out / "confusion-tuned.png").exists()
    assert (out / "loss.png").exists() and (out / "metrics.png").exists()
    parser = parse_html((out / "report.html").read_text(encoding="utf-8"))
    assert len(parser.images) == 2


# --------------------------------------------------------------------------- missing files


def test_empty_run_directory(tmp_path):
    out = tmp_path / "report"
    out.mkdir()
    result = build_report(tmp_path / "nothing-here", plan(gates=[gate("accuracy", ">=", 0.8)]), out)
    assert result["base"] is None and result["tuned"] is None and result["delta"] == {}
    assert result["rows"] is None and result["split"] == "test"
    assert result["gates"][0]["passed"] is False and result["gates"][0]["reason"]
    assert result["gates_passed"] is False and result["overfitting"] is None
    assert (out / "predictions.jsonl").read_text() == ""
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "no evaluation results" in md and "No training record." in md and "No data statistics." in md
    parser = parse_html((out / "report.html").read_text(encoding="utf-8"))
    assert parser.images == []


def test_no_gates_passes_and_broken_files_are_skipped(classification_run):
    run, p, out = classification_run
    p["eval"]["gates"] = []
    (run / "model" / "metrics.jsonl").write_text(
        (run / "model" / "metrics.jsonl").read_text() + '{"step": 110, "loss": 0.', encoding="utf-8")  # cut short
    (run / "data" / "stats.json").write_text("{not json", encoding="utf-8")
    (run / "model" / "train.json").unlink()
    result = build_report(run, p, out)
    assert result["gates"] == [] and result["gates_passed"] is True
    assert result["overfitting"] is not None
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "No gates." in md and "No data statistics." in md
    assert "final train loss:** 1.0000 (last logged, step 100)" in md  # the log's last complete line
    assert "mean train loss:** 1.4500 (mean of the 10 logged losses, steps 10–100)" in md  # from the log alone


def test_the_mean_train_loss_is_the_mean_of_the_logged_losses(classification_run):
    """train.json's train_loss is the last logged loss (issue 23: the report called it "the
    trainer's average over the run"). The report's mean is the mean of the logged losses, a
    step logged twice (a resumed run) counted once, and the last one is labelled as the last."""
    run, p, out = classification_run
    losses = [(10, 4.0), (20, 2.0), (30, 0.5), (40, 0.2), (30, 0.3), (50, 0.0409)]  # step 30 logged again on resume
    write_jsonl(run / "model" / "metrics.jsonl", [{"step": s, "loss": v} for s, v in losses])
    write_json(run / "model" / "train.json", {"steps": 50, "train_loss": 0.0409, "eval_loss": 0.5,
                                              "resumed_from": "checkpoint-30", "stopped_early": False})
    build_report(run, p, out)
    md = (out / "report.md").read_text(encoding="utf-8")
    mean = (4.0 + 2.0 + 0.3 + 0.2 + 0.0409) / 5  # 1.3082
    assert "final train loss:** 0.0409 (last logged, step 50)" in md
    assert f"mean train loss:** {mean:.4f} (mean of the 5 logged losses, steps 10–50)" in md
    assert "average over the run" not in md and "mean train loss:** 0.0409" not in md
    # without the training log, train.json's loss is shown for what it is: the last logged one
    (run / "model" / "metrics.jsonl").unlink()
    build_report(run, p, out)
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "final train loss:** 0.0409 (last logged; the training log is missing)" in md and "mean train loss" not in md


def test_only_base_evaluated(classification_run):
    run, p, out = classification_run
    for f in ("metrics.json", "predictions.jsonl"):
        (run / "eval-tuned" / f).unlink()
    result = build_report(run, p, out)
    assert result["tuned"] is None and result["base"]["accuracy"] == 0.5
    assert all(not g["passed"] for g in result["gates"])
    rows = [json.loads(l) for l in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(r["tuned"] is None and r["base"] for r in rows)
    assert "only the base model was evaluated: accuracy 0.500" in (out / "report.md").read_text(encoding="utf-8")
    parse_html((out / "report.html").read_text(encoding="utf-8"))


def test_importing_the_module_stays_light():
    code = ("import sys, ftspec.runtime.report.build; "
            "bad = [m for m in ('torch', 'transformers', 'matplotlib') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


def test_lower_is_better_metric_and_positional_merge(tmp_path):
    run, out = tmp_path / "run", tmp_path / "report"
    out.mkdir()
    write_json(run / "eval-base" / "metrics.json", {"metrics": {"perplexity": 40.2}, "details": {}, "rows": 2})
    write_json(run / "eval-tuned" / "metrics.json", {"metrics": {"perplexity": 3.1}, "details": {}, "rows": 2})
    rows = lambda preds: [{"prompt": f"q{i}", "reference": "a", "prediction": p, "scores": {}}  # noqa: E731
                          for i, p in enumerate(preds)]
    write_jsonl(run / "eval-base" / "predictions.jsonl", rows(["x", "y"]))
    write_jsonl(run / "eval-tuned" / "predictions.jsonl", rows(["a", "b"]))
    result = build_report(run, plan(metrics=("perplexity",), gates=[gate("perplexity", "<=", 5.0)]), out)
    assert result["delta"] == {"perplexity": pytest.approx(-37.1)}
    assert result["gates"][0]["passed"] is True and result["gates"][0]["margin"] == pytest.approx(1.9)
    md = (out / "report.md").read_text(encoding="utf-8")
    # no per-row perplexity, so no interval, so no claim
    assert "tuned vs base on perplexity: base 40.200 → tuned 3.100 (-37.100; no interval for this metric)" in md
    merged = [json.loads(l) for l in (out / "predictions.jsonl").read_text().splitlines()]
    assert [(r["index"], r["input"], r["base"]["prediction"], r["tuned"]["prediction"]) for r in merged] == [
        (0, "q0", "x", "a"), (1, "q1", "y", "b")]
    assert "No per-example scores" in md


# --------------------------------------------------------------------------- the plan as the run gives it


def test_the_typed_plan_its_report_view_and_its_json_give_the_same_report(classification_run, in_root):
    """The run step hands build_report the report step's view of the typed plan; tests and
    plan.json give it JSON. Gates, metric order and split read the same from all three."""
    from ftspec.catalog import steps
    from ftspec.plan import keys
    from ftspec.plan.compile import compile_spec

    run, _, out = classification_run
    typed, _ = compile_spec(ROOT / "specs" / "quickstart.yaml")
    results = {}
    for name, given in (("typed", typed), ("view", keys.view(typed, steps.REPORT)), ("json", typed.to_dict())):
        results[name] = build_report(run, given, out)
    assert results["typed"]["gates"] == results["json"]["gates"] == results["view"]["gates"]
    assert [g["gate"] for g in results["typed"]["gates"]] == [g.gate for g in typed.eval.gates]
    assert results["typed"]["headline"] == typed.eval.metrics[0].name == results["view"]["headline"]
    # The view shows the report step's fields only: the plan id is not among them (a report
    # stays valid for every plan with the same report key), and reading past it raises.
    assert results["view"]["plan_id"] is None and results["typed"]["plan_id"] is None
    assert results["json"]["plan_id"] == typed.id
    with pytest.raises(keys.UndeclaredRead):
        _ = keys.view(typed, steps.REPORT).id


# --------------------------------------------------------------------------- the document and its renderers


def every_block(text: str):
    from ftspec.runtime.report.document import Alert, Chart, Document, Fields, Heading, Paragraph, Table

    return Document(f"title {text}", [
        Heading(2, f"heading {text}"),
        Paragraph(f"para {text}"),
        Paragraph(f"verdict {text}", strong=True),
        Alert(f"alert {text}"),
        Table.of([f"head {text}", "n"], [[f"cell {text}", 1], [None, 2.5]]),
        Fields(((f"key {text}", f"value {text}"),)),
        Chart(f"caption {text}", "chart.png"),
        Chart("a chart that was not drawn", "missing.png"),
    ])


HOSTILE = '<script>alert("x")</script> & <b>bold</b> [link](http://example.com) `code` *em* | pipe \'q\''


def test_html_escapes_every_block_and_inlines_only_drawn_charts():
    from ftspec.runtime.report.render import render_html

    png = b"\x89PNG\r\n\x1a\n-fake"
    text = render_html(every_block(HOSTILE), {"chart.png": png})
    parser = parse_html(text)
    assert "<script" not in text and "<b>" not in text and "http://" not in text.replace("http://example.com", "")
    body = "".join(parser.text)
    for label in ("heading", "para", "verdict", "alert", "head", "cell", "key", "value", "caption"):
        assert f"{label} {HOSTILE}" in body, label
    assert parser.images == ["data:image/png;base64," + base64.b64encode(png).decode()]
    assert "a chart that was not drawn" not in body
    assert "<title>title &lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &lt;b&gt;" in text  # the title too
    assert '<td class="num">1</td>' in text and '<td class="num">2.5</td>' in text and "<td></td>" in text


def test_markdown_escapes_every_block():
    from ftspec.runtime.report.render import render_markdown

    md = render_markdown(every_block(HOSTILE))
    import re

    assert not re.search(r"(?<!\\)<(script|/script|b|/b)>", md) and not re.search(r"(?<!\\)\]\(http", md)
    assert "\\<script>alert(\"x\")\\</script>" in md and "\\`code\\`" in md and "\\*em\\*" in md and "\\| pipe" in md
    assert "| head " in md and "|---|---:|" in md
    assert "*Chart in report.html: caption " in md and "](chart.png)" not in md


def test_the_html_template_is_a_package_file_rendered_with_autoescape():
    from ftspec.runtime.report import render

    template = render._template()
    assert template.environment.autoescape is True
    assert (ROOT / "ftspec" / "runtime" / "report" / "templates" / render.TEMPLATE).is_file()


def test_an_unknown_block_is_a_clear_error():
    from ftspec.runtime.report.document import Document
    from ftspec.runtime.report.render import render_html, render_markdown

    doc = Document("t", [("h", 1, "a positional tuple")])
    for render in (render_markdown, lambda d: render_html(d, {})):
        with pytest.raises(TypeError, match="not a report block"):
            render(doc)


# --------------------------------------------------------------------------- run files a pull request wrote


def test_run_files_of_any_shape_give_a_report_with_no_terminal_escape(tmp_path):
    """A run directory is a file a pull request can carry: metric names and values, counts,
    split names and logged losses of the wrong shape (text with escape sequences, objects,
    1e308) make no traceback, and nothing of them reaches report.md or report.html unescaped."""
    from conftest import ROOT

    from ftspec.plan.compile import compile_spec

    plan, _ = compile_spec(ROOT / "specs" / "quickstart.yaml")
    evil = "x\x1b]0;TITLE\x07\u202e"
    run = tmp_path / "run"
    for side in ("eval-base", "eval-tuned"):
        (run / side).mkdir(parents=True)
        (run / side / "metrics.json").write_text(json.dumps(
            {"metrics": {"accuracy": 0.5, evil: 1.0}, "rows": evil, "split": {"a": 1}}), encoding="utf-8")
    (run / "model").mkdir()
    (run / "model" / "train.json").write_text(json.dumps({"steps": evil}), encoding="utf-8")
    log = [{"step": 1, "loss": 1e308}, {"step": 2, "loss": -1e308}, {"step": 1e308, "loss": 1.0},
           {"step": 3, "loss": 0.5, "eval_loss": evil}]
    (run / "model" / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in log), encoding="utf-8")
    out = tmp_path / "report"
    out.mkdir()
    summary = build_report(run, plan, out)
    assert summary["rows"] is None and summary["split"] == plan.eval.split
    assert evil not in summary["tuned"]
    for name in ("report.md", "report.html"):
        text = (out / name).read_text(encoding="utf-8")
        assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text, name
        assert "\\x1b" in text and "TITLE" in text, name  # shown, as its escapes
