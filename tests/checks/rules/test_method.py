"""ftspec.checks.rules.method: the method's data format, QLoRA's device and package,
LoRA's target modules, and how rows are batched."""

from __future__ import annotations

from checks.conftest import BASE, at
from ftspec.checks import facts


def test_dpo_needs_preference_data(issues):
    found = issues(BASE + "method: {kind: dpo}\n")
    assert "DPO trains on preference pairs; format.kind must be 'preference' (got 'prompt_completion')" in at(
        found, "format.kind")
    assert not at(issues(BASE), "format.kind")


def test_qlora_needs_a_cuda_device(issues, monkeypatch):
    monkeypatch.setattr(facts, "has_package", lambda name: True)
    found = at(issues(BASE + "method: {kind: sft, adapter: {kind: qlora}}\n"), "method.adapter.kind")
    assert "qlora needs a CUDA device (compute.device is 'cpu')" in found
    assert not at(issues(BASE + "method: {kind: sft, adapter: {kind: lora}}\n"), "method.adapter.kind")


def test_a_lora_target_the_architecture_lacks(issues):
    spec = BASE + "method: {kind: sft, adapter: {kind: lora, target_modules: [q_proj, qq_proj]}}\n"
    found = [i for i in issues(spec) if i.key.startswith("method.adapter.target_modules")]
    assert [(i.key, i.message, i.hint) for i in found] == [(
        "method.adapter.target_modules.1",
        "'qq_proj' is not a linear module of a llama model "
        "(q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)",
        "did you mean 'q_proj'?")]
    assert not at(issues(spec.replace(", qq_proj", "")), "method.adapter.target_modules.1")


def test_packing_is_for_sft_and_for_architectures_that_keep_rows_apart(issues, context):
    assert at(issues(BASE.replace("kind: tiny", "kind: tiny, architecture: gpt2") + "training: {batching: packed}\n"),
              "training.batching") == []
    ctx = context(BASE + "training: {batching: packed}\n")
    ctx.model.model_type = "opt"  # an architecture the catalog does not say packs
    from ftspec.checks.rules.method import check_batching

    assert [i.message for i in check_batching(ctx)] == [
        "packed rows are not known to stay apart in a opt model; use length_grouped or padded"]
