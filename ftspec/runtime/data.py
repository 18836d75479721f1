"""The prepare_data step: read the sources, map and format every row into TRL's
columns, split with the plan's seed, and write the splits and their statistics.

The same :class:`~ftspec.formatting.RowFormatter` that ``validate`` checks a sample
with formats every row here, so what validated is what trains.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Mapping

from ftspec.errors import Issue, Pos, SpecError
from ftspec.formatting import FormatError, RowFormatter, reference
from ftspec.sources import RowError, read_rows
from ftspec.splitting import split_indices

SPLITS = ("train", "validation", "test")


def _read_source(split: str, src: Mapping, root: Path, on_bad_row: str, skipped: list) -> tuple[list[dict], list[str]]:
    """All rows of one source, and where each came from (``FILE:ROW``)."""
    if src["kind"] == "hub":
        return _read_hub(split, src)
    path = root / src["path"]
    shown = src["path"]
    if not path.is_file():
        raise SpecError.one(Pos(shown), f"data.{split}", "data file was deleted since the plan was made")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != src["sha256"]:
        raise SpecError.one(Pos(shown), f"data.{split}",
                            "data file changed since the plan was made (sha256 differs); plan again")
    rows, where = [], []
    try:
        for row in read_rows(path, src["format"], shown, src["columns"], src["header"], src["field"],
                             on_bad_row=on_bad_row, skipped=skipped):
            rows.append(row.values)
            where.append(f"{shown}:{row.number}")
    except RowError as exc:
        raise SpecError([exc.issue()]) from None
    return rows, where


def _read_hub(split: str, src: Mapping) -> tuple[list[dict], list[str]]:
    import datasets

    kwargs = {"split": src["split"]}
    if src["revision"]:
        kwargs["revision"] = src["revision"]
    try:
        ds = datasets.load_dataset(src["hub"], src["subset"], **kwargs)
    except Exception as exc:  # datasets raises many kinds: not found, offline, no such split
        raise SpecError.one(Pos(f"hub:{src['hub']}"), f"data.{split}", f"cannot load the hub dataset: {str(exc).splitlines()[0]}") from None
    rows = [dict(r) for r in ds]
    return rows, [f"hub:{src['hub']}[{src['split']}]:{i + 1}" for i in range(len(rows))]


def _format_rows(rows: list[dict], where: list[str], formatter: RowFormatter, on_bad_row: str, skipped: list) -> tuple[list[dict], list[dict], list[str]]:
    """Formatted records, the mapped columns of each (for stratifying), and their origins."""
    records, columns, origins = [], [], []
    for values, origin in zip(rows, where):
        try:
            mapped = formatter.columns(values)
            record = formatter.render(mapped)
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


def _check_choices(plan: Mapping, records: list[dict], origins: list[str]) -> None:
    """In choices mode every answer must be one of the allowed labels."""
    e = plan["eval"]
    if e["mode"] != "choices" or not e["choices"]:
        return
    allowed = set(e["choices"])
    for record, origin in zip(records, origins):
        ref = reference(plan["format"]["kind"], record)
        if ref not in allowed:
            file, _, row = origin.rpartition(":")
            raise SpecError.one(Pos(file, int(row) if row.isdigit() else None), "eval.choices",
                                f"the answer {ref!r} is not one of eval.choices ({', '.join(e['choices'])})")


def build_splits(plan: Mapping, root: Path) -> tuple[dict[str, list[dict]], dict[str, Any]]:
    """Every split's formatted records, and counts of what was skipped."""
    data = plan["data"]
    formatter = RowFormatter.from_plan(data, plan["format"])
    skipped: list[RowError] = []
    out: dict[str, list[dict]] = {}
    stratify_values: list = []
    for split in SPLITS:
        src = data["sources"].get(split)
        if src is None:
            continue
        rows, where = _read_source(split, src, root, data["on_bad_row"], skipped)
        records, columns, origins = _format_rows(rows, where, formatter, data["on_bad_row"], skipped)
        _check_choices(plan, records, origins)
        out[split] = records
        if split == "train" and data["split"] and data["split"]["stratify"]:
            key = data["split"]["stratify"]
            stratify_values = [json.dumps(c.get(key), sort_keys=True, default=str) for c in columns]
    if data["split"]:
        s = data["split"]
        train = out["train"]
        labels = stratify_values if s["stratify"] else None
        tr, va, te = split_indices(len(train), s["validation"], s["test"], s["seed"], labels)
        if "validation" not in data["sources"] and s["validation"] > 0:
            out["validation"] = [train[i] for i in va]
        if "test" not in data["sources"] and s["test"] > 0:
            out["test"] = [train[i] for i in te]
        out["train"] = [train[i] for i in tr]
    if data["limit"]:
        out = {k: v[: data["limit"]] for k, v in out.items()}
    for split, records in out.items():
        if not records:
            what = "after skipping bad rows" if skipped else "after splitting"
            raise SpecError.one(Pos(f"data.{split}"), f"data.{split}", f"the {split} split is empty {what}")
    stats = {"skipped_rows": len(skipped), "skipped_examples": [str(e) for e in skipped[:20]]}
    return out, stats


def _percentile(sorted_values: list[int], q: float) -> int:
    if not sorted_values:
        return 0
    k = max(0, min(len(sorted_values) - 1, math.ceil(q / 100 * len(sorted_values)) - 1))
    return sorted_values[k]


def token_stats(records: list[dict], kind: str, tokenizer, max_length: int, loss: str, name: str = "") -> dict:
    """Token-length percentiles, the truncation rate at ``max_length``, and the share
    of tokens that carry loss (after truncation), as the trainer will see them."""
    import sys

    from tqdm.auto import tqdm

    lengths: list[int] = []
    loss_tokens = total_tokens = truncated = 0
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    for r in tqdm(records, desc=f"tokenize {name}", unit="row", leave=False, disable=not sys.stderr.isatty()):
        if kind == "chat":
            enc = tokenizer.apply_chat_template(r["messages"], tokenize=True, return_dict=True,
                                                return_assistant_tokens_mask=(loss == "assistant"))
            ids = enc["input_ids"]
            mask = enc.get("assistant_masks") if loss == "assistant" else [1] * len(ids)
            n, trained = len(ids), mask
        else:
            completion = r["completion"] if kind == "prompt_completion" else r["chosen"]
            prompt_ids = tokenizer(r["prompt"], add_special_tokens=False)["input_ids"]
            full_ids = tokenizer(r["prompt"] + completion, add_special_tokens=False)["input_ids"] + eos
            n = len(full_ids)
            n_prompt = min(len(prompt_ids), n)
            trained = [0] * n_prompt + [1] * (n - n_prompt) if loss != "all" else [1] * n
        lengths.append(n)
        if n > max_length:
            truncated += 1
        kept = trained[:max_length]
        loss_tokens += sum(1 for t in kept if t)
        total_tokens += len(kept)
    lengths.sort()
    return {
        "rows": len(records),
        "tokens": {"p50": _percentile(lengths, 50), "p90": _percentile(lengths, 90), "p99": _percentile(lengths, 99),
                   "max": lengths[-1] if lengths else 0, "mean": round(sum(lengths) / len(lengths), 1) if lengths else 0},
        "truncated_rows": truncated,
        "truncation_rate": round(truncated / len(records), 4) if records else 0.0,
        "loss_token_fraction": round(loss_tokens / total_tokens, 4) if total_tokens else 0.0,
    }


def write_jsonl(path: Path, records: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def training_texts(records: list[dict], kind: str) -> list[str]:
    """The text a tokenizer is trained on: every field of every training record."""
    texts = []
    for r in records:
        if kind == "chat":
            texts.extend(m["content"] for m in r["messages"])
        else:
            texts.extend(v for v in r.values() if isinstance(v, str))
    return texts
