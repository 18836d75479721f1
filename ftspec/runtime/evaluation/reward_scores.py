"""A reward model's scores of texts: the one function the evaluation of a reward model (its held-out
pairs) and a GRPO stage that uses it as a reward (its completions) both score with, so that what
is optimised is what was measured."""

from __future__ import annotations

from typing import Callable

import torch


@torch.no_grad()
def text_scores(model, tokenizer, texts: list[str], batch_size: int, max_length: int | None = None,
                progress: Callable[[int], None] | None = None) -> list[float]:
    """The reward model's score of each text, in batches (right padding: the head reads the last
    token before the padding). Each text is scored as trl's reward trainer scores its rows: with the
    tokenizer's special tokens and the end-of-sequence token after it (cut to ``max_length``)."""
    model.eval()
    device = next(model.parameters()).device
    eos = tokenizer.eos_token or ""
    side = tokenizer.padding_side
    tokenizer.padding_side = "right"
    scores: list[float] = []
    try:
        for start in range(0, len(texts), batch_size):
            batch = [t if t.endswith(eos) else t + eos for t in texts[start:start + batch_size]]
            enc = tokenizer(batch, return_tensors="pt", padding=True, truncation=max_length is not None,
                            max_length=max_length).to(device)
            scores.extend(float(x) for x in model(**enc).logits[:, 0].float().cpu())
            if progress is not None:
                progress(len(batch))
    finally:
        tokenizer.padding_side = side
    return scores


def pair_scores(model, tokenizer, records: list[dict], batch_size: int, max_length: int | None = None,
                progress: Callable[[int], None] | None = None) -> list[tuple[float, float]]:
    """(score of prompt + chosen, score of prompt + rejected) of each preference pair."""
    texts = [t for r in records for t in (r["prompt"] + r["chosen"], r["prompt"] + r["rejected"])]
    scores = text_scores(model, tokenizer, texts, batch_size, max_length, progress)
    return [(scores[2 * i], scores[2 * i + 1]) for i in range(len(records))]
