"""`ftspec plan --explain` and `origin_of`: where each effective value of a spec comes
from — a default, the spec, a base spec, a profile, or --set — with FILE:LINE."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner
from conftest import ROOT

from ftspec.cli import main
from ftspec.spec.load import load
from ftspec.spec.provenance import explain, origin_of, render_text
from ftspec.spec.validate import validate

BASE = """\
ftspec: 1
name: base
model:
  kind: tiny
  hidden_size: 64
  num_heads: 4
data:
  train: train.jsonl
format:
  kind: prompt_completion
  prompt: "Q: {{ text }}"
  completion: " {{ queue }}"
training:
  epochs: 2
  seed: 7
eval:
  metrics: [accuracy]
  gates: {improvement.accuracy: ">= 0.1"}
"""

CHILD = """\
extends: base.yaml
name: child
method:
  kind: sft
  adapter: lora
training:
  epochs: 3
profiles:
  smoke:
    training: {max_steps: 5}
  other:
    training: {max_steps: 9}
"""


@pytest.fixture
def project(tmp_path, monkeypatch):
    (tmp_path / ".git").mkdir()
    (tmp_path / "base.yaml").write_text(BASE, encoding="utf-8")
    (tmp_path / "child.yaml").write_text(CHILD, encoding="utf-8")
    (tmp_path / "train.jsonl").write_text(
        "".join(json.dumps({"text": f"t{i}", "queue": "ab"[i % 2]}) + "\n" for i in range(20)), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _rows(profiles=(), sets=()):
    loaded = load("child.yaml", profiles, sets)
    spec, issues = validate(loaded)
    assert spec is not None, issues
    return {r.key: r for r in explain(loaded, spec)}, loaded


def test_each_layer_is_named_with_its_file_and_line(project):
    rows, _ = _rows(["smoke"], ["training.seed=3"])
    assert (rows["name"].kind, rows["name"].where) == ("spec", "child.yaml:2")
    assert (rows["training.epochs"].value, rows["training.epochs"].kind,
            rows["training.epochs"].where) == (3, "spec", "child.yaml:7")
    assert (rows["model.hidden_size"].kind, rows["model.hidden_size"].where) == ("base", "base.yaml:5")
    assert (rows["training.max_steps"].value, rows["training.max_steps"].kind,
            rows["training.max_steps"].where) == (5, "profile:smoke", "child.yaml:10")
    assert (rows["training.seed"].value, rows["training.seed"].kind,
            rows["training.seed"].where) == (3, "set", "--set training.seed=3")
    assert (rows["training.lr_scheduler"].kind, rows["training.lr_scheduler"].where) == ("default", "")
    assert (rows["compute.device"].kind, rows["compute.device"].where) == ("default", "")


def test_shorthands_name_the_field_they_write_and_leave_the_rest_default(project):
    rows, _ = _rows()
    assert (rows["method.adapter.kind"].value, rows["method.adapter.kind"].kind) == ("lora", "spec")
    assert rows["method.adapter.r"].kind == "default"
    assert (rows["data.train.path"].kind, rows["data.train.path"].where) == ("base", "base.yaml:8")
    assert rows["data.train.format"].kind == "default"
    assert (rows["eval.metrics.0.name"].kind, rows["eval.metrics.0.name"].where) == ("base", "base.yaml:17")


def test_every_effective_value_has_a_row_and_layering_keys_none(project):
    rows, _ = _rows()
    assert not any(k.split(".")[0] in ("extends", "profiles") for k in rows)
    assert {"ftspec", "training.optimizer", "eval.gates.improvement.accuracy", "tracking.kind"} <= set(rows)
    assert rows["eval.gates.improvement.accuracy"].where == "base.yaml:18"


def test_unchosen_profile_is_not_an_origin(project):
    rows, _ = _rows()
    assert rows["training.max_steps"].kind == "default"


def test_origin_of(project):
    _, loaded = _rows(["smoke"], ["training.seed=3"])
    assert origin_of(loaded, "training.max_steps") == "profile smoke (child.yaml:10)"
    assert origin_of(loaded, "training.epochs") == "spec (child.yaml:7)"
    assert origin_of(loaded, "model.hidden_size") == "base (base.yaml:5)"
    assert origin_of(loaded, "training.seed") == "--set training.seed=3"
    assert origin_of(loaded, "training.lr_scheduler") == "default"
    assert origin_of(loaded, "eval.gates.improvement.accuracy") == "base (base.yaml:18)"
    assert origin_of(loaded, "eval.metrics.0") == "base (base.yaml:17)"
    assert origin_of(loaded, "method.adapter.kind") == "spec (child.yaml:5)"
    assert origin_of(loaded, "no.such.key") == "default"


def test_later_layers_win(project):
    _, loaded = _rows(["smoke", "other"], ["training.max_steps=11"])
    assert origin_of(loaded, "training.max_steps") == "--set training.max_steps=11"
    _, loaded = _rows(["smoke", "other"])
    assert origin_of(loaded, "training.max_steps") == "profile other (child.yaml:12)"


def test_text_rendering_is_a_table(project):
    rows, _ = _rows(["smoke"])
    text = render_text(list(rows.values()))
    lines = text.splitlines()
    assert lines[0].split() == ["key", "value", "from"]
    line = next(l for l in lines if l.startswith("training.max_steps "))
    assert line.split() == ["training.max_steps", "5", "profile", "smoke", "child.yaml:10"]
    assert next(l for l in lines if l.startswith("training.lr_scheduler ")).split()[-1] == "default"
    assert lines[-1].startswith(f"{len(rows)} values: ")


def test_cli_plan_explain(project):
    result = CliRunner().invoke(main, ["plan", "child.yaml", "--explain", "-p", "smoke", "--set", "training.seed=3"])
    assert result.exit_code == 0, result.output
    assert "training.seed" in result.stdout and "--set training.seed=3" in result.stdout
    assert "plan_version" not in result.stdout  # the explanation instead of the plan
    result = CliRunner().invoke(main, ["plan", "child.yaml", "--explain", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    by_key = {r["key"]: r for r in data}
    assert by_key["training.epochs"] == {"key": "training.epochs", "value": 3, "origin": "spec",
                                         "where": "child.yaml:7"}
    assert by_key["training.optimizer"]["origin"] == "default" and by_key["training.optimizer"]["where"] is None


def test_cli_plan_explain_of_an_invalid_spec_is_the_usual_error(project):
    result = CliRunner().invoke(main, ["plan", "child.yaml", "--explain", "--set", "training.epochs=.inf"])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "--set training.epochs=.inf: training.epochs: .inf is not allowed; every number in a spec must be finite",
        "ftspec: 1 error"]
    assert result.stdout == ""


def test_plan_explain_stays_light():
    code = ("import sys\nfrom ftspec.cli import main\n"
            "try:\n    main(['plan', 'specs/routing-prod.yaml', '-p', 'dev', '--explain'], standalone_mode=False)\n"
            "except SystemExit:\n    pass\n"
            "heavy = sorted(m for m in ('torch', 'transformers', 'trl', 'peft', 'datasets', "
            "'accelerate') if m in sys.modules)\n"
            "print('HEAVY:' + ','.join(heavy))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert "profile dev  specs/routing-prod.yaml:" in out.stdout
    assert out.stdout.splitlines()[-1] == "HEAVY:"
