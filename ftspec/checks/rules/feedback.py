"""Rules on unpaired feedback (``format.kind: feedback``) and KTO, the method that learns from it:
each needs the other, KTO's KL estimate needs more than one row per batch, and feedback rows are
evaluated by their completions' log-probabilities, not by answers compared with a reference.
"""

from __future__ import annotations

from typing import Iterator

from ftspec.checks.derived import metric_names
from ftspec.checks.evalmode import eval_split
from ftspec.checks.facts import Context
from ftspec.checks.registry import rule
from ftspec.checks.samples import Dropped
from ftspec.core.errors import Issue
from ftspec.data.formatting import FormatError
from ftspec.spec import schema as S
from ftspec.spec.schema import FEEDBACK_METRICS, PREFERENCE_METRICS


@rule(reads=("method", "format", "training", "eval", "data"))
def check_feedback(ctx: Context) -> Iterator[Issue]:
    """KTO trains on feedback rows, and feedback rows train only KTO; the batch and the metrics fit them."""
    m, fmt = ctx.spec.method, ctx.spec.format.kind
    kto = isinstance(m, S.KTOMethod)
    if kto and fmt != "feedback":
        yield ctx.error(("format", "kind"), "KTO learns from thumbs up/down feedback: format.kind must be 'feedback' "
                                            f"(prompt, completion, label); got '{fmt}'")
    if fmt == "feedback" and not kto and m.kind != "dpo":  # DPO's own rule says it wants preference pairs
        yield ctx.error(("format", "kind"), f"feedback rows (a completion and whether it was desirable) train "
                                            f"method.kind: kto, not {m.kind}",
                        "set method.kind: kto, or use prompt_completion or chat rows")
    if kto and m.loss_type == "kto" and ctx.spec.training.batch_size < 2:
        yield ctx.error(("training", "batch_size"), "KTO's loss estimates its KL term from the other rows of each "
                        f"batch, so it needs at least 2 rows per batch (got {ctx.spec.training.batch_size})",
                        "raise training.batch_size, or use method.loss_type: apo_zero_unpaired")
    if kto and ctx.spec.training.batching in ("packed", "length_grouped"):
        yield ctx.error(("training", "batching"), f"KTO batches feedback rows in their order (its KL term pairs each "
                        f"row with its neighbour's completion); {ctx.spec.training.batching} is for SFT",
                        "use padded or auto")
    if kto and ctx.spec.compute.strategy in ("fsdp", "deepspeed"):
        yield ctx.error(("compute", "strategy"), f"KTO runs on one process or several with ddp; "
                        f"{ctx.spec.compute.strategy} is not supported for it yet", "use compute.strategy: ddp")
    if fmt == "feedback" and ctx.spec.eval.mode == "choices":
        yield ctx.error(("eval", "mode"), "choices mode scores labels of prompt/completion or chat data, "
                                          "not feedback rows")
    for i, name in enumerate(metric_names(ctx.spec)):
        if name in FEEDBACK_METRICS and fmt != "feedback":
            yield ctx.error(("eval", "metrics", i), f"{name} scores feedback rows (format.kind: feedback)")
        elif name not in FEEDBACK_METRICS + PREFERENCE_METRICS and fmt == "feedback":
            yield ctx.error(("eval", "metrics", i), f"{name} compares an answer with the row's completion, but an "
                            "undesirable row's completion is what not to answer",
                            f"use {' or '.join(FEEDBACK_METRICS)}, which scores the completions' log-probabilities")
    names = metric_names(ctx.spec)
    if kto and fmt == "feedback" and (not names or "feedback_margin" in names):  # feedback_margin: the default
        yield from _evaluated_labels(ctx)


def _labels(ctx: Context, split: str) -> tuple[list[bool], bool] | None:
    """The labels of a split's sampled rows that format, and whether the sample is the whole file
    (None when they cannot be read: the rows or the templates are reported by other rules)."""
    info = ctx.sources.get(split)
    if ctx.formatter is None or info is None or not info.readable:
        return None
    labels = []
    for row in info.sample:
        if ctx.render_budget.left <= 0:
            return None
        try:
            labels.append(bool(ctx.formatter(row.values)["label"]))
        except Dropped:  # data.filter leaves the row out
            continue
        except FormatError as exc:
            if exc.refused:
                return None
    return labels, info.rows == len(info.sample)


def _evaluated_labels(ctx: Context) -> Iterator[Issue]:
    """feedback_margin compares the held-out desirable rows with the undesirable ones: rows of one
    label only (or a single row) leave it uncomputed, after a whole training run."""
    split = eval_split(ctx.spec)
    if split is None:
        return
    limit = ctx.spec.eval.limit
    if limit is not None and limit < 2:
        yield ctx.error(("eval", "limit"), f"feedback_margin compares desirable with undesirable held-out rows, so "
                        f"it needs at least 2 rows (eval.limit is {limit})", "raise eval.limit, or remove it")
        return
    own = split in ctx.sources  # the evaluated split has a file; else it is cut from the training rows
    found = _labels(ctx, split if own else "train")
    if found is None:
        return
    labels, whole = found
    if len(labels) < 2:
        return
    if len(set(labels)) != 1:
        yield from _unstratified(ctx, split, own, labels)
        return
    which = "desirable (true)" if labels[0] else "undesirable (false)"
    other = "undesirable" if labels[0] else "desirable"
    source = ctx.sources[split if own else "train"].shown
    rows = (f"all {len(labels)} rows of {source}" if whole
            else f"the first {len(labels)} rows of {source} (all that validate samples)")
    held = f"the {split} rows" + ("" if own else f", held out of {source},")
    says = (f"{rows} are {which}, so {held} have no {other} row to compare them with and feedback_margin "
            "cannot be computed")
    fix = f"add {other} rows (a thumbs-{'down' if labels[0] else 'up'}), or check format.label"
    if whole:
        yield ctx.error(("format", "label"), says, fix)
    else:
        yield ctx.warning(("format", "label"), says.replace("cannot be computed", "may not be computable"), fix)


def _unstratified(ctx: Context, split: str, own: bool, labels: list[bool]) -> Iterator[Issue]:
    """A held-out split cut at random from rows with few of one label may get none of them."""
    s = ctx.spec.data.split
    if own or s is None or s.stratify:
        return
    n = ctx.planned_rows()[0].get(split)
    if not n:
        return
    share = min(labels.count(True), labels.count(False)) / len(labels)
    chance = (1 - share) ** n  # of a random cut holding none of the fewer label
    if chance > 0.05:
        yield ctx.warning(("data", "split"), f"only {share:.0%} of the sampled training rows have the fewer label, and "
                          f"the {n} {split} rows are cut from them at random: a {chance:.0%} chance that none of them "
                          "has it, and then feedback_margin cannot be computed",
                          "add stratify: COLUMN (the label's column) to data.split, or hold out more rows")
