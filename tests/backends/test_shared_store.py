"""Runs that share a step store (ftspec.backends.shared) through a real S3 API served on a
local port (moto's server, tests/conftest.py): what one clone computed another fetches and
does not compute; two processes racing on one key both finish with one entry left; an entry
whose bytes changed is refused, computed again and replaced; a store that is down or refuses
access is one warning and a run here; a train step cut off on one machine resumes from its
checkpoint on another; no credential is written anywhere."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("trl")

from conftest import ROOT  # noqa: E402
from helpers import BASE_BODY, preempted_at, write_job  # noqa: E402

from ftspec.backends.executor import execute  # noqa: E402
from ftspec.backends.remotes import open_store  # noqa: E402
from ftspec.plan.compile import compile_spec, find_root  # noqa: E402

BODY = BASE_BODY + "method: {kind: sft, adapter: full}\n"


def clone(base: Path, name: str, body: str = BODY) -> Path:
    """A repository of its own (its own local store), at another path: the spec."""
    (base / name / ".git").mkdir(parents=True)
    return write_job(base / name, body)


def run(spec: Path, url: str | None, callbacks=None):
    plan, _ = compile_spec(spec)
    lines: list[str] = []
    remote = open_store(url, find_root(spec)) if url else None
    result = execute(plan, find_root(spec), echo=lines.append, callbacks=callbacks, remote=remote)
    return result, lines


def states(result) -> dict[str, str]:
    return {s.name: s.state for s in result.steps}


def files_sha(folder: Path) -> dict[str, str]:
    # training_args.bin is the trainer's pickle of its arguments, which name the run's own folders
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name not in (".ftspec-step.json", "training_args.bin")}


def entries(url: str, s3) -> dict[str, int]:
    """Every entry in the bucket: its step/key, and how many uploads are under it."""
    bucket, prefix = url[5:].split("/", 1)
    names = [o["Key"][len(prefix) + 1:] for page in s3.client().get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=prefix + "/") for o in page.get("Contents", [])]
    out: dict[str, set] = {}
    for name in names:
        step, key, rest = name.split("/", 2)
        out.setdefault(f"{step}/{key}", set()).add(rest.split("/", 1)[0])
    return {k: len(v - {"entry.json"}) for k, v in out.items() if "entry.json" in v}


def test_a_second_clone_computes_nothing_the_store_has(tmp_path, s3_store, s3_server):
    first, _ = run(clone(tmp_path, "laptop"), s3_store)
    assert set(states(first).values()) == {"ran"}
    ci = clone(tmp_path, "ci")
    second, lines = run(ci, s3_store)
    assert states(second) == {name: "fetched" for name in states(first)}  # counted: nothing ran
    assert second.ran == []
    assert sum("fetched from s3://" in line for line in lines) == len(first.steps)
    assert second.report["tuned"] == first.report["tuned"]
    assert files_sha(second.step_dir("train")) == files_sha(first.step_dir("train"))
    manifest = json.loads((second.run_dir / "manifest.json").read_text())
    assert manifest["store"] == s3_store
    assert {e["state"] for e in manifest["steps"]} == {"fetched"}
    assert set(entries(s3_store, s3_server).values()) == {1}
    # And a third run there reuses its own copies, fetching nothing again.
    third, _ = run(ci, s3_store)
    assert set(states(third).values()) == {"reused"}


DRIVER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from ftspec.backends.executor import execute
    from ftspec.backends.remotes import open_store
    from ftspec.plan.compile import compile_spec, find_root
    spec, url, go = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    plan, _ = compile_spec(spec)
    while not go.exists():
        time.sleep(0.01)
    result = execute(plan, find_root(spec), echo=lambda line: print(line, flush=True),
                     remote=open_store(url, find_root(spec)))
    print("STATES", " ".join(f"{s.name}={s.state}" for s in result.steps))
""")


def test_two_processes_racing_on_one_key_both_finish_with_one_entry(tmp_path, s3_store, s3_server):
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", DRIVER, str(clone(tmp_path, name)), s3_store, str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
             for name in ("ci-1", "ci-2")]
    go.touch()  # both compiled; now both start at once
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    reports = [json.loads((tmp_path / n / "runs" / "job" / "metrics.json").read_text()) for n in ("ci-1", "ci-2")]
    assert reports[0]["tuned"] == reports[1]["tuned"]
    weights = [files_sha(tmp_path / n / "runs" / "job" / "model") for n in ("ci-1", "ci-2")]
    assert weights[0] == weights[1]
    found = entries(s3_store, s3_server)
    assert len(found) == 7 and set(found.values()) == {1}  # one entry per key, one upload under it


def test_an_entry_whose_bytes_changed_is_refused_computed_and_replaced(tmp_path, s3_store, s3_server):
    first, _ = run(clone(tmp_path, "laptop"), s3_store)
    key = first.outcome("eval_base").key
    bucket, prefix = s3_store[5:].split("/", 1)
    client = s3_server.client()
    body = json.loads(client.get_object(Bucket=bucket, Key=f"{prefix}/eval_base/{key}/entry.json")["Body"].read())
    name = f"{prefix}/eval_base/{key}/{body['upload']}/metrics.json"
    data = client.get_object(Bucket=bucket, Key=name)["Body"].read()
    client.put_object(Bucket=bucket, Key=name, Body=data.replace(b"accuracy", b"accuraci"))
    second, lines = run(clone(tmp_path, "ci"), s3_store)
    assert states(second)["eval_base"] == "ran"
    assert [s for s, st in states(second).items() if st == "ran"] == ["eval_base"]
    refused = [line for line in lines if "refused" in line]
    assert len(refused) == 1 and "eval_base" in refused[0] and "sha256" in refused[0]
    assert second.report["base"] == first.report["base"]
    third, _ = run(clone(tmp_path, "again"), s3_store)  # the replaced entry fetches
    assert set(states(third).values()) == {"fetched"}


def test_a_store_that_is_down_is_one_warning_and_a_run_here(tmp_path, s3_store, monkeypatch):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{port}")
    result, lines = run(clone(tmp_path, "laptop"), s3_store)
    assert set(states(result).values()) == {"ran"}
    warnings = [line for line in lines if line.startswith("warning:")]
    assert len(warnings) == 1 and "computed here" in warnings[0]
    assert json.loads((result.run_dir / "manifest.json").read_text())["status"] == "finished"


def test_a_store_that_refuses_access_is_one_warning_and_a_run_here(tmp_path, s3_store, monkeypatch):
    import moto.settings

    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)
    result, lines = run(clone(tmp_path, "laptop"), s3_store)
    assert set(states(result).values()) == {"ran"}
    warnings = [line for line in lines if line.startswith("warning:")]
    assert len(warnings) == 1 and "InvalidAccessKeyId" in warnings[0]


def test_a_train_step_cut_off_resumes_on_another_machine(tmp_path, s3_store, s3_server):
    body = BODY.replace("max_steps: 4", "max_steps: 6")
    with pytest.raises(SystemExit):
        run(clone(tmp_path, "spot-1", body), s3_store, callbacks=[preempted_at(3)])
    second, lines = run(clone(tmp_path, "spot-2", body), s3_store)
    assert any("checkpoint-2 fetched from s3://" in line for line in lines), lines
    assert json.loads((second.step_dir("train") / "train.json").read_text())["resumed_from"] == "checkpoint-2"
    # What it trained is what one uninterrupted run trains (the weights; its log says it resumed).
    whole, _ = run(clone(tmp_path, "alone", body), None)
    weights = {k: v for k, v in files_sha(second.step_dir("train")).items() if k.endswith(".safetensors")}
    assert weights and weights == {k: v for k, v in files_sha(whole.step_dir("train")).items()
                                   if k.endswith(".safetensors")}
    # The finished step's checkpoints are gone from the store.
    bucket, prefix = s3_store[5:].split("/", 1)
    listed = s3_server.client().list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/train/")
    assert not [o["Key"] for o in listed.get("Contents", []) if "/checkpoints/" in o["Key"]]


def test_no_credential_is_written_anywhere(tmp_path, s3_store, s3_server):
    secret, token = f"planted-secret-{uuid.uuid4().hex}", f"planted-token-{uuid.uuid4().hex}"
    spec = clone(tmp_path, "laptop")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AWS_SECRET_ACCESS_KEY": secret, "AWS_SESSION_TOKEN": token,
           "FTSPEC_STORE": s3_store}
    runs = [subprocess.run([sys.executable, "-m", "ftspec", "run", str(spec)], cwd=spec.parent, env=env,
                           capture_output=True, text=True, timeout=600) for _ in range(2)]
    env["AWS_ENDPOINT_URL_S3"] = "http://127.0.0.1:9"  # and a failure's messages (a clone with nothing yet)
    other = clone(tmp_path, "other")
    runs.append(subprocess.run([sys.executable, "-m", "ftspec", "pull", str(other)], cwd=other.parent, env=env,
                               capture_output=True, text=True, timeout=600))
    assert [r.returncode for r in runs] == [0, 0, 1], [r.stderr[-2000:] for r in runs]
    said = "".join(r.stdout + r.stderr for r in runs)
    assert "uploaded to s3://" in said and "fetched from" not in runs[0].stdout
    bucket, prefix = s3_store[5:].split("/", 1)
    client = s3_server.client()
    blobs = [client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
             for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
             for o in page.get("Contents", [])]
    written = [p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and not p.is_symlink()]
    for planted in (secret, token):
        assert planted not in said
        assert not [b for b in blobs + written if planted.encode() in b]


def test_a_run_that_fetches_every_step_imports_no_training_library(tmp_path, s3_store):
    run(clone(tmp_path, "laptop"), s3_store)
    probe = DRIVER.replace("    while not go.exists():\n        time.sleep(0.01)\n", "") + textwrap.dedent("""
        heavy = sorted(m for m in ("torch", "transformers", "trl", "peft") if m in sys.modules)
        print("HEAVY", ",".join(heavy) or "none")
    """)
    ci = clone(tmp_path, "ci")
    out = subprocess.run([sys.executable, "-c", probe, str(ci), s3_store, "unused"], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "HEAVY none" in out.stdout and "=fetched" in out.stdout and "=ran" not in out.stdout
