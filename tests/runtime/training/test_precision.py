"""compute.precision: `auto` is a rule the plan keeps (the same plan on every machine) and
each run applies to its CPU or GPU; bf16 is autocast over fp32 weights, and its training
losses stay within a stated tolerance of fp32's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import BASE_BODY, run_job, write_job

from ftspec.plan import compute
from ftspec.plan.compile import compile_spec
from ftspec.plan.describe import render_plan

FLAGS = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f {extra}\n\n"


@pytest.fixture
def cpuinfo(tmp_path, monkeypatch):
    """Point the CPU-flag reader at a made-up /proc/cpuinfo with these extra flags."""
    def make(extra: str) -> Path:
        path = tmp_path / f"cpuinfo-{len(extra)}"
        path.write_text(FLAGS.format(extra=extra), encoding="utf-8")
        monkeypatch.setattr(compute, "CPUINFO", path)
        return path
    return make


@pytest.mark.parametrize("extra,flags,value", [
    ("avx512_bf16", ("avx512_bf16",), "bf16"),
    ("amx_tile amx_bf16", ("amx_bf16",), "bf16"),
    ("avx512_vnni", (), "fp32"),  # AVX-512 without its bf16 dot products
])
def test_auto_precision_on_the_cpu_follows_its_bf16_flags(cpuinfo, extra, flags, value):
    cpuinfo(extra)
    assert compute.cpu_bf16_flags() == flags
    got, why = compute.auto_precision("cpu")
    assert got == value
    assert ("AVX512-BF16" in why or "AMX-BF16" in why) if value == "bf16" else "no bf16" in why


def test_no_cpuinfo_is_fp32(tmp_path, monkeypatch):
    monkeypatch.setattr(compute, "CPUINFO", tmp_path / "absent")
    assert compute.cpu_bf16_flags() == () and compute.auto_precision("cpu")[0] == "fp32"
    assert compute.auto_precision("mps")[0] == "fp32"
    assert compute.auto_precision("cuda", cuda_bf16=True)[0] == "bf16"


def test_the_plan_keeps_the_rule_and_says_what_it_is_here(tmp_path, monkeypatch, cpuinfo):
    monkeypatch.chdir(tmp_path)
    path = write_job(tmp_path, BASE_BODY + "method: {kind: sft, adapter: full}\n")
    cpuinfo("avx512_bf16")
    with_bf16, _ = compile_spec(path)
    text = render_plan(with_bf16)
    assert "precision auto is bf16 here (this CPU has AVX512-BF16; autocast, fp32 master weights)" in text, text
    cpuinfo("sse4_2")
    without, _ = compile_spec(path)
    # The plan, its id and its step keys are the same on both machines: only the note differs.
    assert with_bf16.compute.precision == without.compute.precision == "auto"
    assert with_bf16.id == without.id
    assert "precision auto is fp32 here (this CPU has no bf16" in render_plan(without)


def test_the_run_applies_auto_to_its_cpu(cpuinfo):
    pytest.importorskip("torch")
    from ftspec.runtime.training.builders import resolve_precision
    from ftspec.spec.schema import Compute

    cpuinfo("amx_bf16")
    assert resolve_precision(Compute(device="cpu"), "cpu") == "bf16"
    cpuinfo("")
    assert resolve_precision(Compute(device="cpu"), "cpu") == "fp32"
    assert resolve_precision(Compute(device="cpu", precision="fp32"), "cpu") == "fp32"


def _losses_and_autocast(folder: Path, precision: str) -> tuple[list[float], set, set]:
    """Train the tiny job 6 steps; the losses logged, and what each forward pass ran under:
    (autocast on, the dtype of the logits) and the dtypes of the weights that train."""
    import torch
    from transformers import TrainerCallback

    seen, weights = set(), set()

    class Watch(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            def hook(module, inputs, output):  # (accelerate autocasts inside the model's own forward)
                seen.add((torch.is_autocast_enabled("cpu"), output.dtype))
            model.get_output_embeddings().register_forward_hook(hook)
            weights.update(p.dtype for p in model.parameters() if p.requires_grad)

    body = (BASE_BODY.replace("compute: {device: cpu}", f"compute: {{device: cpu, precision: {precision}, threads: 1}}")
            .replace("max_steps: 4", "max_steps: 6") + "method: {kind: sft, adapter: full}\n")
    ctx, _ = run_job(write_job(folder, body), callbacks=[Watch()])
    logged = [json.loads(line) for line in (ctx.run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in logged if "loss" in r], seen, weights


def test_bf16_trains_under_autocast_with_fp32_weights_within_the_stated_tolerance(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    pytest.importorskip("trl")
    monkeypatch.chdir(tmp_path)
    fp32, fp32_seen, fp32_weights = _losses_and_autocast(tmp_path / "fp32", "fp32")
    bf16, bf16_seen, bf16_weights = _losses_and_autocast(tmp_path / "bf16", "bf16")
    assert fp32_seen == {(False, torch.float32)}
    assert bf16_seen == {(True, torch.bfloat16)}
    assert fp32_weights == bf16_weights == {torch.float32}  # master weights stay fp32
    assert len(fp32) == len(bf16) == 6
    worst = max(abs(a - b) / abs(a) for a, b in zip(fp32, bf16))
    assert worst <= compute.BF16_LOSS_RTOL, (worst, fp32, bf16)


def test_the_manifest_records_what_auto_became_here(tmp_path, monkeypatch, cpuinfo):
    torch = pytest.importorskip("torch")
    from ftspec.backends.manifest import machine
    from ftspec.runtime.training.builders import apply_threads

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0}, raising=False)
    cpuinfo("avx512_bf16")
    plan, _ = compile_spec(write_job(tmp_path, BASE_BODY + "method: {kind: sft, adapter: full}\n"))
    before = torch.get_num_threads()
    try:
        found = machine(plan, apply_threads(plan.compute))
    finally:
        torch.set_num_threads(before)
    assert found["precision_setting"] == "auto" and found["precision"] == "bf16"
    assert found["threads_setting"] == "auto" and found["threads"] == found["usable_cpus"] == 1
    assert found["cpu_bf16"] == ["avx512_bf16"] and found["device"] == "cpu"
    assert "precision" not in machine(plan, None)  # nothing computed: nothing resolved
