"""The metric catalog (ftspec/catalog/metrics.py) is the one list of metrics: the schema
accepts exactly its names, every metric in it is computed by the evaluation, and every
implementation the evaluation registers is in it."""

from __future__ import annotations

import pytest

from ftspec.catalog import metrics as catalog
from ftspec.runtime.evaluation import scorers as M
from ftspec.runtime.evaluation.scoring import score_outputs
from ftspec.runtime.report.results import LOWER_IS_BETTER
from ftspec.spec.load import load
from ftspec.spec.validate import validate

# What a metric that takes settings is given beside its name.
SETTINGS = {
    "json_schema": {"schema": "answer.schema.json"},
    "judge": {"model": "org/judge", "rubric": "Score 1-10: {{ prediction }}"},
}

SPEC = """\
ftspec: 1
name: catalog
model: {kind: tiny, tokenizer: {kind: byte}}
data: {train: train.jsonl}
format: {kind: prompt_completion, prompt: "{{ q }}", completion: " {{ a }}"}
eval:
  metrics: METRICS
"""


def _metric(name: str) -> dict:
    return {"name": name, **SETTINGS.get(name, {})}


def _validated(tmp_path, metrics: list):
    path = tmp_path / "spec.yaml"
    path.write_text(SPEC.replace("METRICS", repr(metrics).replace("'", '"')), encoding="utf-8")
    return validate(load(path))


def test_the_catalog_names_each_metric_once():
    names = catalog.names()
    assert len(names) == len(set(names))
    assert set(names) == {n for family in ("classification", "text", "model", "preference", "feedback",
                                           "reward_model")
                          for n in catalog.names(family=family)}


@pytest.mark.parametrize("name", catalog.names())
def test_the_schema_accepts_every_catalog_metric(tmp_path, name):
    spec, issues = _validated(tmp_path, [_metric(name)])
    assert spec is not None, [str(i) for i in issues]
    assert [m.name for m in spec.eval.metrics] == [name]


@pytest.mark.parametrize("name", ["bertscore", "Accuracy", "f1_weighted", "exact-match"])
def test_the_schema_refuses_a_name_the_catalog_does_not_have(tmp_path, name):
    spec, issues = _validated(tmp_path, [name])
    assert spec is None
    assert any(i.key.startswith("eval.metrics.0") for i in issues), [str(i) for i in issues]


def test_every_metric_scored_from_answers_has_an_implementation_and_every_implementation_is_in_the_catalog():
    from_answers = set(catalog.names(family="classification")) | set(catalog.names(family="text"))
    assert set(M.SCORERS) == from_answers
    assert M.KNOWN == from_answers | set(catalog.names(family="model"))


def test_the_evaluation_computes_every_catalog_metric():
    """Scoring a generation step's rows with every metric of the catalog gives a value for each."""
    rows = [{"index": i, "prompt": f"q{i}", "reference": ref, "prediction": pred, "chosen": ref, "rejected": "no",
             "chosen_logprob": chosen, "rejected_logprob": -3.0, "completion": ref, "label": i == 0,
             "completion_logprob": chosen, "chosen_score": chosen, "rejected_score": -3.0}
            for i, (ref, pred, chosen) in enumerate([('{"a": 1}', '{"a": 1}', -1.0), ('{"a": 2}', "[1]", -4.0)])]
    base_rows = [{"index": r["index"], "chosen_logprob": -2.0, "rejected_logprob": -2.5} for r in rows]
    definitions = [{"name": n, "extract": None} for n in catalog.names()]
    definitions[catalog.names().index("json_schema")]["schema"] = {"text": '{"type": "object"}'}
    definitions[catalog.names().index("judge")]["model"] = "org/judge"

    def judge(definition, rows_, predictions):
        return [0.5] * len(rows_), 0

    summary, _ = score_outputs(definitions, {"perplexity": 3.5, "rows": len(rows)}, rows,
                               base_rows=base_rows, beta=0.1, judge=judge)
    assert list(summary["metrics"]) == list(catalog.names())
    assert all(isinstance(v, float) for v in summary["metrics"].values()), summary["metrics"]


def test_the_report_reads_the_direction_from_the_catalog():
    assert LOWER_IS_BETTER == catalog.lower_is_better() == {"perplexity"}


def test_the_outputs_a_plan_asks_the_model_for_follow_from_the_metrics():
    assert catalog.outputs(["accuracy"]) == ["answers"]
    assert catalog.outputs(["judge", "perplexity"]) == ["answers", "perplexity"]
    assert catalog.outputs(["reward_margin", "perplexity"]) == ["perplexity", "pair_logprobs"]
    assert catalog.outputs(catalog.names()) == list(catalog.OUTPUTS)


def test_every_metric_scored_from_answers_declares_its_normalisation():
    """The plan shows, and the scoring applies, one declared normalisation per metric:
    the row's; the classification metrics share one (they share one confusion matrix)."""
    for name in M.SCORERS:
        assert catalog.get(name).normalization in catalog.NORMALIZATIONS, name
    assert {catalog.get(n).normalization for n in catalog.names(family="classification")} == {"label"}
    for metric in catalog.METRICS:
        if metric.family in ("model", "preference", "feedback"):
            assert metric.normalization is None, metric.name
