"""Rules on unpaired feedback (``format.kind: feedback``) and KTO, the method that learns from it:
each needs the other, KTO's KL estimate needs more than one row per batch, and feedback rows are
evaluated by their completions' log-probabilities, not by answers compared with a reference.
"""

from __future__ import annotations

from typing import Iterator

from ftspec.checks.derived import metric_names
from ftspec.checks.facts import Context
from ftspec.checks.registry import rule
from ftspec.core.errors import Issue
from ftspec.spec import schema as S
from ftspec.spec.schema import FEEDBACK_METRICS, PREFERENCE_METRICS


@rule(reads=("method", "format", "training", "eval"))
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
