"""ftspec.core.folders: a folder written whole; replacing one that cannot be replaced
leaves it as it was, and nothing beside it."""

from __future__ import annotations

import os
import stat

import pytest

from ftspec.core import folders


def test_a_replace_that_fails_puts_the_old_folder_back_and_leaves_nothing_beside(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    partial = folders.new_partial(out)
    (partial / "new.txt").write_text("new")
    real_replace = os.replace

    def failing(src, dst):
        if os.fspath(src) == os.fspath(partial):
            raise OSError(16, "Device or resource busy")
        real_replace(src, dst)

    monkeypatch.setattr(folders.os, "replace", failing)
    with pytest.raises(OSError):
        folders.replace_folder(partial, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert sorted(p.name for p in out.iterdir()) == ["old.txt"]


def test_what_is_written_gets_the_users_umask(tmp_path):
    old = os.umask(0o022)
    try:
        partial = folders.new_partial(tmp_path / "out")
        (partial / "weights").write_text("w")
        os.chmod(partial / "weights", 0o600)  # as a library writes it
        folders.replace_folder(partial, tmp_path / "out")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "out" / "weights").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(tmp_path / "out").st_mode) == 0o755
