"""Held-out evaluation: batched greedy generation over the evaluation split, scored
against the references the format defines."""

from __future__ import annotations

from typing import Mapping

import torch

from ftspec.formatting import reference


def eval_prompts(records: list[dict], kind: str, tokenizer) -> list[str]:
    """The prompt of each record, as the model sees it at inference time."""
    if kind == "chat":
        prompts = []
        for r in records:
            messages = list(r["messages"])
            while messages and messages[-1]["role"] == "assistant":
                messages.pop()
            prompts.append(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
        return prompts
    return [r["prompt"] for r in records]


def stop_token_ids(tokenizer) -> list[int]:
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>") if "<|im_end|>" in tokenizer.get_vocab() else None
    if im_end is not None and im_end not in ids:
        ids.append(im_end)
    return ids


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int,
             stop: list[str] = (), chat: bool = False, progress=None) -> list[str]:
    """Greedy answers, in batches: left padding so every prompt ends where generation starts."""
    model.eval()
    device = next(model.parameters()).device
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    answers: list[str] = []
    try:
        for start in range(0, len(prompts), batch_size):
            batch = prompts[start:start + batch_size]
            enc = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=not chat).to(device)
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, use_cache=True,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=stop_token_ids(tokenizer))
            new = out[:, enc["input_ids"].shape[1]:]
            for text in tokenizer.batch_decode(new, skip_special_tokens=True):
                for s in stop:
                    text = text.split(s, 1)[0]
                answers.append(text)
            if progress is not None:
                progress(len(batch))
    finally:
        tokenizer.padding_side = side
    return answers


def score(records: list[dict], predictions: list[str], kind: str) -> tuple[dict, list[dict]]:
    """Accuracy (exact match after trimming) and the per-example rows."""
    rows = []
    correct = 0
    for r, pred in zip(records, predictions):
        ref = reference(kind, r)
        ok = pred.strip() == ref
        correct += ok
        rows.append({"reference": ref, "prediction": pred, "correct": ok})
    n = len(rows)
    return {"accuracy": correct / n if n else 0.0, "rows": n}, rows


def eval_records(data_dir, split: str, limit: int | None) -> list[dict]:
    from ftspec.runtime.data import read_jsonl

    records = read_jsonl(data_dir / f"{split}.jsonl")
    return records[:limit] if limit else records


def evaluate(model, tokenizer, plan: Mapping, data_dir, progress=None) -> tuple[dict, list[dict]]:
    e = plan["eval"]
    kind = plan["format"]["kind"]
    records = eval_records(data_dir, e["split"], e["limit"])
    prompts = eval_prompts(records, kind, tokenizer)
    predictions = generate(model, tokenizer, prompts, e["max_new_tokens"], e["batch_size"], e["stop"],
                           chat=kind == "chat", progress=progress)
    return score(records, predictions, kind)
