"""The step store: a run directory is a view of one plan's steps, each computed once
per key into ``runs/.ftspec-store`` and linked from every run directory that needs
it. Profiles and ``--set`` experiments get run directories of their own; switching
between them reuses what was computed; ``ftspec gc`` removes what no run refers to."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("trl")

from click.testing import CliRunner  # noqa: E402
from helpers import BASE_BODY, write_job  # noqa: E402

from ftspec.backends.executor import execute  # noqa: E402
from ftspec.catalog import steps  # noqa: E402
from ftspec.cli import main  # noqa: E402
from ftspec.plan.build import variant_name  # noqa: E402
from ftspec.plan.compile import compile_spec, find_root  # noqa: E402
from ftspec.store import rundir
from ftspec.store.lock import RunLock  # noqa: E402

BODY = (BASE_BODY.replace("max_steps: 4", "max_steps: 2") + "method: {kind: sft, adapter: full}\n"
        + "profiles:\n  smoke: {training: {max_steps: 1}}\n")


def _run(spec: Path, *sets: str, profiles=(), force=frozenset()):
    plan, _ = compile_spec(spec, profiles, sets)
    lines: list[str] = []
    result = execute(plan, find_root(spec), echo=lines.append, force=set(force))
    return result, "\n".join(lines)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_profiles_and_experiments_get_run_directories_of_their_own(tmp_path):
    spec = write_job(tmp_path, BODY)
    assert compile_spec(spec)[0].output.dir == "runs/job"
    assert compile_spec(spec, ["smoke"])[0].output.dir == "runs/job@smoke"
    assert compile_spec(spec, ["smoke"], ["training.seed=7"])[0].output.dir == "runs/job@smoke+training.seed=7"
    hashed = compile_spec(spec, (), ["eval.metrics=[accuracy, exact_match]"])[0].output.dir
    assert hashed.startswith("runs/job@set-") and "[" not in hashed and " " not in hashed
    # A profile or --set that names the folder gets exactly that folder.
    assert compile_spec(spec, (), ["output.dir=runs/mine"])[0].output.dir == "runs/mine"
    named = write_job(tmp_path / "named", BODY.replace("smoke: {", "smoke: {output: {dir: out/smoke}, "))
    assert compile_spec(named, ["smoke"])[0].output.dir == "out/smoke"
    # A variant's name cannot leave the runs folder, whatever a profile is called.
    assert "/" not in variant_name(["../../etc"], []) and variant_name(["../../etc"], []).startswith("profile-")


def test_the_first_hour_computes_every_step_once_and_overwrites_no_run(tmp_path):
    """Clone, the plain run, a smoke run, an experiment, then back: every step key is
    computed once, no run directory's outputs are replaced, going back runs nothing."""
    spec = write_job(tmp_path, BODY)
    plain, text = _run(spec)
    assert plain.ran == [s.name for s in plain.plan.steps]
    model = plain.run_dir / "model/model.safetensors"
    weights, report = _sha(model), (plain.run_dir / "report.html").read_bytes()

    smoke, text = _run(spec, profiles=["smoke"])
    assert smoke.run_dir.name == "job@smoke"
    assert "prepare_data: up to date" in text and "eval_base: up to date" in text, "what smoke shares is reused"
    assert "train: running" in text

    experiment, text = _run(spec, "training.learning_rate=0.002")
    assert experiment.run_dir.name == "job@training.learning_rate=0.002"
    changed = {o.name for o in experiment.steps if o.key != plain.outcome(o.name).key}
    assert set(experiment.ran) == changed and "train" in changed and "prepare_data" not in changed

    back, text = _run(spec)
    assert back.ran == [], text
    assert back.run_dir == plain.run_dir
    assert _sha(model) == weights and (plain.run_dir / "report.html").read_bytes() == report
    # Each run directory still shows its own model.
    assert _sha(smoke.run_dir / "model/model.safetensors") != weights
    assert _sha(experiment.run_dir / "model/model.safetensors") != weights

    # Every key was computed exactly once, across all four runs.
    computed = [(o.name, o.key) for r in (plain, smoke, experiment, back) for o in r.steps if o.state == "ran"]
    assert len(computed) == len(set(computed))
    every_key = {(o.name, o.key) for r in (plain, smoke, experiment) for o in r.steps}
    assert set(computed) == every_key
    # `status` of the plain spec after the others: every step done, none stale.
    plan, _ = compile_spec(spec)
    assert rundir.step_states(plan, plain.run_dir) == {s.name: "done" for s in plan.steps}
    # Step folders in a run directory are links into the store; the trainer's checkpoints left nothing behind.
    assert os.readlink(plain.run_dir / "model").startswith(os.path.join("..", rundir.STORE))
    assert not (plain.run_dir / "checkpoints").exists()
    manifest = json.loads((plain.run_dir / "manifest.json").read_text())
    train = next(e for e in manifest["steps"] if e["name"] == "train")
    assert (plain.run_dir / train["stored"]).resolve() == (plain.run_dir / "model").resolve()


def test_a_variant_computed_first_is_reused_by_the_plain_spec(tmp_path):
    """Steps are found by key, whichever run directory asked for them first."""
    spec = write_job(tmp_path, BODY)
    _run(spec, "eval.limit=8")  # the same plan as the plain spec, but its own run directory
    plain, text = _run(spec)
    assert plain.ran == [], text


def test_gc_removes_what_no_run_refers_to(tmp_path, monkeypatch):
    spec = write_job(tmp_path, BODY)
    first, _ = _run(spec)
    old_train = first.outcome("train").key
    store = rundir.store_of(first.run_dir)
    spec.write_text(spec.read_text().replace("learning_rate: 1.0e-3", "learning_rate: 2.0e-3"))
    second, _ = _run(spec)
    assert second.outcome("train").key != old_train
    assert store.complete("train", old_train), "the earlier model is kept until gc"

    monkeypatch.chdir(tmp_path)
    cli = CliRunner()
    dry = cli.invoke(main, ["gc", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert f"would remove  train/{old_train[:16]}" in dry.output
    assert "would free" in dry.output
    assert store.complete("train", old_train), "a dry run removes nothing"

    kept = cli.invoke(main, ["gc", "--keep", "1"])
    assert kept.exit_code == 0 and store.complete("train", old_train), kept.output

    done = cli.invoke(main, ["gc"])
    assert done.exit_code == 0, done.output
    assert f"removed  train/{old_train[:16]}" in done.output
    assert not store.path("train", old_train).exists()
    assert "freed" in done.output
    # What the run directory refers to is all there: the run reuses every step.
    again, text = _run(spec)
    assert again.ran == [], text
    assert cli.invoke(main, ["gc"]).output.startswith("freed 0 B (0 steps)")


def test_gc_keeps_the_work_of_a_run_that_was_cut_off(tmp_path, monkeypatch):
    """A run that stopped before a step finished refers to that step's key in its
    plan.json: gc keeps its partial work and checkpoints, so the run still resumes."""
    spec = write_job(tmp_path, BODY)
    first, _ = _run(spec)
    store = rundir.store_of(first.run_dir)
    spec.write_text(spec.read_text().replace("learning_rate: 1.0e-3", "learning_rate: 3.0e-3"))
    plan, _ = compile_spec(spec)
    key = plan.step("train").key
    (first.run_dir / "plan.json").write_text(json.dumps(plan.to_dict()))  # as a run of it leaves it
    store.partial("train", key).mkdir(parents=True)
    store.scratch("train", key, "checkpoints").mkdir(parents=True)
    stray = store.partial("train", "f" * 64)
    stray.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    out = CliRunner().invoke(main, ["gc"]).output
    assert store.partial("train", key).exists() and store.scratch("train", key, "checkpoints").exists(), out
    assert not stray.exists(), out


def test_gc_refuses_while_a_run_is_in_progress(tmp_path, monkeypatch):
    spec = write_job(tmp_path, BODY)
    first, _ = _run(spec)
    monkeypatch.chdir(tmp_path)
    with RunLock(first.run_dir):
        result = subprocess.run([os.sys.executable, "-m", "ftspec", "gc"], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 2, result.stderr
    assert "in use by another ftspec run" in result.stderr and "Traceback" not in result.stderr


def test_runs_lists_every_variant_and_the_store(tmp_path, monkeypatch):
    spec = write_job(tmp_path, BODY)
    _run(spec)
    _run(spec, profiles=["smoke"])
    monkeypatch.chdir(tmp_path)
    out = CliRunner().invoke(main, ["runs"]).output
    names = [line.split()[0] for line in out.splitlines() if line.startswith("job")]
    assert names == ["job", "job@smoke"], out
    assert "step store runs/.ftspec-store:" in out


def test_a_run_directory_written_by_an_older_ftspec_is_adopted(tmp_path):
    """Step folders written in place (before the store) move into the store under the
    key their marker names; nothing they hold is computed again."""
    spec = write_job(tmp_path, BODY)
    first, _ = _run(spec)
    run_dir, store = first.run_dir, rundir.store_of(first.run_dir)
    for step in first.plan.steps:  # turn the run directory back into the old layout
        folder = run_dir / steps.folder(step.name)
        target = folder.resolve()
        folder.unlink()
        os.replace(target, folder)
    (run_dir / "checkpoints" / ("c" * 16)).mkdir(parents=True)
    assert not any(store.complete(s.name, s.key) for s in first.plan.steps)
    again, text = _run(spec)
    assert again.ran == [], text
    assert all((run_dir / steps.folder(s.name)).is_symlink() for s in first.plan.steps)
    assert store.scratch("train", "c" * 16, "checkpoints").is_dir() and not (run_dir / "checkpoints").exists()


def test_two_runs_sharing_a_step_compute_it_once(tmp_path):
    """A second run that needs a step another run is computing waits for it, then reuses it."""
    spec = write_job(tmp_path, BODY)
    plan, _ = compile_spec(spec)
    store = rundir.store_of(find_root(spec) / plan.output.dir)
    key = plan.step("prepare_data").key
    held = store.step_lock("prepare_data", key)
    held.acquire()
    lines: list[str] = []
    worker = threading.Thread(target=lambda: execute(plan, find_root(spec), echo=lines.append))
    worker.start()
    deadline = time.time() + 60
    while not any("waiting for another run" in line for line in lines) and time.time() < deadline:
        time.sleep(0.05)
    assert any(line.startswith("prepare_data: waiting for another run computing it") for line in lines), lines
    assert store.busy("prepare_data", key)
    held.release()
    worker.join(timeout=600)
    assert "prepare_data: running" in "\n".join(lines)
    assert store.complete("prepare_data", key)


def test_the_manifest_is_dirty_when_an_input_is_untracked_or_modified(tmp_path):
    spec = write_job(tmp_path, BODY)

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True,
                       env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                            "GIT_COMMITTER_EMAIL": "t@t"})

    git("init", "-q")
    (tmp_path / ".gitignore").write_text("runs/\n")
    git("add", ".gitignore", spec.name)
    git("commit", "-qm", "spec only")
    first, _ = _run(spec)
    manifest = json.loads((first.run_dir / "manifest.json").read_text())
    assert manifest["git"]["dirty"] is True
    assert manifest["git"]["untracked_inputs"] == ["tickets.jsonl"]

    git("add", "tickets.jsonl")
    git("commit", "-qm", "data")
    second, _ = _run(spec)
    manifest = json.loads((second.run_dir / "manifest.json").read_text())
    assert manifest["git"]["dirty"] is False, manifest["git"]

    with open(tmp_path / "tickets.jsonl", "a") as fh:
        fh.write('{"id": "x", "text": "where is my parcel", "queue": "shipping"}\n')
    third, _ = _run(spec)
    manifest = json.loads((third.run_dir / "manifest.json").read_text())
    assert manifest["git"]["dirty"] is True and manifest["git"]["modified_inputs"] == ["tickets.jsonl"]


def test_a_smoke_profile_switches_the_gates_off_and_says_so(tmp_path, monkeypatch):
    """`eval.gates: {}` in a profile clears the spec's gates: the smoke run exits 0 and
    says in one line that no gates were checked; the full run still has its gates."""
    body = BODY.replace("eval: {max_new_tokens: 12, limit: 8, metrics: [accuracy]}",
                        "eval: {max_new_tokens: 12, limit: 8, metrics: [accuracy], gates: {accuracy: '>= 0.99'}}")
    body = body.replace("smoke: {training: {max_steps: 1}}", "smoke: {training: {max_steps: 1}, eval: {gates: {}}}")
    spec = write_job(tmp_path, body)
    assert len(compile_spec(spec, ["smoke"])[0].eval.gates) == 0
    assert len(compile_spec(spec)[0].eval.gates) == 1
    monkeypatch.chdir(tmp_path)
    smoke = CliRunner().invoke(main, ["run", str(spec), "--profile", "smoke"])
    assert smoke.exit_code == 0, smoke.output
    gate_lines = [line for line in smoke.output.splitlines() if "gate" in line.lower()]
    assert gate_lines == ["  gates     none (switched off by profile smoke)"], smoke.output
    full = CliRunner().invoke(main, ["run", str(spec)])
    assert full.exit_code == 3, full.output
    listed = {line.split()[0]: line for line in CliRunner().invoke(main, ["runs"]).output.splitlines()}
    assert listed["job@smoke"].endswith("no gates") and listed["job"].endswith("GATES FAILED")


def test_the_store_cannot_be_a_run_directory(tmp_path):
    from ftspec.core.errors import SpecError

    spec = write_job(tmp_path, BODY + "output: {dir: runs/.ftspec-store}\n")
    with pytest.raises(SpecError, match=r"output.dir.*is the step store \(\.ftspec-store\) or inside it"):
        compile_spec(spec)
