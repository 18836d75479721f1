"""Re-runs do only the work a change requires; a step cut off before its marker is
never taken for complete; the lock file catches every kind of drift."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")
pytest.importorskip("trl")

from click.testing import CliRunner  # noqa: E402
from helpers import BASE_BODY, write_job  # noqa: E402

from ftspec.backends.executor import execute  # noqa: E402
from ftspec.catalog import steps  # noqa: E402
from ftspec.cli import main  # noqa: E402
from ftspec.commands import lock as L  # noqa: E402
from ftspec.plan.compile import compile_spec, find_root  # noqa: E402
from ftspec.store import rundir

BODY = BASE_BODY.replace("max_steps: 4", "max_steps: 2") + "method: {kind: sft, adapter: full}\n"


def _run(spec, *sets, force=frozenset()):
    plan, _ = compile_spec(spec, sets=sets)
    lines: list[str] = []
    execute(plan, find_root(spec), echo=lines.append, force=set(force))
    text = "\n".join(lines)
    return {name for name in steps.BY_NAME if f"{name}: running" in text}


ALL = set(["prepare_data", "generate_base", "eval_base", "train", "generate_tuned", "eval_tuned", "report"])


def test_which_change_reruns_which_steps(tmp_path):
    spec = write_job(tmp_path, BODY)
    assert _run(spec) == ALL
    assert _run(spec) == set(), "an unchanged spec runs nothing"
    assert _run(spec, "eval.max_new_tokens=8") == {"generate_base", "eval_base", "generate_tuned", "eval_tuned",
                                                   "report"}, "eval-only: the model is reused"
    assert _run(spec, "eval.max_new_tokens=8",
                "training.learning_rate=0.002") == {"train", "generate_tuned", "eval_tuned", "report"}
    # gates are scored in the report step, and only the report reads them
    assert _run(spec, "eval.max_new_tokens=8", "training.learning_rate=0.002",
                "eval.gates={accuracy: '>= 0.0'}") == {"report"}
    with open(tmp_path / "tickets.jsonl", "a") as fh:
        fh.write('{"id": "new", "text": "my invoice is wrong", "queue": "billing"}\n')
    assert _run(spec) == ALL, "new data: everything downstream runs again"
    assert _run(spec, force={"train"}) == {"train"}
    assert _run(spec, force=ALL) == ALL


def test_a_step_cut_off_before_its_marker_runs_again(tmp_path, monkeypatch):
    spec = write_job(tmp_path, BODY)
    real = rundir.finish_step

    def crash_on_report(partial, final, name, key):
        if name == "report":
            assert (partial / "metrics.json").exists()  # the outputs are all there...
            raise OSError("disk full")  # ...but the marker never gets written
        return real(partial, final, name, key)

    import ftspec.backends.executor as run_module

    monkeypatch.setattr(run_module, "finish_step", crash_on_report)
    with pytest.raises(OSError):
        _run(spec)
    run_dir = tmp_path / "runs/job"
    plan, _ = compile_spec(spec)
    store = rundir.store_of(run_dir)
    assert (store.partial("report", plan.step("report").key) / "metrics.json").exists()
    assert not (run_dir / "report").exists() and not store.path("report", plan.step("report").key).exists()
    assert rundir.step_states(plan, run_dir)["report"] == "missing"
    monkeypatch.setattr(run_module, "finish_step", real)
    assert _run(spec) == {"report"}
    assert rundir.step_states(plan, run_dir) == {n: "done" for n in ALL}


def test_status_and_runs(tmp_path, monkeypatch):
    spec = write_job(tmp_path, BODY)
    _run(spec)
    monkeypatch.chdir(tmp_path)
    out = CliRunner().invoke(main, ["status", str(spec), "--set", "eval.max_new_tokens=8"]).output
    lines = {l.split()[0]: l.split()[-1] for l in out.splitlines()[1:]}
    # An experiment's own run directory: what the store holds for its keys is done, the rest not computed yet.
    assert lines == {"prepare_data": "done", "generate_base": "missing", "eval_base": "missing", "train": "done",
                     "generate_tuned": "missing", "eval_tuned": "missing", "report": "missing"}
    # A run directory whose links show other keys: stale.
    spec.write_text(spec.read_text().replace("max_new_tokens: 12", "max_new_tokens: 8"))
    out = CliRunner().invoke(main, ["status", str(spec)]).output
    lines = {l.split()[0]: l.split()[-1] for l in out.splitlines()[1:]}
    assert lines == {"prepare_data": "done", "generate_base": "stale", "eval_base": "stale", "train": "done",
                     "generate_tuned": "stale", "eval_tuned": "stale", "report": "stale"}
    out = CliRunner().invoke(main, ["runs"]).output
    assert out.startswith("job  ") and "finished" in out and "accuracy" in out


def test_lock_catches_every_kind_of_drift(tmp_path, monkeypatch):
    spec = write_job(tmp_path, BODY.replace("prompt: \"Request: {{ text }}\\nQueue:\"", "prompt: {file: prompt.j2}"))
    (tmp_path / "prompt.j2").write_text("Request: {{ text }}\nQueue:")
    runner = CliRunner()
    result = runner.invoke(main, ["lock", str(spec)])
    assert result.exit_code == 0, result.output
    lock_file = tmp_path / "job.lock.json"
    locked = json.loads(lock_file.read_text())
    assert locked["model"]["kind"] == "tiny" and locked["templates"]["format.templates.prompt"]

    def current(*sets):
        plan, _ = compile_spec(spec, sets=sets)
        return L.build(plan, find_root(spec), None, locked)

    assert L.drift(locked, current()) == []
    # model config
    assert [k for k, *_ in L.drift(locked, current("model.hidden_size=64"))] == ["model.config_sha256"]
    # template
    (tmp_path / "prompt.j2").write_text("Request: {{ text }}\nAnswer:")
    assert [k for k, *_ in L.drift(locked, current())] == ["templates.format.templates.prompt"]
    (tmp_path / "prompt.j2").write_text("Request: {{ text }}\nQueue:")
    # data
    with open(tmp_path / "tickets.jsonl", "a") as fh:
        fh.write('{"id": "x", "text": "late", "queue": "billing"}\n')
    assert [k for k, *_ in L.drift(locked, current())] == ["data.train.sha256"]
    # a library version
    monkeypatch.setattr(L, "versions", lambda: {**locked["versions"], "trl": "0.0.1"})
    drifted = L.drift(locked, current())
    assert ("versions.trl", locked["versions"]["trl"], "0.0.1") in drifted
    # run --locked refuses, naming what drifted, and runs nothing
    result = runner.invoke(main, ["run", "--locked", str(spec)])
    assert result.exit_code == 2
    assert "data.train.sha256: drifted from the lock: locked" in result.output
    assert "versions.trl: drifted from the lock: locked" in result.output
    assert not (tmp_path / "runs").exists()


def test_lock_of_a_local_model_hashes_its_content(tmp_path):
    from ftspec.plan.model import TinyModel
    from ftspec.runtime.models import build_tiny

    tiny = {"architecture": "llama", "hidden_size": 32, "num_layers": 1, "num_heads": 4, "num_kv_heads": 4,
            "intermediate_size": 64, "max_position_embeddings": 128, "tokenizer": {"kind": "byte"}, "init_seed": 0}
    build_tiny(TinyModel.model_validate({"kind": "tiny", **tiny}), [], tmp_path / "m")
    spec = write_job(tmp_path, BODY.replace(BASE_BODY.split("data:")[0], "\nmodel: {base: ./m}\n"))
    plan, _ = compile_spec(spec)
    locked = L.build(plan, find_root(spec), None)
    assert locked["model"]["kind"] == "local" and len(locked["model"]["content_sha256"]) == 64
    (tmp_path / "m" / "config.json").write_text((tmp_path / "m" / "config.json").read_text().replace("128", "129"))
    assert [k for k, *_ in L.drift(locked, L.build(plan, find_root(spec), None))] == ["model.content_sha256"]


def test_lock_pins_hub_revisions_and_run_locked_uses_them(tmp_path):
    body = BODY.replace(BASE_BODY.split("data:")[0], "\nmodel: {base: org/model}\n")
    spec = write_job(tmp_path, body)
    plan, _ = compile_spec(spec)
    calls = []

    def resolver(kind, repo, revision):
        calls.append((kind, repo, revision))
        return "c0ffee" * 6 + "abcd"

    locked = L.build(plan, find_root(spec), resolver)
    assert calls == [("model", "org/model", None)]
    assert locked["model"] == {"kind": "hub", "id": "org/model", "requested": None, "commit": "c0ffee" * 6 + "abcd"}
    assert L.pinned_sets(locked) == ['model.revision="' + "c0ffee" * 6 + 'abcd"']
    # quoted, a commit made of digits stays text when the --set is read back
    digits = dict(locked, model={**locked["model"], "commit": "1234567890" * 4})
    assert compile_spec(spec, sets=L.pinned_sets(digits))[0].model.revision == "1234567890" * 4
    # Without a resolver (run --locked) nothing is looked up and nothing drifts.
    assert L.drift(locked, L.build(plan, find_root(spec), None, locked)) == []
    # Pinning a different revision in the spec is drift.
    pinned, _ = compile_spec(spec, sets=["model.revision=v2"])
    assert [k for k, *_ in L.drift(locked, L.build(pinned, find_root(spec), None, locked))] == ["model.requested"]


def test_run_locked_without_a_lock_file_is_a_clear_error(tmp_path):
    spec = write_job(tmp_path, BODY)
    result = CliRunner().invoke(main, ["run", "--locked", str(spec)])
    assert result.exit_code == 2
    assert "no lock file; write one with `ftspec lock SPEC`" in result.output
