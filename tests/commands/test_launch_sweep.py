"""`ftspec launch-script SPEC --sweep --slurm`: a SLURM job array that runs a sweep's trials, one
per array task, `sweep.workers` at a time (ftspec.commands.launch_scripts.slurm_sweep_script)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import BASE_BODY, write_job

from ftspec.cli import main

BODY = BASE_BODY.replace("max_steps: 4", "max_steps: 2") + "method: {kind: sft, adapter: full}\n"
GRID = """sweep:
  fields:
    training.learning_rate: [1.0e-3, 1.0e-2, 3.0e-2]
    training.seed: [1, 2]
  workers: 2
"""


def invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture
def in_job(tmp_path, monkeypatch):
    (tmp_path / ".git").mkdir()  # the repository root: run directories and the sweep folder go under it
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_script_parses_and_runs_one_trial_per_array_task_workers_at_a_time(in_job):
    write_job(in_job, BODY + GRID)
    result = invoke("launch-script", "job.yaml", "--sweep", "--slurm")
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "#SBATCH --array=0-5%2\n" in text  # 3 x 2 trials, 2 at a time
    assert "#SBATCH --job-name=job-sweep\n" in text and "--gpus" not in text  # compute.device: cpu
    assert "\nftspec sweep job.yaml --worker --max-trials 1\n" in text
    assert "must\n# be on a filesystem every node" in text.replace("MUST", "must")  # the shared store, said
    assert "#   ftspec sweep job.yaml\n" in text  # how the winner is chosen afterwards
    assert "--dependency=afterany:$array" in text
    (in_job / "job.sh").write_text(text, encoding="utf-8")
    assert subprocess.run(["bash", "-n", str(in_job / "job.sh")]).returncode == 0
    # Every directive before the first command, where sbatch reads them.
    lines = text.splitlines()
    first_command = next(i for i, line in enumerate(lines) if line and not line.startswith("#"))
    assert all(i < first_command for i, line in enumerate(lines) if line.startswith("#SBATCH"))


def test_all_at_once_and_gpus(in_job):
    write_job(in_job, BODY + GRID.replace("workers: 2", "workers: 8"))
    text = invoke("launch-script", "job.yaml", "--sweep", "--slurm", "--set", "compute.device=cuda").stdout
    assert "#SBATCH --array=0-5\n" in text and "#SBATCH --gpus-per-node=1\n" in text
    assert "\nftspec sweep job.yaml --set compute.device=cuda --worker --max-trials 1\n" in text


@pytest.mark.parametrize("extra, args, says", [
    ("", [], "sweep: nothing to sweep"),
    (GRID + "  prune: median\n", ["--set", "training.eval_every=null"],
     "job.yaml:{prune}:10: sweep.prune: pruning (median) judges each trial on its validation loss"),
    (GRID, ["--set", "compute.num_nodes=2", "--set", "compute.strategy=ddp"],
     "--set compute.num_nodes=2: compute.num_nodes: a sweep's array task runs one trial on one node"),
])
def test_refusals_are_one_line_exit_2_and_write_nothing(in_job, extra, args, says):
    lines = write_job(in_job, BODY + extra).read_text(encoding="utf-8").splitlines()
    says = says.format(prune=next((i + 1 for i, line in enumerate(lines) if "prune:" in line), 0))
    result = invoke("launch-script", "job.yaml", "--sweep", "--slurm", *args, "-o", "job.sh")
    assert result.exit_code == 2, result.output
    assert says in result.stderr, result.stderr
    assert "Traceback" not in result.output and not (in_job / "job.sh").exists()


def test_sweep_without_slurm_says_what_to_do(in_job):
    write_job(in_job, BODY + GRID)
    result = invoke("launch-script", "job.yaml", "--sweep")
    assert result.exit_code == 2
    assert "run `ftspec sweep job.yaml --workers N`" in result.stderr


def test_hostile_values_reach_the_array_command_as_words_only(in_job, tmp_path):
    write_job(in_job, BODY + GRID)
    hostile = "description=$(touch pwned) `touch pwned2` \"; touch pwned3; \n touch pwned4"
    made = invoke("launch-script", "job.yaml", "--sweep", "--slurm", "--set", hostile, "-o", "job.sh")
    assert made.exit_code == 0, made.output
    script = (in_job / "job.sh").read_text(encoding="utf-8")
    header = script.split("set -euo pipefail")[0]
    assert all(line.startswith("#") or not line for line in header.splitlines())  # comments stay comments
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ftspec").write_text("#!/usr/bin/env python3\nimport json, sys\nprint(json.dumps(sys.argv[1:]))\n")
    (bin_dir / "ftspec").chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    out = subprocess.run(["bash", str(in_job / "job.sh")], cwd=work, capture_output=True, text=True, timeout=30,
                         env={"PATH": f"{bin_dir}:/usr/bin:/bin", "SLURM_ARRAY_TASK_ID": "0",
                              "SLURM_ARRAY_JOB_ID": "77"})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == ["sweep", "job.yaml", "--set", hostile, "--worker", "--max-trials", "1"]
    assert list(work.iterdir()) == [] and not list(in_job.glob("pwned*"))
    assert "array task 0 of job 77" in out.stderr


@pytest.mark.skipif(shutil.which("ftspec", path=str(Path(sys.executable).parent)) is None,
                    reason="the ftspec command is not installed beside this Python")
def test_a_fake_slurm_array_runs_each_trial_once_then_ftspec_sweep_selects_the_winner(in_job):
    """Both array tasks at once, as SLURM starts them; each takes a different trial; then a plain
    `ftspec sweep` finds every trial done and only chooses and scores the winner."""
    pytest.importorskip("optuna")
    pytest.importorskip("trl")
    write_job(in_job, BODY + """sweep:
  fields:
    training.learning_rate: [1.0e-3, 3.0e-2]
  workers: 2
""")
    made = invoke("launch-script", "job.yaml", "--sweep", "--slurm", "-o", "job.sh")
    assert made.exit_code == 0, made.output
    assert "#SBATCH --array=0-1\n" in (in_job / "job.sh").read_text(encoding="utf-8")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}", SLURM_ARRAY_JOB_ID="501")
    tasks = [subprocess.Popen(["bash", "job.sh"], cwd=in_job, env=dict(env, SLURM_ARRAY_TASK_ID=str(k)),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for k in (0, 1)]
    outs = [t.communicate(timeout=300)[0] for t in tasks]
    assert [t.returncode for t in tasks] == [0, 0], outs
    # Each task ran one trial, a different one, and trained it; neither chose a winner.
    taken = [re.findall(r"^sweep: trial (\d+) \(", o, re.M) for o in outs]
    assert sorted(taken) == [["0"], ["1"]], outs
    assert [o.count("train: running") for o in outs] == [1, 1], outs
    assert not any("scoring the winner" in o for o in outs)
    final = subprocess.run([str(Path(sys.executable).parent / "ftspec"), "sweep", "job.yaml"], cwd=in_job,
                           env=env, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stdout + final.stderr
    assert not re.search(r"^sweep: trial \d+ \(", final.stdout, re.M)  # no trial ran again
    assert "scoring the winner" in final.stdout and "train: running" not in final.stdout
    assert "worker process" not in final.stdout  # sweep.workers: 2, and nothing left for a worker to do
    winner = json.loads((in_job / "runs" / "job.sweep" / "winner.json").read_text(encoding="utf-8"))
    assert winner["trial"] in (0, 1) and winner["how"] == "chosen on validation; test scored once, for the winner"
    assert isinstance(winner["test"]["value"], float)
