"""ftspec.checks.rules.compute: precision and attention fit the device."""

from __future__ import annotations

from checks.conftest import BASE, at


def test_fp16_needs_a_gpu(issues):
    found = [i for i in issues(BASE.replace("{device: cpu}", "{device: cpu, precision: fp16}"))
             if i.key == "compute.precision"]
    assert [(i.message, i.pos.line) for i in found] == [("fp16 training needs a GPU; on the CPU use bf16 or fp32", 11)]
    assert not at(issues(BASE.replace("{device: cpu}", "{device: cpu, precision: bf16}")), "compute.precision")


def test_flash_attention_needs_cuda_and_half_precision(issues):
    assert at(issues(BASE.replace("{device: cpu}", "{device: cpu, attention: flash_attention_2}")),
              "compute.attention") == ["flash_attention_2 needs a CUDA GPU, not device cpu"]
    assert at(issues(BASE.replace("{device: cpu}", "{device: cuda, precision: fp32, attention: flash_attention_2}")),
              "compute.attention") == ["flash_attention_2 needs bf16 or fp16, not fp32"]
    half = BASE.replace("{device: cpu}", "{device: cuda, precision: bf16, attention: flash_attention_2}")
    assert not at(issues(half), "compute.attention")
