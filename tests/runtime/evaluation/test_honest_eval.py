"""Evaluation that cannot flatter (issue 12, item 3): the most-frequent-answer baseline,
confidence intervals, a verdict that claims only what the interval says, f1 with two
labels, extraction misses, and the closing summary's last logged loss and gate line.
Hand-made run directories and hand-computed values; no model, no torch."""

from __future__ import annotations

import json
import re
import shutil
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import ROOT

from ftspec.runtime.evaluation import baseline, extraction, intervals
from ftspec.runtime.evaluation import scorers as M
from ftspec.runtime.report.build import build_report


def write_json(path: Path, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value), encoding="utf-8")


def write_jsonl(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def plan(metrics=({"name": "accuracy", "extract": None},), gates=()) -> dict:
    return {"name": "yesno", "id": "ab" * 32,
            "model": {"kind": "tiny", "architecture": "llama", "num_layers": 2, "hidden_size": 64},
            "method": {"objective": "sft", "adapter": {"kind": "full"}},
            "eval": {"split": "test", "metrics": list(metrics), "gates": list(gates)}}


def make_run(tmp_path: Path, refs, base, tuned, train, metrics=None, labels=None) -> tuple[Path, Path]:
    """A run directory whose eval steps answered ``base`` and ``tuned`` for ``refs``, and whose
    training split's completions are ``train``; the eval steps' metrics are scored as they score them."""
    metrics = list(metrics or [{"name": "accuracy", "extract": None}])
    run = tmp_path / "run"
    for side, preds in (("base", base), ("tuned", tuned)):
        result = M.score(metrics, preds, refs, labels)
        write_json(run / f"eval-{side}" / "metrics.json", {
            "metrics": result.aggregate, "details": result.details, "rows": len(refs), "split": "test",
            "few_shot": 0, "mode": "generate"})
        write_jsonl(run / f"eval-{side}" / "predictions.jsonl", [
            {"index": i, "prompt": f"Q{i}:", "reference": r, "prediction": p, "scores": result.per_example[i]}
            for i, (r, p) in enumerate(zip(refs, preds))])
    write_jsonl(run / "data" / "train.jsonl",
                [{"prompt": f"T{i}:", "completion": " " + c} for i, c in enumerate(train)])
    out = tmp_path / "report"
    out.mkdir()
    return run, out


# --------------------------------------------------------------------------- the scenario of the issue


def majority_scenario(tmp_path):
    """50 test rows, 26 'yes' and 24 'no'; the base model gets 24 right (0.480), the tuned
    model answers 'yes' to every row (0.520), and 'yes' is the training split's majority."""
    refs = ["yes"] * 26 + ["no"] * 24
    base = ["no"] * 13 + ["yes"] * 13 + ["yes"] * 13 + ["no"] * 11  # 13 + 11 = 24 right
    tuned = ["yes"] * 50
    train = ["yes"] * 60 + ["no"] * 40
    return make_run(tmp_path, refs, base, tuned, train)


def test_a_model_that_predicts_the_majority_class_never_beats_base(tmp_path):
    run, out = majority_scenario(tmp_path)
    result = build_report(run, plan(), out)
    assert result["base"]["accuracy"] == pytest.approx(0.48) and result["tuned"]["accuracy"] == pytest.approx(0.52)
    verdict = result["verdict"]
    # one claim for both baselines, then the numbers of each comparison
    assert verdict.startswith("tuned is not shown to be better than base or than always answering 'yes' on accuracy "
                              "(differences within noise): base 0.480 → tuned 0.520 (+0.040, 95% CI ")
    assert verdict.endswith("; always 'yes' 0.520 → tuned 0.520 (+0.000, 95% CI +0.000 to +0.000)")
    assert "is better than" not in verdict and "beats" not in verdict
    low, high = result["intervals"]["tuned_minus_base"]["accuracy"]
    assert low < 0 < high
    assert result["intervals"]["tuned_minus_majority"]["accuracy"] == [0.0, 0.0]  # the same answers, row for row
    assert result["majority"] == {"accuracy": pytest.approx(0.52)} and result["majority_answers"] == {"accuracy": "yes"}
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "**" + verdict + "**" in md
    assert "| metric | majority | base | tuned | tuned − base | tuned − majority |" in md
    row = r"\| accuracy \| 0\.520 \(0\.\d{3} to 0\.\d{3}\) \| 0\.480 \(.*\| \+0\.000 \(\+0\.000 to \+0\.000\) \|$"
    assert re.search(row, md, flags=re.M)  # the last column: tuned − majority
    assert "tuned − base and tuned − majority are paired" in md
    assert "majority: the most frequent answer of the training split ('yes')" in md
    # the same verdict ends the run
    from ftspec.runtime.report.console import metric_lines

    lines = metric_lines(result)
    assert f"  verdict   {verdict}" in lines
    assert any(l.startswith("    accuracy       majority 0.520 · base 0.480 → tuned 0.520 (+0.040, 95% CI -0.")
               for l in lines)
    assert "paired percentile bootstrap over rows" in lines[0]


def contradiction_scenario(tmp_path):
    """The issue's small evaluation: 32 rows, 17 'positive'. The base model is right on 17 of
    them (0.531, as always answering 'positive'), the tuned model on those 17 and 4 more
    (0.656): against base every row moves one way, so the paired interval excludes 0; against
    always 'positive' the same +0.125 is 11 rows won and 7 lost, within noise."""
    refs = ["positive"] * 17 + ["negative"] * 15
    flip = {"positive": "negative", "negative": "positive"}
    tuned_right = set(range(10)) | set(range(17, 28))  # 10 positives, 11 negatives: 21 rows
    base_right = set(range(10)) | set(range(17, 24))  # 10 positives, 7 negatives, all of them right for tuned too
    tuned = [r if i in tuned_right else flip[r] for i, r in enumerate(refs)]
    base = [r if i in base_right else flip[r] for i, r in enumerate(refs)]
    return make_run(tmp_path, refs, base, tuned, ["positive"] * 6 + ["negative"] * 4)


def test_better_than_base_but_not_shown_better_than_the_majority_is_one_statement(tmp_path):
    """The same margin over base and over always answering 'positive' (+0.125) is never
    "better than base" and "no better than the majority" in two clauses: both comparisons
    go through their interval and the verdict says what the two say together, in
    metrics.json, the report and the run's last lines alike."""
    run, out = contradiction_scenario(tmp_path)
    result = build_report(run, plan(), out)
    assert result["base"]["accuracy"] == result["majority"]["accuracy"] == pytest.approx(17 / 32)
    assert result["tuned"]["accuracy"] == pytest.approx(21 / 32)
    assert result["intervals"]["tuned_minus_base"]["accuracy"][0] > 0  # better than base: the interval says so
    low, high = result["intervals"]["tuned_minus_majority"]["accuracy"]
    assert low < 0 < high  # the same margin over the majority is within noise
    verdict = result["verdict"]
    assert verdict.startswith("tuned is better than base on accuracy, but not shown to be better than always "
                              "answering 'positive' (difference within noise): base 0.531 → tuned 0.656 (+0.125, "
                              "95% CI +0.")
    assert f"; always 'positive' 0.531 → tuned 0.656 (+0.125, 95% CI {low:+.3f} to {high:+.3f})" in verdict
    assert "no better than" not in verdict and "most frequent" not in verdict
    assert json.loads((out / "metrics.json").read_text(encoding="utf-8"))["verdict"] == verdict
    assert "**" + verdict + "**" in (out / "report.md").read_text(encoding="utf-8")
    html = (out / "report.html").read_text(encoding="utf-8")
    assert verdict.replace("'", "&#x27;") in html or verdict.replace("'", "&#39;") in html
    from ftspec.runtime.report.console import metric_lines

    assert f"  verdict   {verdict}" in metric_lines(result)


def test_without_a_base_model_the_tuned_model_is_still_weighed_against_the_majority(tmp_path):
    run, out = majority_scenario(tmp_path)
    shutil.rmtree(run / "eval-base")
    result = build_report(run, plan(), out)
    assert result["base"] is None
    assert result["verdict"] == ("tuned is not shown to be better than always answering 'yes' on accuracy (difference "
                                 "within noise): always 'yes' 0.520 → tuned 0.520 (+0.000, 95% CI +0.000 to +0.000) "
                                 "(the base model was not evaluated)")


def test_a_clear_improvement_is_better_than_base_and_than_the_majority(tmp_path):
    refs = ["yes", "no"] * 50
    base = ["no", "no"] * 50  # 0.5
    tuned = refs[:90] + ["no"] * 10  # 95 right of 100
    run, out = make_run(tmp_path, refs, base, tuned, ["yes"] * 3 + ["no"] * 2)
    result = build_report(run, plan(), out)
    assert result["verdict"].startswith("tuned is better than base and than always answering 'yes' on accuracy: "
                                        "base 0.500 → tuned 0.950 (+0.450, 95% CI +0.")
    assert "; always 'yes' 0.500 → tuned 0.950 (+0.450, 95% CI +0." in result["verdict"]
    assert result["majority"]["accuracy"] == 0.5  # 'yes', the training split's majority, is right half the time


def test_better_than_base_and_worse_than_the_majority_says_both(tmp_path):
    refs = ["yes"] * 80 + ["no"] * 20
    base = ["no"] * 100  # 0.2
    tuned = ["yes"] * 40 + ["no"] * 60  # 40 + 20 right: 0.6
    run, out = make_run(tmp_path, refs, base, tuned, ["yes"] * 3 + ["no"])
    result = build_report(run, plan(), out)
    assert result["verdict"].startswith("tuned is better than base on accuracy, but worse than always answering "
                                        "'yes': base 0.200 → tuned 0.600 (+0.400, 95% CI +0.")
    assert "; always 'yes' 0.800 → tuned 0.600 (-0.200, 95% CI -0." in result["verdict"]


def test_a_clear_regression_is_worse_than_base(tmp_path):
    refs = ["yes", "no"] * 50
    run, out = make_run(tmp_path, refs, refs, ["maybe"] * 100, ["yes"])
    result = build_report(run, plan(), out)
    assert result["verdict"] == ("tuned is worse than base and than always answering 'yes' on accuracy: "
                                 "base 1.000 → tuned 0.000 (-1.000, 95% CI -1.000 to -1.000); "
                                 "always 'yes' 0.500 → tuned 0.000 (-0.500, 95% CI -0.600 to -0.400)")


def test_the_majority_is_learnt_from_the_training_split_not_the_test_rows(tmp_path):
    refs = ["yes"] * 8 + ["no"] * 2  # the test rows' majority is 'yes'
    run, out = make_run(tmp_path, refs, refs, refs, ["no"] * 5 + ["yes"] * 4)  # the training split's is 'no'
    result = build_report(run, plan(metrics=[{"name": "accuracy", "extract": None},
                                             {"name": "f1_macro", "extract": None}]), out)
    assert result["majority_answers"] == {"accuracy": "no", "f1_macro": "no"}
    assert result["majority"]["accuracy"] == pytest.approx(0.2)
    # f1_macro of always 'no': F1(no) = 2·2/(2·2+8) = 1/3, F1(yes) = 0
    assert result["majority"]["f1_macro"] == pytest.approx(1 / 6)


def test_no_training_split_means_no_majority_baseline(tmp_path):
    run, out = majority_scenario(tmp_path)
    (run / "data" / "train.jsonl").unlink()
    result = build_report(run, plan(), out)
    assert result["majority"] is None and "most frequent" not in result["verdict"]
    assert "No most-frequent-answer baseline: the training split was not found." in (out / "report.md").read_text()


def test_the_majority_answer_goes_through_each_metrics_extraction():
    extract = {"regex": r"#### (\d+)", "template": None, "which": "last"}
    metrics = [{"name": "exact_match", "extract": extract}, {"name": "exact_match_raw", "extract": None}][:1]
    train = ["so 4 #### 4", "then #### 7", "hence 7 #### 7", "x #### 4", "y #### 7"]
    chosen = baseline.majority_predictions(metrics, Counter(train))
    assert extraction.extract(chosen["exact_match"], extract) == "7"
    values, answers = baseline.score_majority(metrics, Counter(train), ["a #### 7", "b #### 3", "nothing"], None)
    assert answers == {"exact_match": "7"} and values["exact_match"] == pytest.approx(1 / 3)
    assert baseline.most_frequent(["b", "a", "b", "a", "", " "]) == "a"  # a tie goes to the first in sorted order


# --------------------------------------------------------------------------- intervals


def naive_bootstrap(metric, preds, refs, labels, counts):
    """Each resample rebuilt as a list of rows and scored with ``score`` itself."""
    values = []
    for row in counts:
        idx = [i for i, c in enumerate(row) for _ in range(int(c))]
        values.append(M.score([metric], [preds[i] for i in idx], [refs[i] for i in idx],
                              labels).aggregate[metric["name"]])
    return values


@pytest.mark.parametrize("name", ["accuracy", "precision", "recall", "f1", "f1_macro", "f1_micro", "exact_match",
                                  "token_f1", "chrf", "bleu"])
def test_each_resample_is_scored_as_the_metric_scores_the_whole_split(name):
    """Without given labels a resample's labels are its references', as score() takes them."""
    import numpy as np

    refs = ["a", "b", "c", "a", "b", "a", "c", "c", "a b", "b"] * 3
    preds = ["a", "b", "a", "zz", "b", "c", "c", "a", "a b c", "b"] * 3
    metric = {"name": name, "extract": None}
    stat = intervals._statistic(metric, preds, refs, None)
    assert stat.whole() == pytest.approx(M.score([metric], preds, refs).aggregate[name])
    counts = next(intervals.resample_counts(len(refs), resamples=20, seed=3))
    assert np.allclose(stat.resampled(counts), naive_bootstrap(metric, preds, refs, None, counts))


@pytest.mark.parametrize("name", ["precision", "recall", "f1", "f1_macro", "f1_micro"])
def test_given_labels_count_in_every_resample(name):
    import numpy as np

    labels = ["a", "b", "c", "d"]  # as eval.choices gives them: 'd' is never the answer
    refs = ["a", "b", "c", "a", "b", "a", "c", "c"] * 2
    preds = ["a", "b", "a", "d", "b", "c", "x", "a"] * 2
    metric = {"name": name, "extract": None}
    stat = intervals._statistic(metric, preds, refs, labels)
    assert stat.whole() == pytest.approx(M.score([metric], preds, refs, labels).aggregate[name])
    counts = next(intervals.resample_counts(len(refs), resamples=20, seed=5))
    assert np.allclose(stat.resampled(counts), naive_bootstrap(metric, preds, refs, labels, counts))


def test_two_label_f1_resamples_match_scikit_learn():
    import numpy as np

    refs = ["yes", "no", "no", "yes", "yes", "no", "no", "no"]
    preds = ["yes", "yes", "no", "no", "yes", "no", "??", "no"]
    for metric in ({"name": "f1", "extract": None}, {"name": "f1", "extract": None, "positive": "no"}):
        stat = intervals._statistic(metric, preds, refs, ["no", "yes"])
        counts = next(intervals.resample_counts(len(refs), resamples=30, seed=1))
        assert np.allclose(stat.resampled(counts), naive_bootstrap(metric, preds, refs, ["no", "yes"], counts))


def test_intervals_are_deterministic_and_paired():
    """(bench/bounded_work.py times this: 4 metrics x 2 models x 2000 rows.)"""
    import random

    rnd = random.Random(0)
    labels = ["a", "b", "c", "d"]
    refs = [rnd.choice(labels) for _ in range(2000)]
    base = [rnd.choice(labels) for _ in refs]
    tuned = [r if rnd.random() < 0.7 else rnd.choice(labels) for r in refs]
    metrics = [{"name": n, "extract": None} for n in ("accuracy", "f1_macro", "f1", "exact_match")]
    first = intervals.bootstrap_intervals(metrics, refs, {"base": base, "tuned": tuned},
                                          differences=(("tuned", "base"),))
    again = intervals.bootstrap_intervals(metrics, refs, {"base": base, "tuned": tuned},
                                          differences=(("tuned", "base"),))
    assert first == again
    lo, hi = first["tuned"]["accuracy"]
    point = sum(p == r for p, r in zip(tuned, refs)) / len(refs)
    assert lo < point < hi and hi - lo < 0.06  # ±2 standard errors of a share of 2000 rows is about ±0.02
    d_lo, d_hi = first["tuned_minus_base"]["accuracy"]
    assert 0 < d_lo < d_hi
    assert first["method"] == "paired percentile bootstrap over rows" and first["resamples"] == 1000


def test_many_labels_give_an_interval_around_the_score():
    """Free-text answers scored with f1_macro: every distinct reference is a label.
    (bench/bounded_work.py times this.)"""
    refs = [f"answer {i % 1500}" for i in range(3000)]
    preds = [r if i % 3 else "x" for i, r in enumerate(refs)]
    out = intervals.bootstrap_intervals([{"name": "f1_macro"}, {"name": "f1_micro"}], refs, {"tuned": preds})
    point = M.score([{"name": "f1_macro"}], preds, refs).aggregate["f1_macro"]
    low, high = out["tuned"]["f1_macro"]
    assert low < point < high


def test_an_interval_of_a_difference_is_paired():
    """Two models that differ on 1 row of 400 have a difference interval of width ≤ 1/400·k,
    far narrower than the interval of either model alone: the resamples are shared."""
    refs = ["a", "b"] * 200
    base = list(refs)
    base[0] = "b"
    tuned = list(refs)
    out = intervals.bootstrap_intervals([{"name": "accuracy"}], refs, {"base": base, "tuned": tuned},
                                        differences=(("tuned", "base"),))
    lo, hi = out["tuned_minus_base"]["accuracy"]
    assert 0 <= lo <= hi <= 3 / 400
    assert out["tuned"]["accuracy"] == [1.0, 1.0]


# --------------------------------------------------------------------------- f1 with two labels


def test_f1_with_two_labels_is_the_positive_labels_f1():
    from sklearn.metrics import f1_score

    refs = ["no", "no", "no", "no", "yes", "yes", "yes", "no"]
    preds = ["no", "no", "no", "yes", "yes", "no", "no", "no"]
    # positive 'yes' (second in sorted order): tp 1, fp 1, fn 2 -> 2/(2+1+2) = 0.4
    result = M.score([{"name": "f1", "extract": None}, {"name": "f1_macro", "extract": None}], preds, refs)
    assert result.aggregate["f1"] == pytest.approx(0.4)
    assert result.aggregate["f1"] == pytest.approx(f1_score(refs, preds, pos_label="yes"))
    # f1_macro stays macro: F1(no) = 2·4/(2·4+2+1) = 8/11; (8/11 + 0.4) / 2
    assert result.aggregate["f1_macro"] == pytest.approx((8 / 11 + 0.4) / 2)
    assert result.details["f1"] == {"average": "binary", "positive": "yes",
                                    "why": "the second of the two labels in sorted order"}
    # the label the spec names
    named = M.score([{"name": "f1", "extract": None, "positive": "no"}], preds, refs)
    assert named.aggregate["f1"] == pytest.approx(8 / 11) == pytest.approx(f1_score(refs, preds, pos_label="no"))
    assert named.details["f1"]["positive"] == "no" and named.details["f1"]["why"] == "named by the spec"


def test_f1_with_more_labels_stays_macro():
    refs = ["a", "b", "c", "a"]
    preds = ["a", "b", "b", "c"]
    # F1: a 2·1/(2+0+1) = 2/3, b 2/(2+1+0) = 2/3, c 0 -> macro 4/9
    result = M.score([{"name": "f1", "extract": None}], preds, refs)
    assert result.aggregate["f1"] == pytest.approx(4 / 9)
    assert result.details["f1"]["average"] == "macro"


def test_the_report_and_the_summary_say_which_f1(tmp_path):
    refs = ["no", "no", "no", "no", "yes", "yes", "yes", "no"]
    preds = ["no", "no", "no", "yes", "yes", "no", "no", "no"]
    metrics = [{"name": "f1", "extract": None, "positive": None}]
    run, out = make_run(tmp_path, refs, preds, preds, ["no"] * 3, metrics=metrics)
    result = build_report(run, plan(metrics=metrics), out)
    md = (out / "report.md").read_text(encoding="utf-8")
    assert "| f1 (positive: yes) | 0.000 (" in md  # the majority 'no' never finds a 'yes'
    assert "f1 is the F1 of the positive label 'yes' (the second of the two labels in sorted order)" in md
    from ftspec.runtime.report.console import metric_lines

    assert any(l.startswith("    f1 (positive: yes) majority 0.000 · base 0.400 → tuned 0.400 (+0.000")
               for l in metric_lines(result))
    assert result["verdict"].startswith("tuned is not shown to be better than base or than always answering 'no' "
                                        "on f1 (positive: yes) (differences within noise)")


def test_positive_is_a_spec_option_of_f1_only():
    from ftspec.spec.schema import SimpleMetric

    assert SimpleMetric(name="f1", positive="yes").positive == "yes"
    with pytest.raises(ValueError, match="positive label of the f1 metric; accuracy does not take one"):
        SimpleMetric(name="accuracy", positive="yes")


def test_positive_reaches_the_plan_and_the_eval_steps_metric(tmp_path, in_root):
    from ftspec.plan.compile import compile_spec

    plan_, _ = compile_spec(ROOT / "specs" / "quickstart.yaml",
                            sets=['eval.metrics=[accuracy, {name: f1, positive: billing}]'])
    f1 = plan_.eval.metrics[1]
    assert f1.positive == "billing"
    definition = f1.model_dump(mode="json", by_alias=True)
    assert M.score([definition], ["billing", "returns"], ["billing", "billing"]).details["f1"]["positive"] == "billing"


def test_a_positive_on_another_metric_is_refused_at_its_line():
    from conftest import run_cli

    result = run_cli(["validate", "specs/quickstart.yaml", "--set",
                      "eval.metrics=[accuracy, {name: f1_macro, positive: billing}]"])
    assert result.returncode == 2, result.stderr
    assert ("eval.metrics.1: 'positive' names the positive label of the f1 metric; f1_macro does not take one"
            in result.stderr)
    assert "Traceback" not in result.stderr


# --------------------------------------------------------------------------- extraction misses


def test_extraction_misses_are_a_line_in_the_report_and_the_summary(tmp_path):
    extract = {"regex": r"#### (\d+)", "template": None, "which": "last"}
    metrics = [{"name": "exact_match", "extract": extract}]
    refs = ["#### 1", "#### 2", "#### 3", "no number"]
    base = ["#### 1", "?", "#### 3", "#### 4"]
    tuned = ["#### 1", "#### 2", "-", "#### 4"]
    run, out = make_run(tmp_path, refs, base, tuned, ["#### 2", "#### 2"], metrics=metrics)
    result = build_report(run, plan(metrics=metrics), out)
    line = ("extraction (exact_match) found no answer in 1 of 4 tuned predictions, 1 of 4 base predictions / "
            "1 of 4 references")
    assert line in (out / "report.md").read_text(encoding="utf-8")
    from ftspec.runtime.report.console import metric_lines

    assert f"  {line}" in metric_lines(result)


def test_no_extraction_miss_line_in_the_summary_when_nothing_was_missed(tmp_path):
    extract = {"regex": r"(\d+)", "template": None, "which": "last"}
    metrics = [{"name": "exact_match", "extract": extract}]
    run, out = make_run(tmp_path, ["1", "2"], ["1", "3"], ["1", "2"], ["1"], metrics=metrics)
    result = build_report(run, plan(metrics=metrics), out)
    from ftspec.runtime.report.console import metric_lines

    assert not any("extraction" in l for l in metric_lines(result))
    assert "found no answer in 0 of 2 tuned predictions" in (out / "report.md").read_text(encoding="utf-8")


# --------------------------------------------------------------------------- report.md's links


def test_report_md_links_work_in_the_report_folder_and_at_the_top_of_the_run(tmp_path):
    run, out = majority_scenario(tmp_path)
    write_jsonl(run / "model" / "metrics.jsonl", [{"step": s, "loss": 1.0 / s} for s in (1, 2, 3)])
    build_report(run, plan(), out)
    assert (out / "loss.png").exists() and (out / "metrics.png").exists()  # the charts are drawn
    top = tmp_path / "top"
    top.mkdir()
    shutil.copyfile(out / "report.md", top / "report.md")  # as the run copies it to the run directory's top
    shutil.copyfile(out / "report.html", top / "report.html")
    md = (top / "report.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)\s]+)", md)
    for folder in (out, top):
        for target in targets:
            assert target.startswith(("http://", "https://", "#",
                                      "data:")) or (folder / target).exists(), (folder, target)
    assert "Chart in report.html: Training and validation loss" in md


# --------------------------------------------------------------------------- the closing summary


def fake_result(tmp_path, gates=(), profiles=(), log=None, train=None):
    run = tmp_path / "runs" / "x"
    model = run / "model"
    model.mkdir(parents=True)
    if log is not None:
        write_jsonl(model / "metrics.jsonl", log)
    if train is not None:
        write_json(model / "train.json", train)
    plan_ = SimpleNamespace(method=SimpleNamespace(adapter=SimpleNamespace(kind="full")),
                            eval=SimpleNamespace(gates=tuple(gates)), spec=SimpleNamespace(profiles=tuple(profiles)))
    return SimpleNamespace(plan=plan_, run_dir=run, report={}, seconds=65.0,
                           step_dir=lambda name: run / {"train": "model"}.get(name, name))


def test_the_summarys_final_training_loss_is_the_last_logged_one(tmp_path):
    from ftspec.runtime.report.console import summary

    log = [{"step": 10, "loss": 2.0}, {"step": 20, "loss": 1.25}, {"step": 20, "eval_loss": 1.5},
           {"step": 30, "loss": 0.5}]
    text = summary(fake_result(tmp_path, log=log, train={"steps": 30, "train_loss": 1.25, "eval_loss": 1.5}), tmp_path)
    assert "  losses    train 0.5000 (last logged, step 30) · validation 1.5000 (after 30 steps)" in text
    assert "1.2500" not in text  # the trainer's average over the run is not the final loss


def test_the_summary_says_when_there_are_no_gates(tmp_path):
    from ftspec.runtime.report.console import summary

    assert "  gates     none set" in summary(fake_result(tmp_path / "a"), tmp_path).splitlines()
    text = summary(fake_result(tmp_path / "b", profiles=("smoke",)), tmp_path)
    assert "  gates     none (switched off by profile smoke)" in text.splitlines()
    text = summary(fake_result(tmp_path / "c", gates=({"gate": "accuracy"},)), tmp_path)
    assert "gates     none" not in text


def test_metrics_scored_elsewhere_get_intervals_from_their_row_scores(tmp_path):
    """A preference pair's accuracy (scored by the scoring step from log-probabilities) and a
    judge's score are means of row scores: their intervals come from those."""
    run = tmp_path / "run"
    for side, wins in (("base", [1.0, 0.0] * 20), ("tuned", [1.0] * 40)):
        write_json(run / f"eval-{side}" / "metrics.json", {
            "metrics": {"preference_accuracy": sum(wins) / 40}, "details": {}, "rows": 40, "split": "test"})
        write_jsonl(run / f"eval-{side}" / "predictions.jsonl", [
            {"index": i, "prompt": "p", "reference": "c", "prediction": "c", "scores": {"preference_accuracy": w}}
            for i, w in enumerate(wins)])
    out = tmp_path / "report"
    out.mkdir()
    result = build_report(run, plan(metrics=[{"name": "preference_accuracy"}]), out)
    assert result["intervals"]["tuned"]["preference_accuracy"] == [1.0, 1.0]
    low, high = result["intervals"]["tuned_minus_base"]["preference_accuracy"]
    assert 0.3 < low < 0.5 < high < 0.7
    assert result["verdict"].startswith("tuned is better than base on preference_accuracy: "
                                        "base 0.500 → tuned 1.000 (+0.500, 95% CI +0.")
    assert result["majority"] is None  # nothing to learn a most frequent answer of for pairs


def test_past_the_cap_on_distinct_answers_the_report_says_what_the_majority_was_learnt_from(tmp_path, monkeypatch):
    monkeypatch.setattr(baseline, "MAX_DISTINCT_REFERENCES", 2)
    refs = ["yes"] * 6 + ["no"] * 4
    run, out = make_run(tmp_path, refs, refs, refs, ["yes", "no", "yes", "maybe", "perhaps", "maybe"])
    result = build_report(run, plan(), out)
    assert result["majority_answers"] == {"accuracy": "yes"}  # 'maybe' twice was counted, not kept
    md = (out / "report.md").read_text(encoding="utf-8")
    assert ("It was learnt from the training rows whose answer was among the first 2 distinct ones; 3 rows with "
            "other answers were counted but not kept.") in md
