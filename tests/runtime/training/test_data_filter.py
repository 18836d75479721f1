"""data.filter (rows kept when a template renders true), data.limit per split, and the
plan's row counts against the prepared data's.

Most of this needs no torch: the compiler, and runtime/data.build_splits (which reads,
filters, formats, splits and limits the rows) are pure Python.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import ROOT

from ftspec.core.errors import SpecError
from ftspec.data import splitting
from ftspec.plan.compile import compile_spec, find_root
from ftspec.runtime.training.splits import build_splits

SPEC = """ftspec: 1
name: job
model: {{kind: tiny, hidden_size: 32, num_layers: 1, num_heads: 4, max_position_embeddings: 256}}
data:
  train: tickets.jsonl
  split: {{validation: 0.1, test: 0.1, seed: 1}}
{data}format:
  kind: prompt_completion
  prompt: "Request: {{{{ text }}}}\\nQueue:"
  completion: " {{{{ queue }}}}"
training: {{max_steps: 2, batch_size: 8, max_length: 128}}
eval: {{max_new_tokens: 4, limit: 4, metrics: [accuracy]}}
compute: {{device: cpu}}
"""


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # files are named as a user working there sees them


def _rows(n: int) -> list[dict]:
    lines = (ROOT / "specs/data/support-tickets.jsonl").read_text(encoding="utf-8").splitlines()[:n]
    return [json.loads(line) for line in lines]


def _spec(folder: Path, data: str = "", rows: list[dict] | None = None, n: int = 120) -> Path:
    rows = _rows(n) if rows is None else rows
    (folder / "tickets.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    path = folder / "job.yaml"
    path.write_text(SPEC.format(data=data), encoding="utf-8")
    return path


def _issues(spec: Path) -> list[str]:
    with pytest.raises(SpecError) as err:
        compile_spec(spec)
    return [i.format() for i in err.value.issues]


# --------------------------------------------------------------------------- what true is


@pytest.mark.parametrize("text,verdict", [
    ("true", True), ("True", True), (" TRUE \n", True), ("1", True), ("yes", True), ("Yes", True),
    ("false", False), ("False", False), ("0", False), ("no", False), ("", False), ("  \n", False),
    ("maybe", None), ("None", None), ("2", None), ("0.0", None), ("billing", None),
])
def test_what_a_filter_renders_keeps_drops_or_is_an_error(text, verdict):
    assert splitting.filter_verdict(text) is verdict


# --------------------------------------------------------------------------- data.filter


def test_a_filter_keeps_the_rows_it_renders_true_for_before_splitting_and_counts_the_rest(tmp_path):
    rows = _rows(120)
    billing = sum(r["queue"] == "billing" for r in rows)
    assert 0 < billing < 120
    spec = _spec(tmp_path, "  filter: \"{{ queue != 'billing' }}\"\n", rows)
    plan, _ = compile_spec(spec)
    assert plan.data.filter is not None and plan.data.filter.text == "{{ queue != 'billing' }}"
    # The sample is the whole file: the counts are exact, after the filter and then the split.
    expected = splitting.split_counts({"train": 120 - billing}, plan.data.split, None)
    assert (plan.data.rows.train, plan.data.rows.validation, plan.data.rows.test) == tuple(expected.values())
    assert plan.data.rows_estimated == ()
    splits, stats = build_splits(plan.data, plan.format, find_root(spec))
    assert stats["filtered_rows"] == {"train": billing}
    assert {s: len(v) for s, v in splits.items()} == {"train": plan.data.rows.train,
                                                      "validation": plan.data.rows.validation,
                                                      "test": plan.data.rows.test}
    assert all(r["completion"] != " billing" for records in splits.values() for r in records)


def test_rows_a_filter_drops_are_never_formatted(tmp_path):
    """The filter sees the row after renames and derived columns; a row it drops is not
    rendered by the format's templates, at validate time or when the data is prepared."""
    rows = _rows(100) + [{"id": "X", "queue": "billing"}]  # no text: the prompt could not render it
    spec = _spec(tmp_path, "  rename: {queue: team}\n  derive: {queue: \"{{ team }}\"}\n"
                           "  filter: \"{{ text is defined and team == queue }}\"\n", rows)
    plan, _ = compile_spec(spec)
    splits, stats = build_splits(plan.data, plan.format, find_root(spec))
    assert stats["filtered_rows"] == {"train": 1} and stats["skipped_rows"] == 0
    assert sum(len(v) for v in splits.values()) == 100


def test_a_filter_that_renders_neither_true_nor_false_is_an_error_at_its_line_naming_the_row(tmp_path):
    spec = _spec(tmp_path, "  filter: \"{{ 'maybe' if queue == 'billing' else 'yes' }}\"\n")
    line = spec.read_text().splitlines().index("  filter: \"{{ 'maybe' if queue == 'billing' else 'yes' }}\"") + 1
    first = next(i for i, r in enumerate(_rows(120), 1) if r["queue"] == "billing")
    [issue] = [i for i in _issues(spec) if "data.filter" in i]
    assert f"job.yaml:{line}:11: data.filter: rendered 'maybe'; a filter must render true" in issue, issue
    assert issue.endswith(f"(row tickets.jsonl:{first})"), issue


def test_a_filter_that_renders_neither_past_the_sample_stops_the_run_at_its_key(tmp_path):
    rows = _rows(300)
    rows[250] = dict(rows[250], queue="unsure")
    spec = _spec(tmp_path, "  filter: \"{{ 'maybe' if queue == 'unsure' else 'true' }}\"\n", rows)
    plan, _ = compile_spec(spec)  # the first 200 rows render true
    with pytest.raises(SpecError) as err:
        build_splits(plan.data, plan.format, find_root(spec))
    [issue] = err.value.issues
    assert issue.key == "data.filter" and issue.pos.file == "data.filter"  # placed at the spec's line by the CLI
    assert "rendered 'maybe'" in issue.message and "tickets.jsonl:251" in issue.message


def test_a_filter_that_drops_every_row_is_an_error(tmp_path):
    spec = _spec(tmp_path, "  filter: \"{{ queue == 'nothing' }}\"\n")
    issues = _issues(spec)
    assert any("data.filter: drops every row of tickets.jsonl (120 rows)" in i for i in issues), issues
    assert not any("holds out every training row" in i for i in issues), issues
    # Tried on a sample only, it is a warning (the rows past the sample may be kept), and
    # an error when the data is prepared.
    spec = _spec(tmp_path, "  filter: \"{{ queue == 'nothing' }}\"\n", _rows(300))
    plan, warnings = compile_spec(spec)
    assert any("drops each of the first 200 rows of tickets.jsonl" in w.message for w in warnings)
    assert plan.data.rows.train is None  # not known until the data is prepared
    with pytest.raises(SpecError, match="drops every row of tickets.jsonl [(]300 rows[)]"):
        build_splits(plan.data, plan.format, find_root(spec))


def test_a_filter_with_an_unknown_column_is_named_at_its_line(tmp_path):
    spec = _spec(tmp_path, "  filter: \"{{ qeue != 'billing' }}\"\n")
    issues = _issues(spec)
    assert any("data.filter" in i and "qeue" in i and "queue" in i for i in issues), issues


def test_a_filter_tried_on_a_sample_makes_the_counts_an_estimate_said_in_the_plan(tmp_path):
    rows = _rows(400)
    spec = _spec(tmp_path, "  filter: \"{{ queue != 'billing' }}\"\n", rows)
    plan, _ = compile_spec(spec)
    kept_in_sample = sum(r["queue"] != "billing" for r in rows[:200])
    estimate = round(400 * kept_in_sample / 200)
    assert (plan.data.rows.train, plan.data.rows.validation, plan.data.rows.test) == tuple(
        splitting.split_counts({"train": estimate}, plan.data.split, None).values())
    assert plan.data.rows_estimated == ("train", "validation", "test")
    assert plan.data.rows_shown("train") == f"~{plan.data.rows.train}"
    assert any(n.startswith("data.rows: train, validation, test estimated from data.filter")
               for n in plan.checks.not_checked)
    # A limit the rows known to be kept already fill is certain.
    spec = _spec(tmp_path, "  filter: \"{{ queue != 'billing' }}\"\n  limit: {train: 50}\n", rows)
    plan, _ = compile_spec(spec)
    assert plan.data.rows.train == 50 and plan.data.rows_estimated == ("validation", "test")


# --------------------------------------------------------------------------- data.limit


def test_a_limit_on_the_training_rows_alone_leaves_the_other_splits(tmp_path):
    spec = _spec(tmp_path, "  limit: {train: 20}\n")
    plan, _ = compile_spec(spec)
    assert plan.data.limit.train == 20 and plan.data.limit.validation is None and plan.data.limit.test is None
    assert (plan.data.rows.train, plan.data.rows.validation, plan.data.rows.test) == (20, 12, 12)
    assert plan.training.steps_per_epoch == 3  # 20 rows in batches of 8
    splits, _ = build_splits(plan.data, plan.format, find_root(spec))
    assert {s: len(v) for s, v in splits.items()} == {"train": 20, "validation": 12, "test": 12}
    assert str(plan.data.limit) == "train 20"


def test_a_number_still_limits_every_split(tmp_path):
    spec = _spec(tmp_path, "  limit: 10\n")
    plan, _ = compile_spec(spec)
    assert (plan.data.limit.train, plan.data.limit.validation, plan.data.limit.test) == (10, 10, 10)
    assert (plan.data.rows.train, plan.data.rows.validation, plan.data.rows.test) == (10, 10, 10)
    splits, _ = build_splits(plan.data, plan.format, find_root(spec))
    assert {s: len(v) for s, v in splits.items()} == {"train": 10, "validation": 10, "test": 10}
    assert str(plan.data.limit) == "10 rows of each split"


@pytest.mark.parametrize("limit,message", [
    ("{trian: 5}", "data.limit.trian: unknown key; did you mean 'train'?"),
    ("{}", "name at least one split to limit"),
    ("{train: 0}", "data.limit.train: must be at least 1"),
    ("0", "data.limit: must be at least 1"),
    ("many", "data.limit: must be an integer (got 'many')"),
])
def test_a_wrong_limit_is_an_error_at_its_key(tmp_path, limit, message):
    spec = _spec(tmp_path, f"  limit: {limit}\n")
    issues = _issues(spec)
    assert any(message in i for i in issues), issues


# --------------------------------------------------------------------------- the plan's rows and the run's


def _prepare(plan, spec: Path, out: Path) -> list[str]:
    pytest.importorskip("torch")
    from ftspec.backends.local.steps import prepare_data as step_prepare_data
    from ftspec.catalog import steps
    from ftspec.plan import keys
    from ftspec.runtime.context import StepContext

    lines: list[str] = []
    out.mkdir(parents=True)
    ctx = StepContext(find_root(spec), out.parent, plan.step("prepare_data").key, lines.append)
    step_prepare_data(keys.view(plan, steps.PREPARE_DATA), ctx, out)
    return lines


def test_rows_skipped_past_the_sample_are_reported_against_the_plan(tmp_path):
    rows = _rows(300)
    rows[260] = {"id": "X", "queue": "billing"}  # no text, past validate's 200-row sample
    spec = _spec(tmp_path, "  on_bad_row: skip\n", rows)
    plan, _ = compile_spec(spec)
    assert (plan.data.rows.train, plan.data.rows.validation, plan.data.rows.test) == (240, 30, 30)
    lines = _prepare(plan, spec, tmp_path / "prepared")
    stats = json.loads((tmp_path / "prepared/stats.json").read_text())
    differ = stats["rows_differ_from_plan"]
    assert differ["train"] == {"plan": 240, "prepared": 239, "estimated": False}, differ
    [line] = [l for l in lines if "differ from the plan" in l]
    assert line == "  rows differ from the plan: train 239 (plan 240); bad rows were skipped", line


def test_the_prepare_line_counts_what_the_filter_dropped_and_agrees_with_an_exact_plan(tmp_path):
    rows = _rows(120)
    billing = sum(r["queue"] == "billing" for r in rows)
    spec = _spec(tmp_path, "  filter: \"{{ queue != 'billing' }}\"\n", rows)
    plan, _ = compile_spec(spec)
    lines = _prepare(plan, spec, tmp_path / "prepared")
    assert any(f"; data.filter dropped {billing} rows" in l for l in lines), lines
    assert not any("differ from the plan" in l for l in lines), lines
    stats = json.loads((tmp_path / "prepared/stats.json").read_text())
    assert stats["filtered_rows"] == {"train": billing} and "rows_differ_from_plan" not in stats
