"""The rules on a training mixture (ftspec/checks/rules/mixture.py), through `ftspec validate`:
each mistake is one line at its place in the spec, exit status 2; warnings say what ftspec does."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from ftspec.cli import main
from tests.checks.conftest import tickets, write

MIXTURE = """\
ftspec: 1
name: demo
model: {kind: tiny}
data:
  train:
    - path: train.jsonl
      weight: 0.7
    - path: mail.csv
      name: mail
      rename: {body: text}
      derive: {queue: "{{ team }}"}
      weight: 0.3
  split: {validation: 0.1, test: 0.1}
format:
  kind: prompt_completion
  prompt: "Request: {{ text }}"
  completion: " {{ queue }}"
compute: {device: cpu}
"""


def mail(n: int = 300) -> str:
    return "body,team\n" + "".join(f"mail {i},{['billing', 'account'][i % 2]}\n" for i in range(n))


def validate(tmp_path, monkeypatch, spec: str = MIXTURE, files: dict | None = None):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, spec, {"mail.csv": mail(), **(files or {})})
    return CliRunner().invoke(main, ["validate", str(path.name)])


def one_error(result, line: int, key: str, words: str) -> None:
    assert result.exit_code == 2, result.output
    errors = [x for x in result.output.splitlines() if x.startswith("spec.yaml:") and "warning:" not in x]
    assert len(errors) == 1, result.output
    assert errors[0].startswith(f"spec.yaml:{line}:") and f" {key}: " in errors[0] and words in errors[0], errors[0]
    assert "Traceback" not in result.output


def test_a_mixture_of_two_sources_with_their_own_columns_validates(tmp_path, monkeypatch):
    result = validate(tmp_path, monkeypatch)
    assert result.exit_code == 0, result.output
    assert "warning" not in result.output


def test_a_list_of_one_source_is_fine(tmp_path, monkeypatch):
    result = validate(tmp_path, monkeypatch, MIXTURE.replace("weight: 0.7", "name: tickets")
                      .split("    - path: mail.csv")[0] + MIXTURE.split("      weight: 0.3\n")[1])
    assert result.exit_code == 0, result.output
    assert "warning" not in result.output


def test_two_sources_of_one_name_are_refused_at_the_second(tmp_path, monkeypatch):
    one_error(validate(tmp_path, monkeypatch, MIXTURE.replace("name: mail", "name: train")), 9, "data.train.1.name",
              "a second source named 'train'")


def test_a_default_name_that_is_no_source_name_is_refused_at_its_source(tmp_path, monkeypatch):
    spec = MIXTURE.replace("path: train.jsonl", "path: Train_2024.jsonl")
    one_error(validate(tmp_path, monkeypatch, spec, {"Train_2024.jsonl": tickets()}), 6, "data.train.0",
              "default name 'Train_2024'")


def test_two_of_weight_rows_and_epochs_are_refused(tmp_path, monkeypatch):
    one_error(validate(tmp_path, monkeypatch, MIXTURE.replace("weight: 0.3", "weight: 0.3\n      rows: 5")), 8,
              "data.train.1", "give at most one of weight, rows and epochs (got weight and rows)")


def test_a_weight_of_zero_is_refused_at_its_line(tmp_path, monkeypatch):
    one_error(validate(tmp_path, monkeypatch, MIXTURE.replace("weight: 0.3", "weight: 0")), 12,
              "data.train.1.weight", "greater than 0")


def test_a_source_the_filter_empties_is_refused_at_its_line(tmp_path, monkeypatch):
    spec = MIXTURE.replace("  split:", "  filter: \"{{ not text.startswith('mail') }}\"\n  split:")
    one_error(validate(tmp_path, monkeypatch, spec, {"mail.csv": mail(150)}), 8, "data.train.1",
              "data.filter drops every row of mail.csv (150 rows)")


def test_a_source_with_no_training_rows_after_the_split_is_refused(tmp_path, monkeypatch):
    result = validate(tmp_path, monkeypatch, files={"mail.csv": mail(1)})
    one_error(result, 8, "data.train.1", "source 'mail' has no training rows left after the held-out split")


def test_a_list_for_data_validation_is_refused(tmp_path, monkeypatch):
    spec = MIXTURE.replace("  split: {validation: 0.1, test: 0.1}", "  validation: [train.jsonl]")
    one_error(validate(tmp_path, monkeypatch, spec), 13, "data.validation", "is for data.train only")


def test_a_column_one_source_lacks_is_said_at_that_source(tmp_path, monkeypatch):
    one_error(validate(tmp_path, monkeypatch, MIXTURE.replace('derive: {queue: "{{ team }}"}', "derive: {}")), 8,
              "data.train.1", "source 'mail' has no column 'queue' (read by format.completion)")


def test_data_mix_without_a_mixture_is_refused(tmp_path, monkeypatch):
    spec = "\n".join(x for x in MIXTURE.splitlines()[:4]) + "\n  train: train.jsonl\n  mix: {total: every_row}\n" \
        + MIXTURE.split("      weight: 0.3\n")[1]
    one_error(validate(tmp_path, monkeypatch, spec), 6, "data.mix", "applies to a mixture only")


@pytest.mark.parametrize("weights, said", [((7, 3), None), ((70, 30), None),
                                           ((0.7, 0.6), "the weights sum to 1.3, not 1 (or 100); they are "
                                                        "normalised to sum to 1: train 0.5385, mail 0.4615")])
def test_weights_not_summing_to_1_or_100_are_said_to_be_normalised(tmp_path, monkeypatch, weights, said):
    spec = MIXTURE.replace("weight: 0.7", f"weight: {weights[0]}").replace("weight: 0.3", f"weight: {weights[1]}")
    result = validate(tmp_path, monkeypatch, spec)
    assert result.exit_code == 0, result.output
    warnings = [x for x in result.output.splitlines() if "warning:" in x]
    if weights == (7, 3):  # 10 is neither 1 nor 100
        assert len(warnings) == 1 and "sum to 10" in warnings[0] and "train 0.7, mail 0.3" in warnings[0]
    elif said is None:
        assert warnings == []
    else:
        assert warnings == [f"spec.yaml:6:5: data.train: warning: {said}"]


def test_a_source_repeated_more_than_four_times_is_a_warning(tmp_path, monkeypatch):
    result = validate(tmp_path, monkeypatch, MIXTURE.replace("weight: 0.3", "epochs: 5"))
    assert result.exit_code == 0, result.output
    warnings = [x for x in result.output.splitlines() if "warning:" in x and "repeated" in x]
    assert len(warnings) == 1 and warnings[0].startswith("spec.yaml:8:7: data.train.1: warning: source 'mail' is "
                                                         "repeated 5.0 times"), result.output
    assert "repeated" not in validate(tmp_path, monkeypatch, MIXTURE.replace("weight: 0.3", "epochs: 4")).output


def test_bedrock_refuses_a_mixture(tmp_path, monkeypatch):
    spec = MIXTURE.replace("model: {kind: tiny}", "model: {kind: bedrock, id: amazon.nova-micro-v1:0:128k}").replace(
        "compute: {device: cpu}", "compute:\n  backend: bedrock\n  bedrock: {region: us-east-1, role_arn: "
        "'arn:aws:iam::123456789012:role/x', s3: {bucket: my-bucket}}")
    result = validate(tmp_path, monkeypatch, spec)
    assert result.exit_code == 2, result.output
    assert any(x.startswith("spec.yaml:6:5: data.train: is a mixture") for x in result.output.splitlines()), \
        result.output


def test_hub_and_json_sources_mix(tmp_path, monkeypatch):
    """A hub source is counted when the data is read: the plan says so, nothing fails."""
    spec = MIXTURE.replace("    - path: mail.csv\n      name: mail\n      rename: {body: text}\n"
                           "      derive: {queue: \"{{ team }}\"}\n", "    - hub: org/mail\n")
    result = validate(tmp_path, monkeypatch, spec)
    assert result.exit_code == 0, result.output
    assert json.dumps("x")  # the module's imports in use
