"""Rules on reward models (``method.kind: reward_model``) and on using one: a reward model learns from
preference pairs and is evaluated on held-out pairs by its own scores (against chance, with no baseline);
a GRPO stage names one as a reward only if an earlier stage of the same spec trains it, and no stage
starts from one (it scores answers; it does not write them).
"""

from __future__ import annotations

from typing import Iterator

from ftspec.checks.derived import metric_names
from ftspec.checks.facts import Context
from ftspec.checks.registry import WHOLE_SPEC, rule
from ftspec.checks.samples import Dropped
from ftspec.core.errors import Issue
from ftspec.data.formatting import FormatError
from ftspec.spec import schema as S
from ftspec.spec.schema import REWARD_MODEL_METRICS


@rule(reads=WHOLE_SPEC)
def check_reward_model(ctx: Context) -> Iterator[Issue]:
    """A reward model trains on preference pairs, and is scored by the metrics of its own scores."""
    m, spec = ctx.spec.method, ctx.spec
    scores = isinstance(m, S.RewardModelMethod)
    for i, name in enumerate(metric_names(spec)):
        if name in REWARD_MODEL_METRICS and not scores:
            yield ctx.error(("eval", "metrics", i), f"{name} scores pairs with a trained reward model "
                                                    "(method.kind: reward_model)")
        elif name not in REWARD_MODEL_METRICS and scores:
            yield ctx.error(("eval", "metrics", i), f"a reward model scores answers; it does not write or "
                            f"likelihood-rank them, so {name} cannot be computed for it",
                            f"use {' and '.join(REWARD_MODEL_METRICS)}")
    c = spec.compute
    if c.num_processes * c.num_nodes > 1:  # not yet run and checked on several processes
        if scores:
            yield ctx.error(("compute", "num_processes"), "a reward model trains in one process for now",
                            "remove compute.num_processes and num_nodes")
        for j, r in enumerate(getattr(m, "rewards", None) or ()):
            if isinstance(r, S.ModelReward):
                yield ctx.error(("method", "rewards", j), "a reward model as a GRPO reward runs in one process for "
                                "now", "remove compute.num_processes and num_nodes")
    if not scores:
        return
    if spec.format.kind != "preference":
        yield ctx.error(("format", "kind"), "a reward model learns to score the chosen answer of a pair above the "
                        f"rejected one: format.kind must be 'preference' (got '{spec.format.kind}')")
    else:
        yield from _tied_pairs(ctx)
    if spec.compute.backend == "bedrock":
        yield ctx.error(("method", "kind"), "Amazon Bedrock customization jobs do not train reward models",
                        "use compute.backend: local")
    for gate in spec.eval.gates:
        if gate.startswith("improvement."):
            yield ctx.error(("eval", "gates", gate), "a reward model has no baseline to improve on (an untrained "
                            "score head is noise); its pair accuracy is compared with chance, 0.5",
                            f"gate on the metric itself, e.g. {gate[len('improvement.'):]}: \">= 0.7\"")
    if isinstance(m.adapter, S.QLoraAdapter):
        yield ctx.error(("method", "adapter", "kind"), "a reward model trains with lora or full; qlora is not "
                        "supported for it yet", "use method.adapter.kind: lora")
    t = spec.training
    if t.batching in ("packed", "length_grouped"):
        yield ctx.error(("training", "batching"), f"trl's reward trainer pads each batch of pairs; "
                        f"{t.batching} is for SFT", "use padded or auto")
    if spec.compute.strategy in ("fsdp", "deepspeed"):
        yield ctx.error(("compute", "strategy"), f"a reward model trains on one process or several with ddp; "
                        f"{spec.compute.strategy} is not supported for it yet", "use compute.strategy: ddp")


def _tied_pairs(ctx) -> Iterator[Issue]:
    """Pairs whose chosen answer renders the same as the rejected one teach a reward model nothing
    (its loss is log 2 whatever it scores), and a held-out one counts as wrong in pair_accuracy."""
    info = ctx.sources.get("train")
    if ctx.formatter is None or info is None or not info.readable:
        return
    rows, tied = 0, []
    for row in info.sample:
        if ctx.render_budget.left <= 0:
            return
        try:
            record = ctx.formatter(row.values)
        except Dropped:
            continue
        except FormatError as exc:
            if exc.refused:
                return
            continue
        rows += 1
        if record["chosen"].strip() == record["rejected"].strip():
            tied.append(row.number)
    if not tied:
        return
    says = (f"renders the same as format.chosen for {len(tied)} of {rows} sampled training pairs "
            f"({info.shown} row {tied[0]}{', ...' if len(tied) > 1 else ''}): a reward model cannot score an "
            "answer above itself")
    if len(tied) == rows and rows >= 2:
        yield ctx.error(("format", "rejected"), says, "check the chosen and rejected templates and columns")
    else:
        yield ctx.warning(("format", "rejected"), says,
                          "drop those pairs (a data.filter that compares their two columns)")


def reward_model_stages(stages: list, i: int) -> Iterator[Issue]:
    """Across stages (``stages``: (LoadedStage or None, Context) pairs): a GRPO reward names an earlier
    reward-model stage, and a stage does not start from a reward model."""
    st, ctx = stages[i]
    named = {s.name: c for s, c in stages[:i] if s is not None}
    earlier = [s.name for s, _ in stages[:i] if s is not None]
    if st is not None and st.start is not None and st.start in named and named[st.start] is not None \
            and isinstance(named[st.start].spec.method, S.RewardModelMethod):
        yield Issue(st.pos, f"stages.{st.index}", f"stage {st.name} starts from stage {st.start}, a reward "
                    "model: it scores answers, it does not write them", "add `from: base` (or an earlier stage that "
                    f"writes answers) to stage {st.name}, and name {st.start} as a reward: "
                    f"{{reward_model: {st.start}}}")
    teacher = getattr(ctx.spec.method, "teacher", None)
    if isinstance(teacher, S.StageTeacher) and named.get(teacher.stage) is not None \
            and isinstance(named[teacher.stage].spec.method, S.RewardModelMethod):
        yield ctx.error(("method", "teacher", "stage"), f"stage {teacher.stage} is a reward model: it scores "
                        "answers, it does not write them, so it cannot teach")
    if not isinstance(ctx.spec.method, S.GRPOMethod):
        return
    for j, r in enumerate(ctx.spec.method.rewards):
        if not isinstance(r, S.ModelReward):
            continue
        at = ("method", "rewards", j, "reward_model")
        if st is None:
            yield ctx.error(at, f"this spec has no stages, so no stage '{r.reward_model}' trains a reward model",
                            "write the reward model's training as an earlier stage (method.kind: reward_model)")
        elif r.reward_model not in earlier:
            later = any(s is not None and s.name == r.reward_model for s, _ in stages[i:])
            yield ctx.error(at, f"'{r.reward_model}' is not an earlier stage"
                            + (" (it comes after this one)" if later else "")
                            + "; a reward model is trained by a stage before this one "
                            f"({', '.join(earlier) or 'none'})")
        elif named[r.reward_model] is not None and not isinstance(named[r.reward_model].spec.method,
                                                                   S.RewardModelMethod):
            kind = named[r.reward_model].spec.method.kind
            yield ctx.error(at, f"stage {r.reward_model} trains a {kind} model, not a reward model",
                            f"set method.kind: reward_model in stage {r.reward_model}, or name the stage that does")
