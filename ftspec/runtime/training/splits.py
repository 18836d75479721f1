"""The first part of prepare_data, whatever the backend: every row of every source read,
mapped, filtered and formatted once, and dealt into the train, validation and test splits,
streamed from file to file so that memory does not grow with the number of rows.

How the held-out splits are drawn (``data.split``), deterministic under its seed:

1. Formatting writes the training source's records, in the file's order, to a work file,
   and counts them (per value of ``data.split.stratify``, when set).
2. The sizes are fixed from the counts alone, as the plan states them
   (:func:`ftspec.data.splitting.split_sizes`; with stratification each value's share by
   largest remainder).
3. A second pass deals each record, in order: with ``r`` records of its group left, of which
   ``v`` must still go to validation and ``t`` to test, it goes to validation with
   probability v/r, to test with t/r, else to train (sequential selection, one draw of a
   ``random.Random(seed)`` per record). Every subset of the stated sizes is equally likely,
   the sizes are exact, and only counters are held.

``data.limit`` keeps the first rows of each split, in the file's order.

A training mixture (``data.train`` as a list, a ``MixtureSource`` in the plan) is formatted
source by source, each with its own renames and derived columns first; each source is
split on its own, under a seed of its own (from ``data.split.seed`` and its name), so the
held-out splits are stratified by source and do not move when a weight does; then
ftspec.runtime.training.mixing draws each source's training rows and interleaves them,
and writes each split's ``.sources`` beside it.

The work files live in the step's scratch folder (kept until the step is complete), with
a small state file written every :data:`CHECKPOINT_ROWS` rows: a preparation cut off
part-way continues from its last checkpoint, and its result is the same as an uncut one.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from ftspec.core import io
from ftspec.core.errors import Issue, Pos, SpecError
from ftspec.data import prepared
from ftspec.data import templates as tpl
from ftspec.data.formatting import FormatError, RowFormatter, teacher_sources
from ftspec.data.mixture import draw_counts, repeats_problem, source_seed
from ftspec.data.sources import RowError, fingerprint, read_rows
from ftspec.data.splitting import SPLITS, apportion, filter_verdict, split_limits, split_sizes, verdict_problem
from ftspec.runtime.training import mixing

CHECKPOINT_ROWS = 50_000  # source rows between two checkpoints of the formatting pass
SKIPPED_SHOWN = 20  # bad rows named in stats.json (all are counted)
STATE_VERSION = 1


@dataclass
class _Source:
    """The formatting pass over one source, as far as it got (what a checkpoint keeps)."""

    done: bool = False
    last: int = 0  # the number (line, element) of the last source row dealt with
    records: int = 0
    read: int = 0  # rows formatted or dropped by data.filter (bad rows apart)
    dropped: int = 0  # rows data.filter dropped
    skipped: int = 0  # bad rows skipped (on_bad_row: skip)
    skipped_examples: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)  # stratify values, in order of first sight
    label_counts: list[int] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=dict)  # bytes of each work file at the checkpoint

    @classmethod
    def load(cls, path: Path) -> "_Source":
        """The last checkpoint; a fresh start when there is none, or it is not one this
        version wrote (another shape, a field of another type)."""
        raw = io.read_json(path, dict, lenient=True)
        if not raw or raw.pop("version", None) != STATE_VERSION:
            return cls()
        fresh = cls().__dict__
        if set(raw) != set(fresh) or any(type(raw[k]) is not type(v) for k, v in fresh.items()):
            return cls()
        state = cls(**raw)
        if (not all(isinstance(x, str) for x in state.labels + state.skipped_examples)
                or not all(type(x) is int for x in state.label_counts) or len(state.labels) != len(state.label_counts)
                or not all(type(v) is int and v >= 0 for v in state.sizes.values())):
            return cls()
        return state

    def save(self, path: Path) -> None:
        io.write_json(path, {"version": STATE_VERSION, **self.__dict__})


class _Files:
    """The work files of one source: records, origins and (stratified) group ids, appended."""

    NAMES = ("records", "origins", "groups")

    def __init__(self, work: Path, split: str, state: _Source):
        self.paths = {n: work / f"{split}.{n}" for n in self.NAMES}
        self.handles = {}
        for name, path in self.paths.items():
            fh = open(path, "ab")
            fh.truncate(state.sizes.get(name, 0))  # what was written after the last checkpoint goes
            fh.seek(0, os.SEEK_END)
            self.handles[name] = fh

    def write(self, record: dict, origin: str, group: int | None) -> None:
        self.handles["records"].write((io.dumps(record) + "\n").encode("utf-8"))
        self.handles["origins"].write((io.dumps(origin) + "\n").encode("utf-8"))
        if group is not None:
            self.handles["groups"].write(group.to_bytes(4, "little"))

    def sync(self) -> dict[str, int]:
        return {name: io.sync(fh) for name, fh in self.handles.items()}

    def close(self) -> None:
        for fh in self.handles.values():
            fh.close()


@dataclass
class Prepared:
    """What :func:`write_splits` did: rows per split, and what it skipped or dropped."""

    rows: dict[str, int]
    skipped: dict[str, Any]
    # A mixture's sources: {name: {available, drawn, held_out: {validation, test}}}; None otherwise.
    sources: dict[str, dict] | None = None


def write_splits(data: Any, fmt: Any, root: Path, out: Path, distill: bool = False,
                 work: Path | None = None, echo: Callable[[str], None] | None = None,
                 progress: Callable[[int], None] | None = None) -> Prepared:
    """Every split formatted and written to ``out`` as ``<split>.jsonl`` with
    ``<split>.origins`` (each record's FILE:ROW) beside it (ftspec.data.prepared), from the
    plan's ``data`` and ``format`` sections. ``work``: where the formatting pass keeps its
    files and checkpoints (a temporary folder in ``out`` when None, removed at the end).
    ``distill``: the sources a teacher answers are formatted without their answers.
    ``progress(n)``: called as source rows are read."""
    own_work = work is None
    work = Path(work) if work is not None else out / ".work"
    work.mkdir(parents=True, exist_ok=True)
    prompts_only = teacher_sources(distill, data.sources, _test_from_train(data))
    formatter = RowFormatter.from_plan(data, fmt)
    row_filter = tpl.environment().from_string(data.filter.text) if data.filter is not None else None
    s = data.split
    states: dict[str, _Source] = {}
    parts: list[_Source] = []  # a mixture's sources, in order
    for split in SPLITS:
        src = data.sources.get(split)
        if src is None:
            continue
        stratify = s.stratify if (split == "train" and s is not None and s.stratify) else None
        answer = split not in prompts_only
        if src.kind == "mixture":
            for i, part in enumerate(src.parts):
                key = f"data.train.{i}"
                parts.append(_format_source(f"train.{i}", key, part.source, data, formatter.for_part(part, key),
                                            row_filter, answer, stratify, root, work, echo, progress))
            continue
        states[split] = _format_source(split, f"data.{split}", src, data, formatter, row_filter, answer,
                                       stratify, root, work, echo, progress)
    rows, sources = _deal(data, states, parts, work, out)
    skipped = sum(st.skipped for st in [*states.values(), *parts])
    filtered = {split: st.dropped for split, st in states.items()}
    if parts:
        filtered = {"train": sum(st.dropped for st in parts), **filtered}
    for split, n in rows.items():
        if not n:
            what = ("after skipping bad rows" if skipped else
                    "after data.filter and splitting" if sum(filtered.values()) else "after splitting")
            raise SpecError.one(Pos(f"data.{split}"), f"data.{split}", f"the {split} split is empty {what}")
    examples = [e for st in [*parts, *states.values()] for e in st.skipped_examples][:SKIPPED_SHOWN]
    info: dict[str, Any] = {"skipped_rows": skipped, "skipped_examples": examples}
    if row_filter is not None:
        info["filtered_rows"] = filtered  # per source, before splitting
    if own_work:
        shutil.rmtree(work)
    return Prepared(rows, info, sources)


def _test_from_train(data: Any) -> bool:
    return data.split is not None and data.split.test > 0 and "test" not in data.sources


# --------------------------------------------------------------------------- pass 1: format


def _format_source(stem: str, key: str, src: Any, data: Any, formatter: RowFormatter, row_filter: Any,
                   answer: bool, stratify: str | None, root: Path, work: Path, echo, progress=None) -> _Source:
    """The formatting pass over one source into its work files (named ``stem``: the split,
    or ``train.<i>`` for a mixture's source i, whose spec key is ``key``), from its last checkpoint."""
    state_path = work / f"{stem}.state.json"
    state = _Source.load(state_path)
    if state.done:
        return state
    if state.last and echo is not None:
        echo(f"  {key}: continuing from row {state.last} ({state.records} records kept)")
    files = _Files(work, stem, state)
    group_ids = {label: i for i, label in enumerate(state.labels)}
    since = 0
    try:
        with tpl.alarm_handler():
            for number, origin, values, problem in _source_rows(key, src, data.on_bad_row, root, state.last):
                if problem is not None:
                    _skip(state, problem)
                else:
                    made = _format_row(values, origin, key, formatter, row_filter, answer, data.on_bad_row, state)
                    if made is not None:
                        record, mapped = made
                        group = None
                        if stratify is not None:
                            label = json.dumps(mapped.get(stratify), sort_keys=True, default=str)
                            group = group_ids.get(label)
                            if group is None:
                                group = group_ids[label] = len(state.labels)
                                state.labels.append(label)
                                state.label_counts.append(0)
                            state.label_counts[group] += 1
                        files.write(record, origin, group)
                        state.records += 1
                state.last = number
                since += 1
                if progress is not None and since % 1000 == 0:
                    progress(1000)
                if since >= CHECKPOINT_ROWS:
                    state.sizes = files.sync()
                    state.save(state_path)
                    since = 0
        state.sizes = files.sync()
    finally:
        files.close()
    if row_filter is not None and state.dropped and state.dropped == state.read:
        shown = getattr(src, "path", None) or f"hub:{getattr(src, 'hub', '')}"
        raise SpecError.one(Pos("data.filter"), "data.filter",
                            f"drops every row of {shown} ({state.read} rows); nothing is left to "
                            f"{'train on' if key.startswith('data.train') else 'hold out'}")
    state.done = True
    state.save(state_path)
    return state


def _format_row(values: dict, origin: str, key: str, formatter: RowFormatter, row_filter: Any, answer: bool,
                on_bad_row: str, state: _Source) -> tuple[dict, dict] | None:
    """(record, mapped columns) of one row; None for a row data.filter drops or a bad row skipped
    (each counted in ``state``). A bad row is an error at its FILE:ROW unless on_bad_row: skip."""
    try:
        mapped = formatter.columns(values)
        keep = row_filter is None or _keeps(row_filter, mapped, origin)
        record = formatter.render(mapped, answer) if keep else None
    except FormatError as exc:
        file, row = prepared.split_position(origin, key, 0)
        if on_bad_row != "skip":
            raise SpecError([Issue(Pos(file, row), exc.key, exc.message)]) from None
        _skip(state, RowError(Pos(file, row), f"{exc.key}: {exc.message}"))
        return None
    state.read += 1
    if record is None:
        state.dropped += 1
        return None
    return record, mapped


def _skip(state: _Source, problem: RowError) -> None:
    state.skipped += 1
    if len(state.skipped_examples) < SKIPPED_SHOWN:
        state.skipped_examples.append(str(problem))


def _keeps(row_filter: Any, mapped: dict, origin: str) -> bool:
    """data.filter's verdict on one row (after renames and derived columns). A rendering
    that is neither true nor false is the filter's mistake: an error at its key, naming the row."""
    text = RowFormatter._render(row_filter, mapped, "data.filter")
    verdict = filter_verdict(text)
    if verdict is None:
        raise SpecError.one(Pos("data.filter"), "data.filter", f"{verdict_problem(text)} (row {origin})")
    return verdict


def _source_rows(key: str, src: Any, on_bad_row: str, root: Path,
                 after: int) -> Iterator[tuple[int, str, dict | None, RowError | None]]:
    """(number, FILE:ROW, values, None) for each row of a source (at spec key ``key``) past row
    ``after``, or (number, where, None, problem) for a bad row that on_bad_row: skip passes over."""
    if src.kind == "hub":
        yield from _hub_rows(key, src, after)
        return
    path = root / src.path
    shown = src.path
    if not path.is_file():
        raise SpecError.one(Pos(shown), key, "data file was deleted since the plan was made")
    if fingerprint(path) != src.sha256:
        raise SpecError.one(Pos(shown), key,
                            "data file changed since the plan was made (sha256 differs); plan again")
    skipped: list[RowError] = []
    columns = list(src.columns) if src.columns else None
    try:
        for row in read_rows(path, src.format, shown, columns, src.header, src.field,
                             on_bad_row=on_bad_row, skipped=skipped):
            while skipped:  # bad rows read before this one
                bad = skipped.pop(0)
                if (bad.pos.line or 0) > after:
                    yield bad.pos.line or 0, shown, None, bad
            if row.number > after:
                yield row.number, f"{shown}:{row.number}", row.values, None
        for bad in skipped:
            if (bad.pos.line or 0) > after:
                yield bad.pos.line or 0, shown, None, bad
    except RowError as exc:
        raise SpecError([exc.issue()]) from None


def _hub_rows(key: str, src: Any, after: int) -> Iterator[tuple[int, str, dict, None]]:
    import datasets

    kwargs = {"split": src.split}
    if src.revision:
        kwargs["revision"] = src.revision
    from ftspec.runtime.models import hub_id  # deferred: torch, which preparing data for Bedrock never needs

    name = hub_id(src.hub, f"{key}.hub")
    try:
        ds = datasets.load_dataset(name, src.subset, **kwargs)
    except Exception as exc:  # datasets raises many kinds: not found, offline, no such split
        raise SpecError.one(Pos(f"hub:{src.hub}"), key,
                            f"cannot load the hub dataset: {str(exc).splitlines()[0]}") from None
    for i, row in enumerate(ds, 1):
        if i > after:
            yield i, f"hub:{src.hub}[{src.split}]:{i}", dict(row), None


# --------------------------------------------------------------------------- pass 2: deal


def _deal(data: Any, states: dict[str, _Source], parts: list[_Source], work: Path,
          out: Path) -> tuple[dict[str, int], dict[str, dict] | None]:
    """Deal the formatted records into the splits' files in ``out``: rows per split, and a
    mixture's rows per source (None without one)."""
    s = data.split
    limits = split_limits(data.limit)
    writers: dict[str, _SplitWriter] = {}
    sources = None
    try:
        for split in SPLITS:
            held_here = s is not None and split != "train" and split not in data.sources and (
                (s.validation if split == "validation" else s.test) > 0)
            if split in states or (split == "train" and (s is not None or parts)) or held_here:
                writers[split] = _SplitWriter(out, split, limits[split], with_sources=bool(parts))
        for split, state in states.items():
            held = {h for h in ("validation", "test") if h not in data.sources}
            choose = _dealer(state, s, held, work / "train.groups") if split == "train" and s is not None else None
            # Beside a mixture, a held-out split's own file is its one source.
            _route(work, split, state, writers, choose, mixing.source_line(split) if parts else None)
        if parts:
            sources = _deal_mixture(data, parts, work, writers)
    except BaseException:
        for writer in writers.values():
            writer.abandon()
        raise
    for writer in writers.values():
        writer.close()
    return {split: w.count for split, w in writers.items()}, sources


def _deal_mixture(data: Any, parts: list[_Source], work: Path, writers: dict) -> dict[str, dict]:
    """A mixture's splits: each source's records dealt into its own training and held-out work
    files (its held-out split under a seed of its own, from data.split.seed and its name),
    its training rows drawn (ftspec.data.mixture.draw_counts), and the sources' rows of each
    split interleaved into it. Rows per source, as stats.json's ``sources`` shows them."""
    s = data.split
    mix = data.sources["train"]
    held = {h for h in ("validation", "test") if h not in data.sources} if s is not None else set()
    names = [part.name for part in mix.parts]
    dealt: dict[str, list[int]] = {t: [] for t in ("train", "validation", "test")}
    for i, (part, state) in enumerate(zip(mix.parts, parts)):
        key = f"data.train.{i}"
        if not state.records:
            why = " after skipping bad rows" if state.skipped else ""
            raise SpecError.one(Pos(key), key, f"source '{part.name}' has no rows{why}; nothing to draw from it")
        label = f"train.{i}"
        outs = {t: _WorkOut(work, f"{label}.to-{t}") for t in ("train", *held)}
        choose = None
        if s is not None:
            own = s.model_copy(update={"seed": source_seed(s.seed, part.name)})
            choose = _dealer(state, own, held, work / f"{label}.groups")
        try:
            with open(work / f"{label}.records", "rb") as records, open(work / f"{label}.origins", "rb") as origins:
                for _ in range(state.records):
                    line, where = records.readline(), origins.readline()
                    target = next(choose) if choose is not None else "train"
                    if target is not None:
                        outs[target].write(line, where)
        finally:
            for o in outs.values():
                o.close()
        for t in dealt:
            dealt[t].append(outs[t].count if t in outs else 0)
        if not dealt["train"][i]:
            raise SpecError.one(Pos(key), key, f"source '{part.name}' has no training rows left after data.split "
                                               f"holds out {state.records - dealt['train'][i]} of its "
                                               f"{state.records} rows")
    draws = [(part.take, part.amount, n) for part, n in zip(mix.parts, dealt["train"])]
    drawn = [int(r) for r in draw_counts(draws, mix.total)]  # every count is known here
    for i, (name, n, r) in enumerate(zip(names, dealt["train"], drawn)):
        # Validate refuses this where it knows the rows; a hub source, or data.filter tried on a sample, it does not.
        if problem := repeats_problem(name, r, n):
            raise SpecError.one(Pos(f"data.train.{i}"), f"data.train.{i}", problem)
    streams = [mixing.drawn_lines(work / f"train.{i}.to-train.records", work / f"train.{i}.to-train.origins",
                                  n, r, source_seed(mix.seed, name, "draw"))
               for i, (name, n, r) in enumerate(zip(names, dealt["train"], drawn))]
    mixing.merge(streams, drawn, names, mix.seed, writers["train"].write, writers["train"].limit)
    for split in sorted(held & writers.keys()):
        streams = [mixing.work_lines(work / f"train.{i}.to-{split}.records", work / f"train.{i}.to-{split}.origins")
                   for i in range(len(names))]
        # Seeded by data.split alone: the held-out splits do not depend on the draw.
        mixing.merge(streams, dealt[split], names, source_seed(s.seed, split, "interleave"), writers[split].write,
                     writers[split].limit)
    return {name: {"available": dealt["train"][i], "drawn": drawn[i],
                   "held_out": {"validation": dealt["validation"][i], "test": dealt["test"][i]}}
            for i, name in enumerate(names)}


class _WorkOut:
    """A work file pair (records, origins) written afresh, counting its rows."""

    def __init__(self, work: Path, name: str):
        self.handles = [open(work / f"{name}.records", "wb"), open(work / f"{name}.origins", "wb")]
        self.count = 0

    def write(self, line: bytes, where: bytes) -> None:
        self.handles[0].write(line)
        self.handles[1].write(where)
        self.count += 1

    def close(self) -> None:
        for fh in self.handles:
            fh.close()


def _dealer(state: _Source, s: Any, held: set[str], groups: Path) -> Iterator[str | None]:
    """The split of each formatted training record, in order (see the module's docstring);
    None for a record dealt to a held-out split that has a source of its own (as the plan
    counts it: the training split is cut by data.split's fractions either way)."""
    n = state.records
    _, n_val, n_test = split_sizes(n, s.validation, s.test)
    counts = state.label_counts if s.stratify else [n]
    # Groups in the order of their values, as the plan's stratified counts are.
    order = sorted(range(len(counts)), key=lambda g: repr(state.labels[g]) if s.stratify else "")
    val_share = apportion(n_val, [counts[g] for g in order])
    test_share = apportion(n_test, [counts[g] - v for g, v in zip(order, val_share)])
    left = list(counts)
    need_val = [0] * len(counts)
    need_test = [0] * len(counts)
    for g, v, t in zip(order, val_share, test_share):
        need_val[g], need_test[g] = v, t
    rng = random.Random(s.seed)
    for g in _group_ids(groups, n, bool(s.stratify)):
        draw = rng.random() * left[g]
        left[g] -= 1
        if draw < need_val[g]:
            need_val[g] -= 1
            yield "validation" if "validation" in held else None
        elif draw < need_val[g] + need_test[g]:
            need_test[g] -= 1
            yield "test" if "test" in held else None
        else:
            yield "train"


def _group_ids(path: Path, n: int, stratified: bool) -> Iterator[int]:
    if not stratified:
        for _ in range(n):
            yield 0
        return
    with open(path, "rb") as fh:
        while True:
            chunk = fh.read(4 << 16)
            if not chunk:
                return
            ids = array("I")
            ids.frombytes(chunk)
            if sys.byteorder != "little":
                ids.byteswap()
            yield from ids


def _route(work: Path, split: str, state: _Source, writers: dict, choose: Iterator[str] | None,
           tag: bytes | None = None) -> None:
    with open(work / f"{split}.records", "rb") as records, open(work / f"{split}.origins", "rb") as origins:
        for _ in range(state.records):
            line, where = records.readline(), origins.readline()
            target = next(choose) if choose is not None else split
            if target is not None:
                if tag is None:
                    writers[target].write(line, where)
                else:
                    writers[target].write(line, where, tag)


class _SplitWriter:
    """One split's files in ``out``, each appearing whole when complete (ftspec.core.io.AtomicFile)."""

    def __init__(self, out: Path, split: str, limit: int | None, with_sources: bool = False):
        self.files = [io.AtomicFile(prepared.split_file(out, split)), io.AtomicFile(prepared.origins_file(out, split))]
        self.records, self.origins = (f.handle for f in self.files)
        self.sources = None  # a mixture's: each record's source name
        if with_sources:
            self.files.append(io.AtomicFile(prepared.sources_file(out, split)))
            self.sources = self.files[-1].handle
        self.limit = limit
        self.count = 0

    @property
    def final(self) -> tuple[Path, ...]:
        return tuple(f.path for f in self.files)

    def write(self, line: bytes, where: bytes, source: bytes | None = None) -> None:
        if self.limit is not None and self.count >= self.limit:
            return
        self.records.write(line)
        self.origins.write(where)
        if self.sources is not None:
            self.sources.write(source if source is not None else b'""\n')
        self.count += 1

    def close(self) -> None:
        for f in self.files:
            f.commit()

    def abandon(self) -> None:
        for f in self.files:
            f.abandon()


# --------------------------------------------------------------------------- in memory


def build_splits(data: Any, fmt: Any, root: Path, distill: bool = False,
                 scratch: Path | None = None) -> tuple[dict[str, list[dict]], dict[str, Any]]:
    """Every split's records as lists, with what was skipped and each record's origin under
    ``"origins"``: the same splits as :func:`write_splits`, for what needs them in memory (a
    distillation's teacher answers every training prompt anyway)."""
    import tempfile

    if scratch is not None:
        Path(scratch).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        made = write_splits(data, fmt, root, Path(tmp), distill)
        splits = {split: prepared.read_records(Path(tmp), split) for split in made.rows}
        origins = {split: list(prepared.iter_origins(Path(tmp), split)) for split in made.rows}
    return splits, {**made.skipped, "origins": origins}
