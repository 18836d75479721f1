"""`ftspec sweep` (ftspec.commands.sweep): trials share what their keys share, the winner is
chosen on validation and scored once on test, a killed sweep resumes, --dry-run writes nothing,
and bad input is refused at its line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from conftest import ROOT
from helpers import HEAVY, PROBE

from ftspec.cli import main
from ftspec.commands import sweep as sweep_command
from ftspec.core.errors import RunFailed, SpecError

TICKETS = ROOT / "specs" / "data" / "support-tickets.jsonl"

SPEC = """\
ftspec: 1
name: job
model: {kind: tiny, hidden_size: 32, num_layers: 1, num_heads: 2, max_position_embeddings: 256, init_seed: 1}
data:
  train: data/tickets.jsonl
  split: {validation: 0.1, test: 0.1, seed: 1}
format:
  kind: prompt_completion
  prompt: "Request: {{ text }}\\nQueue:"
  completion: " {{ queue }}"
method: {kind: sft, adapter: full}
training: {max_steps: 2, batch_size: 4, max_length: 128, learning_rate: 1.0e-3}
eval: {metrics: [accuracy], max_new_tokens: 4, limit: 8}
compute: {device: cpu}
sweep:
  fields:
    training.learning_rate: [1.0e-3, 3.0e-3]
    training.max_steps: [2, 3]
"""


def write(tmp_path: Path, text: str = SPEC) -> Path:
    (tmp_path / ".git").mkdir(exist_ok=True)
    (tmp_path / "data").mkdir(exist_ok=True)
    lines = TICKETS.read_text(encoding="utf-8").splitlines()[:120]
    (tmp_path / "data" / "tickets.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    spec = tmp_path / "job.yaml"
    spec.write_text(text, encoding="utf-8")
    return spec


def tree(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*"))}


# --------------------------------------------------------------------------- real trials on a tiny model


def test_a_2x2_grid_shares_data_and_base_eval_and_a_killed_sweep_trains_only_the_rest(tmp_path, monkeypatch):
    spec = write(tmp_path)
    real = sweep_command.run
    results, calls = [], []

    def spy(spec, profiles, sets, *args, **kwargs):
        calls.append(list(sets))
        if len(calls) == 3 and "killed" not in calls:  # Ctrl-C as the third trial starts
            calls.append("killed")
            raise KeyboardInterrupt
        result = real(spec, profiles, sets, *args, **kwargs)
        results.append(result)
        return result

    monkeypatch.setattr(sweep_command, "run", spy)
    with pytest.raises(KeyboardInterrupt):
        sweep_command.sweep(spec, echo=lambda line: None)
    assert len(results) == 2
    done = sweep_command.sweep(spec, echo=lambda line: None)
    trials, final = results[:-1], results[-1]
    assert len(trials) == 4  # two before the kill, the remaining two after it: none twice
    ran = [name for r in trials for name in r.ran]
    assert ran.count("prepare_data") == 1
    assert ran.count("generate_base") == 1 and ran.count("eval_base") == 1
    assert ran.count("train") == 4
    assert {r.plan.eval.split for r in trials} == {"validation"}
    for r in trials:
        assert (r.run_dir / "plan.json").is_file() and (r.run_dir / "metrics.json").is_file()
        assert json.loads((r.run_dir / "manifest.json").read_text())["status"] == "finished"
    # The winner once more on test: its training reused, not run again.
    assert final.plan.eval.split == "test" and "train" not in final.ran
    assert [r.state for r in done.rows] == ["complete"] * 4 and done.scored
    winner = json.loads((tmp_path / "runs" / "job.sweep" / "winner.json").read_text())
    assert winner["how"] == "chosen on validation; test scored once, for the winner"
    assert winner["test"]["value"] is not None
    # The base model beside the winner, on each split, as the trials' and the winner's own reports scored it.
    trial_report = json.loads((trials[0].run_dir / "metrics.json").read_text())
    final_report = json.loads((final.run_dir / "metrics.json").read_text())
    assert winner["validation"]["base"] == trial_report["base"]["accuracy"]
    assert winner["test"]["base"] == final_report["base"]["accuracy"]
    assert "(the base model: " in (tmp_path / "runs" / "job.sweep" / "sweep.md").read_text()
    for name in ("results.csv", "sweep.md", "sweep.html", "sweep.json"):
        assert (tmp_path / "runs" / "job.sweep" / name).is_file()


# --------------------------------------------------------------------------- trials faked: the sweep's own logic

# Each trial's (validation, test) accuracy, by learning rate: the best on test is NOT the best on validation.
SCORES = {"0.001": (0.6, 0.9), "0.003": (0.8, 0.5)}


def fake_run(calls: list, fail: str | None = None, scores=SCORES):
    def run(spec, profiles, sets, *args, **kwargs):
        calls.append(list(sets))
        lr = next(s.split("=", 1)[1] for s in sets if s.startswith("training.learning_rate="))
        if lr == fail:
            raise RunFailed("train: the loss is nan at step 2")
        split = "validation" if "eval.split=validation" in sets else "test"
        value = scores[lr][0 if split == "validation" else 1]
        report = {"split": split, "tuned": {"accuracy": value},
                  "intervals": {"tuned": {"accuracy": [value - 0.05, value + 0.05]}}}
        run_dir = Path(spec).parent / "runs" / f"job@{'+'.join(sets)}"
        return SimpleNamespace(report=report, run_dir=run_dir, plan=SimpleNamespace(eval=SimpleNamespace(split=split)),
                               failed_gates=[])
    return run


ONE_FIELD = SPEC.replace("    training.max_steps: [2, 3]\n", "")


def test_the_winner_is_chosen_on_validation_not_test_and_the_report_says_how(tmp_path, monkeypatch):
    spec = write(tmp_path, ONE_FIELD)
    calls: list = []
    monkeypatch.setattr(sweep_command, "run", fake_run(calls))
    done = sweep_command.sweep(spec, echo=lambda line: None)
    assert dict(done.winner.row.values) == {"training.learning_rate": 0.003}  # 0.8 on validation (0.5 on test)
    tested = [c for c in calls if "eval.split=validation" not in c]
    assert tested == [["training.learning_rate=0.003"]]  # test scored once, for the winner only
    folder = tmp_path / "runs" / "job.sweep"
    winner = json.loads((folder / "winner.json").read_text())
    assert winner["validation"]["value"] == 0.8 and winner["test"]["value"] == 0.5
    md = (folder / "sweep.md").read_text()
    assert "chosen on validation; test scored once, for the winner" in md
    assert "<svg" in (folder / "sweep.html").read_text()
    assert "overlaps" not in md  # [0.75, 0.85] and [0.55, 0.65] do not overlap


def test_overlapping_intervals_are_a_warning(tmp_path, monkeypatch):
    spec = write(tmp_path, ONE_FIELD)
    monkeypatch.setattr(sweep_command, "run", fake_run([], scores={"0.001": (0.7, 0.7), "0.003": (0.72, 0.7)}))
    lines: list[str] = []
    sweep_command.sweep(spec, echo=lines.append)
    assert any("warning: the winner's validation interval overlaps the runner-up's" in line for line in lines)


def test_a_failing_trial_is_recorded_with_its_reason_and_the_sweep_goes_on(tmp_path, monkeypatch):
    spec = write(tmp_path, ONE_FIELD)
    monkeypatch.setattr(sweep_command, "run", fake_run([], fail="0.003"))
    done = sweep_command.sweep(spec, echo=lambda line: None)
    assert [r.state for r in done.rows] == ["complete", "failed"]
    assert done.rows[1].reason == "train: the loss is nan at step 2"
    assert dict(done.winner.row.values) == {"training.learning_rate": 0.001}
    csv_text = (tmp_path / "runs" / "job.sweep" / "results.csv").read_text()
    assert ",failed,,,,,train: the loss is nan at step 2" in csv_text


def test_a_trial_left_running_by_a_dead_process_is_run_again(tmp_path, monkeypatch):
    import optuna

    spec = write(tmp_path, ONE_FIELD)
    calls: list = []
    monkeypatch.setattr(sweep_command, "run", fake_run(calls))
    # A worker that took trial 0 and died: the trial is RUNNING in the journal, its lock free.
    sw = sweep_command.resolve(spec)
    folder = sweep_command._prepare(sw)  # noqa: SLF001 (the folder a killed sweep leaves)
    study, _ = sweep_command._open_study(sw, folder)  # noqa: SLF001
    study.ask()
    assert [t.state for t in study.get_trials()] == [optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING]
    done = sweep_command.sweep(spec, echo=lambda line: None)
    assert [r.state for r in done.rows] == ["complete", "complete"]
    assert sorted(c[0] for c in calls if "eval.split=validation" in c) == ["training.learning_rate=0.001",
                                                                          "training.learning_rate=0.003"]


def test_a_worker_runs_its_trials_and_does_not_choose_the_winner(tmp_path, monkeypatch):
    spec = write(tmp_path, ONE_FIELD)
    calls: list = []
    monkeypatch.setattr(sweep_command, "run", fake_run(calls))
    first = sweep_command.sweep(spec, worker=True, max_trials=1, echo=lambda line: None)
    assert not first.scored and first.left == 1 and len(calls) == 1
    second = sweep_command.sweep(spec, worker=True, echo=lambda line: None)
    assert not second.scored and second.left == 0 and len(calls) == 2
    assert not (tmp_path / "runs" / "job.sweep" / "winner.json").exists()
    last = sweep_command.sweep(spec, echo=lambda line: None)  # every trial done: it only chooses and scores
    assert last.scored and len(calls) == 3


def test_a_resume_with_another_definition_is_refused_in_one_line(tmp_path, monkeypatch):
    spec = write(tmp_path, ONE_FIELD)
    monkeypatch.setattr(sweep_command, "run", fake_run([]))
    sweep_command.sweep(spec, echo=lambda line: None)
    before = tree(tmp_path / "runs" / "job.sweep")
    with pytest.raises(SpecError) as exc:
        sweep_command.sweep(spec, over=["training.learning_rate=0.001,0.01"], echo=lambda line: None)
    [issue] = exc.value.issues
    assert issue.pos.file == "runs/job.sweep/sweep.json"
    assert issue.message.startswith("holds another sweep (it differs in fields, trials)")
    assert tree(tmp_path / "runs" / "job.sweep") == before


# --------------------------------------------------------------------------- --dry-run and the light commands


def probe(args: list[str], cwd: Path) -> str:
    code = PROBE.format(args=args, heavy=(*HEAVY, "optuna"))
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    return out.stdout


def test_dry_run_lists_every_trial_with_its_reuse_imports_neither_optuna_nor_torch_and_writes_nothing(tmp_path):
    spec = write(tmp_path)
    before = tree(tmp_path)
    out = probe(["sweep", str(spec), "--dry-run"], tmp_path)
    assert "HEAVY:" in out.splitlines(), out
    assert tree(tmp_path) == before
    trials = [line for line in out.splitlines() if line.startswith("trial ")]
    assert len(trials) == 4
    assert trials[0].startswith("trial 0 (training.learning_rate=0.001, training.max_steps=2)")
    assert "reuses: prepare_data (from trial 0), generate_base (from trial 0), eval_base (from trial 0)" in out


@pytest.mark.parametrize("args", [["validate"], ["plan"], ["schema"]])
def test_the_light_commands_never_import_optuna(tmp_path, args):
    spec = write(tmp_path)
    out = probe([*args, *([str(spec)] if args != ["schema"] else [])], tmp_path)
    assert "HEAVY:" in out.splitlines(), out


# --------------------------------------------------------------------------- bad input, at its line, exit 2

BAD = [
    ("training.learnin_rate: [1.0e-3, 3.0e-3]", 17, "unknown key"),
    ("training.learning_rate: [1.0e-3, -1]", 17, "greater than 0"),
    ("output.dir: [a, b]", 17, "cannot be swept"),
    ("name: [a, b]", 17, "cannot be swept"),
    ("training.learning_rate: {low: 1.0e-4, high: 1.0e-2}", 17, "a grid takes a list of values"),
]


@pytest.mark.parametrize("field,line,said", BAD)
def test_a_bad_field_or_value_is_refused_at_its_line(tmp_path, field, line, said):
    text = SPEC.replace("    training.learning_rate: [1.0e-3, 3.0e-3]\n", f"    {field}\n")
    spec = write(tmp_path, text)
    result = CliRunner().invoke(main, ["sweep", str(spec), "--dry-run"])
    assert result.exit_code == 2, result.output
    first = result.output.splitlines()[0]
    assert f"job.yaml:{line}:" in first and said in first, result.output


@pytest.mark.parametrize("extra,key,said", [
    ("  objective: {split: test}\n", "sweep.objective.split", "choosing on the test split overstates the winner"),
    ("  objective: {metric: f1}\n", "sweep.objective.metric", "is not computed by the evaluation"),
])
def test_a_bad_objective_is_refused_at_its_line(tmp_path, extra, key, said):
    spec = write(tmp_path, SPEC + extra)
    result = CliRunner().invoke(main, ["sweep", str(spec), "--dry-run"])
    assert result.exit_code == 2, result.output
    assert "job.yaml:19:" in result.output and key in result.output and said in result.output


@pytest.mark.parametrize("split,said", [("{validation: 0.0, test: 0.1, seed: 1}", "the data has none"),
                                        ("{validation: 0.1, test: 0.0, seed: 1}", "on the test split")])
def test_data_without_a_validation_or_a_test_split_is_refused(tmp_path, split, said):
    spec = write(tmp_path, SPEC.replace("{validation: 0.1, test: 0.1, seed: 1}", split))
    result = CliRunner().invoke(main, ["sweep", str(spec), "--dry-run"])
    assert result.exit_code == 2 and "job.yaml:6:" in result.output and said in result.output, result.output
