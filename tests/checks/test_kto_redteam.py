"""Feedback files a KTO spec cannot be measured on are refused at validate, not after a training
run that ends with no held-out metric: rows that are all thumbs-up (or all thumbs-down), an
eval.limit of one row, and (a warning) a held-out split cut at random where the fewer label is rare."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ftspec.core.errors import SpecError
from ftspec.plan.compile import compile_spec

SPEC = """\
ftspec: 1
name: k
model: {kind: tiny, hidden_size: 32, num_layers: 2, num_heads: 4, max_position_embeddings: 256, init_seed: 1}
data:
  train: rows.jsonl
  split: {validation: 0.1, test: 0.2, seed: 1%s}
format:
  kind: feedback
  prompt: "Q: {{ q }}\\nA:"
  completion: " {{ a }}"
  label: "{{ up }}"
method: {kind: kto}
training: {max_steps: 2, batch_size: 4, max_length: 64}
%s"""


def write(tmp_path: Path, up, rows: int = 40, extra: str = "", stratify: str = "") -> Path:
    (tmp_path / ".git").mkdir(parents=True, exist_ok=True)
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps({"q": f"q{i}", "a": f"a{i}", "up": up(i)}) + "\n"
                                                 for i in range(rows)))
    spec = tmp_path / "job.yaml"
    spec.write_text(SPEC % (stratify, extra))
    return spec


def issues(spec: Path) -> tuple[list[str], list[str]]:
    """(errors, warnings) of validating the spec."""
    try:
        _, found = compile_spec(spec)
    except SpecError as exc:
        found = exc.issues
    return [i.format() for i in found if i.is_error], [i.format() for i in found if not i.is_error]


def line_of(spec: Path, text: str) -> int:
    return next(n for n, line in enumerate(spec.read_text().splitlines(), 1) if text in line)


@pytest.mark.parametrize("label, which", [(True, "desirable (true)"), (False, "undesirable (false)")])
def test_feedback_rows_of_one_label_are_refused_at_the_label_template(tmp_path, label, which):
    spec = write(tmp_path, lambda i: label)
    errors, _ = issues(spec)
    at = f"job.yaml:{line_of(spec, 'label:')}"
    assert any(at in e and "all 40 rows of " in e and f"rows.jsonl are {which}" in e
               and "feedback_margin cannot be computed" in e for e in errors), errors


def test_a_test_file_of_one_label_is_refused_though_the_training_rows_have_both(tmp_path):
    spec = write(tmp_path, lambda i: i % 2 == 0)
    (tmp_path / "test.jsonl").write_text("".join(json.dumps({"q": f"t{i}", "a": "x", "up": False}) + "\n"
                                                 for i in range(6)))
    spec.write_text(spec.read_text().replace("  split: {validation: 0.1, test: 0.2, seed: 1}",
                                             "  test: test.jsonl\n  split: {validation: 0.1, seed: 1}"))
    errors, _ = issues(spec)
    assert any("all 6 rows of " in e and "test.jsonl are undesirable (false), so the test rows have no desirable "
               "row" in e for e in errors), errors


def test_an_eval_limit_of_one_row_is_refused_at_its_line(tmp_path):
    spec = write(tmp_path, lambda i: i % 2 == 0, extra="eval: {limit: 1}\n")
    errors, _ = issues(spec)
    assert any(f"job.yaml:{line_of(spec, 'limit: 1')}" in e and "needs at least 2 rows (eval.limit is 1)" in e
               for e in errors), errors


def test_both_labels_validate_and_a_rare_label_cut_at_random_is_a_warning_that_stratify_answers(tmp_path):
    assert issues(write(tmp_path, lambda i: i % 2 == 0))[0] == []
    rare = lambda i: i % 25 != 0  # noqa: E731  4 thumbs-down in 100 rows, 20 test rows
    errors, warnings = issues(write(tmp_path, rare, rows=100))
    assert not errors and any("data.split" in w and "none of them has it" in w for w in warnings), warnings
    errors, warnings = issues(write(tmp_path, rare, rows=100, stratify=", stratify: up"))
    assert not errors and not any("none of them has it" in w for w in warnings), warnings
