"""Training that computes only what the loss needs.

For a label answer the loss covers about 2 tokens of 60, yet a causal LM's head (vocabulary ×
hidden, 49,152 × 576 for SmolLM2: about a fifth of a forward pass) runs at every position, and
TRL's fused head scores every position too wherever Triton is missing (the CPU). Here the
decoder runs for its hidden states, the head runs only at the positions whose next-token label
is not -100, and the log-probabilities come out in chunks of rows (each recomputed in the
backward pass, so no more than one chunk's logits is ever held).

The causal LM's own ``forward`` is wrapped (as TRL wraps it for its fused head), so that the
trainer still calls the model it prepared — DDP's hooks, PEFT's adapters and autocast all see
the call as before — and asks for this path with ``supervised_head=True``. Without it the
forward is the one that was there. :func:`install` wraps a model only once a probe on it gives
the log-probabilities its own forward gives; a model that scales or caps its logits after the
decoder, or balances experts with an auxiliary loss, keeps the full path.
"""

from __future__ import annotations

import functools
import types
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint
from transformers.utils import ModelOutput

IGNORE = -100
CHUNK = 2048  # supervised tokens per head call: 2048 × 49,152 fp32 logits is 400 MB
FLAG = "_ftspec_supervised_head"

# Config settings that change the logits after the head (or add a loss beside it): such a model
# keeps its own forward.
_LOGIT_SETTINGS = ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier",
                   "logits_scaling", "output_router_logits")


@dataclass
class SupervisedOutput(ModelOutput):
    """The supervised positions only, in the row-major order of the (shifted) label mask.
    ``log_probs`` (with gradient) is each label's log-probability; ``entropy`` and ``is_top1``
    (without) feed the logged metrics; ``logits`` only when asked for (distillation)."""

    log_probs: torch.Tensor | None = None
    entropy: torch.Tensor | None = None
    is_top1: torch.Tensor | None = None
    label_mask: torch.Tensor | None = None
    logits: torch.Tensor | None = None


def causal_lm(model: Any) -> Any:
    """The transformers causal LM inside ``model``: unwrapped from DDP/accelerate (``module``)
    and from PEFT (``get_base_model``)."""
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return model


def decoder(lm: Any) -> Any | None:
    """The decoder of a transformers causal LM (``model`` for llama and qwen, ``transformer`` for
    gpt2: ``base_model_prefix``), or None when it has none apart from itself."""
    inner = getattr(lm, "base_model", None)
    return inner if isinstance(inner, torch.nn.Module) and inner is not lm else None


def unsupported(lm: Any) -> str | None:
    """Why the supervised head cannot stand in for ``lm``'s own forward, or None."""
    if decoder(lm) is None:
        return "the model has no separate decoder"
    if lm.get_output_embeddings() is None:
        return "the model has no output head"
    config = lm.config.get_text_config() if hasattr(lm.config, "get_text_config") else lm.config
    for name in _LOGIT_SETTINGS:
        if getattr(config, name, None) not in (None, False, 1, 1.0):
            return f"the model's config sets {name}"
    return None


def _rows(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor, keep_logits: bool):
    logits = head(hidden).float()  # as transformers' loss: fp32 logits, whatever the compute dtype
    log_z = torch.logsumexp(logits, dim=-1)
    log_probs = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - log_z
    with torch.no_grad():
        p_log_p = torch.softmax(logits, dim=-1) * (logits - log_z.unsqueeze(-1))
        entropy = -p_log_p.sum(-1)
        is_top1 = logits.argmax(-1).eq(targets)
    return log_probs, entropy, is_top1, (logits if keep_logits else None)


def head_rows(head: torch.nn.Module, hidden: torch.Tensor, targets: torch.Tensor,
              keep_logits: bool = False, chunk: int = CHUNK):
    """Log-probabilities of ``targets`` under ``head(hidden)`` ((n, hidden) → (n,)), with each
    row's entropy and whether its target is the top token; in chunks of ``chunk`` rows, each
    recomputed in the backward pass when there is more than one, so that memory holds one
    chunk's logits. ``keep_logits`` also returns the (n, vocab) fp32 logits (not chunked)."""
    n = hidden.size(0)
    if keep_logits or n <= chunk:
        return _rows(head, hidden, targets, keep_logits)
    parts = [checkpoint(_rows, head, hidden[i:i + chunk], targets[i:i + chunk], False, use_reentrant=False)
             for i in range(0, n, chunk)]
    return (torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]),
            torch.cat([p[2] for p in parts]), None)


def supervised_hidden(hidden: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The causal shift (the state at t predicts the label at t + 1), then only the positions
    with a label: their hidden states (n, hidden), their labels (n,), and the (batch, length - 1)
    mask they were taken with."""
    mask = labels[:, 1:] != IGNORE
    return hidden[:, :-1][mask], labels[:, 1:][mask], mask


def run_decoder(lm: Any, inputs: dict) -> torch.Tensor:
    """The last hidden states of ``lm``'s decoder for ``inputs`` (no labels among them)."""
    kwargs = {k: v for k, v in inputs.items() if k not in ("labels", "num_items_in_batch", "return_dict")}
    kwargs["use_cache"] = False
    return decoder(lm)(**kwargs).last_hidden_state


def _wrapped(previous):
    """``previous`` (the model's forward), answering ``supervised_head=True`` itself."""

    def forward(self, *args, supervised_head: bool | str = False, labels=None, **kwargs):
        if not supervised_head:
            if labels is not None:
                kwargs["labels"] = labels
            return previous(*args, **kwargs)
        if args:  # the decoder takes its inputs by name
            kwargs["input_ids"] = args[0]
        head = self.get_output_embeddings()
        hidden = run_decoder(self, kwargs)
        rows, targets, mask = supervised_hidden(hidden.to(head.weight.device), labels.to(head.weight.device))
        log_probs, entropy, is_top1, logits = head_rows(head, rows, targets, keep_logits=supervised_head == "logits")
        return SupervisedOutput(log_probs=log_probs, entropy=entropy, is_top1=is_top1, label_mask=mask, logits=logits)

    return forward


def install(model: Any) -> str | None:
    """Wrap the causal LM in ``model`` so that ``model(..., labels=…, supervised_head=True)``
    returns a :class:`SupervisedOutput` (``supervised_head="logits"``: with the rows' logits);
    once per model. Returns None when installed, else why not (the model keeps its forward)."""
    lm = causal_lm(model)
    if getattr(lm, FLAG, False):
        return None
    why = unsupported(lm) or _probe_differs(lm)
    if why is not None:
        return why
    # The class's signature is kept: generate checks its keyword arguments against it.
    forward = functools.wraps(type(lm).forward)(_wrapped(lm.forward))
    lm.forward = types.MethodType(forward, lm)
    setattr(lm, FLAG, True)
    return None


def installed(model: Any) -> bool:
    return bool(getattr(causal_lm(model), FLAG, False))


def _probe_differs(lm: Any) -> str | None:
    """Whether the decoder and head, run apart, give the log-probabilities the model's own forward
    gives, on a few tokens (a model whose forward does more after the decoder is caught here)."""
    vocab = lm.get_output_embeddings().weight.size(0)
    device = lm.get_output_embeddings().weight.device
    ids = (torch.arange(12, device=device).reshape(2, 6) * 7 + 3) % vocab
    was_training = lm.training
    lm.eval()
    try:
        with torch.no_grad():
            full = lm(input_ids=ids, use_cache=False).logits[:, :-1].float().log_softmax(-1)
            expected = full.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1).flatten()
            rows, targets, _ = supervised_hidden(run_decoder(lm, {"input_ids": ids}), ids)
            got = head_rows(lm.get_output_embeddings(), rows, targets)[0]
    finally:
        lm.train(was_training)
    tolerance = 1e-3 if lm.get_output_embeddings().weight.dtype == torch.float32 else 5e-2
    if not torch.allclose(got, expected, atol=tolerance, rtol=tolerance):
        return "the model's own forward gives other log-probabilities than its decoder and head run apart"
    return None


def supervised_loss(log_probs: torch.Tensor, count: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
    """The causal-LM loss from the supervised rows: their negative log-likelihood summed, over the
    number of supervised tokens — of this batch, or ``num_items_in_batch`` (the trainer's count
    over a whole gradient-accumulation step), as transformers' causal-LM loss divides it."""
    total = count if num_items_in_batch is None else num_items_in_batch
    return -log_probs.sum() / torch.as_tensor(total, device=log_probs.device).clamp(min=1)


def lm_head_share(hidden: int, vocab: int, layers: int, intermediate: int | None = None) -> float:
    """Roughly what share of a forward pass's matrix FLOPs per token the LM head is (attention's
    sequence-length term left out): vocab × hidden against, per layer, 4 × hidden² for the
    attention projections and 3 × hidden × intermediate for a gated MLP."""
    intermediate = intermediate or 4 * hidden
    head = vocab * hidden
    return head / (head + layers * (4 * hidden * hidden + 3 * hidden * intermediate))
