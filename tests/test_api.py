"""ftspec.api, the Python API: the same answers as the command line, as data."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import ROOT
from helpers import BASE_BODY, write_job

import ftspec.api as ft
from ftspec.cli import main
from ftspec.core.errors import Pos, SpecError


def test_validate_gives_every_issue_at_its_place(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("ftspec: 1\nname: x\n")
    checked = ft.validate(bad)
    assert not checked.ok and checked.spec == bad
    missing = [i for i in checked.errors if i.key == "model"]
    assert missing and missing[0].pos == Pos(str(bad), 1, 1)
    assert missing[0].format() == f"{bad}:1:1: model: required key is missing"
    assert len(checked.errors) == 3, "every problem at once"


def test_validate_a_good_spec_and_its_warnings(in_root):
    assert ft.validate("specs/quickstart.yaml") == ft.Validation(Path("specs/quickstart.yaml"), True, [])
    checked = ft.validate("specs/routing-lora.yaml")
    assert checked.ok and [w.severity for w in checked.warnings] == ["warning"]
    assert "has no pinned revision" in checked.warnings[0].message
    strict = ft.validate("specs/routing-lora.yaml", strict=True)
    assert not strict.ok and strict.issues == checked.warnings


def test_plan_is_what_plan_json_prints(in_root):
    plan = ft.plan("specs/quickstart.yaml", profiles=["smoke"], sets=["training.epochs=2"])
    printed = CliRunner().invoke(main, ["plan", "specs/quickstart.yaml", "-p", "smoke", "--set", "training.epochs=2",
                                        "--json"])
    assert printed.exit_code == 0, printed.output
    assert plan.to_json() == printed.stdout
    assert plan.name == "quickstart"


def test_plan_of_a_spec_with_mistakes_raises_spec_error(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("ftspec: 1\nname: x\n")
    with pytest.raises(SpecError) as info:
        ft.plan(bad)
    assert any(i.key == "model" and i.pos.line == 1 for i in info.value.issues)
    with pytest.raises(SpecError):
        ft.plan(ROOT / "specs/quickstart.yaml", profiles=["no-such-profile"])


def test_diff_names_the_changed_field(in_root, tmp_path):
    new = tmp_path / "specs"
    shutil.copytree(ROOT / "specs", new)
    text = (new / "quickstart.yaml").read_text().replace("learning_rate: 1.0e-3", "learning_rate: 5.0e-4")
    (new / "quickstart.yaml").write_text(text)
    (tmp_path / ".git").mkdir()  # the same repository layout as the checkout
    change = ft.diff("specs/quickstart.yaml", new / "quickstart.yaml")
    assert [(c.path, c.old, c.new) for c in change.changes] == [("training.learning_rate", 0.001, 0.0005)]
    assert change.rerun == ["train", "generate_tuned", "eval_tuned", "report"]
    assert ft.diff("specs/quickstart.yaml", "specs/quickstart.yaml").is_empty()
    with pytest.raises(ValueError):
        ft.diff("specs/quickstart.yaml")


def test_run_runs_each_step_once_and_then_reuses_it(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("trl")

    spec = write_job(tmp_path,
                     BASE_BODY.replace("max_steps: 4", "max_steps: 2") + "method: {kind: sft, adapter: full}\n")
    lines: list[str] = []
    first = ft.run(spec, echo=lines.append)
    every = [s.name for s in first.plan.steps]
    assert first.ran == every and {s.state for s in first.steps} == {"ran"}
    assert any(line.startswith("train: running") for line in lines)
    again = ft.run(spec, echo=None)
    assert again.ran == [] and {s.state for s in again.steps} == {"reused"}
    assert [s.key for s in again.steps] == [s.key for s in first.steps]
    assert ft.run(spec, force="report", echo=None).ran == ["report"]
    with pytest.raises(SpecError):
        ft.run(spec, force=["no_such_step"], echo=None)


def test_importing_the_api_leaves_torch_unimported():
    code = "import sys, ftspec.api; print(sorted(m for m in ('torch', 'transformers', 'boto3') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_step_force_names_that_no_plan_has_is_refused_by_the_api_and_the_cli(tmp_path):
    """One parser for --force: the API raises at `force`, the CLI says it at the option, before anything runs."""
    spec = write_job(tmp_path, BASE_BODY)
    with pytest.raises(SpecError) as raised:
        ft.run(spec, force=["train", "trian"], echo=None)
    assert raised.value.issues[0].format().startswith("force: unknown step trian")
    assert "steps: teach, prepare_data" in raised.value.issues[0].format()
    result = CliRunner().invoke(main, ["run", str(spec), "--force", "train,trian"])
    assert result.exit_code == 2
    assert "Invalid value for --force: unknown step trian (steps: teach, prepare_data" in result.output
    assert not (tmp_path / "runs").exists()
