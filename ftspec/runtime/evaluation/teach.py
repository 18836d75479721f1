"""Teacher generation: the teacher answers the training and validation prompts, and the
student learns from the answers it keeps (sequence-level distillation).

- ``teacher_prompts``: what the teacher is given, rendered as evaluation renders prompts
  (the test split is never shown to it);
- ``run_teacher``: greedy answers in batches, each batch appended to ``answers.jsonl`` in
  the step's scratch folder and synced before the next one starts, so a run killed at any
  moment keeps what it finished and the next attempt asks only for the rest; then the
  filter (an extraction that must match, a length limit, no blank answers);
- ``with_answers``: a split's records with the teacher's text in place of their answers;
- ``summary``: what ``teach.json`` says about the answers.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ftspec.core import io
from ftspec.core.errors import Pos, SpecError
from ftspec.data.formatting import prompt_messages
from ftspec.runtime.evaluation.evaluate import Example, chat_prompt, choose, generate
from ftspec.runtime.evaluation.extraction import extract

ANSWERS = "answers.jsonl"
SPLITS = ("train", "validation")  # the test split is held out from the teacher too
REASONS = ("empty", "too long", "no match")
EXAMPLES = 5  # dropped answers shown in teach.json, per split


# --------------------------------------------------------------------------- prompts


def teacher_prompts(splits: dict[str, list[dict]], kind: str, tokenizer) -> list[dict]:
    """One item per training and validation record: ``{"split", "index", "prompt", "chat"}``.

    ``prompt`` is the text the teacher continues: a text record's prompt, or a chat
    record's conversation before its last assistant turn rendered with the teacher's
    chat template and its generation prompt (as evaluation renders it). ``chat`` tells
    the generation not to add special tokens the template already wrote.
    """
    if kind not in ("prompt_completion", "chat"):
        raise ValueError(f"a teacher answers prompt_completion or chat records, not {kind}")
    chat = kind == "chat"
    items = []
    for split in SPLITS:
        for i, record in enumerate(splits.get(split) or []):
            messages = prompt_messages(record) if chat else None
            prompt = chat_prompt(messages, tokenizer) if chat else record["prompt"]
            items.append({"split": split, "index": i, "prompt": prompt, "chat": chat, "messages": messages})
    return items


def _answers(model, tokenizer, batch: list[dict], settings: Any, max_length: int | None) -> list[str]:
    """One batch's answers: generated greedily, or (mode choices) the likeliest label after
    each prompt, scored as evaluation's choices mode scores it, with the whitespace the
    format's answers start with before it (``settings.prefix``)."""
    chat = bool(batch[0].get("chat"))
    if getattr(settings, "mode", "generate") != "choices":
        return generate(model, tokenizer, [p["prompt"] for p in batch], settings.max_new_tokens,
                        max(1, int(settings.batch_size)), list(settings.stop), chat=chat, max_length=max_length)
    prefix = getattr(settings, "prefix", "")
    examples = [Example(p["prompt"], prefix, "", {}, p.get("messages")) for p in batch]
    labels = choose(model, tokenizer, examples, list(settings.choices), "chat" if chat else "prompt_completion",
                    max(1, int(settings.batch_size)), max_length)
    return [label if chat else prefix + label for label in labels]


# --------------------------------------------------------------------------- answering


def _key(item: dict) -> tuple:
    return (item["split"], item["index"], item["prompt"])


def _line(row: dict) -> str:
    return json.dumps(row, ensure_ascii=False) + "\n"


def _extract_spec(e: Any) -> dict:
    """The plan's extraction (an object or a dict) as metrics.extract takes it."""
    if isinstance(e, dict):
        return e
    return {"regex": getattr(e, "regex", None), "template": getattr(e, "template", None),
            "which": getattr(e, "which", "last")}


def _row(item: dict, answer: str, flt: Any, tokenizer) -> dict:
    """An answer and what the filter makes of it."""
    extraction = getattr(flt, "extract", None)
    max_tokens = getattr(flt, "max_tokens", None)
    reason, text = None, None
    if not answer.strip():
        reason = "empty"
    elif max_tokens is not None and len(tokenizer(answer, add_special_tokens=False)["input_ids"]) > max_tokens:
        reason = "too long"
    elif extraction is not None:
        found = extract(answer, _extract_spec(extraction))
        if not found:
            reason = "no match"
        elif getattr(flt, "train_on", "answer") == "extracted":
            text = found
    if reason is None and text is None:
        text = answer
    return {"split": item["split"], "index": item["index"], "prompt": item["prompt"], "answer": answer,
            "kept": reason is None, "reason": reason, "text": text}


def _earlier_answers(path: Path, wanted: set) -> dict[tuple, str]:
    """The answers an earlier attempt saved for prompts still asked: a half-written last
    line (the attempt was killed while writing) and rows for other prompts are ignored."""
    found: dict[tuple, str] = {}
    for _, _, row in io.iter_jsonl(path, lenient=True):
        if not isinstance(row, dict) or not isinstance(row.get("answer"), str):
            continue
        try:
            key = (row.get("split"), row.get("index"), row.get("prompt"))
            if key in wanted:
                found[key] = row["answer"]
        except TypeError:  # an unhashable value where a key belongs
            continue
    return found


def run_teacher(model, tokenizer, prompts: list[dict], settings: Any, scratch: Path,
                echo: Callable[[str], Any] = print, max_length: int | None = None) -> list[dict]:
    """Every prompt's answer from the teacher, filtered: rows in ``prompts``' order.

    ``settings`` is the plan's ``method.distill``. Prompts are answered greedily in
    batches of ``settings.batch_size``; after each batch its rows are appended to
    ``scratch/answers.jsonl`` and synced to disk. What that file already holds for the
    same prompts (same split, index and prompt text) is kept and not asked again. At the
    end the file holds exactly the returned rows, in order.
    """
    flt = settings.filter
    if getattr(flt, "train_on", "answer") == "extracted" and getattr(flt, "extract", None) is None:
        raise SpecError.one(Pos("method.filter.train_on"), "method.filter.train_on",
                            "'extracted' needs an extraction (method.filter.extract) to take the text from")
    scratch = Path(scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    path = scratch / ANSWERS
    keys = [_key(p) for p in prompts]
    earlier = _earlier_answers(path, set(keys))
    rows: dict[tuple, dict] = {k: _row(p, earlier[k], flt, tokenizer) for p, k in zip(prompts, keys) if k in earlier}
    if earlier:
        echo(f"  teacher: {len(rows)} of {len(prompts)} answers kept from an earlier attempt")
    # Start the file again from what is kept: no half-written line for the next batch to run on from.
    io.write_atomic(path, "".join(_line(rows[k]) for k in keys if k in rows))

    missing = [p for p, k in zip(prompts, keys) if k not in rows]
    # Longest prompts first (as evaluate.generate orders them): batches of similar length pad less.
    missing.sort(key=lambda p: -len(p["prompt"]))
    size = max(1, int(settings.batch_size))
    total, done, shown = len(missing), 0, 0
    for start in range(0, total, size):
        batch = missing[start:start + size]
        answers = _answers(model, tokenizer, batch, settings, max_length)
        new = [_row(p, a, flt, tokenizer) for p, a in zip(batch, answers)]
        io.append_durably(path, "".join(_line(r) for r in new))
        for p, r in zip(batch, new):
            rows[_key(p)] = r
        done += len(batch)
        if done == total or done * 10 // total > shown:
            shown = done * 10 // total
            echo(f"  teacher: {done}/{total} prompts answered")
    ordered = [rows[k] for k in keys]
    io.write_atomic(path, "".join(_line(r) for r in ordered))
    return ordered


# --------------------------------------------------------------------------- the student's data


def _leading_space(text: str) -> str:
    return text[: len(text) - len(text.lstrip())]


def with_answers(records: list[dict], kind: str, rows: list[dict], split: str | None = None) -> tuple[list[dict], int]:
    """One split's records with the teacher's text as their answers, the dropped ones left
    out: (records in index order, how many were dropped). ``rows`` are that split's rows
    (or give ``split`` to pick them out of all of them).

    A text record's completion is the teacher's answer as it continued the prompt, its
    leading whitespace included (the teacher wrote " billing" after "Queue:", and
    prompt + completion is what it produced); with ``train_on: extracted`` the extracted
    text keeps the whitespace the answer began with. A chat record's last assistant turn
    is the teacher's text.
    """
    if split is not None:
        rows = [r for r in rows if r["split"] == split]
    named = {r["split"] for r in rows}
    if len(named) > 1:
        raise ValueError(f"rows of several splits ({', '.join(sorted(named))}): name the split")
    by_index = {r["index"]: r for r in rows}
    if set(by_index) != set(range(len(records))):
        raise ValueError(f"the teacher's rows ({len(by_index)}) do not match the split's {len(records)} records")
    out, dropped = [], 0
    for i in range(len(records)):
        row, record = by_index[i], records[i]
        if not row["kept"]:
            dropped += 1
            continue
        text = row["text"]
        if kind == "chat":
            out.append({**record, "messages": prompt_messages(record) + [{"role": "assistant", "content": text}]})
        elif kind == "prompt_completion":
            if text != row["answer"] and not _leading_space(text):
                text = _leading_space(row["answer"]) + text
            out.append({**record, "completion": text})
        else:
            raise ValueError(f"a teacher answers prompt_completion or chat records, not {kind}")
    return out, dropped


def summary(rows: list[dict], examples: int = EXAMPLES) -> dict:
    """For teach.json: per split, the rows, how many were kept, the dropped ones by
    reason, and the first few dropped answers."""
    out: dict = {"rows": len(rows), "kept": sum(1 for r in rows if r["kept"]), "splits": {}}
    for r in rows:
        s = out["splits"].setdefault(r["split"], {"rows": 0, "kept": 0, "dropped": {}, "examples": []})
        s["rows"] += 1
        if r["kept"]:
            s["kept"] += 1
            continue
        s["dropped"][r["reason"]] = s["dropped"].get(r["reason"], 0) + 1
        if len(s["examples"]) < examples:
            answer = r["answer"] if len(r["answer"]) <= 300 else r["answer"][:300] + "…"
            s["examples"].append({"index": r["index"], "reason": r["reason"], "answer": answer})
    out["dropped"] = {reason: sum(s["dropped"].get(reason, 0) for s in out["splits"].values())
                      for reason in REASONS if any(reason in s["dropped"] for s in out["splits"].values())}
    return out
