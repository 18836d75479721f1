"""Files ftspec reads back, hostile or of the wrong shape, through the commands that read
them: a FIFO in a run directory, in the store or given to `generate --file` is refused at
once; nesting, NaN and duplicate keys are one line at FILE:LINE; a lock, a job record or a
plan of the wrong shape is one line naming the file and the key — exit status 2, never a
traceback, never a hang."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import ROOT, run_cli

from ftspec.cli import main

posix_only = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs are POSIX")

ROWS = "".join(f'{{"text": "request {i}", "queue": "billing"}}\n' for i in range(8))
SPEC = """ftspec: 1
name: job
model: {kind: tiny, hidden_size: 32, num_heads: 4}
data:
  train: train.jsonl
  split: {validation: 0.25}
format:
  kind: prompt_completion
  prompt: "{{ text }}"
  completion: " {{ queue }}"
training: {max_length: 64}
output: {dir: runs/job}
"""


@pytest.fixture
def repo(tmp_path) -> Path:
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / "train.jsonl").write_text(ROWS)
    (repo / "spec.yaml").write_text(SPEC)
    return repo


def _one_line(output: str, path) -> str:
    """The single line of output that names ``path``; no traceback anywhere."""
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if str(path) in line]
    assert len(lines) == 1, output
    return lines[0]


def _invoke(args, cwd: Path, monkeypatch=None, timeout: float = 60):
    """CliRunner in a thread of its own: a command that waits on a FIFO fails the test."""
    result = {}

    def target():
        old = os.getcwd()
        os.chdir(cwd)
        try:
            result["r"] = CliRunner().invoke(main, args)
        finally:
            os.chdir(old)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"ftspec {' '.join(args)} did not return: it waits on a FIFO"
    r = result["r"]
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    return r


# --------------------------------------------------------------------------- the run directory


@posix_only
@pytest.mark.parametrize("where", ["store", "run directory"])
def test_status_refuses_a_fifo_for_a_step_marker(repo, where):
    from ftspec.core.layout import MARKER
    from ftspec.plan.compile import compile_spec
    from ftspec.store.rundir import store_of

    plan, _ = compile_spec(repo / "spec.yaml")
    step = store_of(repo / "runs" / "job").path("prepare_data", plan.step("prepare_data").key)
    step.mkdir(parents=True)
    os.mkfifo(step / MARKER)
    if where == "run directory":  # the run directory's link into the store, as a run leaves it
        (repo / "runs" / "job").mkdir()
        os.symlink(os.path.relpath(step, repo / "runs" / "job"), repo / "runs" / "job" / "data")
    done = run_cli(["status", "spec.yaml"], cwd=repo)  # a timeout fails the test
    assert done.returncode == 2, done.stdout + done.stderr
    line = _one_line(done.stderr, MARKER)
    assert line.endswith(f"{MARKER}: cannot be read: is a FIFO (named pipe), not a regular file"), line


@posix_only
def test_runs_lists_a_run_whose_manifest_is_a_fifo_without_waiting(tmp_path):
    """`ftspec runs` lists what it can: the FIFO is one problem line naming it."""
    runs = tmp_path / "runs"
    (runs / "a").mkdir(parents=True)
    os.mkfifo(runs / "a" / "manifest.json")
    done = run_cli(["runs", str(runs)], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    line = _one_line(done.stderr, runs / "a" / "manifest.json")
    assert "is a FIFO (named pipe), not a regular file; listed without it" in line
    assert done.stdout.split()[0] == "a"


@pytest.mark.parametrize("text, line, what", [
    ('{"plan_id": "abc",\n "status": "finished",\n "status": "failed"}', 3, "key 'status' appears twice"),
    ('{"plan_id": "abc",\n "seconds": NaN}', 2, "NaN is not a JSON number"),
    ('{"plan_id":\n' + "[" * 10_000 + "]" * 10_000 + "}", 2, "nests lists and objects more than"),
])
def test_runs_names_the_line_of_a_manifest_it_cannot_take(tmp_path, text, line, what):
    runs = tmp_path / "runs"
    (runs / "a").mkdir(parents=True)
    (runs / "a" / "manifest.json").write_text(text)
    result = _invoke(["runs", str(runs)], tmp_path)
    assert result.exit_code == 0
    problem = _one_line(result.stderr, runs / "a" / "manifest.json")
    assert f"{runs / 'a' / 'manifest.json'}:{line}: {what}" in problem


# --------------------------------------------------------------------------- generate --file


@pytest.fixture
def untrained_ok(monkeypatch):
    """`generate` reads its rows before loading a model: the spec need not be trained."""
    from ftspec.commands import generate as G
    from ftspec.commands.trained import Trained
    from ftspec.core.paths import find_root
    from ftspec.plan.compile import compile_spec

    monkeypatch.setattr(G, "trained_plan", lambda spec, *a: Trained(compile_spec(spec)[0], find_root(spec),
                                                                    lambda issue: issue))
    monkeypatch.setattr(G.G, "generate_rows", lambda *a, **k: pytest.fail("rows were taken"))


@posix_only
def test_generate_refuses_a_fifo_given_as_its_file(repo, untrained_ok):
    os.mkfifo(repo / "rows.jsonl")
    result = _invoke(["generate", "spec.yaml", "--file", "rows.jsonl"], repo)
    assert result.exit_code == 2, result.output
    line = _one_line(result.output, "rows.jsonl")
    assert line.startswith("rows.jsonl: ") and line.endswith("is a FIFO (named pipe), not a regular file"), line


@pytest.mark.parametrize("row, what", [
    ('{"text": NaN}', "NaN is not a JSON number"),
    ('{"text": "a", "text": "b"}', "key 'text' appears twice in one object"),
    ('{"text": ' + "[" * 10_000 + "]" * 10_000 + "}", "nests lists and objects more than 64 levels deep"),
    ('{"text": 1e999}', "number 1e999 is too large"),
])
def test_generate_refuses_rows_ftspec_does_not_take_at_their_line(repo, untrained_ok, row, what):
    (repo / "rows.jsonl").write_text('{"text": "fine"}\n\n' + row + "\n")
    result = _invoke(["generate", "spec.yaml", "--file", "rows.jsonl"], repo)
    assert result.exit_code == 2, result.output
    line = _one_line(result.output, "rows.jsonl")
    assert line.startswith("rows.jsonl:3: ") and what in line, line


# --------------------------------------------------------------------------- ftspec diff of plan files


def _plan(repo: Path) -> dict:
    done = run_cli(["plan", "spec.yaml", "-o", "plan.json"], cwd=repo)
    assert done.returncode == 0, done.stderr
    return json.loads((repo / "plan.json").read_text())


def test_diff_refuses_a_plan_nested_ten_thousand_deep_at_its_line(repo):
    _plan(repo)
    text = (repo / "plan.json").read_text()
    (repo / "deep.json").write_text(text.replace('"name": "job"', '"name": ' + "[" * 10_000 + "]" * 10_000, 1))
    result = _invoke(["diff", "plan.json", "deep.json"], repo)
    assert result.exit_code == 2, result.output
    line = _one_line(result.output, "deep.json")
    assert line.startswith("deep.json:") and "nests lists and objects more than" in line
    assert int(line.split(":")[1]) > 1  # the line of the nesting, not of the file's start


def test_diff_refuses_a_plan_that_names_a_step_ftspec_does_not_have(repo):
    plan = _plan(repo)
    plan["steps"][1]["name"] = "trian"
    (repo / "edited.json").write_text(json.dumps(plan, indent=2))
    result = _invoke(["diff", "plan.json", "edited.json"], repo)
    assert result.exit_code == 2, result.output
    line = _one_line(result.output, "edited.json")
    number = next(i for i, text in enumerate((repo / "edited.json").read_text().splitlines(), 1) if '"trian"' in text)
    assert line.startswith(f"edited.json:{number}: ") and "no step is named 'trian'; did you mean 'train'?" in line


# --------------------------------------------------------------------------- lock files and job records


@pytest.mark.parametrize("change, key", [
    ({"model": ["tiny"]}, "model: Input should be a valid dictionary"),
    ({"model": {"kind": "hub", "commit": 7}}, "model.commit: Input should be a valid string"),
    ({"data": {"train": "x"}}, "data.train: Input should be a valid dictionary"),
    ({"profiles": "smoke"}, "profiles: Input should be a valid list"),
])
def test_run_locked_refuses_a_lock_file_of_the_wrong_shape(repo, change, key):
    lock = {"lock_version": 1, "spec": "spec.yaml", "profiles": [], "model": {"kind": "tiny", "config_sha256": "x"},
            "data": {}, "templates": {}, "versions": {"ftspec": "0"}}
    (repo / "spec.lock.json").write_text(json.dumps({**lock, **change}))
    result = _invoke(["run", "--locked", "spec.yaml"], repo)
    assert result.exit_code == 2, result.output
    line = _one_line(result.output, "spec.lock.json")
    assert line.startswith("spec.lock.json: not a readable lock file: ") and key in line
    assert not (repo / "runs").exists()


def test_stop_refuses_a_job_record_of_the_wrong_shape(tmp_path):
    pytest.importorskip("pydantic")
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / "specs" / "data").mkdir(parents=True)
    shutil.copy(ROOT / "specs" / "bedrock-nova.yaml", repo / "specs")
    shutil.copy(ROOT / "specs" / "data" / "support-tickets.jsonl", repo / "specs" / "data")
    from ftspec.commands.stop import JOB_RECORD
    from ftspec.plan.compile import compile_spec
    from ftspec.store.rundir import store_of

    spec = repo / "specs" / "bedrock-nova.yaml"
    plan, _ = compile_spec(spec)
    record = store_of(repo / plan.output.dir).scratch("train", plan.step("train").key, "checkpoints") / JOB_RECORD
    record.parent.mkdir(parents=True)
    for text, what in [('["arn:aws:bedrock:job"]', "should hold a JSON object, not a JSON array"),
                       ('{"job_arn": {"a": 1}}', "job_arn: Input should be a valid string"),
                       ('{"job_arn": "arn:aws:bedrock:x", "attempt": 1e999}', "1: number 1e999 is too large"),
                       ('{"job_arn": "arn:aws:bedrock:x", "attempt": "2"}',
                        "attempt: Input should be a valid integer")]:
        record.write_text(text)
        result = _invoke(["stop", "specs/bedrock-nova.yaml"], repo)
        assert result.exit_code == 2, result.output
        assert what in _one_line(result.output, record.name), (text, result.output)
