"""Where the LM head runs in training (``training.loss_positions``): the runtime computes it only
at the positions whose token carries loss (ftspec.runtime.training.supervised), and the plan says
what share of the text that is, measured on the sample rows."""

from __future__ import annotations

from ftspec.checks import Context
from ftspec.data.formatting import FormatError


def loss_positions(ctx: Context) -> dict:
    """The plan's ``training.loss_positions``: where the LM head runs, and the share of text it
    is needed for."""
    if ctx.spec.method.kind == "dpo":
        return {"mode": "all", "share": None,
                "reason": "trl's DPO trainer scores the chosen and rejected answers with its own head"}
    share = _loss_share(ctx)
    measured = ("" if share is None else ": every token carries loss, so none of it is skipped" if share >= 1 else
                f": {share:.0%} of the sample rows' text (in characters) carries loss, so about {1 - share:.0%} "
                "of the head's work is skipped")
    return {"mode": "supervised", "share": share,
            "reason": "the LM head runs only where a token carries loss (the loss is unchanged)" + measured}


def _loss_share(ctx: Context) -> float | None:
    """The share of the sample rows' text (in characters) that carries loss, as the format's
    loss setting says; None without readable sample rows."""
    info = ctx.sources.get("train")
    if ctx.formatter is None or info is None or not info.readable:
        return None
    fmt = ctx.spec.format
    answered = total = 0
    for row in info.sample:
        try:
            record = ctx.formatter(row.values)
        except FormatError:
            continue
        if fmt.kind == "chat":
            parts = [(m["role"] == "assistant", len(m["content"])) for m in record["messages"]]
        elif fmt.kind == "prompt_completion":
            parts = [(False, len(record["prompt"])), (True, len(record["completion"]))]
        else:
            return None
        for carries, n in parts:
            total += n
            answered += n if carries or fmt.loss == "all" else 0
    return round(answered / total, 4) if total else None
