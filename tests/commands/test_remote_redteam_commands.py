"""`ftspec pull` and `ftspec run` with a shared store when this machine's disk refuses the
download: one line that says this machine's disk (not a store that is down), nothing
half-fetched kept, and the same command resumes once there is room."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import BASE_BODY, write_job

import ftspec.store.remote_fs as remote_fs
from ftspec.backends.remotes import open_store
from ftspec.cli import main
from ftspec.plan.compile import compile_plan
from ftspec.store.rundir import Store, finish_step, run_dir_of, store_of

BODY = BASE_BODY + "method: {kind: sft, adapter: full}\n"


def cli(*args: str, cwd: Path):
    old = os.getcwd()
    try:
        os.chdir(cwd)
        return CliRunner().invoke(main, list(args), env={"FTSPEC_STORE": ""}, catch_exceptions=False)
    finally:
        os.chdir(old)


def shared_with_every_step(tmp_path: Path) -> tuple[Path, Path, list]:
    """A clone of a spec, and a folder store holding an entry for each step of its plan."""
    (tmp_path / "repo" / ".git").mkdir(parents=True)
    spec = write_job(tmp_path / "repo", BODY)
    plan = compile_plan(spec, (), (), False, ()).plan
    shared = tmp_path / "shared"
    shared.mkdir()
    remote = open_store(str(shared), tmp_path)
    made = Store(tmp_path / "elsewhere" / ".ftspec-store")
    for step in plan.steps:
        partial = made.partial(step.name, step.key)
        partial.mkdir(parents=True)
        (partial / "out.bin").write_bytes(step.key.encode() * 100)
        finish_step(partial, made.path(step.name, step.key), step.name, step.key)
        assert remote.push(step.name, step.key, made.path(step.name, step.key))
    return spec, shared, plan


@pytest.fixture
def full_disk(monkeypatch):
    def full(src, dst, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(remote_fs.shutil, "copyfile", full)
    return monkeypatch


def test_pull_onto_a_full_disk_is_one_line_and_resumes(tmp_path, full_disk):
    spec, shared, plan = shared_with_every_step(tmp_path)
    got = cli("pull", str(spec), "--store", str(shared), cwd=tmp_path / "repo")
    assert got.exit_code == 1, got.output
    line = got.output.strip()
    assert "\n" not in line and "cannot write" in line and "No space left on device" in line
    assert f"store {shared}" not in line  # this machine's disk, not the shared store
    local = store_of(run_dir_of(plan, tmp_path / "repo"))
    assert not any(local.complete(s.name, s.key) or local.partial(s.name, s.key).exists() for s in plan.steps)
    full_disk.undo()
    again = cli("pull", str(spec), "--store", str(shared), cwd=tmp_path / "repo")
    assert again.exit_code == 0, again.output
    assert f"fetched {len(plan.steps)} steps; 0 here already" in again.output


def test_a_run_whose_fetch_fills_the_disk_stops_in_one_line(tmp_path, full_disk):
    # Not "the store is down, computed here": computing here needs the room the fetch lacked.
    spec, shared, plan = shared_with_every_step(tmp_path)
    got = cli("run", str(spec), "--store", str(shared), cwd=tmp_path / "repo")
    assert got.exit_code == 1, got.output
    assert "cannot write" in got.output and "No space left on device" in got.output
    assert "computed here" not in got.output and ": running (key" not in got.output
    local = store_of(run_dir_of(plan, tmp_path / "repo"))
    assert not any(local.complete(s.name, s.key) or local.partial(s.name, s.key).exists() for s in plan.steps)


def test_gc_remote_leaves_what_only_looks_like_a_checkpoint(tmp_path):
    # Under a train key's checkpoints/, ftspec writes latest.json and <upload>/... only: a
    # file another tool put there is listed and left, even where the checkpoints are stale.
    (tmp_path / "repo" / ".git").mkdir(parents=True)
    (tmp_path / "repo" / "runs").mkdir()
    shared = tmp_path / "shared"
    top = shared / "train" / ("ab" * 32) / "checkpoints"
    theirs, ours = top / "notes.txt", top / ("1" * 32) / "checkpoint-3" / "trainer_state.json"
    month_ago = time.time() - 40 * 86400
    for path in (theirs, ours):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")
        os.utime(path, (month_ago, month_ago))
    dry = cli("gc", str(tmp_path / "repo" / "runs"), "--remote", "--store", str(shared), "--dry-run",
              cwd=tmp_path / "repo")
    assert dry.exit_code == 0, dry.output
    assert theirs.is_file() and ours.is_file()  # a dry run changes nothing
    got = cli("gc", str(tmp_path / "repo" / "runs"), "--remote", "--store", str(shared), cwd=tmp_path / "repo")
    assert got.exit_code == 0, got.output
    assert theirs.read_text() == "{}" and not ours.exists()
    assert "left  train/" in got.output and "checkpoints/notes.txt: not ftspec's" in got.output
