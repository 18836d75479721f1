"""The mixture's arithmetic (ftspec/data/mixture.py) at its edges: a weight far smaller than
the others, and the most times a source's rows may be used."""

from __future__ import annotations

import pytest

from ftspec.data.mixture import MAX_TIMES, draw_counts, repeats_problem


@pytest.mark.parametrize("total", ["no_repeats", 1000])
def test_a_weight_under_a_billionth_draws_no_row_and_divides_by_nothing(total):
    # A positive share is never read back as none (which no_repeats would divide by).
    assert draw_counts([("weight", 1e-12, 50), ("weight", 1.0, 5)], total) == [0, 5 if total == "no_repeats" else 1000]


def test_a_source_may_be_used_as_often_as_epochs_allows_and_no_more():
    assert repeats_problem("a", MAX_TIMES * 7, 7) is None
    assert repeats_problem("a", None, 7) is None and repeats_problem("a", 10**12, None) is None
    said = repeats_problem("a", MAX_TIMES * 7 + 1, 7)
    assert said is not None and said.startswith("source 'a' would put 70001 rows in the mixture from its 7")
