"""Secrets come only from the environment and never appear in a plan, a lock, a
manifest, a log, a report or an error message."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("trl")

from conftest import ROOT  # noqa: E402
from helpers import BASE_BODY, write_job  # noqa: E402

SECRETS = {
    "HF_TOKEN": "hf_FAKEsecretTOKEN1234567890abcd",
    "HUGGING_FACE_HUB_TOKEN": "hf_FAKEsecretHUBTOKEN0987654321",
    "AWS_ACCESS_KEY_ID": "AKIAFAKEKEYID123456",
    "AWS_SECRET_ACCESS_KEY": "fakeAwsSecretAccessKey/0123456789abcdefXYZ",
    "AWS_SESSION_TOKEN": "FakeSessionTokenQWERTYUIOP",
    "WANDB_API_KEY": "fakewandbkey0123456789abcdef0123456789ab",
    "OPENAI_API_KEY": "sk-fakeOpenAIkey0123456789",
}


def _ftspec(args, cwd):
    env = dict(os.environ)
    env.update(SECRETS)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "ftspec", *args], cwd=cwd, env=env, capture_output=True, timeout=600)


def _leaks(blob: bytes) -> list[str]:
    return [name for name, value in SECRETS.items() if value.encode() in blob]


def test_no_secret_reaches_any_file_or_output(tmp_path):
    body = BASE_BODY.replace("max_steps: 4", "max_steps: 2") + "method: {kind: sft, adapter: {kind: lora, r: 2}}\n"
    spec = write_job(tmp_path, body)
    outputs = []
    for args in (["validate", str(spec)], ["plan", str(spec), "--json", "-o", str(tmp_path / "plan.json")],
                 ["lock", str(spec)], ["run", str(spec)], ["run", "--locked", str(spec)],
                 ["diff", str(spec), str(spec), "--format", "json"], ["status", str(spec)], ["runs"],
                 ["validate", str(tmp_path / "missing.yaml")], ["run", str(spec), "--set", "training.epochs=oops"]):
        result = _ftspec(args, tmp_path)
        outputs.append(result.stdout + result.stderr)
        assert not _leaks(result.stdout + result.stderr), f"ftspec {args[0]} printed a secret"
    assert any(b"ok" in o for o in outputs)
    files = [p for p in Path(tmp_path).rglob("*") if p.is_file()]
    assert any(p.name == "model.safetensors" or p.name == "adapter_model.safetensors" for p in files), "the job ran"
    assert any(p.name == "training_args.bin" for p in files), "the trainer's pickled arguments are searched too"
    leaked = {str(p.relative_to(tmp_path)): _leaks(p.read_bytes()) for p in files}
    assert {k: v for k, v in leaked.items() if v} == {}
