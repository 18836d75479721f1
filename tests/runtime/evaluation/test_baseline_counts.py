"""The most-frequent-answer baseline learnt from counted references (a training split of
any size, read once and never held): the same answer, and the same tie-breaking, as it
was over the list of every training reference; the count is bounded."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from ftspec.runtime.evaluation import baseline
from ftspec.runtime.evaluation.extraction import extract, extraction_key
from ftspec.runtime.evaluation.scorers import KNOWN, MODEL_METRICS, as_text

HASH = {"regex": r"#### (\d+)", "template": None, "which": "last"}
FIRST_WORD = {"regex": r"(\w+)", "template": None, "which": "first"}
LOWER = {"regex": None, "template": "{{ text | lower | trim }}", "which": "last"}
METRICS = [{"name": "exact_match", "extract": HASH}, {"name": "accuracy", "extract": None},
           {"name": "token_f1", "extract": FIRST_WORD}, {"name": "exact_match_raw", "extract": LOWER},
           {"name": "perplexity", "extract": None}]


def list_majority(metrics, train_references):
    """The baseline as it was computed over the list of every training reference: the
    oracle the counted version must agree with."""
    refs = [as_text(r) for r in train_references]
    out, cache = {}, {}
    for metric in metrics:
        name = metric.get("name")
        if name in MODEL_METRICS or name not in KNOWN:
            continue
        spec = metric.get("extract")
        key = extraction_key(spec)
        if key not in cache:
            answers = [extract(r, spec) for r in refs] if spec else [r.strip() for r in refs]
            counts = Counter(a.strip() for a in answers if a and a.strip())
            top = min(counts, key=lambda a: (-counts[a], a)) if counts else None
            cache[key] = None if top is None else next(r for r, a in zip(refs, answers) if a.strip() == top).strip()
        out[name] = cache[key]
    return out


CASES = [
    [],
    ["", "  ", ""],  # no answer at all
    ["b", "a", "b", "a"],  # a tie: the first in sorted order
    ["yes"] * 3 + ["no"] * 5 + ["yes"] * 3,  # the most frequent once counted, not the first seen
    [" B ", "b", "A", "a", "a "],  # stripped, then counted
    ["so 4 #### 4", "then #### 7", "hence 7 #### 7", "x #### 4", "y #### 7"],
    ["p #### 2", "q #### 2", "r #### 3", "s #### 3", "t #### 3", "u #### 2"],  # a tie after extraction
    ["nothing here", "Alpha one", "alpha two", "ALPHA", "beta", "Beta"],  # templates and first words tie
    ["z #### 1", "a #### 1", "z #### 1", "m #### 2", "m #### 2", "m #### 2"],  # the first seen of the top answer
]


@pytest.mark.parametrize("refs", CASES)
def test_the_majority_from_counts_is_the_majority_of_the_list(refs):
    counted = baseline.count_references(refs).counts
    assert baseline.majority_predictions(METRICS, counted) == list_majority(METRICS, refs)


def test_random_small_splits_give_the_same_majority_counted_as_listed():
    rng = random.Random(5)
    words = ["a", "b", " a", "B", "c #### 1", "d #### 1", "e #### 2", "A #### 2", ""]
    for _ in range(300):
        refs = [rng.choice(words) for _ in range(rng.randint(0, 12))]
        counted = baseline.count_references(refs).counts
        assert baseline.majority_predictions(METRICS, counted) == list_majority(METRICS, refs), refs
        values, answers = baseline.score_majority(METRICS[:2], counted, ["c #### 1", "a"], None)
        expected = list_majority(METRICS[:2], refs)
        assert set(values) == set(expected)
        assert answers["accuracy"] == expected["accuracy"]


def test_counts_weigh_each_reference_by_its_rows():
    # Three rows of 'no' and two of 'yes', 'yes' seen first: a list of the distinct
    # references would pick 'no' by sorted order; the counts say 'no' by weight, and
    # with the counts the other way round they say 'yes'.
    assert baseline.majority_predictions(METRICS[1:2], Counter({"yes": 2, "no": 3})) == {"accuracy": "no"}
    assert baseline.majority_predictions(METRICS[1:2], Counter({"yes": 3, "no": 2})) == {"accuracy": "yes"}
    assert baseline.most_frequent({"b": 2, " a": 1, "a ": 1}) == "a"  # 2 each: sorted order
    assert baseline.most_frequent(["b", "a", "b", "a", "", " "]) == "a"


def test_the_count_keeps_a_bounded_number_of_distinct_references():
    refs = ["a", None, "b", "a", "c", "d", "c", "b", None]
    counted = baseline.count_references(refs, max_distinct=2)
    assert list(counted.counts.items()) == [("a", 2), ("b", 2)]  # first seen first
    assert (counted.rows, counted.other) == (9, 3)  # 'c', 'd', 'c' counted, not kept
    by_chars = baseline.count_references(["abc", "de", "fgh", "de"], max_chars=5)
    assert dict(by_chars.counts) == {"abc": 1, "de": 2} and by_chars.other == 1


def test_the_count_reads_a_stream_once():
    consumed = []

    def stream():
        for i in range(1000):
            consumed.append(i)
            yield "yes" if i % 3 else "no"

    counted = baseline.count_references(stream(), max_distinct=1)
    assert consumed == list(range(1000))
    assert counted.counts == Counter({"no": 334}) and counted.other == 666 and counted.rows == 1000
