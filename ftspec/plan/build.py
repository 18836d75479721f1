"""Spec -> Plan: every default made explicit, every derived value computed.

The builder takes a spec that passed the checks (:class:`Checked`: the validated spec
and what the checks found out about its files, in a ``checks.Context``) and writes its
plan. The pipeline that gets there is :mod:`ftspec.plan.compile`.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

from ftspec import __version__
from ftspec.catalog import bedrock_families as families
from ftspec.catalog import metrics as metric_catalog
from ftspec.checks import (
    Context,
    answered_by_teacher,
    default_metrics,
    has_validation,
    is_local_model,
    model_architectures,
    rel,
)
from ftspec.checks.evalmode import Resolved, eval_split, resolve_for, sampled_answers
from ftspec.core.errors import Issue
from ftspec.data.formatting import TEXT_FIELDS
from ftspec.data.gguf import gguf_location
from ftspec.data.sources import fingerprint
from ftspec.data.splitting import split_limits
from ftspec.plan import bedrock_request as request
from ftspec.plan.batching import batching
from ftspec.plan.compute import precision_rule, resolve_deepspeed, resolve_fsdp, resolve_launch, resolve_quant_storage
from ftspec.plan.feedback import kto, text_loss
from ftspec.plan.keys import plan_steps
from ftspec.plan.loss_positions import loss_positions
from ftspec.plan.mixture import mixture_source
from ftspec.plan.model import PLAN_VERSION, Plan
from ftspec.plan.rewards import baseline, grpo, method_settings
from ftspec.plan.stages import stage_dir, stage_model
from ftspec.spec import schema as S
from ftspec.spec.schema import parse_gate


@dataclass
class Checked:
    """A spec that passed validation and the checks (warnings aside). A spec with stages:
    ``stages`` holds each stage and its context, in order, and ``ctx`` is the last one's."""

    ctx: Context
    warnings: list[Issue]
    stages: list[tuple[Any, Context, list[Issue]]] = field(default_factory=list)  # (LoadedStage, context, warnings)


# --------------------------------------------------------------------------- sections


def _template(resolved) -> dict:
    return {"source": resolved.source, "ref": resolved.ref, "text": resolved.text, "sha256": resolved.sha256}


def _model(ctx: Context, m: Any = None) -> dict:
    """The plan's model section of the spec's model (or of another model, a teacher)."""
    m = ctx.spec.model if m is None else m
    if isinstance(m, S.TinyModel):
        tok = m.tokenizer
        return {
            "kind": "tiny",
            "architecture": m.architecture,
            "hidden_size": m.hidden_size,
            "num_layers": m.num_layers,
            "num_heads": m.num_heads,
            "num_kv_heads": m.num_kv_heads or m.num_heads,
            "intermediate_size": m.intermediate_size or 4 * m.hidden_size,
            "max_position_embeddings": m.max_position_embeddings,
            "tokenizer": {"kind": tok.kind, "vocab_size": getattr(tok, "vocab_size", None)},
            "init_seed": m.init_seed,
            "trust_remote_code": False,
        }
    if isinstance(m, S.BedrockModel):
        return {"kind": "bedrock", "id": m.id, "family": families.find(m.id)[0].name}
    folder, gguf = gguf_location(m.base, m.gguf_file)
    local = is_local_model(folder, ctx.spec_dir)
    return {
        "kind": "pretrained",
        "source": "local" if local else "hub",
        "name_or_path": rel(ctx.spec_dir / folder, ctx.root) if local else folder,
        "revision": m.revision,
        "dtype": m.dtype,
        "trust_remote_code": m.trust_remote_code,
        "tokenizer": _model_ref(ctx, m.tokenizer) if m.tokenizer else None,
        "gguf_file": gguf,
        # Hashed here, like data files: validate reads only the header.
        "gguf_sha256": fingerprint(ctx.spec_dir / folder / gguf) if gguf and local else None,
    }


def _model_ref(ctx: Context, name: str) -> dict:
    """A hub id, or a local folder (relative to the spec) as a path from the repository root."""
    if is_local_model(name, ctx.spec_dir):
        return {"source": "local", "name_or_path": rel(ctx.spec_dir / name, ctx.root)}
    return {"source": "hub", "name_or_path": name}


def _source(ctx: Context, split: str) -> dict | None:
    info = ctx.sources.get(split)
    if info is None:
        return None
    if info.kind == "mixture":
        return mixture_source(ctx, lambda part: _one_source(ctx, part), _template)
    return _one_source(ctx, info)


def _one_source(ctx: Context, info: Any) -> dict:
    src = info.spec
    if info.kind == "hub":
        return {"kind": "hub", "hub": src.hub, "split": src.split, "subset": src.subset, "revision": src.revision,
                "rows": None}
    header = src.header if src.header is not None else src.columns is None
    return {
        "kind": "file",
        "path": rel(info.path, ctx.root),
        "format": info.format,
        "columns": src.columns,
        "header": header if info.format in ("csv", "tsv") else None,
        "field": src.field,
        "rows": info.rows,
        # Hashed here, not in the checks: `validate` has no use for a fingerprint of every file.
        "sha256": fingerprint(info.path),
    }


def _rows(ctx: Context) -> tuple[dict, list[str]]:
    """Rows of each split after data.filter, splitting and data.limit, as the runtime cuts
    them (ftspec.data.splitting); where the filter was tried on a sample only, an estimate, named."""
    counts, estimated = ctx.planned_rows()
    if estimated:
        sampled = ", ".join(f"{ctx.source_info(s).shown} kept {k} of the first {n}"
                            for s, (k, n) in ctx.filter_counts.items() if ctx.source_rows(s)[1])
        ctx.not_checked.append(f"data.rows: {', '.join(estimated)} estimated from data.filter's verdicts on a sample "
                               f"({sampled}); exact when the data is prepared")
    return counts, estimated


def _limit(limit: Any) -> dict | None:
    """data.limit as the limit of each split: a number is every split's."""
    if limit is None:
        return None
    return split_limits(limit.model_dump() if isinstance(limit, S.SplitLimits) else limit)


def plan_threads(compute: S.Compute) -> int | str:
    """compute.threads as the plan states it: a number, or the rule `auto`, which each run
    applies to the machine it runs on (ftspec.plan.compute.auto_threads: the CPUs the process
    may use, or OMP_NUM_THREADS) and records in manifest.json. The plan, its id and its step
    keys stay the same on every machine; losses agree across thread counts within
    ftspec.plan.compute.THREADS_LOSS_RTOL."""
    return compute.threads


def plan_precision(compute: S.Compute) -> str:
    """compute.precision as the plan states it (ftspec.plan.compute.precision_rule): `auto`
    is fp32 on mps; elsewhere it stays `auto`, decided when the run starts
    (builders.resolve_precision) and recorded in manifest.json."""
    return precision_rule(compute.precision, compute.device)


def _compute(ctx: Context) -> dict:
    c = ctx.spec.compute
    if c.backend == "bedrock":
        return {**c.model_dump(), "precision": plan_precision(c), "threads": plan_threads(c),
                "fsdp": None, "deepspeed": None, "launch": None, "bedrock": _bedrock(ctx)}
    fsdp = None
    if c.strategy == "fsdp":
        fsdp = resolve_fsdp(c.fsdp, ctx.model.model_type if ctx.model else None, model_architectures(ctx))
    deepspeed = resolve_deepspeed(c.deepspeed) if c.strategy == "deepspeed" else None
    return {**c.model_dump(), "precision": plan_precision(c), "threads": plan_threads(c),
            "fsdp": fsdp, "deepspeed": deepspeed, "launch": resolve_launch(c, fsdp, deepspeed)}


def _bedrock(ctx: Context) -> dict:
    """compute.bedrock as the plan holds it: the spec's settings in the API's terms, the
    family's row format, the hyperparameters (the spec's, else the family's defaults)
    and the CreateModelCustomizationJob request they make (ftspec.plan.bedrock_request)."""
    b, m = ctx.spec.compute.bedrock, ctx.spec.model
    family, model = families.find(m.id)
    hyperparameters = families.hyperparameters(ctx.spec.training, model)[0]
    out = {
        "region": b.region,
        "customization": families.CUSTOMIZATIONS[b.customization],
        "data_format": families.data_format(family, b.customization),
        "role_arn": b.role_arn,
        "s3": b.s3.model_dump(),
        "kms_key_id": b.kms_key_id,
        "vpc": b.vpc.model_dump() if b.vpc else None,
        "tags": dict(b.tags),
        "teacher_model": b.teacher_model,
        "max_response_length": b.max_response_length,
        "hyperparameters": hyperparameters,
        "serve": b.serve,
        "model_units": b.model_units,
        "max_concurrency": b.max_concurrency,
    }
    out["request"] = request.build(ctx.spec.name, m.id, out, hyperparameters, has_validation(ctx.spec))
    return out


def _bedrock_training(ctx: Context, training: dict) -> dict:
    """The training section of a Bedrock plan: what the job's hyperparameters say, in
    ftspec's terms where it has one (Bedrock counts the steps itself)."""
    hp = _bedrock(ctx)["hyperparameters"]
    out = {**training, "max_steps": None, "total_steps": None, "steps_per_epoch": None, "gradient_accumulation": 1}
    out["epochs"] = float(hp["epochCount"])
    if "learningRate" in hp:
        out["learning_rate"] = float(hp["learningRate"])
    if "batchSize" in hp:
        out["batch_size"] = int(hp["batchSize"])
    out["effective_batch_size"] = out["batch_size"]
    out["warmup_steps"] = int(hp["learningRateWarmupSteps"]) if "learningRateWarmupSteps" in hp else None
    out["loss_positions"] = None  # Bedrock computes its loss itself
    out["eval_rows"] = None  # and validates on what it is given
    return out


def _data(ctx: Context) -> dict:
    d = ctx.spec.data
    rows, estimated = _rows(ctx)
    return {
        "sources": {s: _source(ctx, s) for s in ("train", "validation", "test") if s in ctx.sources},
        "rename": dict(d.rename),
        "derive": [{"name": n, "template": _template(ctx.templates[f"data.derive.{n}"])} for n in d.derive],
        "split": d.split.model_dump() if d.split else None,
        "filter": _template(ctx.templates["data.filter"]) if d.filter is not None else None,
        "limit": _limit(d.limit),
        "on_bad_row": d.on_bad_row,
        "rows": rows,
        "rows_estimated": estimated,
    }


def _format(ctx: Context) -> dict:
    f = ctx.spec.format
    out: dict[str, Any] = {"kind": f.kind}
    if isinstance(f, S.ChatFormat):
        out["messages"] = [{"role": t.role, "content": _template(ctx.templates[f"format.messages.{i}.content"])}
                           for i, t in enumerate(f.messages or [])]
        out["messages_column"] = f.messages_column
        out["chat_template"] = (_template(ctx.templates["format.chat_template"]) if f.chat_template is not None
                                else "model")
        out["templates"] = {}
        out["loss"] = f.loss
    else:
        out["templates"] = {n: _template(ctx.templates[f"format.{n}"]) for n in TEXT_FIELDS[f.kind]}
        out["loss"] = text_loss(f)
    return out


def _adapter(adapter: Any) -> dict:
    if isinstance(adapter, S.FullAdapter):
        return {"kind": "full"}
    out = {
        "kind": adapter.kind,
        "r": adapter.r,
        "alpha": adapter.alpha if adapter.alpha is not None else 2.0 * adapter.r,
        "dropout": adapter.dropout,
        "target_modules": (adapter.target_modules if isinstance(adapter.target_modules, str)
                           else list(adapter.target_modules)),
        "bias": adapter.bias,
    }
    if isinstance(adapter, S.QLoraAdapter):
        out.update(bits=adapter.bits, quant_type=adapter.quant_type, double_quant=adapter.double_quant)
    return out


def _method(ctx: Context, evaluation: dict, earlier: dict[str, Plan]) -> dict:
    m = ctx.spec.method
    out: dict[str, Any] = {"objective": m.kind, "adapter": _adapter(m.adapter)}
    if isinstance(m, S.DistillMethod):
        out["distill"] = _distill(ctx, m, evaluation, earlier)
    if isinstance(m.adapter, S.QLoraAdapter):
        out["adapter"]["quant_storage"] = resolve_quant_storage(m.adapter.quant_storage, ctx.spec.compute,
                                                                getattr(ctx.spec.model, "dtype", None))
    if isinstance(m, S.DPOMethod):
        out["dpo"] = {"beta": m.beta, "loss_type": m.loss_type, "label_smoothing": m.label_smoothing}
    if isinstance(m, S.GRPOMethod):
        out["grpo"] = grpo(ctx, m, evaluation, earlier, _reward_metric)
    if isinstance(m, S.KTOMethod):
        out["kto"] = kto(m)
    out.update(method_settings(m))  # a reward model's
    return out


def _reward_metric(r: Any, ctx: Context, i: int) -> dict:
    """A reward's metric as eval.metrics would hold it (its weight and missing value apart)."""
    return _metric(r, ctx, i, at="method.rewards", schemas=ctx.reward_schemas)


def _distill(ctx: Context, m: S.DistillMethod, evaluation: dict, earlier: dict[str, Plan]) -> dict:
    if isinstance(m.teacher, S.StageTeacher):
        teacher = stage_model(earlier[m.teacher.stage])
    else:
        teacher = _model(ctx, m.teacher)
    extract = None
    if m.filter.extract is not None:
        extract = m.filter.extract.model_dump()
        if m.filter.extract.template is not None:
            extract["template"] = _template(ctx.templates["method.filter.extract.template"])
    mode = evaluation["mode"] if m.mode == "auto" else m.mode
    choices = evaluation["choices"] if mode == "choices" else None
    if mode == "choices" and not choices:  # auto, where the evaluation's labels are not known when planning
        mode = "generate"
    prefix = ""
    if mode == "choices" and isinstance(ctx.spec.format, S.PromptCompletionFormat):
        # A label follows the prompt as the data's answers do: " billing" after "Queue:".
        completion = ctx.templates["format.completion"].text
        prefix = completion[: len(completion) - len(completion.lstrip())]
    return {
        "teacher": teacher,
        # The teacher answers as the models are evaluated, unless the spec says otherwise.
        "mode": mode,
        "choices": list(choices) if mode == "choices" else None,
        "prefix": prefix,
        "max_new_tokens": m.max_new_tokens or evaluation["max_new_tokens"],
        "stop": list(m.stop) if m.stop is not None else list(evaluation["stop"]),
        "batch_size": m.batch_size,
        "filter": {"extract": extract, "max_tokens": m.filter.max_tokens, "train_on": m.filter.train_on},
        "logits": m.logits.model_dump() if m.logits is not None else None,
    }


def default_learning_rate(objective: str, adapter: str) -> float:
    if objective == "grpo":  # learning from sampled rewards: smaller steps than from labels (TRL's own 1e-6)
        return 1e-5 if adapter in ("lora", "qlora") else 1e-6
    if adapter in ("lora", "qlora"):
        return 2e-4
    return 5e-6 if objective == "dpo" else 2e-5


# Validation rows the training-time validation loss is computed on unless the spec says.
EVAL_ROWS = 1000


def _training(ctx: Context, train_rows: int | None, validation_rows: int | None = None) -> dict:
    t = ctx.spec.training
    c = ctx.spec.compute
    world = c.num_processes * c.num_nodes
    effective = t.batch_size * t.gradient_accumulation * world
    steps_per_epoch = total = None
    if train_rows is not None and train_rows > 0:
        # As transformers' Trainer counts: batches per process, then optimizer steps. GRPO's
        # batches count completions: each prompt is drawn group_size times an epoch.
        drawn = train_rows * (ctx.spec.method.group_size if isinstance(ctx.spec.method, S.GRPOMethod) else 1)
        batches = math.ceil(math.ceil(drawn / world) / t.batch_size)
        steps_per_epoch = max(math.ceil(batches / t.gradient_accumulation), 1)
        total = t.max_steps or math.ceil(t.epochs * steps_per_epoch)
    elif t.max_steps:
        total = t.max_steps
    ratio = t.warmup_ratio if t.warmup_ratio is not None else (None if t.warmup_steps is not None else 0.03)
    warmup = t.warmup_steps if t.warmup_steps is not None else (math.ceil(total * ratio) if total else None)
    validation = has_validation(ctx.spec)
    eval_every = t.eval_every
    if eval_every is None and validation:
        eval_every = max(1, (total or 10) // 10)
    if not validation or isinstance(ctx.spec.method, S.GRPOMethod):
        eval_every = None  # GRPO is measured by its rewards as it trains, and by the held-out evaluation after
    save_every = t.save_every if t.save_every is not None else (eval_every or max(1, (total or 10) // 10))
    eval_rows = None
    if eval_every is not None:
        eval_rows = t.eval_rows or EVAL_ROWS
        eval_rows = min(eval_rows, validation_rows) if validation_rows else eval_rows
    return {
        "epochs": t.epochs if not t.max_steps else None,
        "max_steps": t.max_steps,
        "total_steps": total,
        "steps_per_epoch": steps_per_epoch,
        "learning_rate": t.learning_rate or default_learning_rate(ctx.spec.method.kind, ctx.spec.method.adapter.kind),
        "lr_scheduler": t.lr_scheduler,
        "warmup_steps": warmup,
        "batch_size": t.batch_size,
        "gradient_accumulation": t.gradient_accumulation,
        "effective_batch_size": effective,
        "max_length": t.max_length or min(1024, (ctx.model.max_positions if ctx.model else None) or 1024),
        "seed": t.seed,
        "optimizer": t.optimizer,
        "weight_decay": t.weight_decay,
        "max_grad_norm": t.max_grad_norm,
        "batching": batching(ctx),
        "gradient_checkpointing": t.gradient_checkpointing,
        "logging_steps": t.logging_steps,
        "eval_every": eval_every,
        "eval_rows": eval_rows,
        "save_every": save_every,
        "save_total_limit": t.save_total_limit,
        "early_stopping": t.early_stopping.model_dump() if t.early_stopping else None,
        "loss_positions": loss_positions(ctx),
    }


def _metric(metric: Any, ctx: Context, i: int, at: str = "eval.metrics", schemas: dict | None = None) -> dict:
    """The plan's metric ``i`` of the list at ``at`` (eval.metrics, or a GRPO reward's, whose
    weight and missing value are the reward's own), its files and templates read in."""
    out = {k: v for k, v in metric.model_dump(by_alias=True, exclude_none=False).items()
           if k not in ("weight", "missing")}
    if isinstance(metric, S.JudgeMetric):
        out["rubric"] = _template(ctx.templates[f"{at}.{i}.rubric"])
        out["scale"] = list(metric.scale)
        out["model"] = _model_ref(ctx, metric.model)
    if isinstance(metric, S.JsonSchemaMetric):
        text = (schemas if schemas is not None else ctx.schemas)[i]
        out["schema"] = {"path": rel(ctx.spec_dir / metric.schema_, ctx.root), "text": text,
                         "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}
    if getattr(metric, "extract", None) is not None and metric.extract.template is not None:
        out["extract"]["template"] = _template(ctx.templates[f"{at}.{i}.extract.template"])
    return _normalized(out)


def _normalized(metric: dict) -> dict:
    """A plan's metric with how its answers are normalised before they are compared
    (its catalog row's; the scoring applies exactly this)."""
    normalization = metric_catalog.get(metric["name"]).normalization
    return {**metric, "normalization": normalization} if normalization is not None else metric


def _eval(ctx: Context, rows: dict) -> dict:
    e = ctx.spec.eval
    split = eval_split(ctx.spec)
    resolved = resolve_for(ctx, split)  # eval.mode auto and eval.stop unset, decided on the sampled answers
    if ctx.spec.compute.backend == "bedrock" and resolved.mode == "choices":
        resolved = Resolved("generate", resolved.stop, "a Bedrock model answers through the Converse API, which gives "
                            "no log-probabilities to score choices with")
    choices = e.choices
    if choices is None and resolved.mode == "choices" and isinstance(ctx.spec.method, S.DistillMethod):
        # The labels are otherwise those of the training split as prepared, which in a
        # distillation are the teacher's answers: a poor teacher's would be no labels at
        # all. They are fixed here, from the data's own answers that chose the mode.
        labelled = split if "train" in answered_by_teacher(ctx.spec) else "train"
        choices = sorted(set((sampled_answers(ctx, [labelled]) or {}).get(labelled) or [])) or None
        if choices:
            resolved = Resolved(resolved.mode, resolved.stop, resolved.reason + "; the labels are fixed from those "
                                "(the training split holds the teacher's answers when the run chooses)")
    metrics = [_metric(m, ctx, i) for i, m in enumerate(e.metrics)]
    if not metrics and isinstance(ctx.spec.method, S.GRPOMethod):
        # The held-out evaluation scores what the rewards scored: the same metric definitions.
        by_name: dict[str, dict] = {}
        for i, r in enumerate(ctx.spec.method.rewards):
            if not isinstance(r, (S.PythonReward, S.ModelReward)):
                by_name.setdefault(r.name, _reward_metric(r, ctx, i))
        metrics = list(by_name.values())
    if not metrics:
        metrics = [_normalized({"name": n, "extract": None}) for n in default_metrics(ctx.spec, resolved.mode)]
    # What the generation steps must compute for these metrics (the rest is scoring).
    outputs = metric_catalog.outputs({m["name"] for m in metrics})
    gates = []
    for key, cond in sorted(e.gates.items()):
        op, threshold = parse_gate(cond)
        improvement = key.startswith("improvement.")
        gates.append({"gate": key, "metric": key[len("improvement."):] if improvement else key,
                      "improvement": improvement, "op": op, "threshold": threshold})
    n = rows.get(split) if split else None
    if n is not None and e.limit:
        n = min(n, e.limit)
    return {
        "enabled": split is not None and bool(metrics),
        "split": split,
        "rows": n,
        "baseline": baseline(ctx.spec),
        "mode": resolved.mode,
        "mode_reason": resolved.reason,
        "choices": choices,
        "metrics": metrics,
        "outputs": outputs,
        "max_new_tokens": e.max_new_tokens,
        "stop": list(resolved.stop),
        "few_shot": e.few_shot,
        "few_shot_seed": ctx.spec.training.seed if e.few_shot else None,
        "batch_size": e.batch_size,
        "limit": e.limit,
        "gates": gates,
    }


VARIANT_SAFE = re.compile(r"[A-Za-z0-9._,=+-]+")


def run_dir_name(ctx: Context) -> str:
    """The run directory: ``output.dir`` with ``{name}`` filled in, and, for a run with
    profiles or ``--set`` overrides, ``@VARIANT`` after it (``runs/quickstart@smoke``),
    so that a smoke run or an experiment never replaces the plain spec's run. A profile
    or ``--set`` that chooses ``output.dir`` itself gets exactly the folder it names."""
    spec, loaded = ctx.spec, ctx.loaded
    out = spec.output.dir.replace("{name}", spec.name).rstrip("/") or "."
    chosen = loaded.where.get(("output", "dir")) or loaded.where.get(("output",))
    if chosen is not None and (chosen.layer == "set" or chosen.layer.startswith("profile:")):
        return out
    return out + (f"@{variant}" if (variant := variant_name(loaded.profiles, loaded.overrides)) else "")


def variant_name(profiles: Iterable[str], overrides: Iterable[str]) -> str:
    """``smoke``, ``smoke+training.epochs=1``; overrides that would not make a tidy
    folder name (brackets, spaces, long values) are named by a hash of their text."""
    parts = [p if VARIANT_SAFE.fullmatch(p) and len(p) <= 40 else "profile-" + _short_hash(p) for p in profiles]
    sets = [s.strip() for s in overrides]
    if sets:
        shown = "+".join(sets)
        if not VARIANT_SAFE.fullmatch(shown) or len(shown) > 60:
            shown = "set-" + _short_hash("\n".join(sets))
        parts.append(shown)
    return "+".join(parts)


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:10]


def build(checked: Checked) -> Plan:
    """The plan of a checked spec. With stages: each stage's plan in order, each later one
    starting from the model (and keys) of the one it names; the last stage's plan is the
    spec's, and holds the others."""
    if not checked.stages:
        return build_plan(checked.ctx, checked.warnings)
    plans: dict[str, Plan] = {}
    last = len(checked.stages) - 1
    for i, (st, ctx, warnings) in enumerate(checked.stages):
        run_dir = run_dir_name(ctx)
        plans[st.name] = build_plan(ctx, warnings, stage=st.name, start=plans.get(st.start), earlier=plans,
                                    out_dir=run_dir if i == last else stage_dir(run_dir, st.name),
                                    stages=list(plans.values()) if i == last else [])
    return plans[checked.stages[-1][0].name]


def build_plan(ctx: Context, warnings: list[Issue], stage: str | None = None, start: Plan | None = None,
               earlier: dict[str, Plan] | None = None, out_dir: str | None = None, stages: list[Plan] = ()) -> Plan:
    """The plan of one effective spec; for a stage, ``start`` is the plan of the stage it
    starts from, ``earlier`` every stage before it by name, ``stages`` (the last stage
    only) their plans in order."""
    spec = ctx.spec
    data = _data(ctx)
    evaluation = _eval(ctx, data["rows"])
    body: dict[str, Any] = {
        "plan_version": PLAN_VERSION,
        "ftspec_version": __version__,
        "name": spec.name,
        "description": spec.description,
        "spec": {
            "path": rel(ctx.loaded.path, ctx.root),
            "bases": [rel(p, ctx.root) for p in ctx.loaded.files[:-1]],
            "profiles": list(ctx.loaded.profiles),
            "overrides": list(ctx.loaded.overrides),
        },
        "model": stage_model(start) if start is not None else _model(ctx),
        "data": data,
        "format": _format(ctx),
        "method": _method(ctx, evaluation, earlier or {}),
        "training": (_bedrock_training(ctx, _training(ctx, data["rows"]["train"])) if spec.compute.backend == "bedrock"
                     else _training(ctx, data["rows"]["train"], data["rows"]["validation"])),
        "eval": evaluation,
        "compute": _compute(ctx),
        "output": {"dir": out_dir or run_dir_name(ctx), "relative_to": "repository root"},
        "tracking": spec.tracking.model_dump(),
        "checks": {
            # Without positions: a plan must not depend on the directory it was made from.
            "warnings": [f"{w.key}: {w.message}" if w.key else w.message for w in warnings],
            "not_checked": sorted(ctx.not_checked),
        },
    }
    if stage is not None:
        body["stage"] = stage
        body["stages"] = [p.to_dict() for p in stages]
    # Keys are computed on the validated plan, defaults and all: what the steps will see.
    draft = Plan.build({**body, "steps": []}).to_dict()
    draft["steps"] = plan_steps(draft)
    return Plan.build(draft)


__all__ = ["Checked", "build", "build_plan", "default_learning_rate", "plan_precision", "plan_threads", "run_dir_name",
           "variant_name"]
