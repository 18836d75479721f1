"""Rules on the training method: its data format, its adapter (QLoRA's device and
package, LoRA's target modules) and how it batches rows.
"""

from __future__ import annotations

from typing import Iterator

from ftspec.catalog.architectures import architecture
from ftspec.checks import facts
from ftspec.checks.facts import Context
from ftspec.checks.registry import WHOLE_SPEC, rule
from ftspec.core.errors import Issue, did_you_mean
from ftspec.spec import schema as S


@rule(reads=("method", "format"))
def check_method_format(ctx: Context) -> Iterator[Issue]:
    """DPO needs preference data; SFT needs prompt/completion or chat data."""
    objective, fmt = ctx.spec.method.kind, ctx.spec.format.kind
    if objective == "dpo" and fmt != "preference":
        yield ctx.error(("format", "kind"), "DPO trains on preference pairs; "
                                            f"format.kind must be 'preference' (got '{fmt}')")
    if objective == "sft" and fmt == "preference":
        yield ctx.error(("format", "kind"), "preference data is for DPO; set method.kind: dpo, or use "
                                            "prompt_completion or chat for SFT")
    if objective == "distill" and fmt == "preference":
        yield ctx.error(("format", "kind"), "a teacher answers prompts: distillation needs prompt_completion or chat "
                                            "data, not preference pairs")
    if objective == "distill" and fmt == "chat" and ctx.spec.format.messages_column is not None:
        yield ctx.error(("format", "messages_column"), "the teacher answers the conversation's last turn: give "
                        "format.messages with a final assistant turn "
                        "(its template is not rendered for the rows the teacher answers)")


@rule(reads=WHOLE_SPEC)
def check_qlora_device(ctx: Context) -> Iterator[Issue]:
    """QLoRA's 4/8-bit base weights need bitsandbytes on a CUDA device."""
    adapter = ctx.spec.method.adapter
    if not isinstance(adapter, S.QLoraAdapter):
        return
    device = ctx.spec.compute.device
    if device in ("cpu", "mps"):
        yield ctx.error(("method", "adapter", "kind"), f"qlora needs a CUDA device (compute.device is '{device}')",
                        "use lora, or compute.device: cuda")
    elif device == "auto":
        yield ctx.warning(("method", "adapter", "kind"), "qlora needs a CUDA device; "
                                                         "the run fails on a machine without one")
    if isinstance(ctx.spec.model, S.TinyModel):
        yield ctx.error(("method", "adapter", "kind"), "qlora quantises a pretrained model; a tiny model from config "
                                                       "is trained with lora or full")
    if (device not in ("cpu", "mps") and not isinstance(ctx.spec.model, S.TinyModel)
            and not facts.has_package("bitsandbytes")):
        yield ctx.error(("method", "adapter", "kind"), "qlora loads the base model in 4 or 8 bits through the "
                        "bitsandbytes package, which is not installed here", "pip install bitsandbytes, or use lora")


@rule(reads=("method", "model"))
def check_lora_targets(ctx: Context) -> Iterator[Issue]:
    """LoRA target modules exist in the model's architecture."""
    adapter = ctx.spec.method.adapter
    if not isinstance(adapter, S.LoraAdapter) or adapter.target_modules == "all-linear":
        return
    model_type = ctx.model.model_type if ctx.model else None
    arch = architecture(model_type)
    known = arch.linear_modules if arch is not None and arch.linear_modules else None
    if known is None:
        if model_type:
            ctx.not_checked.append(f"method.adapter.target_modules: module names of architecture '{model_type}' are "
                                   "not known offline")
        return
    for i, name in enumerate(adapter.target_modules):
        if name not in known:
            yield ctx.error(("method", "adapter", "target_modules", i),
                            f"'{name}' is not a linear module of a {model_type} model ({', '.join(known)})",
                            did_you_mean(name, known))


@rule(reads=WHOLE_SPEC)
def check_batching(ctx: Context) -> Iterator[Issue]:
    """Packing and length grouping are for SFT (trl's DPO trainer pads preference pairs
    itself), and packing needs an architecture that keeps packed rows apart."""
    mode = ctx.spec.training.batching
    if mode in ("packed", "length_grouped") and ctx.spec.method.kind == "dpo":
        yield ctx.error(("training", "batching"), f"DPO batches preference pairs itself; {mode} is for SFT "
                                                  "(use padded or auto)")
    elif mode == "packed":
        model_type = ctx.model.model_type if ctx.model else None
        known = architecture(model_type)
        if model_type is None:
            ctx.not_checked.append("training.batching: whether the model keeps packed rows apart "
                                   "(architecture unknown offline)")
        elif known is None or not known.packs:
            yield ctx.error(("training", "batching"), f"packed rows are not known to stay apart in a {model_type} "
                            "model; use length_grouped or padded")
