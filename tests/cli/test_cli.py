"""The command line as a user meets it."""

import json
import shutil

from click.testing import CliRunner
from conftest import ROOT

from ftspec import __version__
from ftspec.cli import main


def invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_version():
    assert invoke("--version").output.strip() == f"ftspec, version {__version__}"


def test_validate_ok(in_root):
    result = invoke("validate", "specs/quickstart.yaml", "specs/routing-prod.yaml")
    assert result.exit_code == 0
    assert "specs/quickstart.yaml: ok" in result.output
    assert "specs/routing-prod.yaml: ok" in result.output


def test_validate_reports_every_spec_and_exits_2(in_root, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("ftspec: 1\nname: x\n")
    result = invoke("validate", "specs/quickstart.yaml", str(bad))
    assert result.exit_code == 2
    assert "specs/quickstart.yaml: ok" in result.output
    assert f"{bad}:1:1: model: required key is missing" in result.output
    assert "Traceback" not in result.output
    assert result.output.rstrip().endswith("ftspec: 3 errors")


def test_strict_fails_on_warnings(in_root):
    result = invoke("validate", "--strict", "specs/routing-lora.yaml")
    assert result.exit_code == 2
    assert "warning: hub model 'Qwen/Qwen2.5-0.5B-Instruct' has no pinned revision" in result.output
    assert "1 warning (--strict)" in result.output
    assert invoke("validate", "specs/routing-lora.yaml").exit_code == 0


def test_plan_summary(in_root):
    result = invoke("plan", "specs/quickstart.yaml", "--profile", "smoke")
    assert result.exit_code == 0
    out = result.output
    assert "plan quickstart" in out
    assert "profiles smoke" in out
    assert "train 64 · validation 64 · test 64 rows" in out
    assert "5 steps (max_steps)" in out
    assert "prepare_data" in out and "report" in out


def test_plan_json_and_output_file(in_root, tmp_path):
    result = invoke("plan", "specs/quickstart.yaml", "--json")
    assert result.exit_code == 0
    plan = json.loads(result.output)
    assert plan["plan_version"] == 1 and len(plan["id"]) == 64
    out = tmp_path / "sub" / "plan.json"
    result = invoke("plan", "specs/quickstart.yaml", "-o", str(out))
    assert result.exit_code == 0
    assert json.loads(out.read_text())["id"] == plan["id"]
    assert [p.name for p in out.parent.iterdir()] == ["plan.json"]


def test_set_override_shows_in_the_plan(in_root):
    result = invoke("plan", "specs/quickstart.yaml", "--set", "training.epochs=1", "--json")
    plan = json.loads(result.output)
    assert plan["training"]["total_steps"] == 75
    assert plan["spec"]["overrides"] == ["training.epochs=1"]


def test_trust_remote_code_is_shown_prominently(tmp_path):
    shutil.copy(ROOT / "specs/data/support-tickets.jsonl", tmp_path / "t.jsonl")
    spec = tmp_path / "s.yaml"
    spec.write_text(
        "ftspec: 1\nname: trc\nmodel: {base: org/model, revision: abc, trust_remote_code: true}\n"
        "data: {train: t.jsonl, split: {validation: 0.1}}\n"
        "format: {kind: prompt_completion, prompt: '{{ text }}', completion: ' {{ queue }}'}\n"
    )
    result = invoke("plan", str(spec))
    assert result.exit_code == 0
    assert "!! trust_remote_code: true" in result.output


def test_trust_remote_code_is_not_mentioned_when_off(in_root):
    assert "trust_remote_code" not in invoke("plan", "specs/quickstart.yaml").output


def test_schema_and_templates():
    result = invoke("schema")
    assert json.loads(result.output)["title"] == "ftspec spec, version 1"
    assert "## `training`" in invoke("schema", "--markdown").output
    assert invoke("templates").output.split() == ["chatml", "instruction", "plain-chat"]


def test_usage_errors_exit_2():
    assert invoke("validate").exit_code == 2
    assert invoke("plan", "a.yaml", "b.yaml").exit_code == 2
    assert invoke("frobnicate").exit_code == 2


def test_every_command_is_in_the_cli_reference():
    reference = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    for name in main.commands:
        assert f"`ftspec {name}" in reference, f"docs/cli.md (the CLI reference) lacks `ftspec {name}`"


def test_diff_command(in_root, tmp_path):
    new = tmp_path / "specs"
    shutil.copytree(ROOT / "specs", new)
    text = (new / "quickstart.yaml").read_text().replace("learning_rate: 1.0e-3", "learning_rate: 5.0e-4")
    (new / "quickstart.yaml").write_text(text)
    (tmp_path / ".git").mkdir()  # the same repository layout as the checkout
    result = invoke("diff", "specs/quickstart.yaml", str(new / "quickstart.yaml"))
    assert result.exit_code == 0, result.output
    assert "training.learning_rate: 0.001 → 0.0005" in result.output
    assert "steps to re-run: train, generate_tuned, eval_tuned, report" in result.output
    assert invoke("diff", "--exit-code", "specs/quickstart.yaml", "specs/quickstart.yaml").exit_code == 0
    assert invoke("diff", "--exit-code", "specs/quickstart.yaml", str(new / "quickstart.yaml")).exit_code == 1
    md = invoke("diff", "--format", "markdown", "specs/quickstart.yaml", str(new / "quickstart.yaml")).output
    assert "| `training.learning_rate` | `0.001` | `0.0005` |" in md
    assert json.loads(invoke("diff", "--format", "json", "specs/quickstart.yaml",
                             str(new / "quickstart.yaml")).output)["rerun"] == ["train", "generate_tuned",
                                                                                "eval_tuned", "report"]
    assert invoke("diff", "specs/quickstart.yaml").exit_code == 2
    out = tmp_path / "a.plan.json"
    invoke("plan", "specs/quickstart.yaml", "-o", str(out))
    assert "no change to the plan" in invoke("diff", str(out), "specs/quickstart.yaml").output


def test_pre_commit_hook_runs_validate():
    import yaml

    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert hooks[0]["id"] == "ftspec-validate" and hooks[0]["entry"].startswith("ftspec validate")
    assert yaml.safe_load((ROOT / "examples/ci/ftspec-pull-request.yml").read_text())["jobs"]["review"]["steps"]


def test_plan_output_to_the_stream_or_refused_in_one_line(in_root, tmp_path):
    import os

    plan = json.loads(invoke("plan", "specs/quickstart.yaml", "--json").output)
    for target in ("-", "/dev/stdout"):
        result = invoke("plan", "specs/quickstart.yaml", "-o", target)
        assert result.exit_code == 0 and json.loads(result.output)["id"] == plan["id"], target
    real = tmp_path / "real.json"
    real.write_text("keep me")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    (tmp_path / "folder").mkdir()
    cases = {link: "is a symbolic link", fifo: "not a regular file", tmp_path / "folder": "is a directory",
             real / "plan.json": "is not a directory"}
    for target, message in cases.items():
        result = invoke("plan", "specs/quickstart.yaml", "-o", str(target))
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 2 and message in lines[0] and str(target) in lines[0], (target, result.output)
    assert real.read_text() == "keep me" and link.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "folder", "link.json", "real.json"]


def test_diff_refuses_plan_files_that_are_not_plans_in_one_line(in_root, tmp_path):
    good = tmp_path / "good.json"
    assert invoke("plan", "specs/quickstart.yaml", "-o", str(good)).exit_code == 0
    plan = json.loads(good.read_text())
    other_version = dict(plan, plan_version=2)
    missing = {k: v for k, v in plan.items() if k not in ("training", "id")}
    edited = dict(plan, name="edited")
    cases = {"list.json": ([plan], "a plan is a JSON object"),
             "version.json": (other_version, "plan_version 2 is not supported"),
             "missing.json": (missing, "training: Field required"),
             "edited.json": (edited, "does not match its content"),
             "text.json": ("not json", "not JSON")}
    for name, (doc, message) in cases.items():
        path = tmp_path / name
        path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
        result = invoke("diff", str(good), str(path))
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 2 and message in lines[0] and name in lines[0], (name, result.output)
        assert "Traceback" not in result.output and len(lines) == 2, result.output  # the line, and the count
    assert invoke("diff", str(good), str(good)).exit_code == 0


def test_plan_to_a_file_writes_the_file_only(in_root, tmp_path):
    """`plan -o FILE` (with or without --json) prints nothing: a user redirecting the
    output wants nothing mixed in; `-o -` prints the plan's JSON once."""
    from conftest import run_cli

    for extra in ([], ["--json"]):
        out = tmp_path / f"plan{len(extra)}.json"
        result = run_cli(["plan", "specs/quickstart.yaml", *extra, "-o", str(out)])
        assert result.returncode == 0, result.stderr
        assert (result.stdout, result.stderr) == ("", ""), extra
        assert json.loads(out.read_text())["plan_version"] == 1
    for extra in ([], ["--json"]):
        result = run_cli(["plan", "specs/quickstart.yaml", *extra, "-o", "-"])
        assert result.returncode == 0 and result.stderr == ""
        assert json.loads(result.stdout)["id"] == json.loads(out.read_text())["id"], extra  # one document, not two


def test_files_written_by_commands_follow_the_umask(in_root, tmp_path):
    """plan -o and lock write through an atomic temporary file (mkstemp makes 0600):
    the result has the mode a plain open() gives under the user's umask."""
    import os
    import subprocess
    import sys

    spec_dir = tmp_path / "specs"
    shutil.copytree(ROOT / "specs", spec_dir)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for umask in (0o022, 0o077):
        out = tmp_path / f"plan-{umask:03o}.json"
        lock = spec_dir / "quickstart.lock.json"
        lock.unlink(missing_ok=True)
        code = (f"import os, sys; os.umask({umask}); from ftspec.cli import main; "
                "sys.argv = ['ftspec'] + sys.argv[1:]; main()")
        for args in (["plan", str(spec_dir / "quickstart.yaml"), "-o", str(out)],
                     ["lock", str(spec_dir / "quickstart.yaml")]):
            result = subprocess.run([sys.executable, "-c", code, *args], cwd=tmp_path, env=env, capture_output=True,
                                    text=True, timeout=120)
            assert result.returncode == 0, result.stderr
        written = sorted(p for p in spec_dir.iterdir() if p.name.endswith(".lock.json"))
        assert written, list(spec_dir.iterdir())
        for path in (out, *written):
            assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask, (path.name, oct(os.stat(path).st_mode), oct(umask))
