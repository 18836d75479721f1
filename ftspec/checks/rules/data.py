"""Rules on the data: renamed columns exist, data.filter decides and keeps rows, the
splits are consistent and large enough, held-out data is not the training data.
"""

from __future__ import annotations

from typing import Iterator

from ftspec.checks.derived import has_test, has_validation, held_out_fix
from ftspec.checks.facts import Context, SourceInfo, same_source
from ftspec.checks.registry import WHOLE_SPEC, rule
from ftspec.checks.samples import Dropped
from ftspec.core.errors import Issue
from ftspec.data import templates as tpl
from ftspec.data.formatting import FormatError
from ftspec.data.splitting import SPLITS

MIN_TRAIN_ROWS = 500


def _columns_after_mapping(ctx: Context, info: SourceInfo) -> list[str]:
    rename = ctx.spec.data.rename
    return [rename.get(c, c) for c in info.columns] + list(ctx.spec.data.derive)


@rule(reads=("data.train", "data.rename"))
def check_rename(ctx: Context) -> Iterator[Issue]:
    """Renamed columns exist in the training data."""
    info = ctx.sources.get("train")
    if not info or not info.readable:
        return
    have = set(info.columns)
    missing = [old for old in ctx.spec.data.rename if old not in have]
    for old in missing[:tpl.MAX_NAME_ISSUES]:
        origin = ctx.at("data", "rename", old)
        yield Issue(origin.key_pos or origin.pos, ctx.key("data", "rename", old), f"no column '{old}' in {info.shown}",
                    tpl.close_match(old, info.columns) or f"columns: {tpl.listing(info.columns)}")


@rule(reads=("data", "format"))
def check_filter(ctx: Context) -> Iterator[Issue]:
    """data.filter renders true or false for every sample row, and keeps some of them.
    What it keeps of each source's sample is counted (ctx.filter_counts) for the plan's rows."""
    if ctx.spec.data.filter is None or ctx.formatter is None:
        return
    for split, info in ctx.own_sources():
        if not info.readable:
            continue
        kept = rendered = 0
        for row in info.sample:
            try:
                ctx.formatter(row.values)
            except Dropped as exc:
                if exc.problem:  # the filter's mistake, whatever the row: one report
                    yield ctx.error(("data", "filter"), f"{exc.problem} (row {info.shown}:{row.number})")
                    return
                rendered += 1
                continue
            except FormatError as exc:
                if exc.refused:  # out of rendering time: count what was rendered
                    break
            kept += 1
            rendered += 1
        ctx.filter_counts[split] = (kept, rendered)
        if rendered and not kept:
            # A mixture's source: said at the source, which then has no rows to draw.
            at, said = (info.at, "data.filter drops") if info in ctx.parts else (("data", "filter"), "drops")
            if info.rows is not None and rendered >= info.rows:
                yield ctx.error(at, f"{said} every row of {info.shown} ({info.rows} rows)")
            else:
                yield ctx.warning(at, f"{said} each of the first {rendered} rows of {info.shown}; "
                                  "its rows are counted only when the data is prepared")


@rule(reads=("data",))
def check_splits(ctx: Context) -> Iterator[Issue]:
    """Split fractions apply only to splits without a file, and the stratify column exists."""
    split = ctx.spec.data.split
    if split is None:
        return
    for name in ("validation", "test"):
        if getattr(split, name) > 0 and getattr(ctx.spec.data, name) is not None:
            yield ctx.error(("data", "split", name), f"data.{name} is given, so no {name} rows are held out of train; "
                                                     "remove one of them")
    if split.validation == 0 and split.test == 0:
        yield ctx.warning(("data", "split"), "holds out nothing (validation and test are both 0)")
    info = ctx.sources.get("train")
    if split.stratify and info and info.readable:
        available = _columns_after_mapping(ctx, info)
        if split.stratify not in available:
            yield ctx.error(("data", "split", "stratify"), f"no column '{split.stratify}' to stratify on",
                            tpl.close_match(split.stratify, available) or f"columns: {tpl.listing(available)}")


@rule(reads=("data",))
def check_limit(ctx: Context) -> Iterator[Issue]:
    """data.limit cuts splits the spec has: a limit on a split it has not is a mistake (a
    smoke profile that meant to cut the test split cuts nothing)."""
    limit = ctx.spec.data.limit
    if limit is None or isinstance(limit, int):
        return
    exists = {"train": True, "validation": has_validation(ctx.spec), "test": has_test(ctx.spec)}
    for split in SPLITS:
        if getattr(limit, split) is not None and not exists[split]:
            yield ctx.error(("data", "limit", split), f"there is no {split} split to limit",
                            f"remove it, or add data.{split} or data.split.{split}")


@rule(reads=("data",))
def check_data_size(ctx: Context) -> Iterator[Issue]:
    """Fine-tuning pays off from a few hundred labelled rows; validation data shows over-fitting."""
    rows = ctx.train_rows_after_split
    if rows == 0 and ctx.parts:
        return  # a mixture: check_mixture_rows says which source has no rows
    if rows == 0:
        yield ctx.error(("data", "split"), "holds out every training row; nothing is left to train on")
        return
    if rows is not None and rows < MIN_TRAIN_ROWS:
        yield ctx.warning(("data", "train"), f"only {rows} training rows; fine-tuning usually needs {MIN_TRAIN_ROWS} "
                                             "or more to pay off")
    if not has_validation(ctx.spec):
        yield ctx.warning(("data",), "no validation data: over- and under-fitting cannot be watched",
                          "add data.validation or data.split.validation")


@rule(reads=WHOLE_SPEC)
def check_early_stopping(ctx: Context) -> Iterator[Issue]:
    """Early stopping watches the validation loss, so it needs validation data."""
    if ctx.spec.training.early_stopping is not None and not has_validation(ctx.spec):
        yield ctx.error(("training", "early_stopping"), "needs validation data "
                                                        "(data.validation or data.split.validation)")


@rule(reads=("data.train", "data.validation", "data.test"))
def check_same_data(ctx: Context) -> Iterator[Issue]:
    """Held-out rows must not be the rows trained on: validation or test read from the
    training file measure memorisation, not generalisation."""
    train = ctx.sources.get("train")
    if train is None:
        return
    for split in ("validation", "test"):
        info = ctx.sources.get(split)
        if info is not None and any(same_source(t, info) for t in (ctx.parts or [train])):
            yield ctx.warning(("data", split), "reads the same data as data.train: the model is "
                              f"{'validated' if split == 'validation' else 'tested'} on rows it trained on",
                              held_out_fix(ctx.spec, split))
    val, test = ctx.sources.get("validation"), ctx.sources.get("test")
    if val is not None and test is not None and same_source(val, test):
        yield ctx.warning(("data", "test"), "reads the same data as data.validation; the test split should be rows "
                          "that nothing was tuned on")
