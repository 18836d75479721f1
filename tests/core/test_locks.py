"""ftspec.core.locks: every lock ftspec takes. A lock file is never followed, truncated or
waited on when it is not a regular file; asking whether a lock is held creates nothing."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from conftest import ROOT

from ftspec.core.errors import SpecError
from ftspec.core.locks import FileLock, held

PRECIOUS = b"someone else's file\n"


def planted_link(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_bytes(PRECIOUS)
    lock = tmp_path / "folder" / "x.lock"
    lock.parent.mkdir()
    lock.symlink_to(outside)
    return lock, outside


def test_a_lock_file_that_is_a_link_is_refused_in_one_line_and_what_it_names_is_untouched(tmp_path):
    lock, outside = planted_link(tmp_path)
    with pytest.raises(SpecError) as info:
        FileLock(lock).acquire()
    (issue,) = info.value.issues
    assert issue.format().startswith(f"{lock}: is a symbolic link, not a lock file ftspec made")
    assert "\n" not in issue.format()
    assert not held(lock)
    assert outside.read_bytes() == PRECIOUS and lock.is_symlink()


def test_a_lock_file_that_is_a_fifo_is_refused_without_waiting(tmp_path):
    fifo = tmp_path / "x.lock"
    os.mkfifo(fifo)
    code = textwrap.dedent(f"""
        from ftspec.core.errors import SpecError
        from ftspec.core.locks import FileLock, held
        print("held", held({str(fifo)!r}))
        try:
            FileLock({str(fifo)!r}).acquire()
        except SpecError as exc:
            print(exc)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["held False", f"{fifo}: is a FIFO, not a lock file ftspec made; it was not "
                                       "opened; remove it if no ftspec run is using this folder"]


def test_an_existing_lock_file_keeps_its_bytes_and_a_new_one_is_made_empty(tmp_path):
    old = tmp_path / "old.lock"
    old.write_bytes(b"left by someone")
    with FileLock(old):
        pass
    assert old.read_bytes() == b"left by someone"
    new = tmp_path / "new.lock"
    with FileLock(new):
        assert new.read_bytes() == b""
    assert oct(new.stat().st_mode & 0o777) == oct(0o644 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_held_asks_without_creating_anything_and_sees_a_holder(tmp_path):
    path = tmp_path / "x.lock"
    assert not held(path) and not path.exists()
    holder = FileLock(path)
    assert holder.acquire(blocking=False)
    try:
        assert held(path)
        assert not FileLock(path).acquire(blocking=False), "a second holder is refused"
    finally:
        holder.release()
    assert not held(path) and FileLock(path).acquire(blocking=False)


def test_the_lock_module_imports_only_the_standard_library():
    code = ("import sys; before = set(sys.modules); import ftspec.core.locks; "
            "new = {m.split('.')[0] for m in set(sys.modules) - before}; "
            "print(sorted(new - set(sys.stdlib_module_names) - {'ftspec'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_every_lock_ftspec_takes_goes_through_the_one_helper():
    """No other module locks a file itself (or through a third-party lock package)."""
    offenders = []
    for path in sorted((ROOT / "ftspec").rglob("*.py")):
        if path == ROOT / "ftspec" / "core" / "locks.py":
            continue
        text = path.read_text(encoding="utf-8")
        if any(s in text for s in ("import filelock", "fcntl.flock", "fcntl.lockf", "msvcrt.locking", "portalocker")):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
