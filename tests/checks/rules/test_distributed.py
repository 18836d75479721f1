"""ftspec.checks.rules.distributed: batches across processes, each strategy's settings
and devices, QLoRA under sharding, the layers FSDP wraps."""

from __future__ import annotations

from checks.conftest import BASE, at
from ftspec.checks import facts


def test_an_optimizer_step_larger_than_the_data(issues):
    assert at(issues(BASE + "training: {batch_size: 1024}\n"), "training.batch_size") == [
        "one optimizer step takes 1024 rows but there are only 560"]
    assert not at(issues(BASE + "training: {batch_size: 8}\n"), "training.batch_size")


def test_each_process_needs_a_full_batch(issues):
    spec = BASE.replace("{device: cpu}", "{device: cpu, strategy: ddp, num_processes: 4}")
    spec += "training: {batch_size: 256}\n"
    found = [i for i in issues(spec) if i.key == "training.batch_size"]
    assert [(i.message, i.hint) for i in found] == [(
        "4 processes × batch 256 take 1024 rows at once but there are only 560 training rows: each process needs a "
        "full batch", "lower training.batch_size to 140 or fewer, or use fewer processes")]


def test_settings_of_another_strategy_and_fsdp_on_the_cpu(issues, monkeypatch):
    monkeypatch.setattr(facts, "has_package", lambda name: True)
    found = issues(BASE.replace("{device: cpu}", "{device: cpu, strategy: ddp, num_processes: 2, fsdp: {}}"))
    assert at(found, "compute.fsdp") == ["FSDP settings are given but compute.strategy is 'ddp'"]
    found = issues(BASE.replace("{device: cpu}", "{device: cpu, strategy: fsdp, num_processes: 2}"))
    assert at(found, "compute.strategy") == ["fsdp runs only on CUDA GPUs: on the CPU accelerate silently trains plain "
                                             "DDP instead (nothing is sharded)"]
    assert not at(issues(BASE.replace("{device: cpu}", "{device: cpu, strategy: ddp, num_processes: 2}")),
                  "compute.strategy")


def test_qlora_under_fsdp_stores_its_weights_in_the_load_dtype(issues, monkeypatch):
    monkeypatch.setattr(facts, "has_package", lambda name: True)
    pinned = "model: {base: some-org/some-model, revision: " + "a" * 40 + "}"
    spec = BASE.replace("model: {kind: tiny}", pinned).replace(
        "{device: cpu}", "{device: cuda, strategy: fsdp, num_processes: 2}")
    found = at(issues(spec + "method: {kind: sft, adapter: {kind: qlora, quant_storage: bfloat16}}\n"),
               "method.adapter.quant_storage")
    assert found == ["under fsdp the 4-bit weights are sharded with the other parameters and must be stored in the "
                     "dtype the base loads in (float32), not bfloat16"]
    assert not at(issues(spec + "method: {kind: sft, adapter: {kind: qlora}}\n"), "method.adapter.quant_storage")


def test_fsdp_wrap_without_the_decoder_layer(issues):
    spec = BASE.replace("{device: cpu}", "{device: cuda, strategy: fsdp, num_processes: 2, fsdp: {wrap: [LlamaMLP]}}")
    assert at(issues(spec), "compute.fsdp.wrap") == [
        "does not name LlamaDecoderLayer, the decoder layer of a llama model: FSDP then shards in units other than "
        "the layers"]
    assert not at(issues(spec.replace("[LlamaMLP]", "[LlamaDecoderLayer]")), "compute.fsdp.wrap")
