"""A hostile or careless mixture (``data.train`` as a list), through `ftspec validate` and
`ftspec plan`: weights far apart, a source drawn without end, a file read by two sources.
Each is one line at its place (exit status 2 for an error), never a traceback."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from ftspec.cli import main
from tests.checks.conftest import write
from tests.checks.rules.test_mixture_rules import MIXTURE, mail, one_error, validate


def _errors(result) -> list[str]:
    return [x for x in result.output.splitlines() if x.startswith("spec.yaml:") and "warning:" not in x]


@pytest.mark.parametrize("small, large", [("1e-300", "1e300"), ("1e-12", "1"), ("1e-10", "1")])
@pytest.mark.parametrize("total", ["no_repeats", "every_row"])
def test_a_weight_too_small_to_draw_a_row_is_refused_at_its_line_not_a_traceback(tmp_path, monkeypatch, small,
                                                                                 large, total):
    spec = (MIXTURE.replace("weight: 0.7", f"weight: {small}").replace("weight: 0.3", f"weight: {large}")
            .replace("  split:", f"  mix: {{total: {total}}}\n  split:"))
    for command in ("validate", "plan"):
        monkeypatch.chdir(tmp_path)
        path = write(tmp_path, spec, {"mail.csv": mail()})
        result = CliRunner().invoke(main, [command, path.name])
        assert result.exit_code == 2, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
        weight = [e for e in _errors(result) if e.startswith("spec.yaml:7:") and " data.train.0.weight: " in e]
        assert len(weight) == 1 and "less than 1e-09 of the weights' sum" in weight[0], result.output


def test_a_weight_a_billionth_of_the_sum_still_draws_as_documented(tmp_path, monkeypatch):
    # At the edge: 2e-9 of the sum is a weight (not refused), and no count divides by a share of none.
    spec = MIXTURE.replace("weight: 0.7", "weight: 2e-9").replace("weight: 0.3", "weight: 1")
    result = validate(tmp_path, monkeypatch, spec)
    assert result.exit_code == 0, result.output
    assert "puts no row in the mixture" in result.output


@pytest.mark.parametrize("old, new, lines", [
    ("      weight: 0.3", "      rows: 1000000000000", ["8"]),  # rows: 10**12 of one source
    ("  split:", "  mix: {total: 1000000000000}\n  split:", ["6", "8"]),  # a total of 10**12
])
def test_a_source_drawn_more_than_epochs_allows_is_refused_at_its_source(tmp_path, monkeypatch, old, new, lines):
    # 10**12 rows of a file of 300 would be written row by row for weeks, until the disk is full.
    result = validate(tmp_path, monkeypatch, MIXTURE.replace(old, new))
    assert result.exit_code == 2, result.output
    errors = _errors(result)
    assert [e.split(":")[1] for e in errors] == lines, result.output
    assert all("a row may be used at most 10000 times" in e for e in errors), result.output
    assert "Traceback" not in result.output


def test_every_row_beside_a_tiny_weight_is_refused_not_written_for_days(tmp_path, monkeypatch):
    # every_row uses every row of the rarely drawn source: the others are repeated a million times.
    spec = (MIXTURE.replace("weight: 0.7", "weight: 0.000001").replace("weight: 0.3", "weight: 1")
            .replace("  split:", "  mix: {total: every_row}\n  split:"))
    one_error(validate(tmp_path, monkeypatch, spec), 8, "data.train.1", "a row may be used at most 10000 times")


def test_epochs_at_its_ceiling_is_still_allowed(tmp_path, monkeypatch):
    spec = MIXTURE.replace("weight: 0.3", "epochs: 10000").replace("weight: 0.7", "epochs: 1")
    result = validate(tmp_path, monkeypatch, spec)
    assert result.exit_code == 0, result.output
    assert "a row may be used at most" not in result.output


def test_two_sources_reading_one_file_with_a_held_out_split_is_a_warning_at_the_second(tmp_path, monkeypatch):
    # Each source is split under a seed of its own: rows held out of one are trained on through the other.
    spec = MIXTURE.replace("path: mail.csv", "path: train.jsonl").replace("      rename: {body: text}\n", "") \
        .replace("      derive: {queue: \"{{ team }}\"}\n", "")
    result = validate(tmp_path, monkeypatch, spec)
    assert result.exit_code == 0, result.output
    said = [x for x in result.output.splitlines() if "reads the same rows as source 'train'" in x]
    assert len(said) == 1 and said[0].startswith("spec.yaml:8:") and "data.train.1: warning:" in said[0], \
        result.output
    # Without rows held out of the mixture, reading a file twice is a choice, not a leak.
    no_split = spec.replace("  split: {validation: 0.1, test: 0.1}\n", "")
    result = validate(tmp_path, monkeypatch, no_split)
    assert "reads the same rows" not in result.output, result.output


def test_a_source_that_draws_no_row_is_said_in_its_own_terms(tmp_path, monkeypatch):
    # epochs that round to none are no weight; a weight's share is of the weighted sources' rows only.
    spec = MIXTURE.replace("weight: 0.7", "epochs: 0.0001")
    result = validate(tmp_path, monkeypatch, spec, {"train.jsonl": "".join(
        f'{{"text": "t {i}", "queue": "billing"}}\n' for i in range(50))})
    said = [x for x in result.output.splitlines() if "puts no row in the mixture" in x]
    assert len(said) == 1 and said[0].startswith("spec.yaml:6:") and \
        "(epochs 0.0001 of its 40 rows rounds to none)" in said[0], result.output
