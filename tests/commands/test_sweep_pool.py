"""`ftspec sweep --workers N`: N worker processes at once (ftspec.commands.sweep_pool), each with
its share of --gpus, their output prefixed, a failed one reported while the others go on, Ctrl-C
passed on to all of them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from ftspec.commands.sweep_pool import gpu_shares, parse_gpus, run_workers, worker_command
from ftspec.core.errors import SpecError

# A stand-in worker: says who it is and which GPUs it sees; worker 2 fails at once (status 3)
# after leaving a mark, worker 1 goes on until it has seen that mark.
FAKE = textwrap.dedent("""
    import os, sys, time
    k = os.environ["FTSPEC_SWEEP_WORKER"]
    mark = sys.argv[1]
    print(f"worker {k} sees GPUs {os.environ.get('CUDA_VISIBLE_DEVICES', '-')}", flush=True)
    if k == "2":
        open(mark, "w").close()
        print("failing\\r", file=sys.stderr, flush=True)
        sys.exit(3)
    deadline = time.time() + 60
    while not os.path.exists(mark) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # the parent has seen worker 2 end by now
    print("still going", flush=True)
""")


def test_workers_output_prefixed_gpu_shares_and_a_failed_worker_reported_while_the_other_goes_on(tmp_path):
    lines: list[str] = []
    command = [sys.executable, "-c", FAKE, str(tmp_path / "mark")]
    exits = run_workers(command, 2, gpus=("0", "1", "2", "3"), echo=lines.append)
    assert [(e.index, e.status, e.gpus) for e in exits] == [(1, 0, "0,1"), (2, 3, "2,3")]
    assert "[worker 1] worker 1 sees GPUs 0,1" in lines and "[worker 2] worker 2 sees GPUs 2,3" in lines
    assert "[worker 2] failing" in lines  # its standard error too, the carriage return gone
    failed = lines.index("ftspec sweep: worker 2 (GPUs 2,3) exited with status 3; the other workers go on")
    assert failed < lines.index("[worker 1] still going")


def test_gpu_shares_and_parsing():
    assert gpu_shares((), 3) == [None, None, None]
    assert gpu_shares(("0", "1", "2", "3"), 2) == ["0,1", "2,3"]
    assert gpu_shares(("0", "1", "2"), 2) == ["0", "1,2"]
    assert gpu_shares(("0", "1"), 3) == ["0", "1", "0"]  # more workers than GPUs: in turn
    assert parse_gpus("0, 1,GPU-5f2a-77") == ("0", "1", "GPU-5f2a-77")
    assert parse_gpus(None) == () and parse_gpus("") == ()


@pytest.mark.parametrize("text, says", [("0,,1", "'' is not a GPU"), ("0;rm -rf", "is not a GPU"),
                                        ("1,1", "GPU 1 is named twice")])
def test_bad_gpus_are_one_line_at_the_option(text, says):
    with pytest.raises(SpecError) as caught:
        parse_gpus(text)
    assert str(caught.value).startswith("<--gpus>: --gpus: ") and says in str(caught.value)
    assert "\n" not in str(caught.value)


def test_worker_command_repeats_the_parents_options():
    words = worker_command("s.yaml", ["smoke"], ["a=1"], [], {"over": ["x=1,2", "y=3"], "method": "grid",
                                                              "trials": None, "dry_run": False, "max_trials": 2},
                           python="py")
    assert words == ["py", "-m", "ftspec", "sweep", "s.yaml", "--profile", "smoke", "--set", "a=1", "--over",
                     "x=1,2", "--over", "y=3", "--method", "grid", "--max-trials", "2", "--worker"]


# The parent, in a process of its own so that the test can press Ctrl-C (SIGINT) on it.
PARENT = textwrap.dedent("""
    import sys
    from ftspec.commands.sweep_pool import run_workers
    child = sys.argv[1]
    try:
        run_workers([sys.executable, "-c", child, sys.argv[2]], 2, echo=lambda s: print(s, flush=True))
    except KeyboardInterrupt:
        sys.exit(130)
""")
CHILD = textwrap.dedent("""
    import os, signal, sys, time
    folder, k = sys.argv[1], os.environ["FTSPEC_SWEEP_WORKER"]
    def stop(signum, frame):
        open(os.path.join(folder, f"stopped-{k}"), "a").write("x")  # appended: twice would show
        sys.exit(130)
    signal.signal(signal.SIGINT, stop)
    open(os.path.join(folder, f"pid-{k}"), "w").write(str(os.getpid()))
    time.sleep(60)
""")


@pytest.mark.parametrize("inherited", ["default", "ignored"])
def test_ctrl_c_reaches_every_worker_once_and_the_parent_waits_for_them(tmp_path, inherited):
    # "ignored": as a shell without job control starts a background command (CI, nohup … &).
    ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if inherited == "ignored" else None
    parent = subprocess.Popen([sys.executable, "-c", PARENT, CHILD, str(tmp_path)], stdout=subprocess.PIPE,
                              text=True, start_new_session=True, preexec_fn=ignore)
    try:
        deadline = time.time() + 30
        while not all((tmp_path / f"pid-{k}").exists() for k in (1, 2)) and time.time() < deadline:
            time.sleep(0.05)
        pids = [int((tmp_path / f"pid-{k}").read_text()) for k in (1, 2)]
        parent.send_signal(signal.SIGINT)
        out, _ = parent.communicate(timeout=120)  # a hang guard: a busy machine is slow, not wrong
    finally:
        if parent.poll() is None:
            os.killpg(parent.pid, signal.SIGKILL)
    assert parent.returncode == 130
    assert [(tmp_path / f"stopped-{k}").read_text() for k in (1, 2)] == ["x", "x"]
    assert "Ctrl-C: each worker stops after its current step" in out
    for pid in pids:  # none left running
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


# --------------------------------------------------------------------------- a real sweep in two workers

GRID = """sweep:
  fields:
    training.learning_rate: [1.0e-3, 3.0e-1]
    training.seed: [1, 2]
"""


def _job(folder):
    from helpers import BASE_BODY, write_job

    (folder / ".git").mkdir(parents=True)  # the repository root: runs/ goes beside the spec
    body = BASE_BODY.replace("max_steps: 4", "max_steps: 2") + "method: {kind: sft, adapter: full}\n" + GRID
    return write_job(folder, body)


def test_two_workers_train_each_trial_of_a_2x2_grid_once_and_pick_the_winner_one_process_picks(tmp_path):
    pytest.importorskip("optuna")
    pytest.importorskip("trl")
    import json
    import re

    from conftest import ROOT

    from ftspec.commands.sweep import sweep

    pooled = tmp_path / "pooled"
    _job(pooled)
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    done = subprocess.run([sys.executable, "-m", "ftspec", "sweep", "job.yaml", "--workers", "2"], cwd=pooled,
                          env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout.splitlines()
    assert "sweep: starting 2 worker processes" in out
    # Every step once, in one worker or the other: the shared ones too.
    ran = [re.match(r"\[worker [12]\] (\w+): running \(key (\w+)\)", line) for line in out]
    ran = [(m.group(1), m.group(2)) for m in ran if m]
    trains = [key for step, key in ran if step == "train"]
    assert len(trains) == 4 and len(set(trains)) == 4, out
    assert [step for step, _ in ran].count("prepare_data") == 1
    assert len(ran) == len(set(ran))  # no step computed twice
    assert {line[:10] for line in out if line.startswith("[worker")} == {"[worker 1]", "[worker 2]"}
    # The parent trained nothing: it chose the winner and scored it on test (training reused).
    parent = [line for line in out if not line.startswith("[worker")]
    assert "train: up to date" in "\n".join(parent) and "train: running" not in "\n".join(parent)

    alone = tmp_path / "alone"
    spec = _job(alone)
    result = sweep(spec, echo=lambda line: None)
    assert result.scored

    def outcome(folder):
        sweep_dir = folder / "runs" / "job.sweep"
        winner = json.loads((sweep_dir / "winner.json").read_text(encoding="utf-8"))
        return (sweep_dir / "results.csv").read_text(encoding="utf-8"), winner["trial"], winner["test"]["value"]

    assert outcome(pooled) == outcome(alone)
