"""What ftspec writes never replaces what it reads or keeps (ftspec.core.paths.target_problem,
ftspec.store.protect): `export -o DIR --force` onto the repository, an input, a run directory
or the store is refused before torch is imported, and nothing moves; `lock` and
`launch-script -o` never write over an input; a store entry marked complete without its
weights is one line in export and generate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT
from helpers import BASE_BODY, write_job

from ftspec.catalog import steps
from ftspec.core.layout import MARKER
from ftspec.plan.compile import compile_spec, find_root
from ftspec.store.rundir import link_step, run_dir_of, store_of

BODY = BASE_BODY + "method: {kind: sft, adapter: full}\n"

# Runs each (cwd, args) in one process, the CLI in-process, and prints a JSON line per case
# (exit status, what it said on stderr), then whether torch was imported at all.
DRIVER = """
import contextlib, io, json, os, sys
from ftspec.cli import main
for cwd, args in json.loads(sys.argv[1]):
    os.chdir(cwd)
    err = io.StringIO()
    code = 0
    with contextlib.redirect_stderr(err):
        try:
            main(args, standalone_mode=False)
        except SystemExit as exc:
            code = exc.code
    print(json.dumps({"code": code, "stderr": err.getvalue()}))
print(json.dumps({"torch": "torch" in sys.modules}))
"""


def _fake_trained(spec: Path) -> Path:
    """The spec's plan marked as run, each step a finished folder in the store linked from the
    run directory (the train step with a weights file): what export's checks look at, without
    training. Returns the run directory."""
    plan, _ = compile_spec(spec)
    run_dir = run_dir_of(plan, find_root(spec))
    store = store_of(run_dir)
    run_dir.mkdir(parents=True)
    for step in plan.steps:
        folder = store.path(step.name, step.key)
        folder.mkdir(parents=True)
        (folder / MARKER).write_text(json.dumps({"step": step.name, "key": step.key}))
        link_step(run_dir, steps.folder(step.name), folder)
    (store.path(steps.TRAIN.name, plan.step(steps.TRAIN.name).key) / "model.safetensors").write_bytes(b"weights")
    (run_dir / "plan.json").write_text(plan.to_json())
    return run_dir


@pytest.fixture
def repo(tmp_path):
    """A repository: the spec and its data in specs/, a run of it in runs/job, and another
    spec's run directory beside it."""
    root = tmp_path / "repo"
    (root / ".git").mkdir(parents=True)
    spec = write_job(root / "specs", BODY)
    _fake_trained(spec)
    other = root / "runs" / "other"
    other.mkdir()
    (other / "manifest.json").write_text("{}")
    (root / "docs").mkdir()
    return root


def _snapshot(folder: Path) -> dict[str, str]:
    """Every path under ``folder`` with what it is: a link's target, a file's bytes."""
    found = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_symlink():
            found[rel] = "-> " + os.readlink(path)
        elif path.is_file():
            found[rel] = path.read_bytes().decode("latin-1")
        else:
            found[rel] = "dir"
    return found


def _drive(cases: list[tuple[Path, list[str]]]) -> tuple[list[dict], bool]:
    proc = subprocess.run([sys.executable, "-c", DRIVER, json.dumps([(str(c), a) for c, a in cases])],
                          capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return lines[:-1], lines[-1]["torch"]


def test_export_force_onto_what_ftspec_reads_or_keeps_is_refused_before_torch_and_moves_nothing(repo):
    spec = repo / "specs" / "job.yaml"
    before = _snapshot(repo.parent)
    targets = [
        (repo, "runs", "holds the run directory 'runs/job'"),
        (repo, "specs", "holds 'specs/"),  # the folder of the training file and of the spec
        (repo / "runs", "../specs", "holds 'specs/"),
        (repo, ".", "is the repository root"),
        (repo / "specs", "..", "is the repository root"),
        (repo / "specs", "../..", "holds the repository root"),
        (repo / "specs", ".", "holds 'specs/"),
        (repo, "runs/.ftspec-store", "is the step store 'runs/.ftspec-store'"),
        (repo, "runs/.ftspec-store/train", "is inside the step store"),
        (repo, "runs/job", "is the run directory 'runs/job'"),
        (repo, "runs/other", "is the run directory 'runs/other'"),
        (repo, "specs/tickets.jsonl", "is 'specs/tickets.jsonl', an input of this spec"),
        (repo, ".git", "is inside .git"),
    ]
    results, torch_imported = _drive([(cwd, ["export", str(spec), "-o", target, "--force"])
                                      for cwd, target, _ in targets])
    for (_, target, said), result in zip(targets, results):
        assert result["code"] == 2, (target, result)
        lines = result["stderr"].strip().splitlines()
        assert "--output" in lines[0] and said in lines[0], (target, lines)
        assert "Traceback" not in result["stderr"], result
    assert not torch_imported, "the target is checked before anything heavy is imported"
    assert _snapshot(repo.parent) == before, "nothing moved, nothing left beside (.partial, .old)"


def test_export_refuses_a_run_directory_of_a_symlink_to_it(repo, tmp_path):
    spec = repo / "specs" / "job.yaml"
    link = tmp_path / "elsewhere"
    link.symlink_to(repo / "runs")
    before = _snapshot(repo)
    results, torch_imported = _drive([(tmp_path, ["export", str(spec), "-o", "elsewhere/job", "--force"])])
    assert results[0]["code"] == 2 and "is the run directory 'runs/job'" in results[0]["stderr"], results
    assert not torch_imported and _snapshot(repo) == before


def test_lock_never_writes_over_a_data_file_named_like_the_lock(tmp_path):
    (tmp_path / ".git").mkdir()
    spec = write_job(tmp_path, BODY.replace("train: tickets.jsonl", "train: job.lock.json"), "job")
    rows = [json.loads(line) for line in (tmp_path / "tickets.jsonl").read_text().splitlines()]
    (tmp_path / "job.lock.json").write_text(json.dumps(rows))  # a JSON array of rows: the training file
    data = (tmp_path / "job.lock.json").read_bytes()
    results, _ = _drive([(tmp_path, ["lock", str(spec)])])
    assert results[0]["code"] == 2, results
    assert "is 'job.lock.json', an input of this spec" in results[0]["stderr"], results
    assert (tmp_path / "job.lock.json").read_bytes() == data


def test_launch_script_never_writes_over_the_spec_or_its_data(tmp_path):
    (tmp_path / ".git").mkdir()
    spec = write_job(tmp_path, BODY)
    before = _snapshot(tmp_path)
    results, _ = _drive([(tmp_path, ["launch-script", "--slurm", str(spec), "-o", name])
                         for name in ("job.yaml", "tickets.jsonl")])
    assert [r["code"] for r in results] == [2, 2], results
    assert "is 'job.yaml', an input of this spec" in results[0]["stderr"]
    assert "is 'tickets.jsonl', an input of this spec" in results[1]["stderr"]
    assert _snapshot(tmp_path) == before
    results, _ = _drive([(tmp_path, ["launch-script", "--slurm", str(spec), "-o", "job.sbatch"])])
    assert results[0]["code"] == 0 and (tmp_path / "job.sbatch").is_file(), results


def test_a_trained_model_marked_complete_without_its_weights_is_one_line(repo):
    spec = repo / "specs" / "job.yaml"
    plan, _ = compile_spec(spec)
    entry = store_of(run_dir_of(plan, repo)).path(steps.TRAIN.name, plan.step(steps.TRAIN.name).key)
    (entry / "model.safetensors").unlink()
    results, torch_imported = _drive([(repo, ["export", str(spec), "-o", str(repo.parent / "out")]),
                                      (repo, ["generate", str(spec), "hello"])])
    for result in results:
        assert result["code"] == 2, result
        lines = result["stderr"].strip().splitlines()
        assert str(entry) in lines[0] and "is marked complete, but it holds no weights" in lines[0], lines
        assert "--force train" in lines[0] and "Traceback" not in result["stderr"]
    assert not torch_imported and not (repo.parent / "out").exists()


def test_export_force_never_wipes_files_git_tracks(tmp_path):
    root = tmp_path / "repo"
    spec = write_job(root / "specs", BODY)
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    (root / "docs").mkdir()
    (root / "docs" / "guide.md").write_text("ours")
    subprocess.run(["git", "-C", str(root), "add", "docs/guide.md"], check=True)
    _fake_trained(spec)
    before = _snapshot(root)
    results, torch_imported = _drive([(root, ["export", str(spec), "-o", "docs", "--force"])])
    assert results[0]["code"] == 2, results
    assert "holds files git tracks in the repository (e.g. 'docs/guide.md')" in results[0]["stderr"], results
    assert not torch_imported and _snapshot(root) == before
