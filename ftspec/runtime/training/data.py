"""The prepare_data step: read the sources, map and format every row into TRL's
columns, split with the plan's seed, and write the splits and their statistics.

The same :class:`~ftspec.data.formatting.RowFormatter` that ``validate`` checks a sample
with formats every row here, so what validated is what trains.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

from ftspec.core import io
from ftspec.core.errors import Issue, Pos, SpecError
from ftspec.data import templates as tpl
from ftspec.data.formatting import FormatError, RowFormatter, teacher_sources
from ftspec.data.sources import RowError, read_rows
from ftspec.data.splitting import SPLITS, filter_verdict, split_indices, split_limits, verdict_problem


def _read_source(split: str, src: Any, root: Path, on_bad_row: str, skipped: list) -> tuple[list[dict], list[str]]:
    """All rows of one source, and where each came from (``FILE:ROW``)."""
    if src.kind == "hub":
        return _read_hub(split, src)
    path = root / src.path
    shown = src.path
    if not path.is_file():
        raise SpecError.one(Pos(shown), f"data.{split}", "data file was deleted since the plan was made")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != src.sha256:
        raise SpecError.one(Pos(shown), f"data.{split}",
                            "data file changed since the plan was made (sha256 differs); plan again")
    rows, where = [], []
    try:
        for row in read_rows(path, src.format, shown, list(src.columns) if src.columns else None, src.header, src.field,
                             on_bad_row=on_bad_row, skipped=skipped):
            rows.append(row.values)
            where.append(f"{shown}:{row.number}")
    except RowError as exc:
        raise SpecError([exc.issue()]) from None
    return rows, where


def _read_hub(split: str, src: Any) -> tuple[list[dict], list[str]]:
    import datasets

    kwargs = {"split": src.split}
    if src.revision:
        kwargs["revision"] = src.revision
    from ftspec.runtime.models import hub_id  # deferred: torch, which preparing data for Bedrock never needs

    name = hub_id(src.hub, f"data.{split}.hub")
    try:
        ds = datasets.load_dataset(name, src.subset, **kwargs)
    except Exception as exc:  # datasets raises many kinds: not found, offline, no such split
        raise SpecError.one(Pos(f"hub:{src.hub}"), f"data.{split}",
                            f"cannot load the hub dataset: {str(exc).splitlines()[0]}") from None
    rows = [dict(r) for r in ds]
    return rows, [f"hub:{src.hub}[{src.split}]:{i + 1}" for i in range(len(rows))]


def _format_rows(rows: list[dict], where: list[str], formatter: RowFormatter, on_bad_row: str, skipped: list,
                 row_filter: Any = None, dropped: list | None = None,
                 answer: bool = True) -> tuple[list[dict], list[dict], list[str]]:
    """Formatted records, the mapped columns of each (for stratifying), and their origins.
    A row that ``row_filter`` (data.filter's template) renders false for is left out and
    its origin added to ``dropped``."""
    records, columns, origins = [], [], []
    for values, origin in zip(rows, where):
        try:
            mapped = formatter.columns(values)
            if row_filter is not None and not _keeps(row_filter, mapped, origin):
                if dropped is not None:
                    dropped.append(origin)
                continue
            record = formatter.render(mapped, answer)
        except FormatError as exc:
            file, _, row = origin.rpartition(":")
            if on_bad_row == "skip":
                skipped.append(RowError(Pos(file, int(row) if row.isdigit() else None), f"{exc.key}: {exc.message}"))
                continue
            raise SpecError([Issue(Pos(file, int(row) if row.isdigit() else None), exc.key, exc.message)]) from None
        records.append(record)
        columns.append(mapped)
        origins.append(origin)
    return records, columns, origins


def _keeps(row_filter: Any, mapped: dict, origin: str) -> bool:
    """data.filter's verdict on one row (after renames and derived columns). A rendering
    that is neither true nor false is the filter's mistake: an error at its key, naming the row."""
    text = RowFormatter._render(row_filter, mapped, "data.filter")
    verdict = filter_verdict(text)
    if verdict is None:
        raise SpecError.one(Pos("data.filter"), "data.filter", f"{verdict_problem(text)} (row {origin})")
    return verdict


def build_splits(data: Any, fmt: Any, root: Path,
                 distill: bool = False) -> tuple[dict[str, list[dict]], dict[str, Any]]:
    """Every split's formatted records (from the plan's ``data`` and ``format``
    sections), and counts of what was skipped. ``distill``: the sources a teacher
    answers are formatted without their answers (ftspec.data.formatting.teacher_sources)."""
    prompts_only = teacher_sources(distill, data.sources, _test_from_train(data))
    formatter = RowFormatter.from_plan(data, fmt)
    row_filter = tpl.environment().from_string(data.filter.text) if data.filter is not None else None
    skipped: list[RowError] = []
    filtered: dict[str, int] = {}  # rows data.filter dropped, per source
    out: dict[str, list[dict]] = {}
    origins: dict[str, list[str]] = {}  # FILE:ROW of each record, so later steps can point at a row
    stratify_values: list = []
    s = data.split
    for split in SPLITS:
        src = data.sources.get(split)
        if src is None:
            continue
        rows, where = _read_source(split, src, root, data.on_bad_row, skipped)
        dropped: list[str] = []
        out[split], columns, origins[split] = _format_rows(rows, where, formatter, data.on_bad_row, skipped,
                                                           row_filter, dropped, split not in prompts_only)
        if row_filter is not None:
            filtered[split] = len(dropped)
            if dropped and len(dropped) == len(rows):
                shown = getattr(src, "path", None) or f"hub:{getattr(src, 'hub', '')}"
                raise SpecError.one(Pos("data.filter"), "data.filter",
                                    f"drops every row of {shown} ({len(rows)} rows); nothing is left to "
                                    f"{'train on' if split == 'train' else 'hold out'}")
        if split == "train" and s is not None and s.stratify:
            stratify_values = [json.dumps(c.get(s.stratify), sort_keys=True, default=str) for c in columns]
    if s is not None:
        train, train_origins = out["train"], origins["train"]
        labels = stratify_values if s.stratify else None
        tr, va, te = split_indices(len(train), s.validation, s.test, s.seed, labels)
        for name, index, fraction in (("validation", va, s.validation), ("test", te, s.test), ("train", tr, 1)):
            if name == "train" or (name not in data.sources and fraction > 0):
                out[name], origins[name] = [train[i] for i in index], [train_origins[i] for i in index]
    for split, cut in split_limits(data.limit).items():
        if cut is not None and split in out:
            out[split], origins[split] = out[split][:cut], origins[split][:cut]
    for split, records in out.items():
        if not records:
            what = ("after skipping bad rows" if skipped else
                    "after data.filter and splitting" if sum(filtered.values()) else "after splitting")
            raise SpecError.one(Pos(f"data.{split}"), f"data.{split}", f"the {split} split is empty {what}")
    stats = {"skipped_rows": len(skipped), "skipped_examples": [str(e) for e in skipped[:20]], "origins": origins}
    if row_filter is not None:
        stats["filtered_rows"] = filtered  # per source, before splitting
    return out, stats



def _test_from_train(data: Any) -> bool:
    return data.split is not None and data.split.test > 0 and "test" not in data.sources


def write_splits(data, fmt, root: Path, out: Path,
                 distill: bool = False) -> tuple[dict[str, list[dict]], dict, dict[str, list[str]]]:
    """The first part of preparing the data, whatever the backend: every split formatted, written as
    ``<split>.jsonl`` with ``origins.json`` (each record's FILE:ROW) beside them. Returns the
    splits, what :func:`build_splits` counted, and the origins."""
    splits, skipped = build_splits(data, fmt, root, distill)
    origins = skipped.pop("origins")
    io.write_json(out / "origins.json", origins)
    for split, records in splits.items():
        write_jsonl(out / f"{split}.jsonl", records)
    return splits, skipped, origins

def _percentile(sorted_values: list[int], q: float) -> int:
    if not sorted_values:
        return 0
    k = max(0, min(len(sorted_values) - 1, math.ceil(q / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


TOKENIZE_BATCH = 512  # rows per tokenizer call: fast tokenizers encode a batch in parallel


def tokenize(records: list[dict], kind: str, tokenizer, loss: str,
             name: str = "") -> tuple[list[list[int]], list[list[int]]]:
    """Every row as the SFT trainer consumes it: token ids, and labels that are -100
    where a token carries no loss. Rows are encoded in batches.

    This is TRL's own preparation, done once here so that it is cached with this step:
    text rows get the EOS token appended to the completion and the completion starts
    where the tokenized prompt and prompt+completion diverge; chat rows are rendered by
    the chat template (with TRL's training variant of it when assistant-only loss needs
    ``{% generation %}`` markers the template lacks). Preference rows are encoded as
    prompt + chosen, for the statistics only. ``tests/runtime/training/test_prepared_tokens.py`` holds
    the result equal to what ``SFTTrainer`` prepares from the same rows.
    """
    import sys

    from tqdm.auto import tqdm

    input_ids: list[list[int]] = []
    labels: list[list[int]] = []
    template = None
    if kind == "chat" and loss == "assistant":
        from trl.chat_template_utils import get_training_chat_template

        if not tpl.has_generation_markers(tokenizer.chat_template or ""):
            try:
                template = get_training_chat_template(tokenizer)
            except ValueError:  # trl patches only the templates it knows

                raise SpecError([tpl.no_generation_markers(Pos("format.chat_template"))]) from None
    eos = tokenizer.eos_token or ""
    bar = tqdm(total=len(records), desc=f"tokenize {name}", unit="row", leave=False, disable=not sys.stderr.isatty())
    for start in range(0, len(records), TOKENIZE_BATCH):
        chunk = records[start:start + TOKENIZE_BATCH]
        if kind == "chat":
            enc = tokenizer.apply_chat_template([r["messages"] for r in chunk], chat_template=template, tokenize=True,
                                                return_dict=True, return_assistant_tokens_mask=loss == "assistant")
            masks = enc["assistant_masks"] if loss == "assistant" else [None] * len(chunk)
            for ids, mask in zip(enc["input_ids"], masks):
                ids = list(ids)
                input_ids.append(ids)
                labels.append(ids if mask is None else [t if m else -100 for t, m in zip(ids, mask)])
        else:
            answer = "completion" if kind == "prompt_completion" else "chosen"
            prompts = tokenizer([r["prompt"] for r in chunk])["input_ids"]
            fulls = tokenizer([r["prompt"] + (r[answer] if r[answer].endswith(eos) else r[answer] + eos)
                               for r in chunk])["input_ids"]
            for prompt, full in zip(prompts, fulls):
                full = list(full)
                n = _common_prefix(prompt, full) if loss != "all" else 0
                input_ids.append(full)
                labels.append([-100] * n + full[n:])
        bar.update(len(chunk))
    bar.close()
    return input_ids, labels


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def token_stats(input_ids: list[list[int]], labels: list[list[int]], max_length: int) -> dict:
    """Token-length percentiles, the truncation rate at ``max_length``, and the share
    of tokens that carry loss (after truncation), as the trainer will see them."""
    lengths = sorted(len(ids) for ids in input_ids)
    truncated = sum(1 for n in lengths if n > max_length)
    kept = [row[:max_length] for row in labels]
    total_tokens = sum(len(row) for row in kept)
    loss_tokens = sum(1 for row in kept for t in row if t != -100)
    rows = len(input_ids)
    return {
        "rows": rows,
        "tokens": {"p50": _percentile(lengths, 50), "p90": _percentile(lengths, 90), "p99": _percentile(lengths, 99),
                   "max": lengths[-1] if lengths else 0, "mean": round(sum(lengths) / rows, 1) if rows else 0},
        "truncated_rows": truncated,
        "truncation_rate": round(truncated / rows, 4) if rows else 0.0,
        "loss_token_fraction": round(loss_tokens / total_tokens, 4) if total_tokens else 0.0,
    }


def save_tokens(path: Path, input_ids: list[list[int]], labels: list[list[int]]) -> None:
    """The tokenized rows as an Arrow dataset the train step reads without tokenizing again."""
    from datasets import Dataset

    Dataset.from_dict({"input_ids": input_ids, "labels": labels}).save_to_disk(str(path))


def load_tokens(path: Path):
    from datasets import load_from_disk

    # In memory, so the trainer's own passes over it write no cache files into this step's folder.
    return load_from_disk(str(path), keep_in_memory=True)


# The splits are JSON lines, written atomically and read strictly (ftspec.core.io).
write_jsonl = io.write_jsonl
read_jsonl = io.read_jsonl


def training_texts(records: list[dict], kind: str) -> list[str]:
    """The text a tokenizer is trained on: every field of every training record."""
    texts = []
    for r in records:
        if kind == "chat":
            texts.extend(m["content"] for m in r["messages"])
        else:
            texts.extend(v for v in r.values() if isinstance(v, str))
    return texts
