"""ftspec's one reader of the JSON files it reads back (ftspec.core.io over
ftspec.core.jsonread): a FIFO is refused without waiting, nesting of any depth is one
line rather than a RecursionError, NaN, Infinity, duplicate keys and numbers out of
range are refused, each problem at FILE:LINE; a schema names the key that is wrong."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT
from pydantic import BaseModel, ConfigDict, StrictInt

from ftspec.core import io as fio
from ftspec.core import jsonread

posix_only = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")


def _error(path, **kw) -> str:
    with pytest.raises(fio.BadFileError) as info:
        fio.read_json(path, **kw)
    line = str(info.value)
    assert "\n" not in line and "Traceback" not in line
    return line


@posix_only
@pytest.mark.parametrize("reader", ["read_json", "read_jsonl", "read_json_lenient", "read_jsonl_lenient"])
def test_a_fifo_is_refused_at_once_not_waited_on(tmp_path, reader):
    """In a process of its own, with a timeout: a reader that waits on the FIFO fails the test."""
    fifo = tmp_path / "manifest.json"
    os.mkfifo(fifo)
    name = reader.partition("_lenient")[0]
    call = f"io.{name}({str(fifo)!r}{', lenient=True' if reader != name else ''})"
    code = f"from ftspec.core import io\ntry:\n    {call}\nexcept io.BadFileError as exc:\n    print(exc)\n"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{fifo}: cannot be read: is a FIFO (named pipe), not a regular file"


@pytest.mark.parametrize("opening, closing", [("[", "]"), ('{"a": ', "}")])
def test_nesting_ten_thousand_deep_is_one_line_at_its_line(tmp_path, opening, closing):
    path = tmp_path / "plan.json"
    path.write_text('{\n"x":\n' + opening * 10_000 + "1" + closing * 10_000 + "\n}\n")
    line = _error(path)
    assert line.startswith(f"{path}:3: nests lists and objects more than {fio.MAX_FILE_DEPTH} levels deep")
    assert fio.read_json(path, lenient=True) is None  # a content problem: lenient reads it as None
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"a": 1}\n' + opening * 10_000 + "1" + closing * 10_000 + "\n")
    with pytest.raises(fio.BadFileError, match=r"rows.jsonl:2: nests lists and objects more than"):
        fio.read_jsonl(rows)


@pytest.mark.parametrize("text, line, message", [
    ('{\n  "loss": NaN\n}', 2, "NaN is not a JSON number; write null, or a number (column 11)"),
    ('{\n  "loss": Infinity\n}', 2, "Infinity is not a JSON number"),
    ('{\n  "loss": -Infinity\n}', 2, "-Infinity is not a JSON number"),
    ('{"a": 1,\n "b": {"c": 1},\n "a": 2}', 3, "key 'a' appears twice in one object; JSON readers would keep only"),
    ('{"note": "NaN and Infinity in a string are text",\n "x": 1e999}', 2, "number 1e999 is too large for a 64-bit"),
    ('{"pid":\n 123456789012345678901234567890}', 2, "integer 123456789012345678901... is out of range"),
    ('{"n": 1' + "0" * 5000 + "}", 1, "a number with more than"),
    ('{\n"a": 1\n"b": 2}', 3, "not valid JSON: Expecting ',' delimiter (column 1)"),
])
def test_json_ftspec_does_not_take_is_refused_at_its_line(tmp_path, text, line, message):
    path = tmp_path / "state.json"
    path.write_text(text)
    assert _error(path).startswith(f"{path}:{line}: {message}")
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"ok": 1}\n\n' + " ".join(text.split("\n")) + "\n")
    with pytest.raises(fio.BadFileError, match=r"rows.jsonl:3: "):
        fio.read_jsonl(rows)
    assert fio.read_jsonl(rows, lenient=True) == [{"ok": 1}]


def test_the_same_key_in_two_objects_is_fine(tmp_path):
    path = tmp_path / "plan.json"
    path.write_text(json.dumps({"steps": [{"name": "a", "key": "1"}, {"name": "b", "key": "2"}]}, indent=2))
    assert fio.read_json(path, dict)["steps"][1]["name"] == "b"


def test_a_file_over_the_limit_is_refused_even_when_lenient(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({"x": "y" * 100}))
    for lenient in (False, True):
        assert _error(path, limit=50, lenient=lenient) == f"{path}: is larger than 50 bytes; refused"
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"a": 1}\n' * 10)
    with pytest.raises(fio.BadFileError, match=r"rows.jsonl:6: is larger than 50 bytes"):
        list(fio.iter_jsonl(rows, limit=50))
    with pytest.raises(fio.BadFileError, match=r"rows.jsonl:1: a line longer than 4 bytes is refused"):
        list(fio.iter_jsonl(rows, line_limit=4))


def test_a_folder_is_refused_even_when_lenient(tmp_path):
    (tmp_path / "log.jsonl").mkdir()
    for lenient in (False, True):
        with pytest.raises(fio.BadFileError, match="log.jsonl: cannot be read: is a directory"):
            fio.read_jsonl(tmp_path / "log.jsonl", lenient=lenient)


class Holder(BaseModel):
    model_config = ConfigDict(strict=True)
    pid: StrictInt
    host: str


@pytest.mark.parametrize("value, message", [
    ({"pid": "12", "host": "h"}, "pid: Input should be a valid integer (got a JSON string '12')"),
    ({"pid": 12}, "host: Field required"),
    ({"pid": 12, "host": ["h"]}, "host: Input should be a valid string"),
])
def test_a_schema_names_the_key_that_is_wrong(tmp_path, value, message):
    path = tmp_path / ".lock-holder.json"
    path.write_text(json.dumps(value))
    assert _error(path, schema=Holder).startswith(f"{path}: {message}")
    assert fio.read_json(path, lenient=True, schema=Holder) is None
    path.write_text(json.dumps({"pid": 12, "host": "h"}))
    assert fio.read_json(path, schema=Holder) == Holder(pid=12, host="h")


def test_what_ftspec_writes_it_reads_back(tmp_path):
    """A loss that diverged is written as null: never NaN, which the reader refuses."""
    fio.write_json(tmp_path / "train.json", {"loss": float("nan"), "eval": [float("inf"), 1.5], "n": 3})
    assert fio.read_json(tmp_path / "train.json") == {"loss": None, "eval": [None, 1.5], "n": 3}
    fio.write_jsonl(tmp_path / "log.jsonl", [{"loss": float("-inf")}, {"loss": 0.5}])
    assert fio.read_jsonl(tmp_path / "log.jsonl") == [{"loss": None}, {"loss": 0.5}]


def test_the_decoder_never_raises_recursion_error():
    for text in ("[" * 100_000, "[" * 100_000 + "]" * 100_000, '{"a":' * 50_000 + "1" + "}" * 50_000):
        with pytest.raises(ValueError):  # BadValue, or JSONDecodeError for the unclosed text
            jsonread.decode(text)


def test_rows_and_files_share_the_decoder():
    """ftspec.data.jsonrows keeps no second copy: its names are core's."""
    from ftspec.data import jsonrows

    assert jsonrows.BadValue is jsonread.BadValue and jsonrows.scan_value is jsonread.scan_value
    with pytest.raises(jsonrows.BadValue, match="appears twice"):
        jsonrows.decode_json('{"a": 1, "a": 2}')
