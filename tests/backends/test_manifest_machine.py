"""manifest.json's `machine`: what the plan's `auto` rules became on the machine a run ran
on (the precision and the CPU threads the steps computed with), and nothing resolved, nor
torch imported, when every step was complete already."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import ROOT
from helpers import BASE_BODY, HEAVY, run_job, write_job

from ftspec.plan import compute

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from transformers import TrainerCallback  # noqa: E402


class _Seen(TrainerCallback):
    """What the trainer computed with: its precision flags and torch's threads."""

    def __init__(self):
        self.seen = []

    def on_train_begin(self, args, state, control, **kwargs):
        precision = "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32"
        self.seen.append((precision, torch.get_num_threads()))


@pytest.fixture
def job(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # `threads: auto`, as on a shared machine: 1 here
    # A CPU with AVX512-BF16, so that `precision: auto` resolves to bf16 (not the fp32 a default would show).
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n\n", encoding="utf-8")
    monkeypatch.setattr(compute, "CPUINFO", cpuinfo)
    body = BASE_BODY.replace("max_steps: 4", "max_steps: 2").replace("limit: 8", "limit: 2")
    return write_job(tmp_path, body + "method: {kind: sft, adapter: full}\n")


def test_the_manifest_records_the_precision_and_threads_the_steps_ran_with(job):
    seen = _Seen()
    ctx, _ = run_job(job, callbacks=[seen])
    found = json.loads((ctx.run_dir / "manifest.json").read_text(encoding="utf-8"))["machine"]
    assert seen.seen == [("bf16", 1)]
    assert (found["precision"], found["threads"]) == seen.seen[0]
    assert found["precision_setting"] == "auto" and found["threads_setting"] == "auto"
    assert found["device"] == "cpu" and found["cpu_bf16"] == ["avx512_bf16"] and found["platform"]

    # Nothing to run: nothing resolved (the manifest says so), and no torch imported for it.
    code = ("import sys\nfrom ftspec.cli import main\n"
            f"try:\n    main(['run', {str(job)!r}], standalone_mode=False)\nexcept SystemExit:\n    pass\n"
            f"print('HEAVY:' + ','.join(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=job.parent, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    assert "up to date" in out.stdout and out.stdout.splitlines()[-1] == "HEAVY:", out.stdout[-2000:]
    again = json.loads((ctx.run_dir / "manifest.json").read_text(encoding="utf-8"))
    assert again["status"] == "finished" and {s["state"] for s in again["steps"]} == {"reused"}
    assert again["machine"]["platform"] and again["machine"]["precision"] is None
    assert again["machine"]["threads"] is None and again["machine"]["device"] is None
