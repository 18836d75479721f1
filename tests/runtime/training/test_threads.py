"""compute.threads (how many CPU threads torch computes with) and the precision the plan
states: both resolved by the compiler where that can be done the same on every machine."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import ROOT
from helpers import BASE_BODY, write_job

from ftspec.core.errors import SpecError
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


def test_auto_threads_are_one_in_the_plan_whatever_the_machine(spec, monkeypatch):
    plan, _ = compile_spec(spec("{device: cpu}"))
    assert plan.compute.threads == 1
    # The plan (and so its id and its steps' keys) does not depend on the machine it is made on.
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    if hasattr(os, "sched_getaffinity"):
        monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    assert compile_spec(spec("{device: cpu}"))[0].id == plan.id


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
    ("{device: cpu}", "fp32"),
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
    """Where the plan resolves `auto` (cpu, mps), builders.resolve_precision gives the same."""
    pytest.importorskip("torch")
    from ftspec.plan.build import plan_precision
    from ftspec.runtime.training.builders import resolve_precision
    from ftspec.spec.schema import Compute

    for device in ("cpu", "mps"):
        auto = Compute(device=device)
        assert plan_precision(auto) == resolve_precision(auto, device) == "fp32"


def test_the_run_sets_and_shows_the_threads_and_the_precision(spec):
    torch = pytest.importorskip("torch")
    from ftspec.backends.executor import header
    from ftspec.runtime.training.builders import apply_threads

    def shown(plan):
        return header(plan, Path("runs/job"), Path.cwd(), apply_threads(plan.compute))

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        plan, _ = compile_spec(spec("{device: cpu}"))
        text = shown(plan)
        assert torch.get_num_threads() == 1
        assert "device   cpu (fp32; 1 CPU thread)" in text, text
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

    path = write_job(tmp_path, BASE_BODY.replace("compute: {device: cpu}", "compute: {device: cpu, threads: 1}")
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
