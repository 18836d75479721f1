"""A readable summary of a plan, for `ftspec plan` and the run header."""

from __future__ import annotations

from typing import Any

import click

from ftspec.catalog import metrics as metric_catalog
from ftspec.plan.compute import describe_auto, describe_launch, describe_strategy
from ftspec.plan.mixture import describe_mixture
from ftspec.plan.model import Plan
from ftspec.plan.rewards import NO_BASELINE


def _style(text: str, color: bool, **kw: Any) -> str:
    if not color:
        return text
    return click.style(text, **kw)


def compared(metrics) -> list[tuple[str, str]]:
    """How each metric normalises answers before comparing them, in words: (the metrics'
    names, how), one pair per normalisation, in the order the metrics are listed."""
    groups: dict[str, list[str]] = {}
    for m in metrics:
        key = getattr(m, "normalization", None)
        if key in metric_catalog.NORMALIZATIONS:
            groups.setdefault(key, []).append(m.name)
    return [(", ".join(names), metric_catalog.NORMALIZATIONS[key].what) for key, names in groups.items()]


def _num(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:g}"
    return "?" if x is None else str(x)


def describe_model(m: Any) -> str:
    if m.kind == "stage":
        if m.adapter == "full":
            how = "its full weights"
        else:
            how = f"its {m.adapter} adapter; merged into its base when this stage's data is prepared"
        return f"the model of stage {m.stage} ({how})"
    if m.kind == "bedrock":
        return f"Amazon Bedrock {m.id} ({m.family} family)"
    if m.kind == "tiny":
        tok = m.tokenizer
        tok_text = ("byte tokenizer" if tok.kind == "byte"
                    else f"BPE tokenizer ({tok.vocab_size} tokens, trained on train)")
        return (f"tiny {m.architecture} from config: {m.num_layers} layers × {m.hidden_size} wide, "
                f"{m.num_heads} heads, {tok_text}")
    gguf = f"/{m.gguf_file}" if getattr(m, "gguf_file", None) else ""
    if m.revision:
        rev = f" @ {m.revision}"
    elif getattr(m, "gguf_sha256", None):  # a local GGUF file, pinned by its content
        rev = f" (GGUF, sha256 {m.gguf_sha256[:12]})"
    else:  # a local folder is what it holds; only a hub id floats
        rev = " (revision not pinned)" if m.source == "hub" else ""
    tokenizer = f", tokenizer {m.tokenizer.source} {m.tokenizer.name_or_path}" if m.tokenizer else ""
    return f"{m.source} {m.name_or_path}{gguf}{rev}, dtype {m.dtype}{tokenizer}"


# What serving the custom model for the evaluation costs: a custom model answers only through
# an on-demand deployment or provisioned throughput, each billed while it exists (aws.amazon.com/bedrock/pricing).
SERVE_COST = {
    "none": "the custom model is not served (no evaluation of it, nothing billed for serving)",
    "on_demand": ("on-demand deployment of the custom model, billed per token while it exists; "
                  "deleted after the evaluation"),
    "provisioned": ("provisioned throughput of {units} model unit(s), billed by the hour while it exists; "
                    "deleted after the evaluation"),
}


def describe_bedrock(b: Any, family: str | None = None) -> str:
    """One line: where the Bedrock job runs and what serving its model costs."""
    serve = SERVE_COST[b.serve].format(units=b.model_units)
    teacher = f" from {b.teacher_model}" if b.teacher_model else ""
    hp = ", ".join(f"{k} {v}" for k, v in b.hyperparameters.items())
    return (f"bedrock {b.region}, {family or '?'} family, {b.customization.lower()}{teacher}, data {b.data_format}, "
            f"{hp}; serve {b.serve}: {serve}")


def describe_adapter(a: Any) -> str:
    if a.kind == "full":
        return "full fine-tuning"
    targets = a.target_modules if isinstance(a.target_modules, str) else ", ".join(a.target_modules)
    extra = f", {a.bits}-bit {a.quant_type}" if a.kind == "qlora" else ""
    return f"{a.kind} (r {a.r}, alpha {_num(a.alpha)}, dropout {_num(a.dropout)}, {targets}{extra})"


def describe_grpo(g: Any) -> list[str]:
    """What a grpo method samples and what it maximises, one line each."""
    stop = f", cut at {', '.join(repr(x) for x in g.stop)}" if g.stop else ""
    lines = [f"{g.group_size} completions per prompt of at most {g.max_completion_tokens} tokens{stop}, temperature "
             f"{_num(g.temperature)}; kl {_num(g.kl)}, "
             + (f"loss {g.loss_type}" if g.estimator == "group" else "leave-one-out advantages (RLOO)")
             + "; completions sampled every "
             f"{g.sample_every} steps"]
    for r in g.rewards:
        if r.kind == "reward_model":
            lines.append(f"reward: stage {r.stage}'s reward model (train key {r.model.train[:8]}) scoring prompt + "
                         f"completion × {_num(r.weight)}")
            continue
        what = (f"{r.path}:{r.function}" if r.kind == "python"
                else r.metric.name + (" after extraction" if getattr(r.metric, "extract", None) else ""))
        lines.append(f"reward {what} × {_num(r.weight)} (a completion it cannot score: {_num(r.missing)})")
    return lines


def describe_distill(d: Any) -> list[str]:
    """What a distill method's teacher does, one line each: who answers and how, which
    answers are kept, and what the student learns from them."""
    stop = f", stop at {', '.join(repr(x) for x in d.stop)}" if d.stop else ""
    if getattr(d, "mode", "generate") == "choices":
        how = (f"picks the likeliest of {len(d.choices)} labels ({', '.join(d.choices[:6])}"
               + (", …" if len(d.choices) > 6 else "") + f"), as choices mode scores; in batches of {d.batch_size}")
    else:
        how = f"up to {d.max_new_tokens} new tokens{stop}, in batches of {d.batch_size}"
    lines = [f"teacher: {describe_model(d.teacher)}", f"answers: {how}"]
    f = d.filter
    kept = []
    if f.extract is not None:
        what = f"regex {f.extract.regex!r}" if f.extract.regex is not None else "its extraction template"
        kept.append(f"answers where {what} matches ({f.extract.which} match)")
    if f.max_tokens is not None:
        kept.append(f"answers of at most {f.max_tokens} teacher tokens")
    trains = "the extracted text" if f.train_on == "extracted" else "the whole answer"
    lines.append(f"filter: keeps {' and '.join(kept) if kept else 'every answer'}; trains on {trains}")
    if d.logits is not None:
        lines.append(f"logits: alpha {_num(d.logits.alpha)} at temperature {_num(d.logits.temperature)}")
    else:
        lines.append("logits: none, the student learns from the answers only")
    return lines


def render_plan(plan: Plan, color: bool = False) -> str:
    lines: list[str] = []
    head = _style(f"plan {plan.name}", color, bold=True)
    lines.append(f"{head}  id {plan.short_id}  (plan_version {plan.plan_version}, ftspec {plan.ftspec_version})")
    spec = plan.spec
    via = []
    if spec.bases:
        via.append("extends " + " → ".join(spec.bases))
    if spec.profiles:
        via.append("profiles " + ", ".join(spec.profiles))
    if spec.overrides:
        via.append("--set " + ", ".join(spec.overrides))
    lines.append(f"  spec      {spec.path}" + (f"  ({'; '.join(via)})" if via else ""))
    if not plan.stages:
        lines += _render_body(plan, color)
        return "\n".join(lines)
    # A spec with stages: each stage's plan in the order they run, the spec's own (the last) at the end.
    every = [*plan.stages, plan]
    lines.append(f"  stages    {' → '.join(p.stage or '?' for p in every)}  (run in order; "
                 "a change to one re-runs it and the stages after it)")
    for i, stage in enumerate(every, 1):
        lines.append("")
        lines.append(_style(f"stage {i}/{len(every)} {stage.stage}", color, bold=True) + f"  id {stage.short_id}")
        lines += _render_body(stage, color)
    return "\n".join(lines)


def _render_body(plan: Plan, color: bool) -> list[str]:
    """Everything a plan says after its head: model to steps, then its checks."""
    lines: list[str] = []
    m = plan.model
    lines.append(f"  model     {describe_model(m)}")
    if getattr(m, "trust_remote_code", False):
        lines.append(_style("  !! trust_remote_code: true — the model repository's Python code "
                            "will run on this machine", color, fg="red", bold=True))

    d = plan.data
    lines.append(f"  data      train {d.rows_shown('train')} · validation {d.rows_shown('validation')} · "
                 f"test {d.rows_shown('test')} rows"
                 + (f"  (limit {d.limit})" if d.limit else "")
                 + ("  (~: estimated from the rows validate sampled)" if d.rows_estimated else ""))
    for split, src in d.sources.items():
        if src.kind == "mixture":
            lines += [f"            {x}" for x in describe_mixture(src, "train" in d.rows_estimated)]
        elif src.kind == "file":
            lines.append(f"            {split}: {src.path} ({src.format}, {src.rows} rows, sha256 {src.sha256[:12]})")
        else:
            lines.append(f"            {split}: hub {src.hub} [{src.split}]"
                         + (f" @ {src.revision}" if src.revision else ""))
    if d.split:
        s = d.split
        strat = f", stratified by {s.stratify}" if s.stratify else ""
        lines.append(f"            split from train: validation {_num(s.validation)}, test {_num(s.test)}, "
                     f"seed {s.seed}{strat}")
    if d.derive:
        lines.append("            derived: " + ", ".join(x.name for x in d.derive))

    f = plan.format
    bedrock = getattr(plan.compute, "bedrock", None)
    if bedrock is not None:
        lines.append(f"  format    {f.kind}, rendered as {bedrock.data_format} rows for Amazon Bedrock")
    elif f.kind == "chat":
        ct = f.chat_template
        ct_text = "the tokenizer's chat template" if ct == "model" else (f"{ct.source} chat template {ct.ref}".strip())
        lines.append(f"  format    chat, {ct_text}, loss on {f.loss} tokens")
    elif f.kind == "prompt_completion":
        lines.append(f"  format    prompt_completion, loss on {f.loss} tokens")
    elif f.kind == "feedback":
        lines.append("  format    feedback rows (prompt, completion, label: desirable or not), loss on the completion")
    else:
        lines.append("  format    preference pairs (prompt, chosen, rejected)")

    me = plan.method
    method = f"{me.objective} + {describe_adapter(me.adapter)}"
    if me.dpo is not None:
        method += f", beta {_num(me.dpo.beta)}, loss {me.dpo.loss_type}"
    if me.kto is not None:
        method += (f", beta {_num(me.kto.beta)}, loss {me.kto.loss_type}, weights desirable "
                   f"{_num(me.kto.desirable_weight)} / undesirable {_num(me.kto.undesirable_weight)}")
    if me.reward_model is not None:
        center = me.reward_model.center_rewards_coefficient
        method += (", a one-output score head on the base model; "
                   + (f"scores centred (coefficient {_num(center)})" if center else "scores not centred"))
    if bedrock is not None:
        method = f"{me.objective}, as Amazon Bedrock trains it (no choice of adapter)"
    lines.append(f"  method    {method}")
    if me.distill is not None:
        lines += [f"            {x}" for x in describe_distill(me.distill)]
    if me.grpo is not None:
        lines += [f"            {x}" for x in describe_grpo(me.grpo)]
        for r in me.grpo.rewards:
            if r.kind == "python":
                lines.append(_style(f"  !! runs Python reward code in training: {r.path}:{r.function} "
                                    f"(sha256 {r.sha256[:12]})", color, fg="red", bold=True))

    t = plan.training
    if bedrock is not None:
        lines.append("  training  by Amazon Bedrock: "
                     f"{', '.join(f'{k} {v}' for k, v in bedrock.hyperparameters.items())} "
                     f"(rows rendered as {bedrock.data_format})")
    length = "" if bedrock is not None else (
        f"{_num(t.epochs)} epochs = {_num(t.total_steps)} steps ({_num(t.steps_per_epoch)}/epoch)" if t.epochs
        else f"{_num(t.total_steps)} steps (max_steps)")
    if bedrock is None:
        lines.append(f"  training  {length}, lr {_num(t.learning_rate)} {t.lr_scheduler}, "
                     f"warmup {_num(t.warmup_steps)} steps")
        lines.append(f"            batch {t.batch_size} × accumulation {t.gradient_accumulation} = "
                     f"{t.effective_batch_size}, max_length {t.max_length}, seed {t.seed}, {t.optimizer}")
        rows = f" on {_num(t.eval_rows)} validation rows" if t.eval_rows else ""
        cadence = f"eval every {_num(t.eval_every)}{rows}" if t.eval_every else "no validation loss"
        stop = f", early stopping (patience {t.early_stopping.patience})" if t.early_stopping else ""
        lines.append(f"            {cadence}, checkpoint every {_num(t.save_every)}, log every {t.logging_steps}{stop}")
        lines.append(f"            batching {t.batching.mode}: {t.batching.reason}")
        if t.loss_positions is not None:
            lines.append(f"            loss at {t.loss_positions.mode} positions: {t.loss_positions.reason}")

    e = plan.eval
    if e.enabled:
        metrics = ", ".join(x.name for x in e.metrics)
        base = ("against the base model" if e.baseline
                else f"no baseline ({NO_BASELINE})" if me.objective == "reward_model" else "no baseline")
        shots = f", {e.few_shot}-shot baseline (examples drawn with seed {e.few_shot_seed})" if e.few_shot else ""
        lines.append(f"  eval      {e.split} split ({_num(e.rows)} rows), {e.mode}, {base}{shots}; metrics: {metrics}")
        if e.mode_reason:
            lines.append(f"            {e.mode} because {e.mode_reason}")
        lines.extend(f"            {names}: answers compared {what}" for names, what in compared(e.metrics))
        if e.stop:
            lines.append(f"            answers end at {', '.join(repr(x) for x in e.stop)}")
        for g in e.gates:
            lines.append(f"            gate: {g.gate} {g.op} {_num(g.threshold)}")
    else:
        lines.append("  eval      off (no held-out split or no metrics)")

    c = plan.compute
    if c.bedrock is not None:
        lines.append(f"  compute   {describe_bedrock(c.bedrock, getattr(plan.model, 'family', None))}")
    else:
        threads = ("CPU threads auto" if c.threads == "auto"
                   else f"{c.threads} CPU thread{'s' if c.threads != 1 else ''}")
        lines.append(f"  compute   {c.backend}, device {c.device}, precision {c.precision}, attention {c.attention}, "
                     f"{threads}")
        lines.extend(f"            {note}" for note in describe_auto(c))  # what each `auto` becomes here
        lines.append(f"            {describe_launch(c)}")
        if (strategy := describe_strategy(c)) is not None:
            lines.append(f"            {strategy}")
    lines.append(f"  output    {plan.output.dir}  (relative to the {plan.output.relative_to})")
    lines.append("  steps     " + " → ".join(f"{s.name} {s.key[:8]}" for s in plan.steps))
    for w in plan.checks.warnings:
        lines.append(_style(f"  warning   {w}", color, fg="yellow"))
    for n in plan.checks.not_checked:
        lines.append(f"  not checked  {n}")
    return lines
