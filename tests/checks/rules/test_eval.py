"""ftspec.checks.rules.eval: a split to score, metrics that fit the format, gates on
declared metrics, JSON Schema files, references among eval.choices."""

from __future__ import annotations

from checks.conftest import BASE, at

NO_TEST = BASE.replace("{validation: 0.1, test: 0.1}", "{validation: 0.1}")


def test_the_evaluated_split_must_exist(issues):
    assert at(issues(NO_TEST + "eval: {split: test}\n"), "eval.split") == [
        "no test split; add data.test or data.split.test"]
    assert not at(issues(BASE + "eval: {split: test}\n"), "eval.split")


def test_a_gate_on_a_metric_that_is_not_scored(issues):
    spec = BASE + "eval:\n  metrics: [exact_match]\n  gates: {accuracy: \">= 0.5\"}\n"
    found = [i for i in issues(spec) if i.key == "eval.gates.accuracy"]
    assert [i.message for i in found] == ["gate on 'accuracy', which is not among eval.metrics (exact_match)"]
    assert not at(issues(spec.replace("[exact_match]", "[exact_match, accuracy]")), "eval.gates.accuracy")


def test_a_metric_listed_twice(issues):
    assert at(issues(BASE + "eval: {metrics: [exact_match, exact_match]}\n"), "eval.metrics.1") == [
        "metric 'exact_match' is listed twice"]


def test_a_json_schema_file_that_is_not_json(issues):
    spec = BASE + "eval:\n  metrics:\n    - {name: json_schema, schema: schema.json}\n"
    found = at(issues(spec, {"schema.json": "{not json"}), "eval.metrics.0.schema")
    assert len(found) == 1 and found[0].startswith("schema file 'schema.json' is not JSON: ")
    assert not at(issues(spec, {"schema.json": '{"type": "object"}'}), "eval.metrics.0.schema")


def test_a_reference_outside_eval_choices(issues):
    found = [i for i in issues(BASE + "eval: {choices: [billing, account]}\n") if i.key == "eval.choices"]
    assert [(i.pos.file, i.message) for i in found] == [
        ("train.jsonl", "the answer 'returns' is not one of eval.choices (billing, account)")]
    assert not at(issues(BASE + "eval: {choices: [billing, account, returns]}\n"), "eval.choices")
