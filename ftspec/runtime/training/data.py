"""The second part of prepare_data on this machine: every split tokenized as the SFT
trainer consumes it, streamed in batches from the split's file, with its statistics
computed in the same pass (ftspec.runtime.training.splits writes the splits).

What SFT trains and validates on is written as Arrow shards of :data:`SHARD_ROWS` rows,
memory-mapped by the train step, already cut to ``training.max_length`` with the rows
left without a loss token dropped (what TRL's own preparation would do when training
starts, done once here and cached with the step). A shard is complete once renamed into
place, so a preparation cut off part-way tokenizes only the shards still missing.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Callable, Iterable, Iterator

from ftspec.core import io
from ftspec.core.errors import Pos, SpecError
from ftspec.data import prepared
from ftspec.data import templates as tpl

TOKENIZE_BATCH = 512  # rows per tokenizer call
SHARD_ROWS = 100_000  # rows per Arrow shard of tokens: what a cut-off preparation redoes at most
TOKENIZER_ROWS = 200_000  # training records a tiny model's BPE tokenizer is trained on (the first ones)


def _training_template(tokenizer, kind: str, loss: str):
    """TRL's training variant of the chat template, where assistant-only loss needs
    ``{% generation %}`` markers the tokenizer's template lacks (None: the template as it is)."""
    if kind != "chat" or loss != "assistant" or tpl.has_generation_markers(tokenizer.chat_template or ""):
        return None
    from trl.chat_template_utils import get_training_chat_template

    try:
        return get_training_chat_template(tokenizer)
    except ValueError:  # trl patches only the templates it knows
        raise SpecError([tpl.no_generation_markers(Pos("format.chat_template"))]) from None


class TextIds:
    """Token ids of a batch of texts, as ``tokenizer(texts)["input_ids"]`` gives them. The
    fast tokenizer's own batch encoder without offsets (``encode_batch_fast``) is ~2.4x
    quicker; it is used once it gave the same ids as the tokenizer's call on the first
    batch, and never for a tokenizer where it does not."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self.encode = getattr(backend, "encode_batch_fast", None)
        self.fast: bool | None = None if self.encode is not None else False

    def __call__(self, texts: list[str]) -> list[list[int]]:
        if self.fast:
            return [e.ids for e in self.encode(texts)]
        want = [list(ids) for ids in self.tokenizer(texts)["input_ids"]]
        if self.fast is None and texts:
            self.fast = [e.ids for e in self.encode(texts)] == want
        return want


def _encode(chunk: list[dict], kind: str, tokenizer, loss: str, template,
            ids_of: TextIds | None = None) -> tuple[list[list[int]], list[list[int]]]:
    """One batch of records as token ids and labels (-100 where a token carries no loss)."""
    input_ids: list[list[int]] = []
    labels: list[list[int]] = []
    if kind == "chat":
        enc = tokenizer.apply_chat_template([r["messages"] for r in chunk], chat_template=template, tokenize=True,
                                            return_dict=True, return_assistant_tokens_mask=loss == "assistant")
        masks = enc["assistant_masks"] if loss == "assistant" else [None] * len(chunk)
        for ids, mask in zip(enc["input_ids"], masks):
            ids = list(ids)
            input_ids.append(ids)
            labels.append(ids if mask is None else [t if m else -100 for t, m in zip(ids, mask)])
        return input_ids, labels
    eos = tokenizer.eos_token or ""
    answer = "chosen" if kind == "preference" else "completion"
    ids_of = ids_of or TextIds(tokenizer)
    prompts = ids_of([r["prompt"] for r in chunk])
    fulls = ids_of([r["prompt"] + (r[answer] if r[answer].endswith(eos) else r[answer] + eos) for r in chunk])
    for prompt, full in zip(prompts, fulls):
        n = _common_prefix(prompt, full) if loss != "all" else 0
        input_ids.append(full)
        labels.append([-100] * n + full[n:])
    return input_ids, labels


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
    template = _training_template(tokenizer, kind, loss)
    ids_of = TextIds(tokenizer)
    input_ids: list[list[int]] = []
    labels: list[list[int]] = []
    for start in range(0, len(records), TOKENIZE_BATCH):
        ids, labs = _encode(records[start:start + TOKENIZE_BATCH], kind, tokenizer, loss, template, ids_of)
        input_ids.extend(ids)
        labels.extend(labs)
    return input_ids, labels


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    if a[:n] == b[:n]:  # the usual case, compared at C speed
        return n
    i = 0
    for x, y in zip(a, b):
        if x != y:
            break
        i += 1
    return i


@dataclass
class TokenStats:
    """Token statistics of a split, gathered one batch at a time: a histogram of lengths
    (exact percentiles in memory bounded by the longest row), truncations, loss tokens."""

    max_length: int
    rows: int = 0
    lengths: Counter = field(default_factory=Counter)
    truncated: int = 0
    tokens: int = 0  # after truncation
    loss_tokens: int = 0  # after truncation

    def add(self, input_ids: list[list[int]], labels: list[list[int]]) -> None:
        cut = self.max_length
        for ids, labs in zip(input_ids, labels):
            n = len(ids)
            self.rows += 1
            self.lengths[n] += 1
            kept = labs[:cut]
            self.truncated += n > cut
            self.tokens += len(kept)
            self.loss_tokens += len(kept) - kept.count(-100)

    def merge(self, other: dict) -> None:
        self.rows += other["rows"]
        self.lengths.update({int(k): v for k, v in other["lengths"].items()})
        self.truncated += other["truncated"]
        self.tokens += other["tokens"]
        self.loss_tokens += other["loss_tokens"]

    def raw(self) -> dict:
        return {"rows": self.rows, "lengths": {str(k): v for k, v in self.lengths.items()},
                "truncated": self.truncated, "tokens": self.tokens, "loss_tokens": self.loss_tokens}

    def summary(self) -> dict:
        """What stats.json says of the split (the same figures :func:`token_stats` gives)."""
        rows = self.rows
        total = sum(k * v for k, v in self.lengths.items())
        return {
            "rows": rows,
            "tokens": {"p50": self._percentile(50), "p90": self._percentile(90), "p99": self._percentile(99),
                       "max": max(self.lengths) if self.lengths else 0,
                       "mean": round(total / rows, 1) if rows else 0},
            "truncated_rows": self.truncated,
            "truncation_rate": round(self.truncated / rows, 4) if rows else 0.0,
            "loss_token_fraction": round(self.loss_tokens / self.tokens, 4) if self.tokens else 0.0,
        }

    def _percentile(self, q: float) -> int:
        if not self.rows:
            return 0
        k = max(0, min(self.rows - 1, math.ceil(q / 100 * self.rows) - 1))
        seen = 0
        for length in sorted(self.lengths):
            seen += self.lengths[length]
            if seen > k:
                return length
        return max(self.lengths)


def token_stats(input_ids: list[list[int]], labels: list[list[int]], max_length: int) -> dict:
    """Token-length percentiles, the truncation rate at ``max_length``, and the share
    of tokens that carry loss (after truncation), as the trainer will see them."""
    stats = TokenStats(max_length)
    stats.add(input_ids, labels)
    return stats.summary()


def tokenize_split(data_dir: Path, split: str, kind: str, tokenizer, loss: str, max_length: int, shards: Path,
                   progress: Callable[[int], None] | None = None, keep: bool = True, workers: int = 1,
                   by_source: bool = False) -> dict:
    """Tokenize the split's records from ``data_dir`` in shards of :data:`SHARD_ROWS` rows
    and return its statistics. Each shard's statistics go to ``shards`` (and, with
    ``keep``, its tokens, what SFT trains on); the shards an earlier, cut-off call completed
    are not done again. With ``workers`` > 1 the shards are tokenized by that many
    processes, each reading its own rows: the result is the same, in the same order.
    ``by_source``: the statistics gain ``by_source``, the tokens (cut to ``max_length``) of each
    training mixture's source, read from the split's sources file (ftspec.data.prepared)."""
    shards.mkdir(parents=True, exist_ok=True)
    names = prepared.sources_file(data_dir, split) if by_source else None
    job = _ShardJob(prepared.split_file(data_dir, split), kind, loss, max_length, shards, keep, names)
    starts = _shard_starts(job.source)
    done = {n: _shard_done(job, n) for n in range(len(starts))}
    todo = [n for n, stats in done.items() if stats is None]
    if progress is not None and len(todo) < len(starts):
        progress(sum(stats["rows"] for stats in done.values() if stats is not None))
    if workers > 1 and len(todo) > 1:
        import multiprocessing

        # fork: the workers start at once with the tokenizer already loaded; they run no torch.
        context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else None)
        with context.Pool(min(workers, len(todo)), initializer=_worker_start, initargs=(tokenizer, job)) as pool:
            for rows in pool.imap_unordered(_worker_shard, [(n, starts[n]) for n in todo]):
                if progress is not None:
                    progress(rows)
    else:
        tools = (_training_template(tokenizer, kind, loss), TextIds(tokenizer))
        for n in todo:
            _tokenize_shard(job, tokenizer, tools, n, starts[n], progress)
    stats = TokenStats(max_length)
    tokens: dict[str, int] = {}
    for n in range(len(starts)):
        part = done[n] if done[n] is not None else io.read_json(shards / _shard_name(n, ".json"), dict)
        stats.merge(part)
        for name, count in (part.get("by_source") or {}).items():
            tokens[name] = tokens.get(name, 0) + count
    summary = stats.summary()
    return {**summary, "by_source": tokens} if by_source else summary


_SHARD_KEYS = {"rows": int, "lengths": dict, "truncated": int, "tokens": int, "loss_tokens": int}


def _shard_done(job: "_ShardJob", number: int) -> dict | None:
    """A shard's statistics when an earlier call completed it (its tokens in place too,
    where they are kept); None when it must be tokenized (again)."""
    found = io.read_json(job.shards / _shard_name(number, ".json"), dict, lenient=True)
    if not found or any(type(found.get(k)) is not t for k, t in _SHARD_KEYS.items()):
        return None
    if not all(str(k).isdigit() and type(v) is int for k, v in found["lengths"].items()):
        return None
    if job.keep and (type(found.get("kept")) is not int or not (job.shards / _shard_name(number, ".arrow")).is_file()):
        return None
    if job.sources is not None and not isinstance(found.get("by_source"), dict):
        return None
    return found


@dataclass(frozen=True)
class _ShardJob:
    source: Path
    kind: str
    loss: str
    max_length: int
    shards: Path
    keep: bool
    sources: Path | None = None  # the split's sources file: count each source's tokens


def _shard_starts(path: Path) -> list[int]:
    """The byte offset of the first line of each shard of a split's file (one record a line)."""
    starts, lines, offset = [0], 0, 0
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            at = 0
            while True:
                found = chunk.find(b"\n", at)
                if found < 0:
                    break
                lines += 1
                at = found + 1
                if lines % SHARD_ROWS == 0:
                    starts.append(offset + at)
            offset += len(chunk)
    if len(starts) > 1 and starts[-1] >= offset:  # the file ends exactly at a shard's end
        starts.pop()
    return starts


def _tokenize_shard(job: _ShardJob, tokenizer, tools, number: int, start: int,
                    progress: Callable[[int], None] | None = None) -> int:
    """Tokenize one shard's rows (from byte ``start``) into its files; returns its rows."""
    template, ids_of = tools
    part = TokenStats(job.max_length)
    writer = _ShardWriter(job.shards / _shard_name(number, ".arrow")) if job.keep else None
    rows = 0
    by_source: dict[str, int] = {}
    names = _shard_names(job.sources, number) if job.sources is not None else None
    try:
        with open(job.source, "rb") as fh:
            fh.seek(start)
            lines = islice(fh, SHARD_ROWS)
            while batch := [json.loads(line) for line in islice(lines, TOKENIZE_BATCH)]:
                ids, labs = _encode(batch, job.kind, tokenizer, job.loss, template, ids_of)
                part.add(ids, labs)
                if names is not None:
                    for row_ids, name in zip(ids, islice(names, len(ids))):
                        by_source[name] = by_source.get(name, 0) + min(len(row_ids), job.max_length)
                if writer is not None:
                    writer.write(ids, labs, job.max_length)
                if progress is not None:
                    progress(len(ids))
                rows += len(batch)
    except BaseException:
        if writer is not None:
            writer.abandon()
        raise
    finally:
        if names is not None:
            names.close()
    kept = None
    if writer is not None:
        writer.close()
        kept = writer.kept
    # Written last: a shard whose statistics are in place is complete.
    extra = {"by_source": by_source} if names is not None else {}
    io.write_json(job.shards / _shard_name(number, ".json"), {**part.raw(), "kept": kept, **extra})
    return rows


def _shard_names(path: Path, number: int) -> Iterator[str]:
    """The source name of each row of shard ``number``, from the split's sources file (one JSON
    string a line, in the split's order)."""
    fh = open(path, "rb")
    try:
        for line in islice(fh, number * SHARD_ROWS, (number + 1) * SHARD_ROWS):
            yield str(json.loads(line))
    finally:
        fh.close()


_WORKER: dict = {}


def _worker_start(tokenizer, job: _ShardJob) -> None:
    _WORKER.update(tokenizer=tokenizer, job=job,
                   tools=(_training_template(tokenizer, job.kind, job.loss), TextIds(tokenizer)))


def _worker_shard(task: tuple[int, int]) -> int:
    number, start = task
    return _tokenize_shard(_WORKER["job"], _WORKER["tokenizer"], _WORKER["tools"], number, start)


def _shard_name(number: int, suffix: str) -> str:
    return f"shard-{number:05d}{suffix}"


ARROW_BATCH_ROWS = 8192  # rows per Arrow record batch in a shard


class _ShardWriter:
    """One shard of tokens as an Arrow stream (what ``datasets`` memory-maps), rows cut to
    ``max_length`` (the start kept, as TRL's default truncation) and rows left without a
    loss token dropped. It appears whole when complete (ftspec.core.io.AtomicFile).

    Rows are written in record batches of :data:`ARROW_BATCH_ROWS`: opening a memory-mapped
    shard reads every batch's header, and the kernel maps the pages around each one, so many
    small batches would keep megabytes of the file resident per shard (13 MB per 100,000 rows
    in batches of 512, measured)."""

    def __init__(self, path: Path):
        import pyarrow as pa

        self.pa = pa
        self.file = io.AtomicFile(path)
        self.type = pa.list_(pa.int32())
        self.schema = pa.schema([("input_ids", self.type), ("labels", self.type)])
        self.writer = pa.ipc.new_stream(self.file.handle, self.schema)
        self.pending: list[tuple] = []  # (ids, labels) arrays not written yet
        self.pending_rows = 0
        self.kept = 0

    def write(self, input_ids: list[list[int]], labels: list[list[int]], max_length: int) -> None:
        keep_ids, keep_labels = [], []
        for ids, labs in zip(input_ids, labels):
            labs = labs[:max_length]
            if labs.count(-100) == len(labs):  # no loss token left: TRL drops such rows
                continue
            keep_ids.append(ids[:max_length])
            keep_labels.append(labs)
        if keep_ids:
            self.pending.append((self.pa.array(keep_ids, self.type), self.pa.array(keep_labels, self.type)))
            self.pending_rows += len(keep_ids)
            self.kept += len(keep_ids)
            if self.pending_rows >= ARROW_BATCH_ROWS:
                self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        pa = self.pa
        ids = pa.concat_arrays([a for a, _ in self.pending])
        labels = pa.concat_arrays([b for _, b in self.pending])
        self.writer.write_batch(pa.record_batch([ids, labels], schema=self.schema))
        self.pending, self.pending_rows = [], 0

    def close(self) -> None:
        self._flush()
        self.writer.close()
        self.file.commit()

    def abandon(self) -> None:
        self.file.abandon()


def save_tokens(path: Path, input_ids: list[list[int]], labels: list[list[int]], max_length: int = 1 << 30) -> None:
    """Tokenized rows as one shard the train step reads (for tests and benchmarks; prepare_data
    writes its shards with :func:`tokenize_split`)."""
    Path(path).mkdir(parents=True, exist_ok=True)
    writer = _ShardWriter(Path(path) / _shard_name(0, ".arrow"))
    writer.write(input_ids, labels, max_length)
    writer.close()
    stats = TokenStats(max_length)
    stats.add(input_ids, labels)
    io.write_json(Path(path) / _shard_name(0, ".json"), {**stats.raw(), "kept": writer.kept})


def load_tokens(path: Path):
    """The tokenized rows as one Dataset, memory-mapped from the step's shards: it opens in
    about the same time whatever the number of rows. The HF datasets cache is turned off, so
    that what the trainer derives from it (packing) goes to a temporary folder, never into
    the step's folder in the store."""
    import datasets

    datasets.disable_caching()
    files = sorted(Path(path).glob("shard-*.arrow"))
    if not files:
        raise SpecError.one(Pos(str(path)), "", "the prepared tokens are missing; run prepare_data again")
    parts = [datasets.Dataset.from_file(str(f)) for f in files]
    dataset = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
    counts = [io.read_json(f, dict, lenient=True) or {} for f in sorted(Path(path).glob("shard-*.json"))]
    expected = sum(c.get("kept") or 0 for c in counts)
    if len(dataset) != expected:  # a shard missing or replaced since it was written
        raise SpecError.one(Pos(str(path)), "", f"the prepared tokens hold {len(dataset)} rows where their "
                            f"statistics say {expected}; prepare the data again (ftspec run --force prepare_data)")
    return dataset


def token_lengths(dataset):
    """The length of every row of a tokens dataset (an array), read from Arrow's offsets
    without building the rows."""
    import pyarrow.compute as pc

    if getattr(dataset, "_indices", None) is not None:  # a selection or shuffle: row by row
        return [len(ids) for ids in dataset["input_ids"]]
    column = dataset.data.column("input_ids")
    return pc.list_value_length(column).to_numpy()


def training_texts(records: Iterable[dict], kind: str, limit: int = TOKENIZER_ROWS) -> Iterator[str]:
    """The text a tokenizer is trained on: every field of the first ``limit`` training records."""
    for r in islice(records, limit):
        if kind == "chat":
            yield from (m["content"] for m in r["messages"])
        else:
            yield from (v for v in r.values() if isinstance(v, str))
