"""`ftspec diff --results` of a training mixture: when both sides' reports break every metric
down per source (metrics.json's ``by_source``), the results table has a row per source
under each metric; names from the store are shown as text."""

from __future__ import annotations

import re

from ftspec.plan.artifacts import ReportMetrics
from ftspec.plan.diff_results import (
    DiffResults,
    SideResults,
    md_code,
    render_results_markdown,
    render_results_text,
)


def metrics(tuned_a: float, tuned_b: float, by_source: bool = True, name_b: str = "b") -> ReportMetrics:
    data = {"split": "test", "rows": 6, "base": {"accuracy": 0.5},
            "tuned": {"accuracy": (4 * tuned_a + 2 * tuned_b) / 6}, "delta": {}, "gates": [], "gates_passed": True}
    if by_source:
        data["by_source"] = {"split": "test", "sources": {
            "a": {"rows": 4, "base": {"accuracy": 0.25}, "tuned": {"accuracy": tuned_a},
                  "delta": {"accuracy": tuned_a - 0.25},
                  "intervals": {"tuned": {"accuracy": [0.25, 1.0]}}},
            name_b: {"rows": 2, "base": {"accuracy": 1.0}, "tuned": {"accuracy": tuned_b},
                     "delta": {"accuracy": tuned_b - 1.0}, "intervals": {}}}}
    return ReportMetrics.model_validate(data)


def test_per_source_rows_when_both_sides_have_them():
    r = DiffResults(SideResults(metrics(0.75, 0.5)), SideResults(metrics(1.0, 0.0)))
    text = "\n".join(render_results_text(r))
    cells = {row[0]: row[1:] for row in (re.split(r"\s{2,}", line.strip()) for line in text.splitlines())}
    # under the metric's own row: base, old tuned, new tuned, new − old of each source
    assert cells["accuracy, source a"] == ["0.250", "0.750 (0.250 to 1.000)", "1.000 (0.250 to 1.000)", "+0.250"]
    assert cells["accuracy, source b"] == ["1.000", "0.500", "0.000", "-0.500"]
    assert text.index("accuracy ") < text.index("accuracy, source a") < text.index("accuracy, source b")
    md = "\n".join(render_results_markdown(r))
    assert "| `accuracy, source b` | 1.000 | 0.500 | 0.000 | -0.500 |" in md


def test_no_per_source_rows_unless_both_sides_have_them():
    r = DiffResults(SideResults(metrics(0.75, 0.5, by_source=False)), SideResults(metrics(1.0, 0.0)))
    assert ", source " not in "\n".join(render_results_text(r) + render_results_markdown(r))


def test_the_same_report_on_both_sides_shows_its_sources_once():
    m = metrics(0.75, 0.5)
    text = "\n".join(render_results_text(DiffResults(SideResults(m), SideResults(m), same=True)))
    assert text.count("accuracy, source a") == 1 and "+0.500" in text


def test_a_source_name_from_the_store_is_shown_as_text():
    evil = "b\x1b[2J`</details>**ok**"
    r = DiffResults(SideResults(metrics(0.75, 0.5, name_b=evil)), SideResults(metrics(1.0, 0.0, name_b=evil)))
    text = "\n".join(render_results_text(r))
    md = "\n".join(render_results_markdown(r))
    assert "\x1b" not in text + md and "b\\x1b[2J" in text
    row = next(line for line in md.splitlines() if "source b" in line)
    assert row.startswith("| " + md_code(f"accuracy, source {evil}") + " |") and row.count("</details>") == 1
