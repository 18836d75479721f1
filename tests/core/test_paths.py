"""A spec may only name files inside its repository; only the person running
ftspec can allow more (--allow-path, FTSPEC_ALLOW_PATHS), never the spec."""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from ftspec.cli import main

ROWS = "".join(f'{{"text": "request {i}", "queue": "billing"}}\n' for i in range(8))


def _repo(tmp_path):
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / "specs").mkdir()
    (repo / "specs" / "train.jsonl").write_text(ROWS)
    outside = tmp_path / "secrets"
    outside.mkdir()
    (outside / "credentials.jsonl").write_text('{"text": "AKIAFAKESECRET", "queue": "x"}\n' * 4)
    (outside / "prompt.j2").write_text("{{ text }}")
    return repo, outside


def _spec(repo, train="train.jsonl", prompt="'{{ text }}'", extra=""):
    path = repo / "specs" / "s.yaml"
    path.write_text(
        "ftspec: 1\nname: s\nmodel: {kind: tiny, hidden_size: 32, num_heads: 4}\n"
        f"data: {{train: {train}, split: {{validation: 0.25}}}}\n"
        f"format: {{kind: prompt_completion, prompt: {prompt}, completion: ' {{{{ queue }}}}'}}\n"
        f"training: {{max_length: 256}}\n{extra}")
    return path


def _validate(spec, *args, env=None):
    return CliRunner(env=env).invoke(main, ["validate", str(spec), *args])


@pytest.mark.parametrize("train", ["../../secrets/credentials.jsonl", "/etc/passwd"])
def test_data_outside_the_repository_is_refused(tmp_path, train):
    repo, outside = _repo(tmp_path)
    if train.startswith("../"):
        train = os.path.relpath(outside / "credentials.jsonl", repo / "specs")
    result = _validate(_spec(repo, train=train))
    assert result.exit_code == 2
    assert "resolves outside the spec's repository" in result.output
    assert "AKIAFAKESECRET" not in result.output and "root:" not in result.output


def test_a_symlink_out_of_the_repository_is_refused(tmp_path):
    repo, outside = _repo(tmp_path)
    (repo / "specs" / "link.jsonl").symlink_to(outside / "credentials.jsonl")
    result = _validate(_spec(repo, train="link.jsonl"))
    assert result.exit_code == 2
    assert "data.train: 'link.jsonl' resolves outside the spec's repository" in result.output


def test_template_base_spec_and_output_outside_are_refused(tmp_path):
    repo, outside = _repo(tmp_path)
    rel = os.path.relpath(outside, repo / "specs")
    result = _validate(_spec(repo, prompt=f"{{file: {rel}/prompt.j2}}", extra="output: {dir: ../outside-runs}\n"))
    assert result.exit_code == 2
    assert "format.prompt: '" in result.output and "output.dir: '../outside-runs' resolves outside" in result.output
    (outside / "base.yaml").write_text("ftspec: 1\n")
    child = repo / "specs" / "child.yaml"
    child.write_text(f"extends: {rel}/base.yaml\nname: c\n")
    result = _validate(child)
    assert result.exit_code == 2 and "extends: '" in result.output and "resolves outside" in result.output


def test_the_runner_can_allow_a_folder_but_the_spec_cannot(tmp_path):
    repo, outside = _repo(tmp_path)
    spec = _spec(repo, train=str(outside / "credentials.jsonl"))
    assert _validate(spec).exit_code == 2
    assert _validate(spec, "--allow-path", str(outside)).exit_code == 0
    assert _validate(spec, env={"FTSPEC_ALLOW_PATHS": str(outside)}).exit_code == 0
    # A spec has no key that widens the policy: trying is an unknown key.
    spec.write_text(spec.read_text() + f"allow_paths: [{outside}]\n")
    result = _validate(spec)
    assert result.exit_code == 2 and "allow_paths: unknown key" in result.output


# --------------------------------------------------------------------------- what ftspec writes

def test_the_write_guard_keeps_the_root_inputs_and_kept_folders_symlinks_followed(tmp_path):
    from ftspec.core.paths import Protected, target_problem

    root = tmp_path / "repo"
    (root / ".git").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "data" / "train.jsonl").write_text("{}\n")
    (root / "runs" / "job").mkdir(parents=True)
    (tmp_path / "link").symlink_to(root / "data" / "train.jsonl")
    kept = Protected.of(root, [(root / "runs" / "job", "the run directory 'runs/job'")], [root / "data/train.jsonl"])

    def problem(path, folder=True):
        return target_problem(path, kept, folder)

    assert problem(root) == "is the repository root"
    assert problem(tmp_path) == f"holds the repository root ({root.resolve()})"
    assert problem(root / ".git" / "x") == "is inside .git"
    assert problem(root / "runs") == "holds the run directory 'runs/job'"
    assert problem(root / "runs/job/model") == "is inside the run directory 'runs/job'"
    assert problem(root / "data") == "holds 'data/train.jsonl', an input of this spec"
    assert problem(tmp_path / "link", folder=False) == "is 'data/train.jsonl', an input of this spec"
    assert problem(root / "data", folder=False) is None, "a file target holds nothing"
    assert problem(root / "exported") is None and problem(root / "data" / "lock.json", folder=False) is None


def test_a_spec_that_is_a_link_out_of_its_repository_is_not_read(tmp_path, monkeypatch):
    # CI runs `ftspec validate specs/*.yaml` on a pull request's files: a spec that is a link to
    # a file outside the repository must not be read, nor its lines shown in an error.
    outside = tmp_path / "outside.yaml"
    outside.write_text("aws_secret_access_key: hunter2\n")
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / "specs").mkdir()
    (repo / "specs" / "evil.yaml").symlink_to(outside)
    monkeypatch.chdir(repo)
    for command in ("validate", "plan", "lock"):
        result = CliRunner().invoke(main, [command, "specs/evil.yaml"])
        assert result.exit_code == 2, result.output
        assert "resolves outside the spec's repository" in result.output
        assert "hunter2" not in result.output and "aws_secret" not in result.output
    allowed = CliRunner().invoke(main, ["validate", "specs/evil.yaml", "--allow-path", str(tmp_path)])
    assert "aws_secret_access_key" in allowed.output  # read, once whoever runs ftspec allows it
