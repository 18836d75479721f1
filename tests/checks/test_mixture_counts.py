"""A training mixture's rows as validate and the plan count them (ftspec.checks.mixture):
the worked examples of docs/use-cases/mixtures.md, each source split on its own."""

from __future__ import annotations

import pytest

from ftspec.checks.mixture import draws, mix_seed, mixture_counts
from ftspec.spec import schema as S


def _data(**data) -> S.Data:
    return S.Data.model_validate(data)


@pytest.mark.parametrize("total, drawn", [("no_repeats", [1000, 428]), ("every_row", [233334, 100000]),
                                          (2000, [1400, 600])])
def test_the_documented_example_draws_these_rows(total, drawn):
    """1000 rows at weight 0.7 and 100000 at 0.3: no_repeats uses the small source whole
    (T = floor(1000 / 0.7) = 1428); every_row uses every row of the large one
    (T = ceil(100000 / 0.3) = 333334); a number is the total."""
    data = _data(train=[{"path": "small.jsonl", "weight": 0.7}, {"path": "large.jsonl", "weight": 0.3}],
                 mix={"total": total})
    counts, parts = mixture_counts(data, [1000, 100000], {})
    assert [p.drawn for p in parts] == drawn
    assert counts == {"train": sum(drawn), "validation": 0, "test": 0}
    assert [p.available for p in parts] == [1000, 100000]


def test_each_source_is_split_on_its_own_before_it_is_drawn():
    """data.split holds out each source's fractions; what is drawn comes from what is left;
    rows and epochs draw their own counts; data.limit cuts last."""
    data = _data(train=[{"path": "a.jsonl", "rows": 50}, {"path": "b.jsonl", "epochs": 2.5},
                        {"path": "c.jsonl"}],
                 split={"validation": 0.1, "test": 0.1}, limit={"train": 300})
    counts, parts = mixture_counts(data, [100, 60, 10], {}, data.limit)
    assert [(p.available, p.validation, p.test) for p in parts] == [(80, 10, 10), (48, 6, 6), (8, 1, 1)]
    assert [p.drawn for p in parts] == [50, 120, 8]  # rows 50; round(2.5 x 48); epochs 1 (the default) x 8
    assert counts == {"train": 178, "validation": 17, "test": 17}
    assert mixture_counts(data, [1000, 1000, 1000], {}, data.limit)[0]["train"] == 300


def test_weights_are_normalised_and_an_unknown_count_stays_unknown():
    data = _data(train=[{"path": "a.jsonl", "weight": 3}, {"path": "b.jsonl", "weight": 1}, {"hub": "org/c"}])
    assert draws(data) == [("weight", 0.75), ("weight", 0.25), ("epochs", 1.0)]
    counts, parts = mixture_counts(data, [300, 400, None], {"validation": 40})
    assert [p.drawn for p in parts] == [300, 100, None]
    assert counts == {"train": None, "validation": 40, "test": 0}


def test_the_seed_is_data_mix_seed_else_data_split_seed_else_42():
    one = [{"path": "a.jsonl"}]
    assert mix_seed(_data(train=one)) == 42
    assert mix_seed(_data(train=one, split={"validation": 0.1, "seed": 7})) == 7
    assert mix_seed(_data(train=one, split={"validation": 0.1, "seed": 7}, mix={"seed": 9})) == 9
