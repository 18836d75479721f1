"""The manifest's `git` state when the plan reads data outside the repository (allowed with
--allow-path, named `../shared/…` in the plan): git is asked only about what it can track."""

from __future__ import annotations

import subprocess
from pathlib import Path

from ftspec.backends.manifest import git_state


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t", *args], check=True,
                   capture_output=True)


def test_an_input_outside_the_repository_does_not_make_a_clean_run_dirty(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "data.jsonl").write_text("{}\n")
    (tmp_path / "shared.jsonl").write_text("{}\n")
    git(repo, "init", "-q")
    git(repo, "add", "data.jsonl")
    git(repo, "commit", "-qm", "data")
    state = git_state(repo, ["data.jsonl", "../shared.jsonl"])
    assert state["dirty"] is False and state["untracked_inputs"] == []
    (repo / "data.jsonl").write_text("{}\n{}\n")
    assert git_state(repo, ["data.jsonl", "../shared.jsonl"])["modified_inputs"] == ["data.jsonl"]
