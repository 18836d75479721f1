"""`ftspec promote` and `ftspec export --from` (ftspec/commands/promote.py, ftspec/store/promotions.py):
the record a promotion writes in the repository, the refusals (an unfinished run, failed gates
without --force, a bad name, a link on the way), and the export of exactly the promoted model —
refused when the store's model is not the one promoted, and saying how to get a run that is not here."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

from conftest import ROOT, run_cli  # noqa: E402
from helpers import BASE_BODY, HEAVY, PROBE, run_job, write_job  # noqa: E402

from ftspec.catalog import steps  # noqa: E402
from ftspec.commands.export import export, export_promoted  # noqa: E402
from ftspec.commands.promote import promote, promoted_run  # noqa: E402
from ftspec.core.errors import SpecError  # noqa: E402
from ftspec.plan.compile import compile_spec  # noqa: E402
from ftspec.store.promotions import model_sha256, read_record  # noqa: E402
from ftspec.store.rundir import Store, finish_step  # noqa: E402

FAILING = 'eval.gates.accuracy=">= 0.99"'  # a tiny model after 4 steps is far from it: the gate fails


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A repository with two finished runs of one spec: the plain one (its gate passes) and a
    variant made with --set whose gate fails (named by a hash: job@set-…). The variant re-runs
    only the report: the train step is the same."""
    root = tmp_path_factory.mktemp("promote")
    body = BASE_BODY.replace("metrics: [accuracy]}", 'metrics: [accuracy], gates: {accuracy: ">= 0"}}')
    spec = write_job(root, body + "method: {kind: sft, adapter: full}\n")
    plain, _ = run_job(spec)
    failing, _ = run_job(spec, FAILING)
    assert failing.run_dir.name.startswith("job@set-")
    return {"root": root, "spec": spec, "plain": plain, "failing": failing}


def _copy(repo, tmp_path) -> tuple[Path, Path]:
    """A copy of the repository (the run directories' links into the store kept as links)."""
    root = tmp_path / "repo"
    shutil.copytree(repo["root"], root, symlinks=True)
    return root, root / "job.yaml"


def _train_entry(root: Path, plan) -> Path:
    return Store(root / "runs" / ".ftspec-store").path(steps.TRAIN.name, plan.step(steps.TRAIN.name).key)


def _files(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_promote_records_the_finished_run_in_the_repository(repo, tmp_path):
    root, spec = _copy(repo, tmp_path)
    plan = repo["plain"].plan
    done = promote(spec, to="prod")
    path = root / "promoted" / "prod.json"
    assert done.path == path and done.previous is None
    text = path.read_text(encoding="utf-8")
    record = json.loads(text)
    assert text == json.dumps(record, indent=2, sort_keys=True) + "\n"  # reviewable: pretty, sorted, stable
    assert record["plan_id"] == plan.id and record["run_dir"] == "runs/job" and record["spec"] == "job.yaml"
    assert record["variant"] == {"profiles": [], "sets": []}
    assert record["train_key"] == plan.step("train").key
    assert record["model_sha256"] == model_sha256(_train_entry(root, plan))
    assert len(record["model_sha256"]) == 64 and record["bedrock"] is None
    assert [(g["name"], g["passed"]) for g in record["gates"]] == [("accuracy", True)]
    assert isinstance(record["gates"][0]["value"], float)
    assert record["forced"] is False and record["failed_gates"] == [] and record["gates_passed"] is True
    assert record["ftspec_version"] and record["promoted_at"]
    assert "promoted runs/job as prod" in done.describe()


def test_model_sha256_is_over_names_and_bytes_not_the_marker(repo, tmp_path):
    entry = tmp_path / "m"
    shutil.copytree(_train_entry(repo["root"], repo["plain"].plan), entry)
    before = model_sha256(entry)
    (entry / ".ftspec-step.json").write_text('{"finished_at": "another time"}')
    assert model_sha256(entry) == before, "when a step finished is not the model"
    (entry / "config.json").rename(entry / "config2.json")
    assert model_sha256(entry) != before, "a file's name is part of the model"
    os.symlink("/etc/hostname", entry / "linked")
    with pytest.raises(SpecError, match="not a regular file"):
        model_sha256(entry)


def test_failed_gates_are_refused_and_force_records_forced(repo, tmp_path):
    root, spec = _copy(repo, tmp_path)
    variant = repo["failing"].run_dir.name.partition("@")[2]
    with pytest.raises(SpecError, match=r"its gates failed: accuracy .*needs >= 0\.99.*--force") as err:
        promote(Path(f"{spec}@{variant}"), to="prod")
    assert len(err.value.issues) == 1
    assert not (root / "promoted").exists(), "a refused promotion writes nothing"
    # The same variant given as `ftspec run` was given it.
    done = promote(spec, sets=[FAILING], to="prod", force=True)
    record = json.loads(done.path.read_text())
    assert record["forced"] is True and record["gates_passed"] is False and record["failed_gates"] == ["accuracy"]
    assert record["variant"] == {"profiles": [], "sets": [FAILING]}
    assert record["run_dir"] == f"runs/job@{variant}" and record["plan_id"] == repo["failing"].plan.id
    assert "FORCED past failed gates: accuracy" in done.describe()


def test_the_cli_refuses_failed_gates_with_exit_2_and_promotes_a_variant(repo, tmp_path):
    root, spec = _copy(repo, tmp_path)
    variant = repo["failing"].run_dir.name.partition("@")[2]
    refused = run_cli(["promote", f"job.yaml@{variant}", "--to", "prod"], cwd=root)
    assert refused.returncode == 2 and "gates failed: accuracy" in refused.stderr
    assert refused.stderr.count("\n") == 2  # the refusal, then the count of errors
    forced = run_cli(["promote", f"job.yaml@{variant}", "--to", "prod", "--force"], cwd=root)
    assert forced.returncode == 0, forced.stderr
    assert json.loads((root / "promoted/prod.json").read_text())["forced"] is True


def test_re_promoting_a_name_replaces_its_record_and_says_old_and_new(repo, tmp_path):
    root, spec = _copy(repo, tmp_path)
    promote(spec, to="prod")
    again = promote(spec, sets=[FAILING], to="prod", force=True)
    assert again.previous == repo["plain"].plan.id
    assert f"was plan {repo['plain'].plan.short_id}" in again.describe()
    assert read_record(root, "prod").plan_id == repo["failing"].plan.id


def test_a_run_that_is_not_complete_is_refused(repo, tmp_path):
    root, spec = _copy(repo, tmp_path)
    with pytest.raises(SpecError, match=r"train and report steps are not complete; run `ftspec run .*job\.yaml "
                                        r"--set training\.max_steps=2` first"):
        promote(spec, sets=["training.max_steps=2"], to="prod")
    # The report removed from the store: the run is not complete either.
    plan = repo["plain"].plan
    shutil.rmtree(Store(root / "runs/.ftspec-store").path("report", plan.step("report").key))
    with pytest.raises(SpecError, match="report step is not complete"):
        promote(spec, to="prod")
    assert not (root / "promoted").exists()


@pytest.mark.parametrize("name", ["Prod", "../prod", "a/b", "", "x" * 41, ".hidden", "prod.json", "-x", "pr od"])
def test_bad_names_are_refused_in_one_line(repo, tmp_path, name):
    root, spec = _copy(repo, tmp_path)
    with pytest.raises(SpecError, match="is not a promotion name") as err:
        promote(spec, to=name)
    assert len(err.value.issues) == 1
    assert not (root / "promoted").exists() and not (tmp_path / "prod.json").exists()
    with pytest.raises(SpecError, match="is not a promotion name"):
        export_promoted(name, root, output=tmp_path / "out")


def test_the_record_is_never_written_through_a_link(repo, tmp_path):
    root, spec = _copy(repo, tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "promoted").symlink_to(outside)
    with pytest.raises(SpecError, match="symbolic link"):
        promote(spec, to="prod")
    assert list(outside.iterdir()) == []
    (root / "promoted").unlink()
    (root / "promoted").mkdir()
    (root / "promoted/prod.json").symlink_to(outside / "target.json")
    with pytest.raises(SpecError, match="not a regular file"):
        promote(spec, to="prod")
    assert list(outside.iterdir()) == [] and (root / "promoted/prod.json").is_symlink()


def test_export_from_exports_the_same_model_as_export_spec(repo, tmp_path):
    root, spec = _copy(repo, tmp_path)
    promote(spec, to="prod")
    by_spec = export(spec, output=tmp_path / "by-spec", echo=lambda _: None)
    by_name = export_promoted("prod", root, output=tmp_path / "by-name", echo=lambda _: None)
    assert by_name.plan.id == by_spec.plan.id == repo["plain"].plan.id
    assert _files(tmp_path / "by-name") == _files(tmp_path / "by-spec")
    # The CLI finds the record from the current directory; SPEC and --from are exclusive.
    cli = run_cli(["export", "--from", "prod", "-o", str(tmp_path / "cli")], cwd=root)
    assert cli.returncode == 0, cli.stderr
    assert _files(tmp_path / "cli") == _files(tmp_path / "by-spec")
    both = run_cli(["export", "job.yaml", "--from", "prod", "-o", str(tmp_path / "x")], cwd=root)
    assert both.returncode == 2 and "not both" in both.stderr and not (tmp_path / "x").exists()


def test_a_tampered_model_in_the_store_is_refused(repo, tmp_path):
    root, spec = _copy(repo, tmp_path)
    promote(spec, to="prod")
    weights = _train_entry(root, repo["plain"].plan) / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(SpecError, match="is not the one promoted as 'prod'") as err:
        export_promoted("prod", root, output=tmp_path / "out", echo=lambda _: None)
    assert len(err.value.issues) == 1 and not (tmp_path / "out").exists()


def test_a_run_that_is_not_here_says_how_to_get_it(repo, tmp_path):
    root, spec = _copy(repo, tmp_path)
    promote(spec, sets=[FAILING], to="dev", force=True)
    variant_dir = repo["failing"].run_dir.name
    # The run directory now holds another plan (the spec's variant was run again, changed).
    (root / "runs" / variant_dir / "plan.json").write_text(repo["plain"].plan.to_json())
    with pytest.raises(SpecError) as err:
        promoted_run("dev", root)
    text = str(err.value)
    assert f"holds plan {repo['plain'].plan.short_id} now" in text
    assert "ftspec run job.yaml --set" in text and "shared step store" in text
    # Gone altogether: a fresh clone, or after gc.
    shutil.rmtree(root / "runs")
    with pytest.raises(SpecError, match=r"is not in runs/job@set-.*ftspec run job\.yaml --set"):
        promoted_run("dev", root)


def test_a_missing_model_in_the_store_says_how_to_get_it(repo, tmp_path):
    root, spec = _copy(repo, tmp_path)
    promote(spec, to="prod")
    shutil.rmtree(_train_entry(root, repo["plain"].plan))
    with pytest.raises(SpecError, match=r"is not in the step store .*run `ftspec run job\.yaml`"):
        promoted_run("prod", root)


def test_an_edited_record_is_refused_in_one_line(repo, tmp_path):
    root, spec = _copy(repo, tmp_path)
    done = promote(spec, to="prod")
    record = json.loads(done.path.read_text())
    for change, message in (({"run_dir": "../elsewhere"}, "without '..'"), ({"name": "other"}, "not 'prod'"),
                            ({"spec": "job.yaml\x1b[2J"}, "not printable"), ({"extra": 1}, "extra"),
                            ({"model_sha256": "0" * 64}, "is not the one promoted")):
        done.path.write_text(json.dumps({**record, **change}))
        with pytest.raises(SpecError, match=message) as err:
            promoted_run("prod", root)
        assert len(err.value.issues) == 1


def test_export_from_checks_its_target_before_importing_torch(repo, tmp_path):
    root, spec = _copy(repo, tmp_path)
    promote(spec, to="prod")
    for target in ("runs/job", "promoted", "job.yaml"):
        args = ["export", "--from", "prod", "-o", target, "--force"]
        probe = subprocess.run([sys.executable, "-c", PROBE.format(args=args, heavy=HEAVY)], cwd=root,
                               capture_output=True, text=True, timeout=120,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert "HEAVY:\n" in probe.stdout or probe.stdout.strip().endswith("HEAVY:"), probe.stdout + probe.stderr
        assert "--output" in probe.stderr or "--output" in probe.stdout
    assert (root / "promoted/prod.json").is_file() and (root / "runs/job/plan.json").is_file()


def test_a_bedrock_run_records_its_custom_model_arn_and_is_not_exported(tmp_path):
    root = tmp_path / "repo"
    shutil.copytree(ROOT / "specs", root / "specs")
    (root / ".git").mkdir()
    spec = root / "specs/bedrock-nova.yaml"
    plan, _ = compile_spec(spec)
    run_dir = root / plan.output.dir
    run_dir.mkdir(parents=True)
    (run_dir / "plan.json").write_text(plan.to_json())
    store = Store(run_dir.parent / ".ftspec-store")
    arn = "arn:aws:bedrock:us-east-1:123456789012:custom-model/amazon.nova-micro-v1:0:128k/abc123"
    outputs = {"train": ("bedrock-model.json", {"custom_model_arn": arn, "job_arn": "arn:aws:bedrock:job/1",
                                                "region": "us-east-1"}),
               "report": ("metrics.json", {"metrics_version": 1, "gates": [], "gates_passed": True})}
    for name, (file, content) in outputs.items():  # what a finished Bedrock run leaves (no AWS here)
        key = plan.step(name).key
        partial = store.partial(name, key)
        partial.mkdir(parents=True)
        (partial / file).write_text(json.dumps(content))
        finish_step(partial, store.path(name, key), name, key)
    done = promote(spec, to="prod")
    record = json.loads(done.path.read_text())
    assert record["bedrock"] == {"custom_model_arn": arn, "job_arn": "arn:aws:bedrock:job/1", "region": "us-east-1"}
    assert record["model_sha256"] is None and record["plan_id"] == plan.id
    assert done.path == root / "promoted/prod.json"
    with pytest.raises(SpecError, match=r"Amazon Bedrock custom model .*no weights here to export"):
        export_promoted("prod", root, output=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_runs_folder_that_is_a_link_is_not_read_through(repo, tmp_path):
    root, spec = _copy(repo, tmp_path)
    promote(spec, to="prod")
    elsewhere = tmp_path / "elsewhere"
    (root / "runs").rename(elsewhere)
    (root / "runs").symlink_to(elsewhere)  # a pull request can commit one pointing anywhere
    with pytest.raises(SpecError, match="is a symbolic link"):
        promoted_run("prod", root)
    with pytest.raises(SpecError, match="resolves outside the spec's repository"):  # the compile refuses it first
        promote(spec, to="staging")
    assert not (root / "promoted/staging.json").exists()


def test_promote_imports_no_heavy_library(repo, tmp_path):
    root, _ = _copy(repo, tmp_path)
    probe = subprocess.run([sys.executable, "-c", PROBE.format(args=["promote", "job.yaml", "--to", "prod"],
                                                               heavy=HEAVY)],
                           cwd=root, capture_output=True, text=True, timeout=120,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert probe.stdout.strip().endswith("HEAVY:"), probe.stdout + probe.stderr
    assert (root / "promoted/prod.json").is_file()
