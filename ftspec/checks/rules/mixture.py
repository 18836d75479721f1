"""Rules on a training mixture (``data.train`` as a list; docs/use-cases/mixtures.md): its
sources are named uniquely, weights that do not sum to 1 (or 100) are said to be normalised,
every source has the columns the spec's templates read and rows to draw, and no source is
repeated so often that the model learns its rows by heart.
"""

from __future__ import annotations

import math
import re
from typing import Iterator

from ftspec.checks.facts import Context, same_source
from ftspec.checks.mixture import draws
from ftspec.checks.registry import rule
from ftspec.core.errors import Issue
from ftspec.data import templates as tpl
from ftspec.data.mixture import MIN_SHARE, repeats_problem
from ftspec.spec import schema as S

# Each row of a source used more often than this, on average: a warning (over-fitting).
MAX_REPEATS = 4


def _mixture(ctx: Context) -> list | None:
    train = ctx.spec.data.train
    return train if isinstance(train, list) else None


def _at(ctx: Context, i: int, field: str) -> tuple:
    """A part's field where the spec writes it, else the part."""
    return ("data", "train", i, field) if ("data", "train", i, field) in ctx.loaded.where else ("data", "train", i)


@rule(reads=("data.train", "data.mix", "compute.backend"))
def check_mixture(ctx: Context) -> Iterator[Issue]:
    """A mixture's sources have unique names, its weights are said as normalised, data.mix
    applies to a mixture only, and Amazon Bedrock trains on one source."""
    parts = _mixture(ctx)
    if parts is None:
        if ctx.spec.data.mix is not None:
            yield ctx.error(("data", "mix"), "applies to a mixture only, and data.train is one source",
                            "remove data.mix, or make data.train a list of sources")
        return
    if ctx.spec.compute.backend == "bedrock":
        yield ctx.error(("data", "train"), "is a mixture (a list of sources); Amazon Bedrock trains on one data set",
                        "give data.train one file, or train with compute.backend: local")
    seen: dict[str, int] = {}
    for i, item in enumerate(parts):
        name = item.source_name()
        if item.name is None and not re.fullmatch(S.SOURCE_NAME, name):
            whose = "hub id" if isinstance(item, S.HubSource) else "file"
            yield ctx.error(("data", "train", i), f"the source's default name '{name}' (its {whose}'s) is not a "
                            "source name: lower-case letters, digits, '.', '_' and '-', at most 64",
                            "give it one with name:")
        elif name in seen:
            yield ctx.error(_at(ctx, i, "name"), f"a second source named '{name}' (data.train[{seen[name]}] is one); "
                            "each source's name must be unique", "give one of them another name with name:")
        seen.setdefault(name, i)
    weighted = [(item.source_name(), item.weight) for item in parts if item.weight is not None]
    whole = sum(w for _, w in weighted)
    for i, item in enumerate(parts):
        if item.weight is not None and item.weight / whole < MIN_SHARE:
            yield ctx.error(_at(ctx, i, "weight"), f"weight {item.weight:g} is less than {MIN_SHARE:g} of the "
                            f"weights' sum ({whole:g}): no mixture draws a row of it",
                            "remove the source, or draw it with rows: or epochs:")
    if weighted and not (math.isclose(whole, 1, rel_tol=1e-6) or math.isclose(whole, 100, rel_tol=1e-6)):
        shares = ", ".join(f"{name} {a:.4g}" for (name, _), (t, a) in
                           zip(weighted, [d for d in draws(ctx.spec.data) if d[0] == "weight"]))
        yield ctx.warning(("data", "train"), f"the weights sum to {whole:g}, not 1 (or 100); they are normalised "
                          f"to sum to 1: {shares}")


@rule(reads=("data", "format"))
def check_mixture_columns(ctx: Context) -> Iterator[Issue]:
    """Every source of a mixture has the columns the spec's derived columns, filter, format
    and stratify column read (after the source's own renames and derived columns, and
    data.rename): a column one source lacks is said at that source."""
    if not ctx.parts:
        return
    rename = ctx.spec.data.rename
    used: dict[str, str] = {}  # name -> the first key that reads it
    derived: set[str] = set()
    for name in ctx.spec.data.derive:
        for n in sorted(ctx.parsed.get(f"data.derive.{name}", (None, set()))[1]):
            if n not in derived:
                used.setdefault(n, f"data.derive.{name}")
        derived.add(name)
    for key, (_, names) in ctx.parsed.items():
        if key == "data.filter" or (key.startswith("format.") and key != "format.chat_template"):
            for n in sorted(names):
                if n not in derived:
                    used.setdefault(n, key)
    split = ctx.spec.data.split
    if split is not None and split.stratify and split.stratify not in derived:
        used.setdefault(split.stratify, "data.split.stratify")
    found = False
    for part in ctx.parts:
        if not part.readable:
            continue
        have = {rename.get(c, c) for c in part.columns}
        missing = [n for n in used if n not in have]
        if missing and any(n in {rename.get(c, c) for p in ctx.parts for c in p.columns} for n in missing):
            # Names no source has are check_template_names's to say; these are one source's gap.
            gap = [n for n in missing if any(n in {rename.get(c, c) for c in p.columns} for p in ctx.parts)]
            found = True
            yield ctx.error(part.at, f"source '{part.name}' has no column "
                            + ", ".join(f"'{n}' (read by {used[n]})" for n in gap[:tpl.MAX_NAME_ISSUES]),
                            "map its columns onto the spec's with this source's rename: or derive:; "
                            f"its columns: {tpl.listing(part.columns)}")
    if found:
        ctx.names_ok = False  # its rows would not render


@rule(reads=("data",))
def check_mixture_rows(ctx: Context) -> Iterator[Issue]:
    """Every source of a mixture has training rows to draw (after data.filter and the held-out
    split), and none is repeated so often that the model learns its rows by heart."""
    if not ctx.parts:
        return
    data = ctx.spec.data
    if data.split is not None and ((data.split.validation > 0 and data.validation is None)
                                   or (data.split.test > 0 and data.test is None)):
        # Each source is split on its own seed: a file read twice has other held-out rows each time.
        for j, part in enumerate(ctx.parts):
            first = next((p for p in ctx.parts[:j] if same_source(p, part)), None)
            if first is not None:
                yield ctx.warning(part.at, f"source '{part.name}' reads the same rows as source '{first.name}' "
                                  f"({part.shown}); each source is split on its own, so rows held out of one are "
                                  "trained on through the other: the model is scored on rows it trained on",
                                  "read the file once (one source, with a larger weight or rows:), or give "
                                  "data.validation and data.test files of their own")
    _, per_part, _ = ctx.mixture_counts()
    weighted_rows = sum(c.drawn or 0 for c in per_part if c.take == "weight")
    for part, counted in zip(ctx.parts, per_part):
        if counted.available == 0:
            if ctx.filter_counts.get(part.key, (1, 1))[0] == 0:
                continue  # check_filter said it, at this source
            yield ctx.error(part.at, f"source '{part.name}' has no training rows left after the held-out split "
                            f"({part.rows} rows)", "give it more rows, or hold out less with data.split")
        elif problem := repeats_problem(part.name, counted.drawn, counted.available):
            yield ctx.error(part.at, problem, "draw fewer rows of it (rows:, epochs:, a smaller data.mix.total, or "
                            "data.mix.total: no_repeats), or give it more rows")
        elif counted.drawn == 0:
            why = (f"its weight {counted.amount:.3g} of the weighted sources' {weighted_rows} rows"
                   if counted.take == "weight" else f"epochs {counted.amount:g} of its {counted.available} rows")
            yield ctx.warning(part.at, f"source '{part.name}' puts no row in the mixture ({why} rounds to none)")
        elif counted.available and counted.drawn and counted.drawn / counted.available > MAX_REPEATS:
            times = counted.drawn / counted.available
            yield ctx.warning(part.at, f"source '{part.name}' is repeated {times:.1f} times ({counted.drawn} rows "
                              f"drawn of {counted.available}): the model may learn its rows by heart (over-fitting)",
                              "draw fewer rows of it (rows:, epochs:, or data.mix.total: no_repeats), or give it "
                              "more rows")
