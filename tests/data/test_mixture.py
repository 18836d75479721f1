"""A training mixture's arithmetic (ftspec/data/mixture.py): the rows drawn from each source,
which rows, and the order the sources' rows are interleaved in."""

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ftspec.data.mixture import choose, draw_counts, drawn_rows, interleave, source_seed

# --------------------------------------------------------------------------- draw_counts


def test_the_worked_example_under_no_repeats_uses_the_smaller_source_whole():
    # 1000 rows at weight 0.7 and 100000 at 0.3: the small source runs out first (1000 / 0.7 = 1428.6).
    assert draw_counts([("weight", 0.7, 1000), ("weight", 0.3, 100_000)], "no_repeats") == [1000, 428]


def test_the_worked_example_under_every_row_uses_every_row_of_the_larger_source():
    # ceil(100000 / 0.3) = 333334 rows: the small source is repeated ~233 times.
    assert draw_counts([("weight", 0.7, 1000), ("weight", 0.3, 100_000)], "every_row") == [233_334, 100_000]


def test_a_number_total_is_shared_by_largest_remainder_and_sums_exactly():
    assert draw_counts([("weight", 1 / 3, 10), ("weight", 1 / 3, 10), ("weight", 1 / 3, 10)], 100) == [34, 33, 33]
    assert sum(draw_counts([("weight", 0.2, None), ("weight", 0.5, None), ("weight", 0.3, None)], 7)) == 7


def test_normalised_thirds_are_exact_thirds():
    # 100 / (1/3 as a float) is 300.00000000000006 in floating point: every_row must not make it 301.
    third = 1 / 3
    assert draw_counts([("weight", third, 100)] * 3, "every_row") == [100, 100, 100]
    assert draw_counts([("weight", third, 100)] * 3, "no_repeats") == [100, 100, 100]


def test_rows_and_epochs_are_their_own_counts_beside_the_weighted_ones():
    parts = [("rows", 50.0, 10), ("epochs", 2.5, 7), ("epochs", 1.0, 30), ("weight", 0.5, 40), ("weight", 0.5, 10)]
    # epochs 2.5 x 7 = 17.5 rounds up to 18; the weighted pair: floor(min(80, 20)) = 20 rows.
    assert draw_counts(parts, "no_repeats") == [50, 18, 30, 10, 10]


def test_weights_that_do_not_sum_to_one_are_normalised():
    assert draw_counts([("weight", 70, 1000), ("weight", 30, 100_000)], "no_repeats") == [1000, 428]


def test_unknown_rows_leave_only_the_counts_that_depend_on_them_unknown():
    parts = [("rows", 5.0, None), ("epochs", 1.0, None), ("weight", 0.5, None), ("weight", 0.5, 10)]
    assert draw_counts(parts, "no_repeats") == [5, None, None, None]
    assert draw_counts(parts, 9) == [5, None, 5, 4]


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        draw_counts([("share", 1.0, 3)], "no_repeats")
    with pytest.raises(ValueError):
        draw_counts([("weight", 1.0, 3)], "most")
    with pytest.raises(ValueError):
        draw_counts([("rows", 2.5, 3)], "no_repeats")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 10_000), st.integers(1, 100)), min_size=1, max_size=8))
def test_no_repeats_repeats_no_row_and_every_row_leaves_none_out(parts):
    weights = [w / sum(w for _, w in parts) for _, w in parts]
    spec = [("weight", w, n) for (n, _), w in zip(parts, weights)]
    for r, (n, _) in zip(draw_counts(spec, "no_repeats"), parts):
        assert r <= n
    for r, (n, _) in zip(draw_counts(spec, "every_row"), parts):
        assert r >= n


# --------------------------------------------------------------------------- which rows


def test_choose_picks_exactly_m_the_same_under_the_same_seed_and_not_under_another():
    picks = list(choose(300, 1000, seed=1))
    assert sum(picks) == 300 and len(picks) == 1000
    assert picks == list(choose(300, 1000, seed=1))
    assert picks != list(choose(300, 1000, seed=2))


def test_choose_is_uniform_over_rows():
    hits = Counter()
    for seed in range(2000):
        hits.update(i for i, chosen in enumerate(choose(2, 5, seed)) if chosen)
    # Each row is chosen 2/5 of the time: 800 of 2000 (a binomial's sd is ~22).
    assert all(700 < hits[i] < 900 for i in range(5)), hits


def test_choose_refuses_more_than_there_are():
    with pytest.raises(ValueError):
        list(choose(4, 3, seed=0))


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 60), st.integers(0, 400), st.integers(0, 2**32))
def test_every_row_is_drawn_q_times_before_any_row_q_plus_one_times(n, r, seed):
    rows = list(drawn_rows(r, n, seed))
    assert len(rows) == r
    seen = Counter()
    for i in rows:
        seen[i] += 1
        # When row i reaches q+1 uses, every row has at least q.
        assert all(seen[j] >= seen[i] - 1 for j in range(n))
    assert max(seen.values(), default=0) - min((seen[j] for j in range(n)), default=0) <= 1


def test_the_seed_of_a_source_comes_from_its_name_not_its_position():
    assert source_seed(42, "tickets") == source_seed(42, "tickets")
    assert source_seed(42, "tickets") != source_seed(42, "faq")
    assert source_seed(42, "tickets") != source_seed(43, "tickets")
    assert source_seed(42, "tickets", "draw") != source_seed(42, "tickets")


# --------------------------------------------------------------------------- interleaving


def test_interleave_places_every_row_once_the_same_under_the_same_seed():
    order = list(interleave([30, 20, 0, 5], seed=3))
    assert Counter(order) == {0: 30, 1: 20, 3: 5}
    assert order == list(interleave([30, 20, 0, 5], seed=3))
    assert list(interleave([50, 50], seed=1)) != list(interleave([50, 50], seed=2))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, 400), min_size=1, max_size=12), st.integers(0, 2**32))
def test_any_first_rows_keep_the_mixture_proportions_within_a_row(counts, seed):
    total = sum(counts)
    placed = [0] * len(counts)
    for t, i in enumerate(interleave(counts, seed), 1):
        placed[i] += 1
        for j, c in enumerate(counts):
            assert abs(placed[j] - t * c / total) < 1
    assert placed == counts


def test_one_large_source_among_many_small_ones_stays_in_proportion():
    counts = [1700] + [1, 2, 3, 5, 8, 13, 21, 34, 55]
    total = sum(counts)
    placed = [0] * len(counts)
    for t, i in enumerate(interleave(counts, 0), 1):
        placed[i] += 1
        assert abs(placed[0] - t * counts[0] / total) < 1
