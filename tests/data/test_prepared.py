"""Reading the prepared splits without holding one: the first rows only, records beside
their origins, and few-shot examples drawn as from the whole list, fetched in a second pass."""

from __future__ import annotations

import json
import random

import pytest

from ftspec.core.io import BadFileError
from ftspec.data import prepared
from ftspec.data.formatting import few_shot


def write_split(folder, split, rows, origins=None, tail=""):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + tail, encoding="utf-8")
    if origins is not None:
        (folder / f"{split}.origins").write_text("".join(json.dumps(o) + "\n" for o in origins), encoding="utf-8")


def rows(n):
    return [{"prompt": f"Q{i}:", "completion": f" a{i}"} for i in range(n)]


@pytest.mark.parametrize("n", [1, 2, 5, 21, 22, 40, 86, 300])
@pytest.mark.parametrize("k", [1, 3, 8])
def test_few_shot_records_are_the_shots_drawn_from_the_whole_list(tmp_path, n, k):
    train = rows(n)
    write_split(tmp_path, "train", train)
    for seed in (0, 1, 42, 12345):
        # what the few-shot draw was when it took the list of every training record
        expected = random.Random(seed).sample(train, min(k, n))
        assert prepared.few_shot_records(tmp_path, "train", k, seed) == expected
        assert few_shot(train, k, seed) == expected


def test_no_shots_asked_reads_nothing(tmp_path):
    assert prepared.few_shot_records(tmp_path, "train", 0, 3) == []  # no train.jsonl: not even opened
    write_split(tmp_path, "train", [])
    assert prepared.few_shot_records(tmp_path, "train", 2, 3) == []


def test_records_at_keeps_the_order_asked_and_stops_at_the_last(tmp_path):
    write_split(tmp_path, "train", rows(5), tail="{not json\n")
    assert prepared.records_at(tmp_path, "train", [3, 0, 4]) == [rows(5)[3], rows(5)[0], rows(5)[4]]
    with pytest.raises(BadFileError, match=r"train\.jsonl:6"):
        prepared.count_records(tmp_path, "train")


def test_a_limit_reads_only_the_first_records(tmp_path):
    write_split(tmp_path, "test", rows(4), tail="{not json\n")
    assert prepared.read_records(tmp_path, "test", 4) == rows(4)
    with pytest.raises(BadFileError, match=r"test\.jsonl:5"):
        prepared.read_records(tmp_path, "test")


def test_records_come_with_their_origins_and_none_past_them(tmp_path):
    write_split(tmp_path, "train", rows(3), origins=["data.jsonl:2", "data.jsonl:7"])
    got = list(prepared.iter_with_origins(tmp_path, "train"))
    assert got == [(0, rows(3)[0], "data.jsonl:2"), (1, rows(3)[1], "data.jsonl:7"), (2, rows(3)[2], None)]
    assert prepared.split_position(got[1][2], "train", 1) == ("data.jsonl", 7)
    assert prepared.split_position(None, "train", 2) == ("train split", 3)
    write_split(tmp_path, "test", rows(2))  # no origins file at all
    assert [o for _, _, o in prepared.iter_with_origins(tmp_path, "test")] == [None, None]
    assert [i for i, _, _ in prepared.iter_with_origins(tmp_path, "train", limit=2)] == [0, 1]
