"""Locks opened through what someone planted: a `.lock` that is a link to a file outside
the repository, or a FIFO. The read-only commands (`ftspec runs`, `ftspec status`,
`ftspec gc --dry-run`) leave it alone; taking a lock refuses it in one line; nothing hangs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner
from conftest import ROOT
from helpers import BASE_BODY, write_job

from ftspec.cli import main
from ftspec.core.errors import SpecError
from ftspec.core.layout import MARKER, STORE
from ftspec.plan.compile import compile_spec
from ftspec.store.lock import RunLock

PRECIOUS = b"the only copy of someone's notes\n" * 100
BODY = BASE_BODY + "method: {kind: sft, adapter: full}\n"


def planted(tmp_path, make):
    """A spec in a repository whose run directory and step store hold a lock made by
    ``make(path)`` at every lock's name: the run's `.lock` and each step's `<key>.lock` (with
    its `.partial`, as a step being computed has)."""
    root = tmp_path / "repo"
    (root / ".git").mkdir(parents=True)
    spec = write_job(root, BODY)
    plan, _ = compile_spec(spec)
    run_dir = root / plan.output.dir
    run_dir.mkdir(parents=True)
    (run_dir / "manifest.json").write_text(json.dumps({"status": "failed", "plan_id": plan.id}))
    (run_dir / "plan.json").write_text(json.dumps({"steps": []}))
    store = root / "runs" / STORE
    locks = [run_dir / ".lock"]
    for step in plan.steps:
        key = step.key[:16]
        (store / step.name / (key + ".partial")).mkdir(parents=True)
        locks.append(store / step.name / (key + ".lock"))
    done = store / "prepare_data" / "0123456789abcdef"  # a finished step no run refers to
    done.mkdir(parents=True)
    (done / MARKER).write_text(json.dumps({"key": "0123456789abcdef" + "0" * 48}))
    locks.append(store / "prepare_data" / "0123456789abcdef.lock")
    for lock in locks:
        make(lock)
    return root, spec, run_dir, locks


def outside_file(tmp_path):
    outside = tmp_path / "outside" / "notes.txt"
    outside.parent.mkdir()
    outside.write_bytes(PRECIOUS)
    return outside


def run(root, *args, timeout=60):
    return subprocess.run([sys.executable, "-m", "ftspec", *map(str, args)], cwd=root, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_read_only_commands_leave_a_file_behind_a_planted_lock_link_intact(tmp_path):
    outside = outside_file(tmp_path)
    root, spec, run_dir, locks = planted(tmp_path, lambda lock: lock.symlink_to(outside))
    for args in (["runs", root / "runs"], ["gc", "--dry-run", root / "runs"], ["status", spec]):
        result = CliRunner().invoke(main, [str(a) for a in args])
        assert result.exit_code == 0, (args, result.output)
        assert outside.read_bytes() == PRECIOUS, args
    assert all(lock.is_symlink() for lock in locks)


def test_taking_a_lock_through_a_planted_link_is_refused_in_one_line(tmp_path):
    outside = outside_file(tmp_path)
    root, spec, run_dir, locks = planted(tmp_path, lambda lock: lock.symlink_to(outside))
    with pytest.raises(SpecError) as info:
        with RunLock(run_dir):
            pass
    (issue,) = info.value.issues
    assert issue.format().startswith(f"{run_dir / '.lock'}: is a symbolic link, not a lock file ftspec made")
    result = run(root, "gc", "runs")  # gc takes every run directory's lock: refused the same way
    assert result.returncode == 2, result.stderr
    assert "runs/job/.lock: is a symbolic link" in result.stderr and "Traceback" not in result.stderr
    assert outside.read_bytes() == PRECIOUS


def test_a_lock_that_is_a_fifo_hangs_nothing_and_is_refused_when_taken(tmp_path):
    root, spec, run_dir, locks = planted(tmp_path, os.mkfifo)
    for args in (["runs", "runs"], ["gc", "--dry-run", "runs"], ["status", spec]):
        result = run(root, *args)  # a hang is a TimeoutExpired
        assert result.returncode == 0, (args, result.stderr)
    result = run(root, "gc", "runs")
    assert result.returncode == 2, result.stderr
    issues = [line for line in result.stderr.splitlines() if not line.startswith("ftspec: ")]
    assert issues == ["runs/job/.lock: is a FIFO, not a lock file ftspec made; it was not opened; remove it "
                      "if no ftspec run is using this folder"], result.stderr
