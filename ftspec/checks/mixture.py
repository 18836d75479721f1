"""What validate knows of a training mixture (``data.train`` as a list; docs/use-cases/mixtures.md):
each part's sample rows mapped by its own ``rename`` and ``derive`` (so the data-level renames,
derived columns, filter and the format's templates see every source's rows as the run does),
and the rows of each split and each part, counted as the runtime draws them
(ftspec.data.mixture.draw_counts, each part split on its own by ftspec.data.splitting).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import zip_longest
from typing import Any, Sequence

from ftspec.core.errors import Issue, Pos, SpecError
from ftspec.data import templates as tpl
from ftspec.data.formatting import FormatError, RowFormatter
from ftspec.data.mixture import MIN_SHARE, draw_counts
from ftspec.data.sources import Row
from ftspec.data.splitting import SPLITS, split_counts, split_limits

DEFAULT_SEED = 42


@dataclass
class PartCounts:
    """One part's rows: its training rows after data.filter and its held-out split
    (``available``), the rows the mixture draws of them, and the rows it gives the held-out
    splits. None: unknown until the data is read."""

    take: str  # weight | rows | epochs
    amount: float  # a weight normalised over the weighted parts; rows; epochs
    available: int | None
    drawn: int | None
    validation: int | None
    test: int | None


def draws(data: Any) -> list[tuple[str, float]]:
    """Each part's (take, amount), weights normalised to sum to 1 over the weighted parts. A share
    under MIN_SHARE, which validate refuses (check_mixture), counts as MIN_SHARE: counting the
    rows of such a spec neither divides by a share that rounds to none nor makes counts too
    large for a float."""
    taken = [item.draw() for item in data.train]
    whole = sum(a for t, a in taken if t == "weight")
    return [(t, max(a / whole, MIN_SHARE) if t == "weight" else a) for t, a in taken]


def mix_seed(data: Any) -> int:
    """data.mix.seed, else data.split.seed, else 42."""
    if data.mix is not None and data.mix.seed is not None:
        return data.mix.seed
    return data.split.seed if data.split is not None else DEFAULT_SEED


def mix_total(data: Any) -> str | int:
    return data.mix.total if data.mix is not None else "no_repeats"


def mixture_counts(data: Any, rows: Sequence[int | None], held: dict[str, int | None],
                   limit: Any = None) -> tuple[dict[str, int | None], list[PartCounts]]:
    """Rows of each split and of each part of the mixture ``data.train``: ``rows`` are each
    part's rows after data.filter, ``held`` the rows of the validation and test files (a
    split without one is absent); each part is split on its own with data.split's fractions,
    then drawn; ``limit`` (data.limit) cuts the splits last."""
    parts = []
    for n in rows:
        counts = split_counts({"train": n}, data.split, None)
        parts.append((counts["train"], counts["validation"], counts["test"]))
    taken = draws(data)
    drawn = draw_counts([(t, a, p[0]) for (t, a), p in zip(taken, parts)], mix_total(data))
    per_part = [PartCounts(t, a, p[0], d, p[1], p[2]) for (t, a), p, d in zip(taken, parts, drawn)]
    out: dict[str, int | None] = {"train": None if None in drawn else sum(drawn)}
    for i, split in enumerate(("validation", "test"), start=1):
        if split in held:
            out[split] = held[split]
        else:
            values = [p[i] for p in parts]
            out[split] = None if None in values else sum(values)
    for s, cut in split_limits(limit).items():
        if cut is not None and out[s] is not None:
            out[s] = min(out[s], cut)
    return {s: out[s] for s in SPLITS}, per_part


def map_parts(ctx: Any) -> dict:
    """Map each part's sample rows by its own rename and derive (its derived columns'
    templates compiled and checked against its columns); return what validate knows of the
    training source they make together (a SourceInfo's fields): every part's mapped rows,
    interleaved, with the columns any part has."""
    for part in ctx.parts:
        if part.readable:
            _map_part(ctx, part)
    columns: dict[str, None] = {}
    for part in ctx.parts:
        columns.update(dict.fromkeys(part.columns))
    sample = [row for rows in zip_longest(*(p.sample for p in ctx.parts)) for row in rows if row is not None]
    known = [p.rows for p in ctx.parts]
    return {"shown": " + ".join(p.shown for p in ctx.parts), "rows": None if None in known else sum(known),
            "columns": list(columns), "sample": sample, "readable": all(p.readable for p in ctx.parts),
            "spec": ctx.spec.data.train, "at": ("data", "train")}


def _map_part(ctx: Any, part: Any) -> None:
    item = part.spec
    have = set(part.columns)
    for old in item.rename:
        if old not in have:
            origin = ctx.at(*part.at, "rename", old)
            ctx.issues.append(Issue(origin.key_pos or origin.pos, ctx.key(*part.at, "rename", old),
                                    f"no column '{old}' in {part.shown}",
                                    tpl.close_match(old, part.columns) or f"columns: {tpl.listing(part.columns)}"))
    available = [item.rename.get(c, c) for c in part.columns]
    derive = []
    ok = True
    for name, text in item.derive.items():
        path = (*part.at, "derive", name)
        key = ".".join(map(str, path))
        try:
            resolved = tpl.resolve(text, ctx.spec_dir, ctx.pos(*path), ctx.key(*path))
            parsed = ctx.budgets.compiled.get((resolved.text, False))
            if parsed is None:
                parsed = tpl.parse(resolved, ctx.pos(*path), ctx.key(*path), ctx.spec_dir, budget=ctx.compile_budget)
                ctx.budgets.compiled[(resolved.text, False)] = parsed
        except SpecError as exc:
            ctx.issues.extend(exc.issues)
            ok = False
            continue
        ctx.templates[key] = resolved
        ctx.parsed[key] = parsed
        problems = tpl.check_names(parsed[1], available, ctx.pos(*path), ctx.key(*path))
        ctx.issues.extend(problems)
        ok = ok and not problems
        derive.append((name, parsed[0]))
        available.append(name)
    part.columns = list(dict.fromkeys(available))
    if not ok:
        part.readable = False
        return
    if not item.rename and not derive:
        return
    mapper = RowFormatter("prompt_completion", dict(item.rename), derive, {}, budget=ctx.render_budget)
    mapped = []
    for row in part.sample:
        try:
            values = mapper.columns(row.values)
        except FormatError as exc:
            if exc.refused or ctx.spec.data.on_bad_row != "skip":
                ctx.issues.append(Issue(Pos(part.shown, row.number), part.key + exc.key[len("data"):], exc.message))
                part.readable = False
                return
            continue
        mapped.append(Row(row.number, values, row.size))
    part.sample = mapped


def sample_chars(ctx: Any, part: Any) -> float | None:
    """Mean characters of a training text of the part's sample rows as the run renders them
    (after data.filter; None where none renders): each part's tokens are about its rows drawn
    times this, which is how the plan estimates a part's share of the mixture's tokens."""
    if ctx.formatter is None:
        return None
    sizes = []
    for row in part.sample:
        try:
            record = ctx.formatter(row.values)
        except FormatError:  # dropped by data.filter, or reported by check_sample_rows
            continue
        sizes.append(_text_chars(record))
    return round(sum(sizes) / len(sizes), 1) if sizes else None


def _text_chars(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return sum(_text_chars(v) for v in value.values())
    if isinstance(value, list):
        return sum(_text_chars(v) for v in value)
    return 0
