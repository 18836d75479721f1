"""compute.threads (how many CPU threads torch computes with) and the precision the plan
states: `auto` is a rule the plan keeps, the same on every machine, and each run applies
to the machine it runs on; losses agree across thread counts within a stated tolerance."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import ROOT
from helpers import BASE_BODY, run_job, write_job

from ftspec.core.errors import SpecError
from ftspec.plan import compute
from ftspec.plan.compile import compile_spec

SPEC = """ftspec: 1
name: job
model: {{kind: tiny, hidden_size: 32, num_layers: 1, num_heads: 4, max_position_embeddings: 256}}
data:
  train: tickets.jsonl
  split: {{validation: 0.1, test: 0.1, seed: 1}}
format:
  kind: prompt_completion
  prompt: "Request: {{{{ text }}}}\\nQueue:"
  completion: " {{{{ queue }}}}"
training: {{max_steps: 2, batch_size: 8, max_length: 128}}
compute: {compute}
"""


@pytest.fixture
def spec(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lines = (ROOT / "specs/data/support-tickets.jsonl").read_text(encoding="utf-8").splitlines()[:60]
    (tmp_path / "tickets.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")

    def make(compute: str) -> Path:
        path = tmp_path / "job.yaml"
        path.write_text(SPEC.format(compute=compute), encoding="utf-8")
        return path

    return make


def test_auto_threads_stay_auto_in_the_plan_whatever_the_machine(spec, monkeypatch):
    plan, _ = compile_spec(spec("{device: cpu}"))
    assert plan.compute.threads == "auto"
    # The plan (and so its id and its steps' keys) does not depend on the machine it is made on.
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    assert compile_spec(spec("{device: cpu}"))[0].id == plan.id


@pytest.fixture
def cpus(monkeypatch):
    """This process may run on `n` CPUs, and OMP_NUM_THREADS is unset."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)

    def allow(n: int) -> None:
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(n)), raising=False)
    return allow


def test_auto_threads_are_the_usable_cpus_shared_among_the_processes(cpus, monkeypatch):
    cpus(3)
    assert compute.auto_threads() == (3, "the CPUs this process may use")
    assert compute.auto_threads(2)[0] == 1 and compute.auto_threads(8)[0] == 1
    cpus(16)
    assert compute.auto_threads(4)[0] == 4
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the override for a shared machine or CI
    assert compute.auto_threads() == (1, "OMP_NUM_THREADS")


@pytest.mark.parametrize("value", ["two", "0", "-1", "1.5"])
def test_a_wrong_omp_num_threads_is_one_line_at_the_key(cpus, monkeypatch, value):
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    with pytest.raises(SpecError) as err:
        compute.auto_threads()
    (issue,) = err.value.issues
    assert issue.key == "compute.threads" and "OMP_NUM_THREADS" in issue.message and "\n" not in issue.format()


def test_threads_set_in_the_spec_are_the_plans(spec):
    plan, _ = compile_spec(spec("{device: cpu, threads: 3}"))
    assert plan.compute.threads == 3


@pytest.mark.parametrize("value,message", [
    ("0", "compute.threads: must be at least 1 (got 0)"),
    ("2.5", "compute.threads: must be an integer (got 2.5)"),
    ("many", "compute.threads: must be 'auto' (got 'many')"),
    ("true", "compute.threads: must be an integer (got true)"),
])
def test_wrong_threads_are_an_error_at_the_key(spec, value, message):
    with pytest.raises(SpecError) as err:
        compile_spec(spec(f"{{device: cpu, threads: {value}}}"))
    assert any(message in i.format() for i in err.value.issues), [i.format() for i in err.value.issues]


@pytest.mark.parametrize("compute,precision", [
    ("{device: cpu}", "auto"),  # bf16 or fp32 by the CPU that runs it (test_precision.py)
    ("{device: mps}", "fp32"),
    ("{device: cuda}", "auto"),
    ("{device: auto}", "auto"),
    ("{device: cpu, precision: bf16}", "bf16"),
    ("{device: cuda, precision: fp16}", "fp16"),
])
def test_the_plan_states_the_precision_the_device_makes_certain(spec, compute, precision):
    try:
        plan, _ = compile_spec(spec(compute))
    except SpecError as exc:  # a device this machine lacks may be refused by a check; the plan's rule still holds
        pytest.skip(str(exc.issues[0].format()))
    assert plan.compute.precision == precision


def test_the_runtime_resolves_auto_as_the_plan_does(spec):
    """Where the plan resolves `auto` (mps), builders.resolve_precision gives the same."""
    pytest.importorskip("torch")
    from ftspec.plan.build import plan_precision
    from ftspec.runtime.training.builders import resolve_precision
    from ftspec.spec.schema import Compute

    auto = Compute(device="mps")
    assert plan_precision(auto) == resolve_precision(auto, "mps") == "fp32"


def test_the_run_sets_and_shows_the_threads_and_the_precision(spec, cpus, monkeypatch):
    torch = pytest.importorskip("torch")
    from ftspec.backends.executor import header
    from ftspec.runtime.training.builders import apply_threads

    def shown(plan):
        return header(plan, Path("runs/job"), Path.cwd(), apply_threads(plan.compute))

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        plan, _ = compile_spec(spec("{device: cpu, precision: fp32, threads: 1}"))
        text = shown(plan)
        assert torch.get_num_threads() == 1
        assert "device   cpu (fp32; 1 CPU thread)" in text, text
        plan, _ = compile_spec(spec("{device: cpu}"))
        monkeypatch.setattr(compute, "CPUINFO", Path("absent-cpuinfo"))
        cpus(1)
        text = shown(plan)
        assert torch.get_num_threads() == 1
        assert "device   cpu (fp32, auto; 1 CPU thread, auto)" in text, text
        plan, _ = compile_spec(spec("{device: cpu, threads: 3}"))
        text = shown(plan)
        assert torch.get_num_threads() == 3 and "3 CPU threads" in text, text
        plan, _ = compile_spec(spec("{device: auto}"))
        if not torch.cuda.is_available():  # `auto` in the plan: the header says what it became
            assert "cpu (fp32, auto; " in shown(plan)
    finally:
        torch.set_num_threads(before)


def test_apply_threads_sets_intra_op_threads_and_keeps_inter_op_once_set():
    torch = pytest.importorskip("torch")
    from types import SimpleNamespace

    from ftspec.runtime.training.builders import apply_threads, describe_threads

    before = torch.get_num_threads()
    try:
        got = apply_threads(SimpleNamespace(threads=2))
        assert got["threads"] == torch.get_num_threads() == 2
        assert got["interop"] == torch.get_num_interop_threads()
        assert describe_threads({"threads": 1, "interop": 1}) == "1 CPU thread"
        assert "inter-op" in describe_threads({"threads": 2, "interop": 4})
    finally:
        torch.set_num_threads(before)


def test_a_run_computes_with_the_plans_threads(tmp_path):
    torch = pytest.importorskip("torch")
    pytest.importorskip("trl")

    from ftspec.backends.executor import execute
    from ftspec.plan.compile import find_root

    settings = "compute: {device: cpu, precision: fp32, threads: 1}"
    path = write_job(tmp_path, BASE_BODY.replace("compute: {device: cpu}", settings)
                     .replace("max_steps: 4", "max_steps: 1") + "method: {kind: sft, adapter: full}\n")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        lines: list[str] = []
        execute(compile_spec(path)[0], find_root(path), echo=lines.append)
        assert torch.get_num_threads() == 1
        assert "cpu (fp32; 1 CPU thread)" in "\n".join(lines)
    finally:
        torch.set_num_threads(before)


def test_losses_agree_across_thread_counts_within_the_stated_tolerance(tmp_path, monkeypatch):
    """`threads: auto` differs from machine to machine while the step keys do not: the same
    plan's training losses on 1 and 2 threads agree within THREADS_LOSS_RTOL."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("trl")
    monkeypatch.chdir(tmp_path)
    before = torch.get_num_threads()
    losses = []
    try:
        for n in (1, 2):
            settings = f"compute: {{device: cpu, precision: fp32, threads: {n}}}"
            body = (BASE_BODY.replace("compute: {device: cpu}", settings).replace("max_steps: 4", "max_steps: 6")
                    + "method: {kind: sft, adapter: full}\n")
            ctx, _ = run_job(write_job(tmp_path / str(n), body))
            assert torch.get_num_threads() == n
            logged = [json.loads(line) for line in (ctx.run_dir / "metrics.jsonl").read_text().splitlines()]
            losses.append([r["loss"] for r in logged if "loss" in r])
    finally:
        torch.set_num_threads(before)
    one, two = losses
    assert len(one) == len(two) == 6
    worst = max(abs(a - b) / abs(a) for a, b in zip(one, two))
    assert worst <= compute.THREADS_LOSS_RTOL, (worst, one, two)
