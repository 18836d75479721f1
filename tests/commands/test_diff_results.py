"""`ftspec diff --results`: the pull-request comment, rendered for real pairs of runs.

One small repository (a tiny model, 160 support tickets) is committed, trained, changed and
trained again in tmp_path; `ftspec diff --git HEAD SPEC --results` is then checked against the
reviewed golden files in tests/golden/diff/results-*.{md,txt} (regenerate with
`pytest --update-golden`, then read the diff). Three changes: a hyperparameter (both sides
run), the data (both sides run), and one that re-runs nothing.
"""

import os
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT
from helpers import HEAVY, PROBE, TICKETS, run_job

from ftspec.commands import diff as D
from ftspec.plan.compile import compile_spec
from ftspec.store.results import ResultsError, report_key, report_results

GOLDEN = ROOT / "tests" / "golden" / "diff"
SPEC = "specs/job.yaml"

JOB = """\
ftspec: 1
name: job
description: {description}
model: {{kind: tiny, hidden_size: 32, num_layers: 2, num_heads: 4, max_position_embeddings: 256, init_seed: 1}}
data:
  train: tickets.jsonl
  split: {{validation: 0.1, test: 0.25, seed: 1, stratify: queue}}
format:
  kind: prompt_completion
  prompt: "Request: {{{{ text }}}}\\nQueue:"
  completion: " {{{{ queue }}}}"
method: {{kind: sft, adapter: full}}
training: {{max_steps: 120, batch_size: 8, learning_rate: {lr}, max_length: 128, logging_steps: 40}}
eval:
  metrics: [accuracy, f1_macro]
  gates: {{accuracy: ">= 0.5", improvement.accuracy: ">= 0.1"}}
compute: {{device: cpu}}
"""


def job(lr="3.0e-3", description="Route tickets.") -> str:
    return JOB.format(lr=lr, description=description)


def git(root, *args):
    subprocess.run(["git", "-c", "user.name=ftspec", "-c", "user.email=ftspec@example.com", "-c",
                    "commit.gpgsign=false", "-c", "init.defaultBranch=main", "-C", str(root), *args],
                   check=True, capture_output=True)


def tickets(rows: int) -> str:
    return "\n".join(TICKETS.read_text(encoding="utf-8").splitlines()[:rows]) + "\n"


def comment(root, fmt: str) -> str:
    """`ftspec diff --git HEAD specs/job.yaml --results` as a reviewer in the repository runs it
    (what the command prints; test_the_command_prints_the_comment checks that it does)."""
    here = os.getcwd()
    os.chdir(root)
    try:
        d, results = D.diff_revision_results("HEAD", SPEC)
    finally:
        os.chdir(here)
    return D.render_markdown(d, results) if fmt == "markdown" else D.render_text(d, results=results)


def stable(text: str, root, *plans) -> str:
    # Plan ids follow ftspec's version: kept out of the golden files, as in tests/plan/test_diff.py.
    assert str(root) not in text and "/tmp" not in text
    for i, plan in enumerate(plans):
        text = text.replace(plan.id[:12], f"<id-{i}>")
    return text


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """Each case's comment (markdown and text), rendered when the repository is in that state."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    root = tmp_path_factory.mktemp("pr") / "repo"
    (root / "specs").mkdir(parents=True)
    spec = root / SPEC
    (root / "specs/tickets.jsonl").write_text(tickets(160), encoding="utf-8")
    spec.write_text(job(), encoding="utf-8")
    git(root, "init", "-q")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "job")
    base = compile_spec(spec)[0]
    run_job(spec)  # main's run: the old side of every case
    found = {}

    def case(name):
        new = compile_spec(spec)[0]
        found[name] = {fmt: stable(comment(root, fmt), root, base, new) for fmt in ("markdown", "text")}

    spec.write_text(job(lr="1.0e-2"), encoding="utf-8")  # (a) a hyperparameter, run on both sides
    run_job(spec)
    case("hyperparameter")
    spec.write_text(job(), encoding="utf-8")  # (b) the data: 20 rows fewer, run on both sides
    (root / "specs/tickets.jsonl").write_text(tickets(140), encoding="utf-8")
    run_job(spec)
    case("data")
    (root / "specs/tickets.jsonl").write_text(tickets(160), encoding="utf-8")  # (c) nothing re-runs
    spec.write_text(job(description="Route support tickets to a queue."), encoding="utf-8")
    case("no-rerun")
    spec.write_text(job(lr="2.0e-2"), encoding="utf-8")  # a change not run yet
    case("not-run")
    return {"root": root, "found": found, "base": base}


@pytest.mark.parametrize("name", ["hyperparameter", "data", "no-rerun"])
@pytest.mark.parametrize("fmt", ["markdown", "text"])
def test_golden_pull_request_comment(outputs, name, fmt, update_golden):
    text = outputs["found"][name][fmt]
    path = GOLDEN / f"results-{name}.{'md' if fmt == 'markdown' else 'txt'}"
    if update_golden:
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"no golden {path.name}; run pytest --update-golden and review it"
    assert text == path.read_text(encoding="utf-8"), f"{path.name} changed; review, then pytest --update-golden"


def test_a_hyperparameter_change_shows_both_sides_and_their_gates(outputs):
    md = outputs["found"]["hyperparameter"]["markdown"]
    assert "| metric | base | old tuned | new tuned | new − old |" in md
    assert "**Gates:** old ❌ failed" in md and "new ✅ passed 2/2" in md
    assert "<details><summary>Changed values (1)</summary>" in md
    assert "not run yet" not in md


def test_a_change_that_reruns_nothing_says_so(outputs):
    md = outputs["found"]["no-rerun"]["markdown"]
    assert "**Nothing re-runs:** all 7 steps of the new plan are reused" in md
    assert ": the same report on both sides" in md
    assert "steps to re-run: none" in outputs["found"]["no-rerun"]["text"]


def test_a_side_without_results_says_how_to_get_them(outputs):
    md = outputs["found"]["not-run"]["markdown"]
    assert "> new side not run yet: `ftspec run specs/job.yaml`" in md
    assert "new side not run yet: ftspec run specs/job.yaml" in outputs["found"]["not-run"]["text"]


def test_results_are_read_by_the_plans_own_report_key(outputs):
    """A side never shows another plan's numbers: not the run directory's metrics.json (the
    last run there), not an entry whose marker names another key, local or fetched."""
    root, base = outputs["root"], outputs["base"]
    got = report_results(base, root)
    assert got is not None and got.tuned["accuracy"] is not None
    other = compile_spec(root / SPEC, sets=["training.learning_rate=5.0e-2"])[0]
    assert (root / "runs/job/metrics.json").is_file() and report_results(other, root) is None
    store = root / "runs/.ftspec-store/report"
    src = store / report_key(base)[:16]
    dst = store / report_key(other)[:16]
    shutil.copytree(src, dst)  # the base plan's report put under the other plan's key
    try:
        assert report_results(other, root) is None
        asked = []
        with pytest.raises(ResultsError, match="is not the finished report"):
            report_results(other, root, fetch=lambda step, key: asked.append((step, key)) or src)
        assert asked == [("report", report_key(other))]
    finally:
        shutil.rmtree(dst)
    # fetch is asked only when the local store has no entry for the key
    assert report_results(base, root, fetch=lambda step, key: pytest.fail("fetched")) == got


def test_diff_results_stays_light(outputs):
    root = outputs["root"]
    code = PROBE.format(args=["diff", "--git", "HEAD", SPEC, "--results", "--format", "markdown"], heavy=HEAVY)
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60,
                         env={"PYTHONPATH": str(ROOT), "PATH": os.environ["PATH"]})
    assert out.returncode == 0, out.stderr
    assert "ftspec diff: job" in out.stdout
    line = [x for x in out.stdout.splitlines() if x.startswith("HEAVY:")][-1]
    assert line == "HEAVY:", f"diff --results imported {line[6:]}"


def test_api_functions_give_the_same_results(outputs):
    root = outputs["root"]
    d, r = D.diff_revision_results("HEAD", root / SPEC)
    assert r.old.metrics is not None and r.new.metrics is None and r.new.note == "not run yet"
    assert d.rerun  # the working tree is the not-run case


def test_the_command_prints_the_comment(outputs, monkeypatch):
    from click.testing import CliRunner

    from ftspec.cli import main

    monkeypatch.chdir(outputs["root"])
    result = CliRunner().invoke(main, ["diff", "--git", "HEAD", SPEC, "--format", "markdown", "--results"])
    assert result.exit_code == 0, result.output
    assert result.output == comment(outputs["root"], "markdown")
    plain = CliRunner().invoke(main, ["diff", "--git", "HEAD", SPEC])
    assert "results" not in plain.output and "old tuned" not in plain.output
