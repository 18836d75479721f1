"""The trainer DPO uses: TRL's DPO trainer, with the LM head run only at the answers' tokens.

DPO scores a pair by the summed log-probabilities of the chosen and the rejected answer, for the
policy and for the reference. TRL's trainer asks the model for them with
``model(..., labels=…, fused_lm_head=True)`` (labels -100 on the prompt and the padding) and
gets them back per position, zero where there is no label. Where Triton is missing (the CPU)
TRL's fused head scores every position of prompt + chosen and prompt + rejected, and drops the
prompt's afterwards: for a 49,152-token vocabulary that is about a fifth of a forward pass spent
on the prompt.

Here the same call runs the decoder for its hidden states, and the head (in chunks, as
:mod:`ftspec.runtime.training.supervised` does for SFT) only at the positions whose next token
is an answer token; the per-position tensors TRL reads are put back together around them. TRL's
own code then computes every loss type, the rewards and the logged metrics, unchanged. The
causal LM's ``forward`` is wrapped on top of TRL's wrapper (policy and reference alike; with an
adapter the reference is the same model with the adapter off), and only once a probe gives the
log-probabilities TRL's head gives. Anything this path does not reproduce keeps TRL's head:
:meth:`PreferenceTrainer._completion_unsupported` says what.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import types
from dataclasses import dataclass
from typing import Any, Callable, ContextManager

import torch
from transformers.utils import ModelOutput
from trl import DPOTrainer

from ftspec.runtime.training import supervised

log = logging.getLogger(__name__)

IGNORE = -100
FLAG = "_ftspec_completion_head"


@dataclass
class CompletionOutput(ModelOutput):
    """What TRL's DPO trainer reads of its fused head's output, per (shifted) position and zero
    where the label is -100: each label's log-probability (with gradient), and, for the logged
    metrics, the entropy, the mean logit and whether the label is the top token."""

    loss: torch.Tensor | None = None
    log_probs: torch.Tensor | None = None
    entropy: torch.Tensor | None = None
    mean_logits: torch.Tensor | None = None
    is_top1: torch.Tensor | None = None
    label_mask: torch.Tensor | None = None


def _spread(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``values`` (one per True of ``mask``) put back at their positions, zero elsewhere; the
    gradient flows to ``values`` (also when there are none)."""
    return values.new_zeros(mask.shape).masked_scatter(mask, values)


def completion_rows(lm: Any, kwargs: dict, labels: torch.Tensor) -> CompletionOutput:
    """The decoder of ``lm`` on ``kwargs``, then its head only where the next-token label is not
    -100: the output TRL's fused head gives for the same call."""
    head = lm.get_output_embeddings()
    hidden = supervised.run_decoder(lm, kwargs)
    rows, targets, mask = supervised.supervised_hidden(hidden.to(head.weight.device), labels.to(head.weight.device))
    log_probs, entropy, is_top1, _ = supervised.head_rows(head, rows, targets)
    with torch.no_grad():  # the mean logit over the vocabulary is linear in the hidden state
        mean_logits = rows.float() @ head.weight.mean(0, dtype=torch.float32)
        if getattr(head, "bias", None) is not None:
            mean_logits = mean_logits + head.bias.mean(dtype=torch.float32)
    count = mask.sum()
    return CompletionOutput(
        loss=-log_probs.sum() / count.clamp(min=1),
        log_probs=_spread(log_probs, mask),
        entropy=_spread(entropy, mask),
        mean_logits=_spread(mean_logits, mask),
        is_top1=_spread(is_top1, mask),
        label_mask=mask,
    )


def _wrapped(previous, context):
    """``previous`` (TRL's fused forward), answering ``fused_lm_head=True`` itself, inside
    ``context()``, where it can: pre-shifted labels (context parallelism) and router logits stay
    with TRL."""

    def forward(self, *args, fused_lm_head: bool = False, labels=None, **kwargs):
        if not fused_lm_head or labels is None or kwargs.get("shift_labels") is not None \
                or kwargs.get("output_router_logits"):
            return previous(*args, fused_lm_head=fused_lm_head, labels=labels, **kwargs)
        if args:  # the decoder takes its inputs by name
            kwargs["input_ids"] = args[0]
        kwargs.pop("shift_labels", None)
        with context():
            return completion_rows(self, kwargs, labels)

    return forward


def check(model: Any) -> str | None:
    """Why the head cannot run at the labelled positions only for the causal LM in ``model``, or
    None (also when it already does)."""
    lm = supervised.causal_lm(model)
    if getattr(lm, FLAG, False):
        return None
    return supervised.unsupported(lm) or _probe_differs(lm)


def install(model: Any, context: Callable[[], ContextManager] = contextlib.nullcontext) -> str | None:
    """Wrap the causal LM in ``model`` (whose forward TRL has already given its fused head) so that
    ``fused_lm_head=True`` runs the head at the labelled positions only, inside ``context()``; once
    per model. Returns None when installed, else why not (the model keeps TRL's head)."""
    why = check(model)
    if why is None:
        _wrap(supervised.causal_lm(model), context)
    return why


def _wrap(lm: Any, context: Callable[[], ContextManager]) -> None:
    if getattr(lm, FLAG, False):
        return
    # The class's signature is kept: generate checks its keyword arguments against it.
    forward = functools.wraps(type(lm).forward)(_wrapped(lm.forward, context))
    lm.forward = types.MethodType(forward, lm)
    setattr(lm, FLAG, True)


def installed(model: Any) -> bool:
    return bool(getattr(supervised.causal_lm(model), FLAG, False))


def _probe_differs(lm: Any) -> str | None:
    """Whether the decoder and head, run apart at the labelled positions, give the log-probabilities
    TRL's fused head gives on a few tokens (a model whose forward does more is caught here)."""
    head = lm.get_output_embeddings()
    vocab, device = head.weight.size(0), head.weight.device
    ids = (torch.arange(16, device=device).reshape(2, 8) * 7 + 3) % vocab
    labels = ids.masked_fill(torch.arange(8, device=device) < torch.tensor([[3], [5]], device=device), IGNORE)
    # TRL's fused forward itself, beneath the autocast accelerate wraps a prepared model's forward
    # in: the probe compares the arithmetic of the two heads, both in the weights' precision.
    fused = getattr(lm, "_original_forward", None) or lm.forward
    was_training = lm.training
    lm.eval()
    try:
        with torch.no_grad():
            expected = fused(input_ids=ids, labels=labels, use_cache=False, fused_lm_head=True).log_probs
            got = completion_rows(lm, {"input_ids": ids, "use_cache": False}, labels).log_probs
    except (TypeError, AttributeError) as error:  # no fused head of TRL's on this model
        return f"the model's forward does not take TRL's fused head ({error})"
    finally:
        lm.train(was_training)
    tolerance = 1e-3 if head.weight.dtype == torch.float32 else 5e-2
    if expected is None or not torch.allclose(got, expected.float(), atol=tolerance, rtol=tolerance):
        return "the model's own head gives other log-probabilities than its decoder and head run apart"
    return None


class PreferenceTrainer(DPOTrainer):
    """TRL's DPO trainer, and with ``loss_positions="supervised"`` (the default) the LM head of the
    policy and the reference only at the answers' tokens. ``loss_positions="all"`` is TRL's own
    head, at every position."""

    def __init__(self, *args, loss_positions: str = "supervised", **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_positions = "all"
        self.loss_positions_reason: str | None = None
        if loss_positions == "supervised":
            why = self._completion_unsupported() or self._install()
            if why is None:
                self.loss_positions = "supervised"
            else:
                self.loss_positions_reason = why
                log.warning("the LM head runs at every position: %s", why)

    def _completion_unsupported(self) -> str | None:
        """Settings under which TRL's head gives more than the labels' log-probabilities, or the
        inputs are not one row per sequence, or the head is sharded: then TRL's head runs."""
        args = self.args
        if getattr(args, "use_weighting", False):
            return "WPO weighting (use_weighting) needs log Σp² from TRL's head"
        if getattr(self, "aux_loss_enabled", False):
            return "the model's auxiliary (router) loss"
        if getattr(self, "padding_free", False):
            return "padding-free batches"
        if getattr(self, "_is_vlm", False) or getattr(self, "_is_vision_dataset", False):
            return "a vision-language model"
        if self.is_fsdp_enabled or self.is_deepspeed_enabled:
            return "the head is sharded (FSDP or DeepSpeed); TRL's fused head gathers it"
        config = getattr(self.model, "active_peft_config", None)
        if getattr(config, "is_prompt_learning", False):
            return "a prompt-learning adapter adds virtual tokens before the inputs"
        return None

    def _install(self) -> str | None:
        """Both models are checked before either is wrapped, so that they never take different paths."""
        models = [self.model] + ([self.ref_model] if self.ref_model is not None else [])
        for model in models:
            why = check(model)
            if why is not None:
                return why if model is self.model else f"the reference model: {why}"
        for model in models:
            lm = supervised.causal_lm(model)
            # TRL has the accelerator prepare the reference at once, which (with bf16 or fp16)
            # wraps its forward in autocast; this path goes on top of that wrapper, so it brings the
            # same autocast. The policy is prepared later, over this path, and gets it from there.
            prepared = getattr(lm, "_original_forward", None) is not None
            _wrap(lm, self.accelerator.autocast if prepared else contextlib.nullcontext)
        return None
