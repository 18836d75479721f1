"""Rules on one device's compute settings: precision and attention fit the device."""

from __future__ import annotations

from typing import Iterator

from ftspec.checks.facts import Context
from ftspec.checks.registry import rule
from ftspec.core.errors import Issue


@rule(reads=("compute",))
def check_precision(ctx: Context) -> Iterator[Issue]:
    """fp16 training needs a GPU."""
    c = ctx.spec.compute
    if c.precision == "fp16" and c.device == "cpu":
        yield ctx.error(("compute", "precision"), "fp16 training needs a GPU; on the CPU use bf16 or fp32")


@rule(reads=("compute",))
def check_attention(ctx: Context) -> Iterator[Issue]:
    """FlashAttention runs on CUDA GPUs, in half precision."""
    c = ctx.spec.compute
    if c.attention != "flash_attention_2":
        return
    if c.device in ("cpu", "mps"):
        yield ctx.error(("compute", "attention"), f"flash_attention_2 needs a CUDA GPU, not device {c.device}",
                        "use sdpa (the default) here")
    elif c.precision == "fp32":
        yield ctx.error(("compute", "attention"), "flash_attention_2 needs bf16 or fp16, not fp32",
                        "set compute.precision: bf16")
