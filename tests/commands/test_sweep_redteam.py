"""Red team of `ftspec sweep` (issue 27): trials compared on one validation set, a sweep folder
ftspec did not make never written over, a cut-off journal refused in one line, a trial without
a finite score failed with its reason, and reports that show hostile values as text."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from test_sweep import ONE_FIELD, SPEC, fake_run, tree, write

from ftspec.cli import main
from ftspec.commands import sweep as sweep_command
from ftspec.core.errors import SpecError


def dry(spec: Path, *args: str):
    return CliRunner().invoke(main, ["sweep", str(spec), "--dry-run", *args])


# --------------------------------------------------------------------------- what trials are compared on


@pytest.mark.parametrize("over,said", [
    ("data.split.validation=0.1,0.2", "(validation rows)"),
    ("data.split.seed=1,2", "(validation rows)"),
    ("data.limit.validation=4,8", "(validation rows)"),
    ("data.limit=20,40", "(validation rows)"),
    ("eval.limit=4,8", "(eval.limit)"),
])
def test_a_field_that_changes_the_validation_rows_or_their_scoring_is_refused(tmp_path, over, said):
    # Each trial scored on other rows: the winner would be the trial with the easiest validation set.
    spec = write(tmp_path, ONE_FIELD.replace("    training.learning_rate: [1.0e-3, 3.0e-3]\n",
                                             "    training.max_steps: [2, 3]\n"))
    result = dry(spec, "--over", over)
    assert result.exit_code == 2, result.output
    first = result.output.splitlines()[0]
    assert first.startswith(f"--over {over}: ") and "changes what each trial is scored on " + said in first, first


@pytest.mark.parametrize("over", ["data.limit.train=20,40", "eval.max_new_tokens=4,8", "training.seed=1,2"])
def test_fields_that_leave_the_validation_rows_alone_are_swept(tmp_path, over):
    spec = write(tmp_path)
    result = dry(spec, "--over", over)
    assert result.exit_code == 0, result.output
    assert sum(line.startswith("trial ") for line in result.output.splitlines()) == 8  # 2 x 2 x 2


# --------------------------------------------------------------------------- the sweep folder and its journal


@pytest.mark.parametrize("what", ["file", "folder"])
def test_a_sweep_folder_ftspec_did_not_make_is_never_written_over(tmp_path, monkeypatch, what):
    spec = write(tmp_path, ONE_FIELD)
    calls: list = []
    monkeypatch.setattr(sweep_command, "run", fake_run(calls))
    folder = tmp_path / "runs" / "job.sweep"
    if what == "file":
        folder.parent.mkdir()
        folder.write_text("mine\n")
    else:
        folder.mkdir(parents=True)
        (folder / "results.csv").write_text("my own results\n")
    before = tree(tmp_path / "runs") | {"text": (folder if what == "file" else folder / "results.csv").read_text()}
    with pytest.raises(SpecError) as exc:
        sweep_command.sweep(spec, echo=lambda line: None)
    [issue] = exc.value.issues
    assert issue.pos.file == "runs/job.sweep" and "ftspec did not" in issue.message
    after = tree(tmp_path / "runs") | {"text": (folder if what == "file" else folder / "results.csv").read_text()}
    assert after == before and calls == []


def test_an_empty_sweep_folder_is_used(tmp_path, monkeypatch):
    spec = write(tmp_path, ONE_FIELD)
    monkeypatch.setattr(sweep_command, "run", fake_run([]))
    (tmp_path / "runs" / "job.sweep").mkdir(parents=True)
    assert sweep_command.sweep(spec, echo=lambda line: None).scored
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["job.sweep"]  # no temporary folder left


def test_a_cut_off_journal_is_refused_in_one_line_and_left_as_it_was(tmp_path, monkeypatch):
    spec = write(tmp_path, ONE_FIELD)
    monkeypatch.setattr(sweep_command, "run", fake_run([]))
    sweep_command.sweep(spec, echo=lambda line: None)
    journal = tmp_path / "runs" / "job.sweep" / "journal.log"
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])  # the last write cut off
    before = journal.read_bytes()
    for _ in range(2):  # and not appended to (the next one sees the same)
        result = CliRunner().invoke(main, ["sweep", str(spec)])
        assert result.exit_code == 2, result.output
        assert (f"\nruns/job.sweep/journal.log:{len(lines)}: the sweep's journal is cut off or damaged here"
                in "\n" + result.output), result.output
        assert journal.read_bytes() == before
        assert not (tmp_path / "runs" / "job.sweep" / "journal.lock").exists()


# --------------------------------------------------------------------------- scores and reports


def test_a_trial_whose_score_is_not_a_number_fails_with_its_reason(tmp_path, monkeypatch):
    spec = write(tmp_path, ONE_FIELD)
    monkeypatch.setattr(sweep_command, "run", fake_run([], scores={"0.001": (0.6, 0.9),
                                                                   "0.003": (float("nan"), 0.5)}))
    lines: list[str] = []
    done = sweep_command.sweep(spec, echo=lines.append)
    assert [r.state for r in done.rows] == ["complete", "failed"]
    assert done.rows[1].reason == "the tuned model's accuracy is nan (not a number to compare)"
    assert not any("validation accuracy nan" in line for line in lines)
    assert dict(done.winner.row.values) == {"training.learning_rate": 0.001}


HOSTILE = SPEC.replace("    training.learning_rate: [1.0e-3, 3.0e-3]\n    training.max_steps: [2, 3]\n",
                       "    format.completion: ['-A1', ' <img src=x onerror=alert(1)> [x](javascript:alert(1)) "
                       "{{ queue }}']\n")


def test_reports_show_hostile_values_as_text_never_as_a_formula_or_markup(tmp_path, monkeypatch):
    spec = write(tmp_path, HOSTILE)
    seen: list = []

    def run(spec_path, profiles, sets, *args, **kwargs):
        seen.append(list(sets))
        split = "validation" if "eval.split=validation" in sets else "test"
        value = 0.5 + 0.1 * len(seen)
        report = {"split": split, "tuned": {"accuracy": value},
                  "intervals": {"tuned": {"accuracy": [value - 0.01, value + 0.01]}}}
        return SimpleNamespace(report=report, run_dir=tmp_path / "runs" / f"=HYPERLINK(\"x\")|{len(seen)}",
                               plan=SimpleNamespace(eval=SimpleNamespace(split=split)), failed_gates=[])

    monkeypatch.setattr(sweep_command, "run", run)
    sweep_command.sweep(spec, echo=lambda line: None)
    folder = tmp_path / "runs" / "job.sweep"
    cells = [c for row in csv.reader(io.StringIO((folder / "results.csv").read_text())) for c in row]
    assert "'-A1" in cells and "-A1" not in cells
    assert not [c for c in cells if c[:1] in ("=", "+", "@") or (c[:1] == "-" and not c[1:2].isdigit())]
    md = (folder / "sweep.md").read_text()
    assert "<img" not in md and "&lt;img src=x onerror=alert(1)&gt;" in md
    assert not re.search(r"(?<!\\)\]\(", md) and "\\[x\\](javascript:alert(1))" in md  # no link
    assert "| 1 **(winner)** |" in md  # the table's own markup stays
    page = (folder / "sweep.html").read_text()
    assert "<img" not in page and "&lt;img" in page
    assert json.loads((folder / "winner.json").read_text())["trial"] == 1


def test_a_sweep_resumes_from_any_folder_the_spec_is_named_from(tmp_path, monkeypatch):
    # The definition names the spec from the repository root, not as typed: the array's last
    # job (or a second shell) in another folder resumes the same sweep instead of being refused.
    write(tmp_path, ONE_FIELD)
    calls: list = []
    monkeypatch.setattr(sweep_command, "run", fake_run(calls))
    monkeypatch.chdir(tmp_path)
    sweep_command.sweep(Path("job.yaml"), worker=True, max_trials=1, echo=lambda line: None)
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    done = sweep_command.sweep(Path("../job.yaml"), echo=lambda line: None)
    assert done.scored and len(calls) == 3  # the other trial, then the winner on test
    assert json.loads((tmp_path / "runs" / "job.sweep" / "sweep.json").read_text())["spec"] == "job.yaml"


def test_two_values_that_make_the_same_plan_are_refused_at_the_second(tmp_path):
    from ftspec.plan.sweep import resolve

    text = SPEC[:SPEC.index("sweep:")] + "sweep:\n  fields:\n    training.warmup_ratio: [0, 0.1, 0.0]\n"
    spec = write(tmp_path, text)
    with pytest.raises(SpecError) as caught:
        resolve(spec)
    issues = caught.value.issues
    assert len(issues) == 1 and issues[0].key == "training.warmup_ratio", issues
    assert issues[0].pos.line == text.count("\n")  # the value's line
    assert issues[0].message == "0.0 makes the same plan as 0: the two trials would be one"
