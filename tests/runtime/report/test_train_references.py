"""The report reads the training split once, as a stream, for the most-frequent-answer
baseline: its references counted (bounded), never its records kept."""

from __future__ import annotations

import json

from ftspec.runtime.report.results import read_run


def test_the_training_split_s_references_are_counted_as_it_is_read(tmp_path):
    data = tmp_path / "run" / "data"
    data.mkdir(parents=True)
    lines = [json.dumps({"prompt": "a", "completion": " yes"}), "{broken",
             json.dumps({"prompt": "b", "completion": "no"}),
             json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": " yes "}]}),
             json.dumps({"prompt": "c"}), json.dumps([1, 2])]
    (data / "train.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    counted = read_run(tmp_path / "run").train_references
    # a broken line and a value that is not a record are skipped, as a lenient read does;
    # a record without an answer is a row all the same
    assert dict(counted.counts) == {"yes": 2, "no": 1} and list(counted.counts) == ["yes", "no"]
    assert (counted.rows, counted.other) == (4, 0)


def test_no_training_split_counts_no_row(tmp_path):
    (tmp_path / "run").mkdir()
    counted = read_run(tmp_path / "run").train_references
    assert counted.rows == 0 and not counted.counts
