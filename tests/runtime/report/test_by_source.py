"""The report broken down per source of a training mixture: every metric of the evaluated
split on each source's rows (grouped through prepare_data's ``<split>.sources``), matching a
hand count, and a warning when the tuned model does worse on a source. Hand-written run
directories, no model."""

from __future__ import annotations

import json
from pathlib import Path

from ftspec.runtime.report.build import build_report
from ftspec.runtime.report.sources import console_lines


def write_json(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value), encoding="utf-8")


def write_lines(path: Path, values) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(v) + "\n" for v in values), encoding="utf-8")


def plan(metrics=("accuracy", "judge")) -> dict:
    return {"name": "mix", "id": "ab" * 32,
            "model": {"kind": "tiny", "architecture": "llama", "num_layers": 2, "hidden_size": 64},
            "method": {"objective": "sft", "adapter": {"kind": "lora"}},
            "eval": {"split": "test", "metrics": [{"name": m} for m in metrics], "gates": []}}


def make_run(tmp_path: Path, rows: list[tuple[str, str, str, str, float, float]], extra_sources=("a", "b")) -> Path:
    """rows: (source, reference, base prediction, tuned prediction, base judge score, tuned judge score);
    the sources file names one more row per ``extra_sources`` (rows of the split past eval.limit)."""
    run = tmp_path / "run"
    for side, pred_at, judge_at in (("base", 2, 4), ("tuned", 3, 5)):
        preds = [{"index": i, "prompt": f"q{i}", "reference": r[1], "prediction": r[pred_at],
                  "scores": {"accuracy": float(r[pred_at] == r[1]), "judge": r[judge_at]}}
                 for i, r in enumerate(rows)]
        accuracy = sum(p["scores"]["accuracy"] for p in preds) / len(preds)
        judge = sum(p["scores"]["judge"] for p in preds) / len(preds)
        write_json(run / f"eval-{side}" / "metrics.json", {"metrics": {"accuracy": accuracy, "judge": judge},
                                                           "rows": len(rows), "split": "test", "details": {}})
        write_lines(run / f"eval-{side}" / "predictions.jsonl", preds)
    write_lines(run / "data" / "test.sources", [r[0] for r in rows] + list(extra_sources))
    write_json(run / "data" / "stats.json", {"splits": {"train": {"rows": 1000}, "test": {"rows": len(rows)}},
                                             "sources": {
                                                 "a": {"available": 600, "drawn": 700,
                                                       "held_out": {"validation": 10, "test": 4}, "tokens": 21000},
                                                 "b": {"available": 500, "drawn": 300,
                                                       "held_out": {"validation": 5, "test": 2}, "tokens": 9000}}})
    return run


def report(tmp_path: Path, run: Path, p: dict | None = None) -> tuple[dict, str, str]:
    out = tmp_path / "report"
    out.mkdir(exist_ok=True)
    summary = build_report(run, p or plan(), out)
    return summary, (out / "report.md").read_text(encoding="utf-8"), (out / "report.html").read_text(encoding="utf-8")


# Source a: base right on 1 of 4, tuned on 3 of 4; source b: base right on 2 of 2, tuned on 1 of 2.
# The rows interleave (as a mixture's split does), so grouping is by the sources file, not by position.
HAND = [
    ("a", "yes", "no", "yes", 0.2, 0.9),
    ("b", "no", "no", "no", 1.0, 0.7),
    ("a", "no", "no", "no", 0.4, 0.7),
    ("a", "yes", "no", "yes", 0.0, 1.0),
    ("b", "yes", "yes", "no", 0.6, 0.3),
    ("a", "no", "yes", "yes", 0.2, 0.2),
]


def test_every_metric_per_source_matches_a_hand_count(tmp_path):
    summary, _, _ = report(tmp_path, make_run(tmp_path, HAND))
    block = summary["by_source"]
    assert block["split"] == "test"
    assert list(block["sources"]) == ["a", "b"]  # the mixture's order (stats.json's)
    a, b = block["sources"]["a"], block["sources"]["b"]
    assert (a["rows"], b["rows"]) == (4, 2)
    assert a["base"]["accuracy"] == 0.25 and a["tuned"]["accuracy"] == 0.75 and a["delta"]["accuracy"] == 0.5
    assert b["base"]["accuracy"] == 1.0 and b["tuned"]["accuracy"] == 0.5 and b["delta"]["accuracy"] == -0.5
    # a metric scored per row elsewhere (a judge): the mean of the source's row scores
    assert abs(a["tuned"]["judge"] - (0.9 + 0.7 + 1.0 + 0.2) / 4) < 1e-9
    assert abs(b["base"]["judge"] - (1.0 + 0.6) / 2) < 1e-9
    # the rows' parts add up to the whole split's value
    assert abs((4 * a["tuned"]["accuracy"] + 2 * b["tuned"]["accuracy"]) / 6 - summary["tuned"]["accuracy"]) < 1e-9
    for s in (a, b):
        for side in ("base", "tuned", "tuned_minus_base"):
            low, high = s["intervals"][side]["accuracy"]
            value = s["delta" if side == "tuned_minus_base" else side]["accuracy"]
            assert low <= value <= high


def test_a_source_the_tuned_model_does_worse_on_is_warned_about_everywhere(tmp_path):
    summary, md, html = report(tmp_path, make_run(tmp_path, HAND))
    block = summary["by_source"]
    assert {(w["source"], w["metric"]) for w in block["worse"]} == {("b", "accuracy"), ("b", "judge")}
    assert not any(w["significant"] for w in block["worse"])  # two rows: the intervals overlap
    (warning,) = block["warnings"]
    assert warning.startswith("The tuned model is worse than the base model on source b (2 rows): accuracy 1.000 → "
                              "0.500 (-0.500; the 95% intervals of base and tuned overlap")
    assert "significantly" not in warning
    for text in (md, html):
        assert "Per source" in text and "worse than the base model on source b" in text
    lines = console_lines(summary)
    assert any(line.startswith("    a ") and "base 0.250 → tuned 0.750 (+0.500" in line and "4 rows" in line
               for line in lines)
    assert any(line.startswith("  warning   The tuned model is worse") for line in lines)


def test_significantly_only_when_the_intervals_do_not_overlap(tmp_path):
    rows = [("a", "x", "y", "x", 0.5, 0.5)] * 20 + [("b", "x", "x", "y", 0.5, 0.5)] * 20
    summary, md, _ = report(tmp_path, make_run(tmp_path, rows), plan(metrics=("accuracy",)))
    (worse,) = summary["by_source"]["worse"]
    assert worse["source"] == "b" and worse["significant"] is True
    assert "significantly: the 95% intervals of base and tuned do not overlap" in summary["by_source"]["warnings"][0]


def test_no_warning_when_the_tuned_model_is_no_worse_on_any_source(tmp_path):
    rows = [(s, "yes", "no", "yes", 0.1, 0.9) for s in "abab"] + [("b", "no", "no", "no", 0.5, 0.5)]
    summary, md, html = report(tmp_path, make_run(tmp_path, rows))
    assert summary["by_source"]["worse"] == [] and summary["by_source"]["warnings"] == []
    assert "is worse than the base model" not in md + html
    assert "does no worse than the base model on any source" in md
    assert not any("warning" in line for line in console_lines(summary))


def test_the_data_section_shows_each_source_of_the_mixture(tmp_path):
    _, md, _ = report(tmp_path, make_run(tmp_path, HAND))
    assert "Sources of the training mixture" in md
    # available, drawn, × repeated, share of rows, tokens, share of tokens, held out
    assert "| a | 600 | 700 | 1.17× | 70.0% | 21000 | 70.0% | 10 | 4 |" in md
    assert "| b | 500 | 300 | 0.60× | 30.0% | 9000 | 30.0% | 5 | 2 |" in md


def test_one_source_or_no_sources_file_gives_no_breakdown(tmp_path):
    run = make_run(tmp_path, [("a",) + r[1:] for r in HAND], extra_sources=("b",))
    summary, md, _ = report(tmp_path, run)  # the evaluated rows are all a's: b's held-out rows are not evaluated
    assert summary["by_source"]["note"].startswith("every evaluated row comes from a; none from b")
    assert "none from b" in md and "sources" not in summary["by_source"]
    stats = json.loads((run / "data" / "stats.json").read_text())
    stats["sources"]["b"]["held_out"]["test"] = 0
    write_json(run / "data" / "stats.json", stats)
    summary, md, _ = report(tmp_path, run)
    assert "by_source" not in summary and "Per source" not in md  # b has no test rows: one source, nothing to say
    (run / "data" / "test.sources").unlink()
    summary, md, _ = report(tmp_path, run)
    assert "by_source" not in summary and "Per source" not in md and console_lines(summary) == []


def test_a_sources_file_that_cannot_be_grouped_by_is_a_note_not_a_crash(tmp_path):
    run = make_run(tmp_path, HAND)
    path = run / "data" / "test.sources"
    for content, said in (('"a"\n"b"\n', "names the source of 2 rows, fewer than the 6 evaluated"),
                          ('"a"\n{"x": 1}\n' * 3, "test.sources:2 holds no source name"),
                          ('"a"\n"\\u001b[31m"\n' * 3, "test.sources:2 holds no source name"),
                          ('"a"\n[1, \n', "not valid JSON")):
        path.write_text(content, encoding="utf-8")
        summary, md, _ = report(tmp_path, run)
        assert "sources" not in summary["by_source"] and said in summary["by_source"]["note"], content
        assert "not broken down by source" in md
        assert "\x1b" not in "".join(console_lines(summary))


def test_a_source_with_held_out_rows_none_of_which_were_evaluated_is_named(tmp_path):
    run = make_run(tmp_path, HAND)
    stats = json.loads((run / "data" / "stats.json").read_text())
    stats["sources"]["c"] = {"available": 90, "drawn": 90, "held_out": {"validation": 1, "test": 1}, "tokens": 900}
    write_json(run / "data" / "stats.json", stats)
    summary, md, _ = report(tmp_path, run)
    assert list(summary["by_source"]["sources"]) == ["a", "b"] and summary["by_source"]["missing"] == ["c"]
    assert "Not evaluated: c" in md
