"""What the manifest says about the repository is true whatever the inputs are named."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from ftspec.backends.manifest import git_state


def git(root, *args):
    subprocess.run(["git", "-c", "user.name=ftspec", "-c", "user.email=ftspec@example.com", "-c",
                    "commit.gpgsign=false", "-c", "init.defaultBranch=main", "-C", str(root), *args],
                   check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    git(tmp_path, "init", "-q")
    return tmp_path


def test_git_state_names_inputs_as_they_are_not_as_git_quotes_or_matches_them(repo):
    """A tracked data file named with a non-ASCII letter, a space, or pathspec magic (``:!x``
    means "everything but x" to git) is neither untracked nor listed under another name."""
    names = ["données.jsonl", "sp ace.jsonl", ":!x.jsonl", "*.jsonl", "clean.jsonl"]
    for name in names:
        (repo / name).write_text("{}\n", encoding="utf-8")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "data")
    for name in ("données.jsonl", "sp ace.jsonl"):
        (repo / name).write_text('{"a": 1}\n', encoding="utf-8")

    state = git_state(repo, names)
    assert state["untracked_inputs"] == []
    assert state["modified_inputs"] == ["données.jsonl", "sp ace.jsonl"]
    # an input named like a pattern matches only itself: the edited files are not its changes
    only = git_state(repo, [":!x.jsonl", "*.jsonl"])
    assert only["untracked_inputs"] == [] and only["modified_inputs"] == []


def test_git_state_sees_an_input_that_is_not_tracked(repo):
    (repo / "tracked.jsonl").write_text("{}\n", encoding="utf-8")
    git(repo, "add", "tracked.jsonl")
    git(repo, "commit", "-q", "-m", "data")
    (repo / "new é.jsonl").write_text("{}\n", encoding="utf-8")
    state = git_state(repo, ["tracked.jsonl", "new é.jsonl"])
    assert state["untracked_inputs"] == ["new é.jsonl"] and state["dirty"] is True
