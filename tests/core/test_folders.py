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


@pytest.mark.parametrize("planted", ["top", "top/step", "top/step/work"])
def test_remove_own_follows_no_link_from_its_top_down(tmp_path, planted):
    """A folder ftspec removes is reached through no link between where ftspec keeps it and it."""
    from ftspec.core.errors import SpecError

    outside = tmp_path / "outside"
    (outside / "work").mkdir(parents=True)
    (outside / "work" / "mine.txt").write_text("mine")
    (outside / "step" / "work").mkdir(parents=True)
    link = tmp_path / planted
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(outside if planted != "top/step/work" else outside / "work", target_is_directory=True)
    if planted == "top":
        link.unlink()
        link.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
        (tmp_path / "elsewhere" / "step" / "work").mkdir(parents=True)
    before = sorted(p.as_posix() for p in tmp_path.rglob("*"))
    with pytest.raises(SpecError) as err:
        folders.remove_own(tmp_path / "top" / "step" / "work", tmp_path / "top")
    assert str(err.value).startswith(f"{link}: is a symbolic link"), err.value
    assert sorted(p.as_posix() for p in tmp_path.rglob("*")) == before


def test_remove_own_removes_a_folder_it_made_and_refuses_a_file(tmp_path):
    from ftspec.core.errors import SpecError

    (tmp_path / "step" / "work" / "deep").mkdir(parents=True)
    folders.remove_own(tmp_path / "step" / "work", tmp_path)
    folders.remove_own(tmp_path / "step" / "gone", tmp_path)  # missing: nothing to do
    assert os.listdir(tmp_path / "step") == []
    (tmp_path / "step" / "work").write_text("not a folder")
    with pytest.raises(SpecError, match="is not a folder ftspec made"):
        folders.remove_own(tmp_path / "step" / "work", tmp_path)
    assert (tmp_path / "step" / "work").read_text() == "not a folder"
