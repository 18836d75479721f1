"""Where a generated answer ends, as ``generate()`` itself stops.

Generation stops at the first of: an end-of-sequence id (the tokenizer's, and every
id in the model's ``generation_config.eos_token_id``), the token the chat template
closes an assistant turn with (``<|im_end|>``, ``<|eot_id|>``, ``<end_of_turn>``…,
found by rendering a turn, not from a list of names), or one of the spec's
``eval.stop`` strings (``generate``'s ``stop_strings``). Then no tokens are spent
after the answer, and the stop string itself is cut from the scored text.
"""

from __future__ import annotations

from typing import Any, Sequence

_ANSWER = "ftspec-answer-7f3a"  # stands for an assistant's answer when rendering the chat template


def _ids(value: Any) -> list[int]:
    if value is None:
        return []
    if isinstance(value, int):
        return [value]
    return [int(v) for v in value]


def end_of_turn_ids(tokenizer) -> list[int]:
    """The special token the chat template writes right after an assistant's answer
    (none when the tokenizer has no chat template, or the template ends a turn with
    ordinary text)."""
    if not getattr(tokenizer, "chat_template", None):
        return []
    try:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _ANSWER}], tokenize=False)
    except Exception:  # a template that wants other roles or a system message: nothing to learn from it
        return []
    at = text.find(_ANSWER)
    if at < 0:
        return []
    after = text[at + len(_ANSWER):]
    ids = tokenizer(after, add_special_tokens=False)["input_ids"] if after else []
    special = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}) or {})
    return [ids[0]] if ids and ids[0] in special else []


def stop_token_ids(tokenizer, model=None) -> list[int]:
    """Every id that ends an answer: end of sequence (tokenizer and model) and end of turn."""
    found = _ids(tokenizer.eos_token_id)
    config = getattr(model, "generation_config", None)
    found += _ids(getattr(config, "eos_token_id", None))
    found += end_of_turn_ids(tokenizer)
    return list(dict.fromkeys(found))  # in order, once each


def stopping_arguments(model, tokenizer, stop: Sequence[str] = ()) -> dict:
    """Keyword arguments for ``model.generate``: its end-of-sequence ids, and the stop
    strings (which ``generate`` needs the tokenizer for)."""
    kwargs: dict = {"eos_token_id": stop_token_ids(tokenizer, model)}
    stop = [s for s in stop if s]
    if stop:
        kwargs.update(stop_strings=list(stop), tokenizer=tokenizer)
    return kwargs


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """The answer before the first stop string (``generate`` stops on the token that
    completes one, which may run past it)."""
    cut = len(text)
    for s in stop:
        if s:
            at = text.find(s)
            if 0 <= at < cut:
                cut = at
    return text[:cut]
