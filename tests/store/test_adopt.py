"""Adopting a run directory an older ftspec wrote (ftspec.store.rundir.adopt_legacy,
adopt, link_step): what it cannot place in the store is refused in one line naming it, and
nothing is moved or deleted."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ftspec.core.errors import SpecError
from ftspec.core.layout import MARKER, STORE
from ftspec.store.rundir import Store, adopt_legacy, link_step

KEY = "a" * 64


def _snapshot(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): (p.read_text() if p.is_file() else "dir")
            for p in sorted(folder.rglob("*"))}


def _marked(folder: Path, step: str, key: str = KEY) -> None:
    folder.mkdir(parents=True)
    (folder / MARKER).write_text(json.dumps({"step": step, "key": key}))
    (folder / "out.txt").write_text(step)


@pytest.fixture
def runs(tmp_path) -> Path:
    run_dir = tmp_path / "runs" / "job"
    run_dir.mkdir(parents=True)
    return tmp_path / "runs"


@pytest.mark.parametrize("found, shown, said", [
    ("model/weights.bin", "model", "'model' holds no marker of a finished step"),  # the user's own folder
    ("data.partial/rows.jsonl", "data.partial", "'data.partial' is left from a step an older ftspec did not finish"),
    ("model.old/x.bin", "model.old", "'model.old' is left from a step"),
    ("checkpoints/notes.txt", "checkpoints/notes.txt", "'notes.txt' is not a folder of checkpoints"),
])
def test_what_adopting_does_not_recognise_is_refused_and_kept(runs, found, shown, said):
    run_dir = runs / "job"
    _marked(run_dir / "data", "prepare_data")  # adoptable, but nothing moves while anything is refused
    (run_dir / found).parent.mkdir(parents=True, exist_ok=True)
    (run_dir / found).write_text("mine")
    before = _snapshot(runs)
    with pytest.raises(SpecError) as err:
        adopt_legacy(run_dir, Store(runs / STORE))
    line = str(err.value)
    assert len(line.splitlines()) == 1 and said in line and "deletes nothing it did not write" in line, line
    assert line.startswith(f"{run_dir / shown}: "), line
    assert _snapshot(runs) == before


def test_a_step_the_store_already_has_is_refused_and_both_kept(runs):
    run_dir, store = runs / "job", Store(runs / STORE)
    _marked(run_dir / "model", "train")
    _marked(store.path("train", KEY), "train")
    (store.path("train", KEY) / "out.txt").write_text("the store's")
    before = _snapshot(runs)
    with pytest.raises(SpecError, match="holds the train step .* which the step store already has"):
        adopt_legacy(run_dir, store)
    with pytest.raises(SpecError, match="which the step store already has"):
        link_step(run_dir, "model", store.path("train", KEY))
    assert _snapshot(runs) == before


def test_what_is_recognised_moves_into_the_store(runs):
    run_dir, store = runs / "job", Store(runs / STORE)
    _marked(run_dir / "model", "train")
    (run_dir / "checkpoints" / ("c" * 16)).mkdir(parents=True)
    adopt_legacy(run_dir, store)
    assert (store.path("train", KEY) / "out.txt").read_text() == "train"
    assert store.scratch("train", "c" * 16, "checkpoints").is_dir()
    assert sorted(os.listdir(run_dir)) == []
