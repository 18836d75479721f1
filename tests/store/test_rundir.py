"""The run directory's bookkeeping without a model (no torch): the run lock (an OS lock,
ftspec.core.locks), and `ftspec runs` over hand-edited, truncated and wrong-typed run files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner
from conftest import ROOT

from ftspec.cli import main
from ftspec.core.errors import SpecError
from ftspec.store import rundir
from ftspec.store.lock import HOLDER, RunLock

HOLD = textwrap.dedent("""
    import sys, time
    from ftspec.store.lock import RunLock
    with RunLock(sys.argv[1]):
        print("held", flush=True)
        time.sleep(120)
""")


def hold_in_another_process(run_dir):
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "held"
    return proc


def refusal(run_dir) -> str:
    with pytest.raises(SpecError) as info:
        with RunLock(run_dir):
            pass
    (issue,) = info.value.issues
    return issue.format()


def test_a_second_lock_in_the_same_process_is_refused_naming_the_holder(tmp_path):
    run_dir = tmp_path / "runs" / "job"
    with RunLock(run_dir):
        holder = json.loads((run_dir / HOLDER).read_text())
        assert holder["pid"] == os.getpid() and holder["started_at"]
        line = refusal(run_dir)
    assert line.startswith(f"{run_dir}: in use by another ftspec run (pid {os.getpid()} on ")
    assert f", since {holder['started_at']}); wait for it to finish or stop it" in line
    assert "\n" not in line
    assert not (run_dir / HOLDER).exists(), "released: the holder file goes"
    with RunLock(run_dir):  # and it can be taken again
        pass


def test_a_run_in_another_process_is_refused_and_its_lock_taken_over_once_it_died(tmp_path):
    run_dir = tmp_path / "job"
    proc = hold_in_another_process(run_dir)
    try:
        assert f"in use by another ftspec run (pid {proc.pid} on " in refusal(run_dir)
        assert RunLock(run_dir).in_use()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    # The holder was killed: its holder file and lock file stay behind, and the OS dropped its lock.
    assert json.loads((run_dir / HOLDER).read_text())["pid"] == proc.pid
    assert not RunLock(run_dir).in_use()
    with RunLock(run_dir):
        assert json.loads((run_dir / HOLDER).read_text())["pid"] == os.getpid()


# --------------------------------------------------------------------------- ftspec runs


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


GOOD_MANIFEST = {"plan_id": "abcdef0123456789", "status": "finished", "started_at": "2024-05-01T10:00:00+00:00",
                 "finished_at": "2024-05-01T10:05:00+00:00"}
GOOD_REPORT = {"headline": "accuracy", "tuned": {"accuracy": 0.9}, "base": {"accuracy": 0.5}, "gates_passed": True}


def test_runs_lists_what_it_can_and_says_one_line_per_broken_file(tmp_path):
    runs = tmp_path / "runs"
    write(runs / "a-good" / "manifest.json", json.dumps(GOOD_MANIFEST))
    write(runs / "a-good" / "metrics.json", json.dumps(GOOD_REPORT))
    write(runs / "b-truncated" / "manifest.json", json.dumps(GOOD_MANIFEST)[:30])
    write(runs / "b-truncated" / "metrics.json", json.dumps(GOOD_REPORT))
    write(runs / "c-list" / "manifest.json", "[1, 2, 3]")
    write(runs / "c-list" / "metrics.json", "")
    write(runs / "d-fields" / "manifest.json", json.dumps({**GOOD_MANIFEST, "status": 3, "plan_id": ["x"]}))
    write(runs / "d-fields" / "metrics.json", json.dumps({**GOOD_REPORT, "tuned": [0.9], "gates_passed": "yes"}))
    write(runs / "e-headline" / "manifest.json", json.dumps(GOOD_MANIFEST))
    write(runs / "e-headline" / "metrics.json",
          json.dumps({**GOOD_REPORT, "headline": 7, "tuned": {"accuracy": "0.9"}}))
    (runs / "f-folder" / "manifest.json").mkdir(parents=True)

    result = CliRunner().invoke(main, ["runs", str(runs)])
    assert result.exit_code == 0, result.output
    assert result.exception is None and "Traceback" not in result.output
    listed = {line.split()[0]: line for line in result.stdout.splitlines()}
    assert set(listed) == {"a-good", "b-truncated", "c-list", "d-fields", "e-headline", "f-folder"}
    assert "abcdef012345" in listed["a-good"] and "accuracy 0.900 (base 0.500)" in listed["a-good"]
    assert listed["a-good"].endswith("gates ok")
    assert "accuracy 0.900" in listed["b-truncated"] and " ? " in listed["b-truncated"]
    assert " ? " in listed["d-fields"] and "2024-05-01T10:05:00" in listed["d-fields"]
    assert "accuracy" not in listed["d-fields"] and "gates" not in listed["d-fields"].lower()
    problems = result.stderr.splitlines()
    assert all(p.startswith("ftspec: ") for p in problems)
    expected = [
        f"{runs / 'b-truncated' / 'manifest.json'}:1: not valid JSON",
        f"{runs / 'c-list' / 'manifest.json'}: should hold a JSON object, not a JSON array; listed without it",
        f"{runs / 'c-list' / 'metrics.json'}: empty, not JSON (cut short?); listed without it",
        f"{runs / 'd-fields' / 'manifest.json'}: plan_id should be a string, not list",
        f"{runs / 'd-fields' / 'manifest.json'}: status should be a string, not int",
        f"{runs / 'd-fields' / 'metrics.json'}: tuned should be an object, not list",
        f"{runs / 'd-fields' / 'metrics.json'}: gates_passed should be true or false, not str",
        f"{runs / 'e-headline' / 'metrics.json'}: headline should be a string, not int",
        f"{runs / 'f-folder' / 'manifest.json'}: cannot be read",
    ]
    for text in expected:
        assert sum(text in p for p in problems) == 1, (text, problems)
    assert len(problems) == len(expected)


def test_runs_of_an_empty_or_missing_folder(tmp_path):
    result = CliRunner().invoke(main, ["runs", str(tmp_path / "nothing")])
    assert result.exit_code == 0 and result.output == f"no runs in {tmp_path / 'nothing'}\n"


def test_status_over_a_broken_manifest_and_markers(tmp_path):
    """step_states reads leniently: a broken marker is a step not done, never a traceback."""

    class Step:
        def __init__(self, name, key):
            self.name, self.key = name, key

    k1, k2, k3 = "1" * 64, "2" * 64, "3" * 64  # step keys, as the store names them

    class Plan:
        steps = [Step("prepare_data", k1), Step("train", k2), Step("report", k3)]

    run_dir = tmp_path / "job"
    write(run_dir / "manifest.json", "{broken")
    write(run_dir / "data" / rundir.MARKER, json.dumps({"key": k1}))
    write(run_dir / "model" / rundir.MARKER, "[]")
    write(run_dir / "report" / rundir.MARKER, "{cut")
    assert rundir.step_states(Plan(), run_dir) == {"prepare_data": "done", "train": "missing", "report": "missing"}
    assert rundir.is_complete(run_dir / "data", k1) and not rundir.is_complete(run_dir / "model", k2)


@pytest.mark.parametrize("content, message", [
    (None, "no lock file; write one with `ftspec lock SPEC`"),
    ("{cut", "1: not a readable lock file: not valid JSON: Expecting property name enclosed in double quotes "
             "(column 2)"),
    ("[]", "not a readable lock file: should hold a JSON object, not a JSON array"),
    ('{"lock_version": 0}', "lock_version 0 is not supported (this ftspec writes 1)"),
])
def test_a_spec_lock_file_that_cannot_be_used_is_one_line(tmp_path, content, message):
    from ftspec.commands import lock as L

    path = tmp_path / "job.lock.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SpecError) as info:
        L.read(path)
    assert str(info.value).startswith((f"{path}: {message}", f"{path}:{message}")) and "\n" not in str(info.value)
