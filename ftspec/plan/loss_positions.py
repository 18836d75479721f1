"""Where the LM head runs in training (``training.loss_positions``): the runtime computes it only
at the positions whose token carries loss (ftspec.runtime.training.supervised; for DPO the chosen
and rejected answers' tokens, ftspec.runtime.training.dpo_trainer), and the plan says what share
of the text that is, measured on the sample rows. A sharded head (FSDP, DeepSpeed) is left to trl
at every position. What only the model can tell (a model that scales or caps its logits) the
trainer finds at run time, and logs."""

from __future__ import annotations

from ftspec.checks import Context
from ftspec.data.formatting import FormatError

# Strategies that shard the LM head across processes: the trainers then leave the head to trl
# (ftspec.runtime.training.trainer and dpo_trainer), which gathers it.
SHARDED = ("fsdp", "deepspeed")


def loss_positions(ctx: Context) -> dict:
    """The plan's ``training.loss_positions``: where the LM head runs, and the share of text it
    is needed for."""
    if ctx.spec.compute.strategy in SHARDED:
        return {"mode": "all", "share": None,
                "reason": f"with compute.strategy {ctx.spec.compute.strategy} the head is sharded: trl's head "
                          "gathers it and runs at every position"}
    if ctx.spec.method.kind == "grpo":
        return {"mode": "all", "share": None,
                "reason": "trl's GRPO trainer computes its sampled completions' log-probabilities itself"}
    if ctx.spec.method.kind == "kto":
        return {"mode": "all", "share": None,
                "reason": "trl's KTO trainer computes its completions' log-probabilities itself"}
    if ctx.spec.method.kind == "reward_model":
        return {"mode": "all", "share": None,
                "reason": "a reward model has no LM head: its score head reads each answer's last token"}
    if ctx.spec.method.kind == "dpo":
        share = _answer_share(ctx)
        measured = ("" if share is None else
                    f": {share:.0%} of the sample pairs' text (in characters, the prompt read once with each "
                    f"answer) is answer, so about {1 - share:.0%} of the head's work is skipped")
        return {"mode": "supervised", "share": share,
                "reason": "the LM head of the policy and of the reference runs only at the chosen and rejected "
                          "answers' tokens (the DPO loss is unchanged)" + measured}
    share = _loss_share(ctx)
    measured = ("" if share is None else ": every token carries loss, so none of it is skipped" if share >= 1 else
                f": {share:.0%} of the sample rows' text (in characters) carries loss, so about {1 - share:.0%} "
                "of the head's work is skipped")
    return {"mode": "supervised", "share": share,
            "reason": "the LM head runs only where a token carries loss (the loss is unchanged)" + measured}


def _sample_records(ctx: Context):
    """The training source's sample rows as the format renders them (rows it cannot render left out);
    nothing without readable sample rows."""
    info = ctx.sources.get("train")
    if ctx.formatter is None or info is None or not info.readable:
        return
    for row in info.sample:
        try:
            yield ctx.formatter(row.values)
        except FormatError:
            continue


def _answer_share(ctx: Context) -> float | None:
    """The share of the text a DPO step reads (prompt + chosen, prompt + rejected) that is answer,
    on the sample rows, in characters; None without readable sample rows."""
    if ctx.spec.format.kind != "preference":
        return None
    answered = total = 0
    for record in _sample_records(ctx):
        answers = len(record["chosen"]) + len(record["rejected"])
        answered += answers
        total += 2 * len(record["prompt"]) + answers
    return round(answered / total, 4) if total else None


def _loss_share(ctx: Context) -> float | None:
    """The share of the sample rows' text (in characters) that carries loss, as the format's
    loss setting says; None without readable sample rows."""
    fmt = ctx.spec.format
    answered = total = 0
    for record in _sample_records(ctx):
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
