"""The step store follows no link a pull request can commit (ftspec.store.rundir.Store.check,
ftspec.core.folders.remove_own): a run refuses a store, a step's folder or a step's entry that
is a symbolic link, in one line, before it writes or removes anything there; and a step
marker's key never names a path outside the store."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers import BASE_BODY, run_job, write_job

from ftspec.core.errors import SpecError
from ftspec.core.layout import MARKER, STORE
from ftspec.plan.compile import compile_spec
from ftspec.store.rundir import Store, adopt_legacy

KEY = "b" * 64


def _tree(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): (p.read_text() if p.is_file() else "dir")
            for p in sorted(folder.rglob("*"))}


@pytest.fixture
def outside(tmp_path) -> Path:
    """Someone's folder outside the repository, holding what a run would remove were it ftspec's."""
    folder = tmp_path / "outside"
    (folder / "checkpoint-7").mkdir(parents=True)
    (folder / "checkpoint-7" / "notes.txt").write_text("mine")
    (folder / "workers").mkdir()
    (folder / "workers" / "x").write_text("mine")
    return folder


# Where a link is planted, relative to the store; {key}: the train step's key, as named in the store.
PLANTED = ["", "train", "train/{key}.checkpoints", "train/{key}.partial", "train/{key}", "train/{key}.old"]


@pytest.mark.parametrize("where", PLANTED)
def test_a_link_in_the_store_is_refused_before_anything_is_written_or_removed(tmp_path, outside, where):
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    spec = write_job(repo, BASE_BODY + "method: {kind: sft, adapter: full}\noutput: {dir: runs/job}\n")
    key = compile_spec(spec)[0].step("train").key
    store = repo / "runs" / STORE
    link = store / where.format(key=key[:16]) if where else store
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(outside, target_is_directory=True)
    before = _tree(outside)
    with pytest.raises(SpecError) as err:
        run_job(spec)
    line = str(err.value)
    assert len(line.splitlines()) == 1 and line.startswith(f"{link}: is a symbolic link"), line
    assert _tree(outside) == before
    if where:
        assert os.listdir(store) == ["train"], "nothing computed, nothing written in the store"


def test_a_link_among_the_checkpoints_is_never_resumed_from_nor_removed(tmp_path, outside):
    from ftspec.runtime.training.resume import last_checkpoint  # heavy: imports transformers

    folder = tmp_path / "checkpoints"
    folder.mkdir()
    (folder / "checkpoint-9").symlink_to(outside / "checkpoint-7", target_is_directory=True)
    before = _tree(outside)
    with pytest.raises(SpecError) as err:
        last_checkpoint(folder)
    assert str(err.value).startswith(f"{folder / 'checkpoint-9'}: is a symbolic link"), err.value
    assert _tree(outside) == before and (folder / "checkpoint-9").is_symlink()


@pytest.mark.parametrize("key", ["../../../../escaped", "bbbbbbbbbbbbbbb/" + "b" * 48, "B" * 64, "b" * 65])
def test_a_marker_key_that_is_not_a_step_key_moves_nothing(tmp_path, key):
    runs = tmp_path / "repo" / "runs"
    data = runs / "job" / "data"
    data.mkdir(parents=True)
    (data / MARKER).write_text(json.dumps({"step": "prepare_data", "key": key}))
    (data / "rows.jsonl").write_text("{}\n")
    before = _tree(tmp_path)
    with pytest.raises(SpecError) as err:
        adopt_legacy(runs / "job", Store(runs / STORE))
    assert "holds no marker of a finished step" in str(err.value), err.value
    assert _tree(tmp_path) == before


def test_a_checkpoints_folder_not_named_by_a_key_is_not_adopted(tmp_path):
    runs = tmp_path / "runs"
    old = runs / "job" / "checkpoints" / "notakey"
    old.mkdir(parents=True)
    before = _tree(tmp_path)
    with pytest.raises(SpecError) as err:
        adopt_legacy(runs / "job", Store(runs / STORE))
    assert "'notakey' is not a folder of checkpoints" in str(err.value), err.value
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("key", ["../../x", "a" * 15, "", "g" * 64])
def test_the_store_names_no_folder_for_what_is_not_a_step_key(tmp_path, key):
    store = Store(tmp_path / STORE)
    for where in (store.path, store.partial, store.lock_path, lambda s, k: store.scratch(s, k, "checkpoints")):
        with pytest.raises(ValueError):
            where("train", key)
    assert store.path("train", KEY) == tmp_path / STORE / "train" / KEY[:16]
    assert os.listdir(tmp_path) == []


def test_a_step_or_checkpoint_git_tracks_in_the_store_is_refused_and_kept(tmp_path):
    # A pull request can commit a step marked finished (taken for a trained model) or a
    # checkpoint whose pickles the trainer loads: the run refuses to start, and removes nothing.
    import subprocess

    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    spec = write_job(repo, BASE_BODY + "method: {kind: sft, adapter: full}\noutput: {dir: runs/job}\n")
    key = compile_spec(spec)[0].step("train").key
    forged = repo / "runs" / STORE / "train" / f"{key[:16]}.checkpoints" / "checkpoint-9" / "rng_state.pth"
    forged.parent.mkdir(parents=True)
    forged.write_bytes(b"a pickle a pull request chose")
    subprocess.run(["git", "-C", str(repo), "add", "-f", "runs"], check=True)
    with pytest.raises(SpecError) as err:
        run_job(spec)
    line = str(err.value)
    assert len(line.splitlines()) == 1 and "output.dir" in line and "is tracked by git" in line, line
    assert forged.read_bytes() == b"a pickle a pull request chose"
    assert sorted(os.listdir(repo / "runs" / STORE)) == ["train"], "nothing computed, nothing written in the store"
