"""ftspec.core.io: files are written whole or not at all, and a broken file is one clear
line naming it, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT

from ftspec.core import io as fio
from ftspec.core.errors import SpecError


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_write_json_round_trip_and_format(tmp_path):
    path = tmp_path / "sub" / "a.json"  # the folder is made
    fio.write_json(path, {"b": 1, "a": "é → ok"})
    assert path.read_text(encoding="utf-8") == '{\n  "a": "é → ok",\n  "b": 1\n}\n'
    assert fio.read_json(path, dict) == {"b": 1, "a": "é → ok"}
    fio.write_json(path, {"b": 1, "a": 2}, sort_keys=False)
    assert list(json.loads(path.read_text())) == ["b", "a"]
    assert leftovers(path.parent) == []


def test_write_atomic_text_and_bytes(tmp_path):
    fio.write_atomic(tmp_path / "t.txt", "héllo\n")
    fio.write_atomic(tmp_path / "b.bin", b"\x00\xff")
    assert (tmp_path / "t.txt").read_bytes() == "héllo\n".encode("utf-8")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\xff"
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(3 << 20))
    fio.copy_atomic(src, tmp_path / "copy.bin")
    assert (tmp_path / "copy.bin").read_bytes() == src.read_bytes()
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("fail_at", ["fsync", "replace"])
def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path, monkeypatch, fail_at):
    path = tmp_path / "manifest.json"
    fio.write_json(path, {"status": "finished"})

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fio.os, fail_at, boom)
    with pytest.raises(OSError, match="No space"):
        fio.write_json(path, {"status": "running"})
    monkeypatch.undo()
    assert fio.read_json(path) == {"status": "finished"}
    assert leftovers(tmp_path) == []


def test_an_interrupted_copy_leaves_no_temporary_file(tmp_path, monkeypatch):
    monkeypatch.setattr(fio.os, "fsync", lambda fd: (_ for _ in ()).throw(KeyboardInterrupt()))
    (tmp_path / "src").write_text("x")
    with pytest.raises(KeyboardInterrupt):
        fio.copy_atomic(tmp_path / "src", tmp_path / "dst")
    assert not (tmp_path / "dst").exists() and leftovers(tmp_path) == []


def test_jsonl_round_trip(tmp_path):
    rows = [{"a": 1, "text": "naïve"}, {"a": 2}]
    fio.write_jsonl(tmp_path / "r.jsonl", rows)
    assert "naïve" in (tmp_path / "r.jsonl").read_text(encoding="utf-8")  # UTF-8, not \\u escapes
    assert fio.read_jsonl(tmp_path / "r.jsonl") == rows
    fio.write_jsonl(tmp_path / "empty.jsonl", [])
    assert (tmp_path / "empty.jsonl").read_text() == "" and fio.read_jsonl(tmp_path / "empty.jsonl") == []


def test_read_json_absent_is_none(tmp_path):
    assert fio.read_json(tmp_path / "nope.json") is None
    assert fio.read_json(tmp_path / "nope.json", dict) is None


@pytest.mark.parametrize("content, expect, message", [
    ("{not json", None, "1: not valid JSON: Expecting property name enclosed in double quotes (column 2)"),
    ('{"a": 1', dict, "1: not valid JSON: Expecting ',' delimiter (column 8)"),
    ("", dict, "empty, not JSON (cut short?)"),
    ("[1, 2]", dict, "should hold a JSON object, not a JSON array"),
    ('"text"', dict, "should hold a JSON object, not a JSON string"),
    ("3", list, "should hold a JSON array, not a number"),
    ("null", dict, "should hold a JSON object, not null"),
])
def test_a_broken_or_wrong_typed_file_is_one_line_naming_it(tmp_path, content, expect, message):
    path = tmp_path / "metrics.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(fio.BadFileError) as info:
        fio.read_json(path, expect)
    line = str(info.value)
    assert line == f"{path}: {message}" or line == f"{path}:{message}"
    assert "\n" not in line
    assert isinstance(info.value, SpecError) and isinstance(info.value, ValueError)
    assert fio.read_json(path, expect, lenient=True) is None


def test_read_json_of_bytes_that_are_not_text(tmp_path):
    (tmp_path / "x.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(fio.BadFileError, match="not UTF-8"):
        fio.read_json(tmp_path / "x.json")


def test_read_json_of_a_folder(tmp_path):
    """Lenient forgives a file a crash cut short, never a folder where a file belongs."""
    for lenient in (False, True):
        with pytest.raises(fio.BadFileError, match="cannot be read: is a directory"):
            fio.read_json(tmp_path, lenient=lenient)


def test_read_jsonl_strict_and_lenient(tmp_path):
    path = tmp_path / "log.jsonl"
    path.write_text('{"step": 1}\n\n[1]\n{"step": 2}\n{"step": 3, "loss": 0.', encoding="utf-8")  # cut short
    with pytest.raises(fio.BadFileError, match=r"log.jsonl:5: not valid JSON"):
        fio.read_jsonl(path)
    assert fio.read_jsonl(path, lenient=True) == [{"step": 1}, {"step": 2}]
    with pytest.raises(fio.BadFileError, match="missing"):
        fio.read_jsonl(tmp_path / "nope.jsonl")
    assert fio.read_jsonl(tmp_path / "nope.jsonl", lenient=True) == []


def test_the_module_stays_light():
    code = ("import sys, ftspec.core.io; bad = [m for m in ('torch', 'transformers', 'numpy') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)


def test_there_is_one_atomic_writer():
    """No other module renames a temporary file into place: they all go through ftspec.core.io."""
    offenders = []
    for path in sorted((ROOT / "ftspec").rglob("*.py")):
        if path.name == "io.py" and path.parent.name == "core":
            continue
        text = path.read_text(encoding="utf-8")
        if "mkstemp(" in text or ".tmp\"" in text or "os.fsync(" in text:
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


@pytest.fixture(params=[0o022, 0o077, 0o002], ids=["022", "077", "002"])
def umask(request):
    """The process's umask set to the value under test, and put back afterwards."""
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def _mode(path):
    return os.stat(path).st_mode & 0o777


@pytest.mark.skipif(os.name != "posix", reason="permission bits are POSIX")
def test_new_files_get_the_mode_a_plain_open_gives(tmp_path, umask):
    """mkstemp creates 0600 whatever the umask; ftspec's files get what open() would give."""
    (tmp_path / "plain.txt").write_text("x")
    expected = _mode(tmp_path / "plain.txt")
    assert expected == 0o666 & ~umask
    src = tmp_path / "src.bin"
    src.write_bytes(b"abc")
    os.chmod(src, 0o600)  # a copy is a new file: the source's mode is not carried over
    fio.write_atomic(tmp_path / "a.txt", "x")
    fio.write_json(tmp_path / "sub" / "b.json", {"a": 1})
    fio.write_jsonl(tmp_path / "c.jsonl", [{"a": 1}])
    fio.copy_atomic(src, tmp_path / "d.bin")
    for name in ("a.txt", "sub/b.json", "c.jsonl", "d.bin"):
        assert _mode(tmp_path / name) == expected, (name, oct(_mode(tmp_path / name)), oct(expected))


@pytest.mark.skipif(os.name != "posix", reason="permission bits are POSIX")
def test_a_replaced_file_keeps_its_own_mode(tmp_path, umask):
    """As open(path, 'w') would: the file's permissions are its owner's choice."""
    path = tmp_path / "plan.json"
    path.write_text("{}")
    for mode in (0o640, 0o604, 0o600):
        os.chmod(path, mode)
        fio.write_json(path, {"mode": mode})
        assert _mode(path) == mode and fio.read_json(path) == {"mode": mode}


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the umask from /proc")
def test_the_umask_is_read_without_changing_it(umask, monkeypatch):
    monkeypatch.setattr(fio.os, "umask", lambda *a: pytest.fail("os.umask was called"))
    assert fio._umask() == umask


def test_a_folder_appears_whole_or_not_at_all_and_never_replaces_one_there_first(tmp_path):
    from ftspec.core.io import make_folder

    seen = []

    def fill(temporary):
        seen.append(temporary.parent == tmp_path and not (tmp_path / "made").exists())
        (temporary / "a.json").write_text("{}")

    assert make_folder(tmp_path / "made", fill) and seen == [True]
    assert sorted(p.name for p in (tmp_path / "made").iterdir()) == ["a.json"]
    (tmp_path / "made" / "a.json").write_text('{"mine": 1}')
    assert not make_folder(tmp_path / "made", fill)  # there first: kept as it was
    assert (tmp_path / "made" / "a.json").read_text() == '{"mine": 1}'

    def broken(temporary):
        (temporary / "half").write_text("x")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        make_folder(tmp_path / "other", broken)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["made"]  # nothing half made, no temporary left
