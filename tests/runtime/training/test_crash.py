"""Crashes lose at most the work since the last checkpoint.

A run is killed with SIGKILL at three points — while preparing data, between two
checkpoints, and while a checkpoint is being written — and run again: it resumes
and ends with the same final weights as an uninterrupted run. Ctrl-C saves a
checkpoint and exits 130; a second run of the same spec at once is refused; a
full disk is a clear error."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from click.testing import CliRunner  # noqa: E402
from conftest import ROOT  # noqa: E402
from helpers import BASE_BODY, run_job, write_job  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from ftspec.cli import main  # noqa: E402
from ftspec.store.lock import RunLock  # noqa: E402

BODY = BASE_BODY.replace("max_steps: 4", "max_steps: 6") + "method: {kind: sft, adapter: full}\n"

DRIVER = textwrap.dedent('''
    import sys, time
    point, marker, spec = sys.argv[1], sys.argv[2], sys.argv[3]

    def pause():
        open(marker, "w").close()
        time.sleep(600)  # the test kills us here

    callbacks = []
    if point == "prepare_data":
        import ftspec.runtime.training.data as D
        real_tokenize = D.tokenize_split
        def tokenize_then_pause(*args, **kwargs):
            stats = real_tokenize(*args, **kwargs)
            pause()  # the splits written and one of them tokenized, the others not
            return stats
        D.tokenize_split = tokenize_then_pause
    elif point == "between_checkpoints":
        from transformers import TrainerCallback
        class PauseAt(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step == 3:
                    pause()
        callbacks.append(PauseAt())
    elif point == "writing_checkpoint":
        from transformers import Trainer
        real_save = Trainer._save_optimizer_and_scheduler
        def torn(self, output_dir):
            if self.state.global_step == 4:
                pause()  # the weights of checkpoint-4 are written, its optimizer state is not
            return real_save(self, output_dir)
        Trainer._save_optimizer_and_scheduler = torn

    from ftspec.plan.compile import compile_spec, find_root
    from ftspec.backends.executor import execute
    plan, _ = compile_spec(spec)
    execute(plan, find_root(spec), callbacks=callbacks)
''')


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests"), env.get("PYTHONPATH", "")])
    return env


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Final weights of an uninterrupted run."""
    folder = tmp_path_factory.mktemp("reference")
    ctx, _ = run_job(write_job(folder, BODY))
    return load_file(ctx.run_dir / "model/model.safetensors")


@pytest.mark.parametrize("point", ["prepare_data", "between_checkpoints", "writing_checkpoint"])
def test_sigkill_then_run_again_gives_the_same_final_weights(tmp_path, reference, point):
    spec = write_job(tmp_path, BODY)
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    marker = tmp_path / "paused"
    proc = subprocess.Popen([sys.executable, str(driver), point, str(marker), str(spec)], cwd=tmp_path, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 180
    while not marker.exists():
        if proc.poll() is not None:
            pytest.fail(f"the run ended before the kill point: {proc.stderr.read().decode()[-2000:]}")
        if time.time() > deadline:
            proc.kill()
            pytest.fail("the run never reached the kill point")
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stderr.close()

    run_dir = tmp_path / "runs/job"
    assert not (run_dir / "model").exists(), "no finished model after a crash"
    ctx, lines = run_job(spec)
    text = "\n".join(lines)
    if point == "prepare_data":
        assert "prepare_data: running" in text
    else:
        assert "prepare_data: up to date" in text
        # checkpoint-2 is the last complete one; a torn checkpoint-4 is not trusted.
        assert "resumed from checkpoint-2" in text
    tuned = load_file(ctx.run_dir / "model/model.safetensors")
    assert all(torch.equal(reference[k], tuned[k]) for k in reference), "weights differ from an uninterrupted run"
    metrics = [json.loads(l) for l in (ctx.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "loss" in m] == [1, 2, 3, 4, 5, 6]


def test_ctrl_c_saves_a_checkpoint_and_exits_130(tmp_path):
    # Long enough that Ctrl-C at step 5 comes well before the end (a step takes milliseconds
    # here), short enough that the resumed run is quick.
    steps = 100
    body = BODY.replace("max_steps: 6", f"max_steps: {steps}").replace("save_every: 2, eval_every: 2",
                                                                  "save_every: 1000, eval_every: 1000")
    spec = write_job(tmp_path, body)
    proc = subprocess.Popen([sys.executable, "-m", "ftspec", "run", str(spec)], cwd=tmp_path, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stderr:  # one line per logged step when the output is not a terminal
        seen.append(line)
        if line.strip().startswith("step 5/"):
            proc.send_signal(signal.SIGINT)
            break
    rest_out, rest_err = proc.communicate(timeout=180)
    err = "".join(seen) + rest_err
    assert proc.returncode == 130, err[-3000:]
    assert "stopping after this step and saving a checkpoint" in err
    assert "interrupted; run the same command again to resume from the last checkpoint" in err
    assert "Traceback" not in err
    checkpoints = list((tmp_path / "runs/.ftspec-store/train").glob("*.checkpoints/checkpoint-*"))
    assert len(checkpoints) == 1, "Ctrl-C saved a checkpoint"
    step = int(checkpoints[0].name.split("-")[1])
    assert 5 <= step < steps
    assert not (tmp_path / "runs/job/model").exists()
    manifest = json.loads((tmp_path / "runs/job/manifest.json").read_text())
    assert manifest["status"] == "failed"
    ctx, lines = run_job(spec)
    assert f"resumed from checkpoint-{step}" in "\n".join(lines)
    assert json.loads((ctx.run_dir / "model/train.json").read_text())["steps"] == steps


def test_a_second_run_of_the_same_spec_is_refused_naming_the_first(tmp_path, monkeypatch):
    spec = write_job(tmp_path, BODY)
    monkeypatch.chdir(tmp_path)
    with RunLock((tmp_path / "runs/job").resolve()):
        result = CliRunner().invoke(main, ["run", str(spec)])
    assert result.exit_code == 2, result.output
    assert "in use by another ftspec run (pid " in result.output
    assert f"pid {os.getpid()} on " in result.output
    assert not (tmp_path / "runs/job/data").exists()


def test_a_full_disk_is_a_clear_error_and_nothing_half_written_counts(tmp_path, monkeypatch):
    spec = write_job(tmp_path, BODY)
    import ftspec.runtime.training.splits as S

    def full(self, line, where):
        raise OSError(errno.ENOSPC, "No space left on device", str(self.final[0]))

    monkeypatch.setattr(S._SplitWriter, "write", full)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["run", str(spec)])
    assert result.exit_code == 1, result.output
    assert "No space left on device" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "runs/job/data").exists()
    assert json.loads((tmp_path / "runs/job/manifest.json").read_text())["status"] == "failed"
