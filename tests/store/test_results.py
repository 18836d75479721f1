"""ftspec.store.results: a plan's report read from the step store by its own key, and
only an entry that a run wrote there (no link, nothing committed, a metrics.json of the
report's shape)."""

import json
import shutil
import subprocess

import pytest
from helpers import BASE_BODY, write_job

from ftspec.plan.compile import compile_spec, find_root
from ftspec.store.results import ResultsError, report_key, report_results
from ftspec.store.rundir import run_dir_of, store_of

METRICS = {"name": "job", "split": "test", "rows": 4, "headline": "accuracy", "base": {"accuracy": 0.25},
           "tuned": {"accuracy": 0.75}, "delta": {"accuracy": 0.5}, "gates": [], "gates_passed": True}


def plant(tmp_path, metrics=METRICS, key=None):
    """A job's plan and a finished report entry for it (marker naming ``key``, its own by default)."""
    spec = write_job(tmp_path / "repo", BASE_BODY + "method: {kind: sft, adapter: full}\n")
    (tmp_path / "repo/.git").mkdir()
    plan = compile_spec(spec)[0]
    root = find_root(spec)
    entry = store_of(run_dir_of(plan, root)).path("report", report_key(plan))
    entry.mkdir(parents=True)
    (entry / "metrics.json").write_text(json.dumps(metrics) if isinstance(metrics, dict) else metrics)
    (entry / ".ftspec-step.json").write_text(json.dumps({"step": "report", "key": key or report_key(plan)}))
    return plan, root, entry


def test_the_report_of_the_plans_key_is_read(tmp_path):
    plan, root, _ = plant(tmp_path)
    got = report_results(plan, root)
    assert got.tuned == {"accuracy": 0.75} and got.gates_passed is True


def test_an_entry_whose_marker_names_another_key_is_not_the_plans(tmp_path):
    plan, root, _ = plant(tmp_path, key="f" * 64)
    assert report_results(plan, root) is None


def test_an_entry_reached_through_a_link_is_refused(tmp_path):
    plan, root, entry = plant(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    shutil.move(entry, elsewhere)
    entry.symlink_to(elsewhere)
    with pytest.raises(ResultsError, match="is a symbolic link"):
        report_results(plan, root)


def test_an_entry_committed_to_the_repository_is_refused(tmp_path):
    """A pull request that commits runs/.ftspec-store/report/KEY/ cannot forge its own results."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    plan, root, _ = plant(tmp_path)
    shutil.rmtree(root / ".git")
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    subprocess.run(["git", "-C", str(root), "add", "-f", "runs"], check=True)
    with pytest.raises(ResultsError, match="is committed to the repository"):
        report_results(plan, root)


def test_a_metrics_file_of_the_wrong_shape_is_one_line(tmp_path):
    plan, root, _ = plant(tmp_path, metrics={"tuned": "high", "gates_passed": True})
    with pytest.raises(ResultsError) as info:
        report_results(plan, root)
    assert len(info.value.issues) == 1 and "metrics.json" in str(info.value) and "tuned" in str(info.value)


def test_fetch_is_asked_only_for_a_missing_entry_and_is_key_verified(tmp_path):
    plan, root, entry = plant(tmp_path)
    remote = tmp_path / "remote-copy"
    shutil.move(entry, remote)
    asked = []
    got = report_results(plan, root, fetch=lambda step, key: asked.append((step, key)) or remote)
    assert asked == [("report", report_key(plan))] and got.tuned == {"accuracy": 0.75}
    assert report_results(plan, root, fetch=lambda step, key: None) is None
    (remote / ".ftspec-step.json").write_text(json.dumps({"step": "report", "key": "f" * 64}))
    with pytest.raises(ResultsError, match="is not the finished report"):
        report_results(plan, root, fetch=lambda step, key: remote)
