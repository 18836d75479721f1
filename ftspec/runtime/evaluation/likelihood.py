"""Log-likelihoods of continuations after prompts: what choices mode, perplexity and
preference pairs are scored by.

The fast path runs each distinct prompt once and scores every continuation of it from
the prompt's cached keys and values, instead of one full forward pass per (prompt,
continuation):

- the tokens every prompt starts with (a system turn, few-shot examples) are run once,
  and their cache is shared by every batch;
- the rest of each prompt is sorted by length and batched, left-padded (so that each ends
  at the last column), with position ids that skip the padding;
- the model's head is applied only where a candidate token is scored: at the prompt's
  last position (the first token of every continuation) and at the continuations' own
  positions — never over the prompt;
- a continuation of one token needs nothing more; longer ones are fed after a copy of
  their prompt's cache, several per prompt in one batch.

It gives the sums the full forward pass gives (up to float rounding: tested to 1e-5 on a
tiny model). A model whose forward pass cannot take a cache, position ids and
``logits_to_keep``, or whose cache is not plain (sliding-window or recurrent layers), is
scored by :func:`full_forward_logprobs`, the plain computation, which is also the
reference the tests hold the fast path to.
"""

from __future__ import annotations

import inspect
from typing import Callable

import torch

Pair = tuple[list[int], list[int]]  # (prompt token ids, continuation token ids)
Progress = Callable[[int], None]  # called with the number of pairs just scored


def cut_to_length(pairs: list[Pair], max_length: int | None) -> list[Pair]:
    """Prompts cut from the left so that prompt and continuation fit ``max_length``,
    keeping at least one token of context."""
    if not max_length:
        return list(pairs)
    pairs = [(p[max(0, len(p) + len(c) - max_length):] if len(p) + len(c) > max_length else p, c) for p, c in pairs]
    return [(p or c[:1], c if p else c[1:]) for p, c in pairs]


@torch.no_grad()
def continuation_logprobs(model, tokenizer, pairs: list[Pair], batch_size: int, max_length: int | None = None,
                          progress: Progress | None = None) -> list[tuple[float, int]]:
    """Sum of log-probabilities of each continuation given its prompt, and its length,
    in the order of ``pairs``. Prompts are cut as :func:`cut_to_length` says."""
    pairs = cut_to_length(pairs, max_length)
    model.eval()
    cache_arg = _cache_argument(model)
    if cache_arg is None:
        return full_forward_logprobs(model, tokenizer, pairs, batch_size, progress=progress)
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    by_prompt: dict[tuple[int, ...], list[int]] = {}
    for i, (p, _) in enumerate(pairs):
        by_prompt.setdefault(tuple(p), []).append(i)
    prompts = sorted(by_prompt, key=len)  # similar lengths together: less padding
    shared = _shared_prefix(model, cache_arg, prompts, device)
    results: list[tuple[float, int] | None] = [None] * len(pairs)
    for start in range(0, len(prompts), max(1, batch_size)):
        batch = prompts[start:start + max(1, batch_size)]
        scored = _score_batch(model, cache_arg, batch, [[pairs[i][1] for i in by_prompt[p]] for p in batch],
                              pad, device, max(1, batch_size), shared)
        if scored is None:  # a cache that cannot be copied row by row: the plain computation for everything
            return full_forward_logprobs(model, tokenizer, pairs, batch_size, progress=progress)
        done = 0
        for p, sums in zip(batch, scored):
            for i, total in zip(by_prompt[p], sums):
                results[i] = (total, len(pairs[i][1]))
                done += 1
        if progress is not None:
            progress(done)
    return [r if r is not None else (0.0, 0) for r in results]


def _cache_argument(model) -> str | None:
    """The name the model's forward pass takes its key/value cache by, when it also takes
    position ids and ``logits_to_keep``; None for a model the fast path cannot run."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # a PEFT model passes them on
    params = inspect.signature(inner.forward).parameters
    if "position_ids" not in params or "logits_to_keep" not in params:
        return None
    for name in ("cache", "past_key_values"):  # transformers 5 renamed past_key_values
        if name in params:
            return name
    return None


def _plain_layers(cache) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """Each layer's (keys, values) when every layer is a plain, full-length one."""
    from transformers.cache_utils import DynamicLayer

    layers = getattr(cache, "layers", None)
    if not layers or any(type(layer) is not DynamicLayer or not layer.is_initialized for layer in layers):
        return None
    return [(layer.keys, layer.values) for layer in layers]


def _shared_prefix(model, cache_arg: str, prompts: list[tuple[int, ...]], device) -> tuple[int, list] | None:
    """The tokens every prompt starts with (all but the shortest prompt's last), run once:
    (their number, each layer's keys and values for one row); None when there are none."""
    from transformers.cache_utils import DynamicCache

    if len(prompts) < 2:
        return None
    first, size = prompts[0], min(len(p) for p in prompts) - 1
    for p in prompts[1:]:
        same = 0
        while same < size and p[same] == first[same]:
            same += 1
        size = same
    if size < 1:
        return None
    cache = DynamicCache()
    ids = torch.tensor([first[:size]], device=device)
    model(input_ids=ids, attention_mask=torch.ones_like(ids), position_ids=torch.arange(size, device=device)[None],
          use_cache=True, logits_to_keep=1, **{cache_arg: cache})
    layers = _plain_layers(cache)
    return (size, layers) if layers is not None else None


def _score_batch(model, cache_arg: str, prompts: list[tuple[int, ...]], continuations: list[list[list[int]]],
                 pad: int, device, batch_size: int, shared: tuple[int, list] | None) -> list[list[float]] | None:
    from transformers.cache_utils import DynamicCache

    skip = shared[0] if shared is not None else 0
    width = max(len(p) for p in prompts) - skip
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, p in enumerate(prompts):
        ids[row, width - len(p) + skip:] = torch.tensor(p[skip:])
        mask[row, width - len(p) + skip:] = 1
    ids, mask = ids.to(device), mask.to(device)
    positions = skip + (mask.cumsum(-1) - 1).clamp(min=0)
    if shared is None:
        cache = DynamicCache()
    else:  # the shared tokens' cache, one copy per row, then the rest of each prompt after it (padding between)
        rows = len(prompts)
        cache = DynamicCache([(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1)) for k, v in shared[1]])
        mask = torch.cat([torch.ones((rows, skip), dtype=torch.long, device=device), mask], dim=-1)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1,
                **{cache_arg: cache})
    first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)  # the next token after each prompt
    sums = [[float(first[row, c[0]]) if c else 0.0 for c in conts] for row, conts in enumerate(continuations)]

    # Continuations of two tokens or more: fed after their prompt's cache, to score tokens 2…n.
    rest = [(row, j) for row, conts in enumerate(continuations) for j, c in enumerate(conts) if len(c) > 1]
    if not rest:
        return sums
    layers = _plain_layers(cache)  # filled in place by the forward pass
    if layers is None:
        return None
    step = max(1, batch_size) * 4  # rows of continuations per forward pass
    for start in range(0, len(rest), step):
        chunk = rest[start:start + step]
        conts = [continuations[row][j] for row, j in chunk]
        length = max(len(c) for c in conts) - 1
        c_ids = torch.full((len(chunk), length), pad, dtype=torch.long)
        c_mask = torch.zeros((len(chunk), length), dtype=torch.long)
        targets = torch.zeros((len(chunk), length), dtype=torch.long)
        for k, c in enumerate(conts):
            c_ids[k, : len(c) - 1] = torch.tensor(c[:-1])
            c_mask[k, : len(c) - 1] = 1
            targets[k, : len(c) - 1] = torch.tensor(c[1:])
        rows = torch.tensor([row for row, _ in chunk], device=device)
        copy = DynamicCache([(keys.index_select(0, rows), values.index_select(0, rows)) for keys, values in layers])
        lengths = mask.sum(-1).index_select(0, rows)
        c_positions = lengths.unsqueeze(-1) + torch.arange(length, device=device).unsqueeze(0)
        logits = model(input_ids=c_ids.to(device), attention_mask=torch.cat([mask.index_select(0, rows),
                                                                             c_mask.to(device)], dim=-1),
                       position_ids=c_positions, use_cache=True, logits_to_keep=0, **{cache_arg: copy}).logits
        logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, targets.to(device).unsqueeze(-1)).squeeze(-1)
        logp = (logp * c_mask.to(device)).sum(-1).cpu()
        for k, (row, j) in enumerate(chunk):
            sums[row][j] += float(logp[k])
    return sums


@torch.no_grad()
def full_forward_logprobs(model, tokenizer, pairs: list[Pair], batch_size: int,
                          progress: Progress | None = None) -> list[tuple[float, int]]:
    """The plain computation: one forward pass over each prompt + continuation, right-padded,
    log-probabilities taken from the whole vocabulary at every position. Slow, and exact."""
    model.eval()
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    results: list[tuple[float, int]] = []
    for start in range(0, len(pairs), max(1, batch_size)):
        chunk = pairs[start:start + max(1, batch_size)]
        seqs = [p + c for p, c in chunk]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
            mask[i, : len(s)] = 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        targets = ids[:, 1:].to(device)
        token_logp = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1).cpu()
        for i, (p, c) in enumerate(chunk):
            lo, hi = len(p) - 1, len(p) + len(c) - 1
            results.append((float(token_logp[i, lo:hi].sum()), len(c)))
        if progress is not None:
            progress(len(chunk))
    return results
