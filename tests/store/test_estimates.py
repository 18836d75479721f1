"""`ftspec plan`'s estimate of the steps that will run (ftspec.store.estimates): from the
measurement an earlier run left in the step store, of the same step and the same model, the
most recent; nothing where there is none; never in the plan's JSON or id; a store of any
shape only read, never a crash; and the command stays light."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner
from conftest import ROOT
from helpers import BASE_BODY, HEAVY, PROBE, write_job

from ftspec.backends.manifest import write_manifest
from ftspec.cli import main
from ftspec.core.io import write_json
from ftspec.plan.compile import compile_spec
from ftspec.store import rundir
from ftspec.store.rundir import finish_step, store_of

SFT = BASE_BODY + "method: {kind: sft, adapter: full}\n"
CHANGED = "training.max_length=100"  # a new key for prepare_data, generate_base and train; the same model


def earlier_run(spec, name, monkeypatch, *sets, when="2024-01-01T00:00:00+00:00", data_rate=50.0, gen_rate=2.0,
                train_seconds=8.0, files=None):
    """A run directory `runs/NAME` as a finished run leaves it, its steps' entries in the store
    (written by the store's own finish_step), each measured: prepare_data at `data_rate` rows/s,
    generate_base at `gen_rate` rows/s, train's 4 steps in `train_seconds`. `files` replaces an
    entry's measurement file: {step: (file name, text)}."""
    plan, _ = compile_spec(spec, sets=sets)
    run = spec.parent / "runs" / name
    run.mkdir(parents=True)
    write_json(run / "plan.json", plan.to_dict())
    part = "choices" if plan.eval.mode == "choices" else "generate"
    measured = {
        "prepare_data": ("stats.json", json.dumps({"preparation": {"seconds": 1.0, "rows_per_second": data_rate}})),
        "generate_base": ("outputs.json", json.dumps({"speed": {part: {"rows": 8, "seconds": 8 / gen_rate,
                                                                       "rows_per_second": gen_rate}}})),
        "train": ("train.json", json.dumps({"steps": 4, "train_loss": 1.0, "resumed_from": None})),
        **(files or {}),
    }
    store = store_of(run)
    monkeypatch.setattr(rundir, "now", lambda: when)
    entries = []
    for step in plan.steps:
        if step.name not in measured:
            continue
        partial = store.partial(step.name, step.key)
        partial.mkdir(parents=True)
        file, text = measured[step.name]
        if text is not None:
            (partial / file).write_text(text, encoding="utf-8")
        finish_step(partial, store.path(step.name, step.key), step.name, step.key)
        entries.append({"name": step.name, "key": step.key, "dir": step.name, "state": "ran",
                        "seconds": train_seconds if step.name == "train" else 1.0, "finished_at": when})
    write_manifest(run, {"plan_id": plan.id, "name": plan.name, "spec": plan.spec.model_dump(mode="json"),
                         "spec_files": {}, "status": "finished", "pid": 1, "started_at": when, "finished_at": when,
                         "versions": {}, "machine": {"platform": "test"}, "data": {}, "steps": entries,
                         "artifacts": {}})
    return plan


def plan_text(spec, *args):
    out = CliRunner().invoke(main, ["plan", str(spec), *args])
    assert out.exit_code == 0, out.output
    return out.stdout


@pytest.fixture
def spec(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return write_job(tmp_path, SFT)


def estimate_of(text: str, step: str) -> str:
    return next(line.strip() for line in text.splitlines() if line.strip().startswith(step + " "))


def test_each_measured_step_is_estimated_from_the_earlier_entry_and_named(spec, monkeypatch):
    earlier = earlier_run(spec, "old", monkeypatch)
    text = plan_text(spec, "--set", CHANGED)
    keys = {s.name: s.key[:8] for s in earlier.steps}
    block = text[text.index("  estimate  "):]
    assert block.splitlines()[0].startswith("  estimate  about 14s for 3 of the 7 steps to run"), block
    # 96 + 12 + 12 rows at 50 rows/s, 8 eval rows (limit 8) at 2 rows/s, 4 steps of 8 rows at 32 rows / 8 s:
    # 2.4 + 4 + 8 s
    assert estimate_of(block, "prepare_data") == (
        f"prepare_data   ~2s: 120 rows at 50.0 rows/s  (measured by runs/old: prepare_data {keys['prepare_data']}, "
        "finished 2024-01-01T00:00:00+00:00)")
    assert estimate_of(block, "train").startswith("train          ~8s: 4 steps of 8 rows at 4.0 rows/s  "
                                                  f"(measured by runs/old: train {keys['train']}")
    new, _ = compile_spec(spec, sets=(CHANGED,))
    part = "choices" if new.eval.mode == "choices" else "generate"
    assert estimate_of(block, "generate_base").startswith(
        f"generate_base  ~4s: {new.eval.rows} rows: {part} at 2.0 rows/s  (measured by runs/old: generate_base "
        f"{keys['generate_base']}")
    # steps never measured (or without a measurement here) get no figure, only their names
    assert block.splitlines()[-1].strip() == ("not estimated (no earlier measurement): eval_base, generate_tuned, "
                                              "eval_tuned, report")


def test_the_most_recent_measurement_of_the_same_model_is_used_and_no_other_models(spec, monkeypatch):
    # neither the first nor the last by name: the one that finished last
    earlier_run(spec, "a-middle", monkeypatch, when="2024-03-01T00:00:00+00:00", data_rate=30.0)
    earlier_run(spec, "b-newest", monkeypatch, "training.max_length=110", when="2024-06-01T00:00:00+00:00",
                data_rate=60.0)
    earlier_run(spec, "c-oldest", monkeypatch, "training.max_length=120", when="2024-01-01T00:00:00+00:00",
                data_rate=40.0)
    text = plan_text(spec, "--set", CHANGED)
    assert "prepare_data   ~2s: 120 rows at 60.0 rows/s  (measured by runs/b-newest:" in text
    # another model (a wider tiny one), its run directory beside them: nothing they measured is borrowed
    other = write_job(spec.parent, SFT.replace("hidden_size: 32", "hidden_size: 64"), name="wide")
    assert "  estimate  " not in plan_text(other, "--set", CHANGED)


def test_nothing_is_estimated_without_a_measurement_nor_for_steps_already_done(spec, monkeypatch):
    assert "  estimate  " not in plan_text(spec)  # no store at all
    earlier_run(spec, "old", monkeypatch)
    # the plan that was measured: the measured steps are done, the others have no measurement
    assert "  estimate  " not in plan_text(spec)


def test_the_estimate_is_not_in_the_plan_json_nor_its_id(spec, monkeypatch, tmp_path):
    before_json = plan_text(spec, "--set", CHANGED, "--json")
    earlier_run(spec, "old", monkeypatch)
    assert plan_text(spec, "--set", CHANGED, "--json") == before_json
    assert "rows/s" not in before_json and "measured by" not in before_json
    plan_text(spec, "--set", CHANGED, "-o", str(tmp_path / "plan.json"))
    written = json.loads((tmp_path / "plan.json").read_text(encoding="utf-8"))
    written.pop("made_with")  # what the plan file records it was made with: outside the plan and its id
    assert written == json.loads(before_json)


@pytest.mark.parametrize("step,file,text", [
    ("prepare_data", "stats.json", "{not json"),
    ("prepare_data", "stats.json", '{"preparation": {"rows_per_second": "fast"}}'),
    ("prepare_data", "stats.json", '{"preparation": {"rows_per_second": 0}}'),
    ("prepare_data", "stats.json", '{"preparation": {"rows_per_second": -5}}'),
    ("prepare_data", "stats.json", '{"preparation": {"rows_per_second": 1e999}}'),
    ("prepare_data", "stats.json", '{"preparation": [1, 2]}'),
    ("prepare_data", "stats.json", "[]"),
    ("prepare_data", "stats.json", None),  # no measurement file at all
    ("generate_base", "outputs.json", '{"speed": "quick"}'),
    ("generate_base", "outputs.json", '{"speed": {"generate": 3, "choices": [1]}}'),
    ("train", "train.json", '{"steps": 4, "resumed_from": "checkpoint-2"}'),  # measured only a part
    ("train", "train.json", '{"steps": true}'),
])
def test_a_malformed_measurement_is_ignored_not_a_crash(spec, monkeypatch, step, file, text):
    earlier_run(spec, "old", monkeypatch, files={step: (file, text)})
    out = plan_text(spec, "--set", CHANGED)
    assert "not estimated (no earlier measurement):" in out
    assert not any(line.strip().startswith(step + " ") for line in out[out.index("  estimate  "):].splitlines())


def test_a_hostile_store_is_read_without_a_crash_and_without_following_links(spec, monkeypatch, tmp_path):
    plan = earlier_run(spec, "old", monkeypatch)
    runs = spec.parent / "runs"
    store = store_of(runs / "old")
    key = {s.name: s for s in plan.steps}
    # train's entry: a link to a finished entry elsewhere; outputs.json: a FIFO; a manifest of another shape
    entry = store.path("train", key["train"].key)
    outside = tmp_path / "outside"
    entry.rename(outside)
    entry.symlink_to(outside)
    gen = store.path("generate_base", key["generate_base"].key) / "outputs.json"
    gen.unlink()
    os.mkfifo(gen)
    (runs / "junk").mkdir()
    (runs / "junk" / "manifest.json").write_text('{"steps": "all of them"}', encoding="utf-8")
    (runs / "junk" / "plan.json").write_text("[]", encoding="utf-8")
    (runs / "loop").symlink_to(runs / "loop")
    (runs / "\x1b[31mred").mkdir()
    out = plan_text(spec, "--set", CHANGED)
    assert estimate_of(out, "prepare_data").startswith("prepare_data  ~2s: 120 rows")
    assert "not estimated (no earlier measurement): generate_base, eval_base, train," in out


def test_a_plan_id_that_does_not_match_its_manifest_is_not_trusted(spec, monkeypatch):
    earlier_run(spec, "old", monkeypatch)
    plan_json = spec.parent / "runs" / "old" / "plan.json"
    body = json.loads(plan_json.read_text(encoding="utf-8"))
    plan_json.write_text(json.dumps({**body, "id": "0" * 64}), encoding="utf-8")
    assert "  estimate  " not in plan_text(spec, "--set", CHANGED)


def test_plan_with_a_measured_store_stays_light(spec, monkeypatch):
    earlier_run(spec, "old", monkeypatch)
    code = PROBE.format(args=["plan", str(spec), "--set", CHANGED], heavy=HEAVY)
    out = subprocess.run([sys.executable, "-c", code], cwd=spec.parent, capture_output=True, text=True, timeout=60,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert "  estimate  about" in out.stdout
    assert out.stdout.splitlines()[-1] == "HEAVY:", out.stdout.splitlines()[-1]


def test_a_run_directory_named_with_control_characters_is_shown_escaped(spec, monkeypatch):
    earlier_run(spec, "\x1b]0;owned\x07\x1b[2J", monkeypatch)
    out = plan_text(spec, "--set", CHANGED)
    assert "\x1b" not in out and "\x07" not in out
    assert "(measured by runs/\\x1b]0;owned\\x07\\x1b[2J: prepare_data " in out
