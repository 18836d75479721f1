"""Reading rows from local files: every format, with and without headers, and
messy encodings; problems name the file and row."""

import gzip
import json

import pytest

from ftspec.data.sources import RowError, infer_format, read_rows


def rows(path, fmt, **kw):
    return [(r.number, r.values) for r in read_rows(path, fmt, path.name, **kw)]


def test_infer_format():
    assert infer_format("a/b.jsonl") == "jsonl"
    assert infer_format("b.JSONL.gz") == "jsonl"
    assert infer_format("x.tsv") == "tsv"
    assert infer_format("x.parquet") == "parquet"
    assert infer_format("x.txt") is None


def test_jsonl_with_bom_crlf_and_blank_lines(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_bytes(b'\xef\xbb\xbf{"a": 1}\r\n\r\n{"a": 2}\r\n')
    assert rows(p, "jsonl") == [(1, {"a": 1}), (3, {"a": 2})]


def test_jsonl_gzip(tmp_path):
    p = tmp_path / "d.jsonl.gz"
    with gzip.open(p, "wt") as fh:
        fh.write('{"a": 1}\n{"a": 2}\n')
    assert [v for _, v in rows(p, "jsonl")] == [{"a": 1}, {"a": 2}]


def test_jsonl_bad_line_names_its_row(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"a": 1}\n{"a": \n[1, 2]\n')
    with pytest.raises(RowError) as err:
        rows(p, "jsonl")
    assert str(err.value.pos) == "d.jsonl:2"
    skipped = []
    got = [r.values for r in read_rows(p, "jsonl", "d.jsonl", on_bad_row="skip", skipped=skipped)]
    assert got == [{"a": 1}]
    assert [(str(e.pos), e.message) for e in skipped] == [
        ("d.jsonl:2", "not valid JSON: Expecting value (column 7)"),
        ("d.jsonl:3", "expected a JSON object per line, found a list"),
    ]


def test_non_utf8_names_its_row(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_bytes(b'{"a": "ok"}\n{"a": "caf\xe9"}\n')
    with pytest.raises(RowError) as err:
        rows(p, "jsonl")
    assert str(err.value.pos) == "d.jsonl:2"


def test_json_list_and_field(tmp_path):
    p = tmp_path / "d.json"
    p.write_text(json.dumps([{"a": 1}, {"a": 2}]))
    assert rows(p, "json") == [(1, {"a": 1}), (2, {"a": 2})]
    q = tmp_path / "e.json"
    q.write_text(json.dumps({"data": [{"a": 3}]}))
    assert rows(q, "json", field="data") == [(1, {"a": 3})]
    with pytest.raises(RowError, match="set `field:`"):
        rows(q, "json")


def test_csv_with_header_and_quotes(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text('text,label\n"hello, world",1\n"two\nlines",0\n', newline="")
    assert rows(p, "csv") == [(2, {"text": "hello, world", "label": "1"}), (4, {"text": "two\nlines", "label": "0"})]


def test_tsv_without_header_named_by_columns(tmp_path):
    p = tmp_path / "d.tsv"
    p.write_text("first row\t1\nsecond\t0\n")
    assert rows(p, "tsv", columns=["sentence", "label"]) == [
        (1, {"sentence": "first row", "label": "1"}),
        (2, {"sentence": "second", "label": "0"}),
    ]


def test_tsv_wrong_column_count(tmp_path):
    p = tmp_path / "d.tsv"
    p.write_text("good row\t1\nbad\trow\t0\n")
    with pytest.raises(RowError) as err:
        rows(p, "tsv", columns=["sentence", "label"])
    assert str(err.value) == "d.tsv:2: expected 2 columns (sentence, label), found 3"


def test_tsv_unbalanced_quotes_are_text(tmp_path):
    p = tmp_path / "d.tsv"
    p.write_text('it \'s a "great film\t1\nbad\t0\n')
    assert rows(p, "tsv", columns=["sentence", "label"]) == [
        (1, {"sentence": 'it \'s a "great film', "label": "1"}),
        (2, {"sentence": "bad", "label": "0"}),
    ]


def test_header_with_columns_renames(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("x,y\n1,2\n")
    assert rows(p, "csv", columns=["a", "b"], header=True) == [(2, {"a": "1", "b": "2"})]


def test_limit(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text("".join(f'{{"i": {i}}}\n' for i in range(10)))
    assert len(rows(p, "jsonl", limit=3)) == 3


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    p = tmp_path / "d.parquet"
    pq.write_table(pa.table({"text": ["a", "b"], "label": [0, 1]}), p)
    assert rows(p, "parquet") == [(1, {"text": "a", "label": 0}), (2, {"text": "b", "label": 1})]
