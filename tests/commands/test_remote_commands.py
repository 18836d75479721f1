"""The shared step store from the command line: which store a command uses (--store, then
FTSPEC_STORE, then the spec's output.store), `ftspec push` and `ftspec pull`, and
`ftspec gc --remote`, which removes only what ftspec made and what nothing refers to."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import BASE_BODY, write_job

from ftspec.backends.remotes import open_store
from ftspec.cli import main
from ftspec.commands.remote import store_url
from ftspec.store.promotions import Promotion, Variant
from ftspec.store.rundir import Store, finish_step

BODY = BASE_BODY + "method: {kind: sft, adapter: full}\n"


def clone(base: Path, name: str, body: str = BODY) -> Path:
    (base / name / ".git").mkdir(parents=True)
    return write_job(base / name, body)


def cli(*args: str, cwd: Path | None = None, env: dict | None = None):
    old = os.getcwd()
    try:
        if cwd is not None:
            os.chdir(cwd)
        return CliRunner().invoke(main, list(args), env=env or {}, catch_exceptions=False)
    finally:
        os.chdir(old)


def test_store_option_then_environment_then_spec(monkeypatch):
    monkeypatch.setenv("FTSPEC_STORE", "s3://from-env/x")
    assert store_url("s3://from-option/x", "s3://from-spec/x") == ("s3://from-option/x", "--store")
    assert store_url(None, "s3://from-spec/x") == ("s3://from-env/x", "FTSPEC_STORE")
    monkeypatch.delenv("FTSPEC_STORE")
    assert store_url(None, "s3://from-spec/x") == ("s3://from-spec/x", "output.store")
    assert store_url(None, None) is None


@pytest.mark.filterwarnings("ignore")
def test_output_store_in_the_spec_shares_the_steps(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.delenv("FTSPEC_STORE", raising=False)
    (tmp_path / "shared-store").mkdir()
    body = BODY + "output: {store: ../shared-store}\n"  # relative to each repository's root
    first = cli("run", str(clone(tmp_path, "laptop", body)))
    assert first.exit_code == 0, first.output
    assert first.output.count("uploaded to ") == 7
    second = cli("run", str(clone(tmp_path, "ci", body)))
    assert second.exit_code == 0, second.output
    assert second.output.count("fetched from ") == 7 and ": running (key" not in second.output
    manifest = json.loads((tmp_path / "ci" / "runs" / "job" / "manifest.json").read_text())
    assert manifest["store"] == "../shared-store"


@pytest.mark.filterwarnings("ignore")
def test_push_then_pull_on_another_clone(tmp_path, monkeypatch, s3_store):
    pytest.importorskip("torch")
    laptop = clone(tmp_path, "laptop")
    assert cli("run", str(laptop)).exit_code == 0  # no store: computed here only
    pushed = cli("push", str(laptop), "--store", s3_store)
    assert pushed.exit_code == 0, pushed.output
    assert "uploaded 7 steps; 0 in the shared store already" in pushed.output
    assert "uploaded 0 steps; 7 in the shared store already" in cli("push", str(laptop), "--store", s3_store).output
    ci = clone(tmp_path, "ci")
    pulled = cli("pull", str(ci), env={"FTSPEC_STORE": s3_store})
    assert pulled.exit_code == 0, pulled.output
    assert "fetched 7 steps; 0 here already; 0 not in the shared store" in pulled.output
    again = cli("run", str(ci))
    assert again.exit_code == 0 and ": running (key" not in again.output and "fetched" not in again.output


def test_push_without_a_store_is_one_line(tmp_path, monkeypatch):
    monkeypatch.delenv("FTSPEC_STORE", raising=False)
    got = cli("push", str(clone(tmp_path, "laptop")))
    assert got.exit_code == 2
    assert "no shared store" in got.output and "Traceback" not in got.output


@pytest.mark.parametrize("store, problem", [
    ("s3://AKIA:secret@bucket/x", "no user name or password"),
    ("gs://bucket/x", "not supported"),
])
def test_a_store_ftspec_cannot_use_is_refused_at_its_line(tmp_path, store, problem):
    spec = clone(tmp_path, "laptop", BODY + f"output: {{store: '{store}'}}\n")
    got = cli("validate", str(spec))
    assert got.exit_code == 2
    line = next(i for i, text in enumerate(spec.read_text().splitlines(), 1) if "store:" in text)
    assert f"job.yaml:{line}" in got.output and problem in got.output
    assert "secret" not in got.output


@pytest.mark.parametrize("where", [".", "tickets.jsonl", ".git", "runs/.ftspec-store"])
def test_a_folder_store_is_never_the_repository_an_input_or_the_local_store(tmp_path, where, monkeypatch):
    monkeypatch.delenv("FTSPEC_STORE", raising=False)
    spec = clone(tmp_path, "laptop")
    before = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*"))
    got = cli("push", str(spec), "--store", str(spec.parent / where))
    assert got.exit_code == 2, got.output
    assert "a shared store is a folder of its own" in got.output
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == before


# --------------------------------------------------------------------------- gc --remote

K = {name: (str(i) * 64) for i, name in enumerate(["kept", "promoted", "old", "new"], start=1)}


def shared_with_entries(tmp_path: Path) -> tuple[Path, Path]:
    """A repository whose runs folder refers to one train key, a promotion record naming
    another, and a shared folder store holding four train entries (two of them old)."""
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / "runs" / "job").mkdir(parents=True)
    (repo / "runs" / "job" / "plan.json").write_text(json.dumps({"steps": [{"name": "train", "key": K["kept"]}]}))
    (repo / "promoted").mkdir()
    (repo / "promoted" / "prod.json").write_text(Promotion(
        name="prod", spec="job.yaml", variant=Variant(), plan_id="9" * 64, run_dir="runs/gone", train_key=K["promoted"],
        gates_passed=True, forced=False, promoted_at="2026-01-01T00:00:00+00:00", ftspec_version="0").model_dump_json())
    shared = tmp_path / "shared"
    shared.mkdir()
    remote = open_store(str(shared), repo)
    scratch = Store(tmp_path / "scratch")
    for name, key in K.items():
        partial = scratch.partial("train", key)
        partial.mkdir(parents=True)
        (partial / "model.safetensors").write_bytes(name.encode() * 100)
        finish_step(partial, scratch.path("train", key), "train", key)
        remote.push("train", key, scratch.path("train", key))
    month_ago = time.time() - 40 * 86400
    for name in ("kept", "promoted", "old"):
        for path in (shared / "train" / K[name]).rglob("*"):
            os.utime(path, (month_ago, month_ago))
    # An upload no manifest names (a machine cut off a week ago), and something not ftspec's.
    stray = shared / "train" / K["new"] / ("e" * 32) / "model.safetensors"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"half")
    os.utime(stray, (month_ago, month_ago))
    (shared / "README.txt").write_text("the team's notes")
    return repo, shared


def test_gc_remote_removes_only_what_nothing_refers_to(tmp_path):
    repo, shared = shared_with_entries(tmp_path)
    before = sorted(p.relative_to(shared).as_posix() for p in shared.rglob("*") if p.is_file())
    dry = cli("gc", str(repo / "runs"), "--remote", "--store", str(shared), "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert sorted(p.relative_to(shared).as_posix() for p in shared.rglob("*") if p.is_file()) == before
    assert f"would remove  train/{K['old'][:16]}" in dry.output
    got = cli("gc", str(repo / "runs"), "--remote", "--store", str(shared))
    assert got.exit_code == 0, got.output
    assert not (shared / "train" / K["old"]).exists()
    for name in ("kept", "promoted", "new"):  # referenced, promoted, uploaded in the last 30 days
        assert (shared / "train" / K[name] / "entry.json").is_file()
    assert not (shared / "train" / K["new"] / ("e" * 32)).exists()  # the abandoned upload
    assert (shared / "README.txt").read_text() == "the team's notes"
    assert "left  README.txt: not ftspec's" in got.output
    remote = open_store(str(shared), repo)
    assert remote.fetch("train", K["new"], Store(tmp_path / "check"))


def test_gc_remote_on_s3(tmp_path, s3_store):
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / "runs").mkdir()
    remote = open_store(s3_store, repo)
    scratch = Store(tmp_path / "scratch")
    partial = scratch.partial("train", K["old"])
    partial.mkdir(parents=True)
    (partial / "w").write_bytes(b"1")
    finish_step(partial, scratch.path("train", K["old"]), "train", K["old"])
    remote.push("train", K["old"], scratch.path("train", K["old"]))
    kept = cli("gc", str(repo / "runs"), "--remote", "--store", s3_store)
    assert kept.exit_code == 0 and remote.has("train", K["old"])  # uploaded today: kept
    got = cli("gc", str(repo / "runs"), "--remote", "--older-than", "0", env={"FTSPEC_STORE": s3_store})
    assert got.exit_code == 0, got.output
    assert not remote.has("train", K["old"]) and list(remote.objects.list("train/")) == []


def test_gc_store_without_remote_is_a_usage_error(tmp_path):
    got = cli("gc", str(tmp_path), "--store", "s3://bucket/x")
    assert got.exit_code == 2 and "--store goes with --remote" in got.output


@pytest.mark.filterwarnings("ignore")
def test_diff_results_reads_both_sides_from_the_shared_store(tmp_path, monkeypatch, s3_store):
    pytest.importorskip("torch")
    monkeypatch.delenv("FTSPEC_STORE", raising=False)
    changed = BODY.replace("learning_rate: 1.0e-3", "learning_rate: 2.0e-3")
    laptop = clone(tmp_path, "laptop")
    write_job(laptop.parent, changed, name="job2")
    for name in ("job", "job2"):
        ran = cli("run", str(laptop.parent / f"{name}.yaml"), "--store", s3_store)
        assert ran.exit_code == 0, ran.output
    reviewer = clone(tmp_path, "reviewer")  # a fresh clone: no local store at all
    write_job(reviewer.parent, changed, name="job2")
    args = ["diff", str(reviewer), str(reviewer.parent / "job2.yaml"), "--results", "--format", "markdown"]
    alone = cli(*args)
    assert alone.exit_code == 0 and alone.output.count("not run yet") == 2
    shared = cli(*args, "--store", s3_store)
    assert shared.exit_code == 0, shared.output
    assert "not run yet" not in shared.output
    old = json.loads((tmp_path / "laptop" / "runs" / "job" / "metrics.json").read_text())
    accuracy = old["tuned"]["accuracy"]
    assert f"{accuracy:.3f}"[:4] in shared.output  # the old side's tuned accuracy, as the laptop measured it
    assert not (tmp_path / "reviewer" / "runs").exists()  # read into a temporary folder, nothing written here
    down = cli(*args, env={"FTSPEC_STORE": s3_store, "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:9"})
    assert down.exit_code == 0 and "the shared store is not reachable" in down.output
