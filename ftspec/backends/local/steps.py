"""The run's steps on this machine (compute.backend local), each given the view of the plan
its declaration in ftspec/catalog/steps.py names, and nothing else. :data:`STEPS` is the
table the executor runs; another backend's table takes these for the steps it does not
do itself.

The heavy modules (models, trainer, evaluation) are imported inside the steps that use
them: a run whose steps are all complete never loads torch.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Callable

from ftspec.catalog import steps
from ftspec.core.errors import Pos, SpecError
from ftspec.core.io import read_json, read_jsonl, write_json, write_jsonl
from ftspec.data import prepared
from ftspec.plan.compute import usable_cpus
from ftspec.plan.model import chat_template_text
from ftspec.runtime.context import StepContext
from ftspec.runtime.evaluation.progress import Progress
from ftspec.runtime.evaluation.scoring import score_outputs
from ftspec.runtime.report.build import build_report
from ftspec.runtime.report.compare import compare
from ftspec.runtime.training import data as D
from ftspec.runtime.training.job import TrainJob
from ftspec.runtime.training.splits import build_splits, write_splits
from ftspec.runtime.training.tracking import tracking_environment

# --------------------------------------------------------------------------- prepare_data

MAX_WORKERS = 8  # processes that tokenize a large split's shards side by side


def prepare_data(plan, ctx: StepContext, out: Path) -> dict:
    """The splits in TRL's columns, tokenized for SFT, with their statistics (and the base
    model, where the plan builds or converts one). Rows stream from file to file: memory
    does not grow with the data, and a preparation cut off continues where it stopped
    (its work files are in the step's scratch folder until it is complete)."""
    # Deferred: torch and transformers, only once there is data to tokenize.
    from ftspec.runtime.models import build_tiny, convert_gguf, load_tokenizer, materialize_stage

    kind = plan.format.kind
    started = time.perf_counter()
    distill = steps.TEACH.name in ctx.keys
    work = ctx.checkpoints()
    expected = [getattr(plan.data.rows, split, None) for split in ("train", "validation", "test")]
    reading = Progress("format", sum(n for n in expected if n) if plan.data.limit is None else 0, brief=True)
    try:
        made = write_splits(plan.data, plan.format, ctx.root, out, distill, work=work / "splits", echo=ctx.echo,
                            progress=reading.advance)
    finally:
        reading.close()
    skipped = dict(made.skipped)
    if distill:  # the teacher's answers in place of the data's
        skipped["teacher_answers"] = _teacher_answers(made.rows, kind, ctx.step_dir(steps.TEACH.name), out)
    building = time.perf_counter()
    if plan.model.kind == "tiny":
        build_tiny(plan.model, D.training_texts(prepared.iter_records(out, "train"), kind), out / "base-model")
    elif plan.model.kind == "stage":  # an earlier stage's model, whole: this stage starts from it
        made_model = materialize_stage(plan.model, ctx.store, ctx.root, out / "base-model")
        skipped["stage_model"] = made_model
        ctx.echo(f"  starts from stage {made_model['stage']}'s model ({made_model['parameters'] / 1e6:.2f}M parameters"
                 + (", its LoRA adapter merged into its base)" if made_model["merged"] else ")"))
    elif plan.model.gguf_file:  # de-quantised once here; every later step loads the safetensors folder
        converted = convert_gguf(plan.model, ctx.root, out / "base-model")
        skipped["gguf_conversion"] = converted
        ctx.echo(f"  converted {converted['gguf_file']} ({converted['architecture']}, "
                 f"{converted['parameters'] / 1e6:.0f}M parameters) to safetensors in {converted['seconds']:.0f}s")
    started += time.perf_counter() - building  # rows/s measures the data, not the model's build
    tokenizer = load_tokenizer(plan.model, ctx.root, out, chat_template_text(plan.format))
    loss = plan.format.loss if kind != "preference" else "completion"
    stats = {}
    workers = min(usable_cpus(), MAX_WORKERS)
    for split in made.rows:
        # What SFT trains and validates on is kept as tokens; the rest is counted only.
        keep = kind != "preference" and split != "test"
        shards = work / f"{split}-tokens"
        progress = Progress(f"tokenize {split}", made.rows[split], brief=True)
        try:
            stats[split] = D.tokenize_split(out, split, kind, tokenizer, loss, plan.training.max_length, shards,
                                            progress.advance, keep=keep, workers=workers,
                                            by_source=split == "train" and made.sources is not None)
        finally:
            progress.close()
        if keep:
            os.replace(shards, out / f"{split}-tokens")
    if kind != "preference" and stats["train"]["loss_token_fraction"] == 0:
        # Every answer lies past max_length: the trainer would drop every row and train nothing.
        t = stats["train"]["tokens"]
        raise SpecError.one(Pos("training.max_length"), "training.max_length",
                            f"no training row keeps a token of its answer within {plan.training.max_length} tokens "
                            f"(rows are {t['p50']} tokens at the median, {t['max']} at most)",
                            "raise training.max_length, or shorten the prompts")
    seconds = time.perf_counter() - started
    total = sum(v["rows"] for v in stats.values())
    speed = {"seconds": round(seconds, 2), "rows_per_second": round(total / seconds, 1) if seconds > 0 else None}
    differ = _rows_against_plan(plan.data, stats)
    extra = {"rows_differ_from_plan": differ} if differ else {}
    mixed = {}
    if made.sources is not None:  # each source's training tokens, as the training split was tokenized
        tokens = stats["train"].pop("by_source", {})
        mixed = {"sources": {name: {**v, "tokens": tokens.get(name)} for name, v in made.sources.items()}}
    write_json(out / "stats.json", {"splits": stats, **mixed, **skipped, **extra, "preparation": speed})
    rows = " · ".join(f"{s} {v['rows']}" for s, v in stats.items())
    t = stats["train"]
    dropped = sum(skipped.get("filtered_rows", {}).values())
    ctx.echo(f"  rows {rows}; train tokens p50 {t['tokens']['p50']} / p99 {t['tokens']['p99']}, "
             f"truncated {t['truncation_rate']:.1%}, loss on {t['loss_token_fraction']:.1%} of tokens"
             + (f"; data.filter dropped {dropped} rows" if "filtered_rows" in skipped else "")
             + (f"; skipped {skipped['skipped_rows']} bad rows" if skipped["skipped_rows"] else "")
             + (f"; {speed['rows_per_second']:.0f} rows/s" if speed["rows_per_second"] else ""))
    if made.sources is not None:
        ctx.echo("  train rows by source: " + " · ".join(
            f"{name} {v['drawn']} of {v['available']}" + (f" (x{v['drawn'] / v['available']:.2f})"
                                                          if v["drawn"] != v["available"] else "")
            for name, v in made.sources.items()))
    if differ:
        teacher = skipped.get("teacher_answers") or {}
        dropped_answers = sum(v["dropped"] for v in teacher.values())
        why = [w for w, on in (("bad rows were skipped", skipped["skipped_rows"]),
                               ("the plan estimated data.filter's effect from a sample", plan.data.rows_estimated),
                               (f"method.filter dropped {dropped_answers} of the teacher's answers", dropped_answers))
               if on]
        shown = ", ".join(f"{s} {d['prepared']} (plan {plan.data.rows_shown(s)})" for s, d in differ.items())
        ctx.echo(f"  rows differ from the plan: {shown}" + (f"; {' and '.join(why)}" if why else ""))
    return {"stats": stats}


def _teacher_answers(rows: dict, kind: str, teach_dir: Path, out: Path) -> dict:
    """Put the teacher's kept answers in place of the training and validation rows' own
    (which are never read), leave out the rows whose answers the filter dropped, and write
    those splits (and their origins) again. The test split keeps the data's answers: it
    is what every model is scored against. (A teacher answers every row one by one: these
    splits are read in memory.)"""
    # Deferred: the teacher's module imports torch.
    from ftspec.runtime.evaluation.teach import with_answers

    answers = read_jsonl(teach_dir / "answers.jsonl")
    counts = {}
    for split in ("train", "validation"):
        if split not in rows:
            continue
        records = prepared.read_records(out, split)
        origins = list(prepared.iter_origins(out, split))
        mine = sorted((r for r in answers if r["split"] == split), key=lambda r: r["index"])
        if len(mine) != len(records):
            raise RuntimeError(f"the teacher answered {len(mine)} {split} rows, the data has {len(records)}")
        kept_records, dropped = with_answers(records, kind, mine)
        if not kept_records:
            purpose = "train on" if split == "train" else "validate on"
            raise SpecError.one(Pos("method.filter"), "method.filter",
                                f"drops the teacher's answer to every {split} row ({len(mine)}); "
                                f"nothing is left to {purpose}", f"read {teach_dir / 'answers.jsonl'}")
        kept = [r["index"] for r in mine if r["kept"]]
        write_jsonl(prepared.split_file(out, split), kept_records)
        write_jsonl(prepared.origins_file(out, split), [origins[i] for i in kept])
        names = prepared.iter_sources(out, split)
        if names is not None:  # a mixture's: each kept record's source, still line by line
            names = list(names)
            write_jsonl(prepared.sources_file(out, split), [names[i] for i in kept])
        rows[split] = len(kept_records)
        counts[split] = {"rows": len(mine), "kept": len(kept_records), "dropped": dropped}
    return counts


def _rows_against_plan(data, stats: dict) -> dict:
    """The splits whose prepared rows differ from the plan's count (where the plan knew it)."""
    out = {}
    for split, v in stats.items():
        want = getattr(data.rows, split, None)
        if want is not None and want != v["rows"]:
            out[split] = {"plan": want, "prepared": v["rows"], "estimated": split in data.rows_estimated}
    return out


# --------------------------------------------------------------------------- teach


def teach(plan, ctx: StepContext, out: Path) -> dict:
    """The teacher answers the training and validation prompts, in batches, each batch
    saved as it is done (in the store, beside the step), so that a run cut off asks only
    for what is missing. Every answer, kept or dropped and why, is in answers.jsonl."""
    # Deferred: the teacher's model, and the generation loop, need torch.
    from ftspec.runtime.evaluation.teach import run_teacher, summary, teacher_prompts
    from ftspec.runtime.models import convert_gguf, load_plan_teacher, materialize_stage

    teacher = plan.method.distill.teacher
    if teacher.kind == "stage":
        made = materialize_stage(teacher, ctx.store, ctx.root, out / "base-model")
        ctx.echo(f"  teacher: stage {made['stage']}'s model ({made['parameters'] / 1e6:.2f}M parameters"
                 + (", its LoRA adapter merged)" if made["merged"] else ")"))
    elif teacher.gguf_file:
        made = convert_gguf(teacher, ctx.root, out / "base-model")
        ctx.echo(f"  teacher: {made['gguf_file']} converted ({made['parameters'] / 1e6:.0f}M parameters)")
    model, tokenizer = load_plan_teacher(plan, ctx.root, out)
    splits, _ = build_splits(plan.data, plan.format, ctx.root, distill=True, scratch=ctx.checkpoints())
    prompts = teacher_prompts(splits, plan.format.kind, tokenizer)
    started = time.perf_counter()
    rows = run_teacher(model, tokenizer, prompts, plan.method.distill, ctx.checkpoints(), echo=ctx.echo,
                       max_length=plan.training.max_length)
    write_jsonl(out / "answers.jsonl", rows)
    info = summary(rows)
    info["seconds"] = round(time.perf_counter() - started, 2)
    write_json(out / "teach.json", info)
    kept = sum(1 for r in rows if r["kept"])
    ctx.echo(f"  teacher answered {len(rows)} prompts; kept {kept}, dropped {len(rows) - kept} "
             f"(answers in {steps.TEACH.folder}/answers.jsonl)")
    return info


# --------------------------------------------------------------------------- generate_*


def _generate(plan, ctx: StepContext, out: Path, tuned: bool, teacher: bool = False) -> dict:
    """Run one model (base, tuned or a distillation's teacher) on the evaluation split and
    save what the scoring step needs: outputs.json and generations.jsonl."""
    # Deferred: loading and running a model needs torch.
    from ftspec.runtime.evaluation.evaluate import generate_outputs
    from ftspec.runtime.models import load_evaluated, load_plan_teacher, load_scored

    if teacher:
        model, tokenizer = load_plan_teacher(plan, ctx.root, ctx.step_dir(steps.TEACH.name))
    elif "pair_scores" in plan.eval.outputs:  # a reward model's score head: it scores the pairs, it writes nothing
        model, tokenizer = load_scored(plan, ctx.root, ctx.data_dir, ctx.step_dir(steps.TRAIN.name) if tuned else None)
    else:
        model_dir = ctx.step_dir(steps.TRAIN.name) if tuned else None
        model, tokenizer = load_evaluated(plan, ctx.root, ctx.data_dir, model_dir)

    # The few-shot examples of a baseline are for the base model only: the tuned model and
    # the teacher answer as they are used.
    summary, rows = generate_outputs(model, tokenizer, plan.eval, plan.format.kind, plan.training.max_length,
                                     ctx.data_dir, baseline=not tuned and not teacher)
    write_json(out / "outputs.json", summary)
    write_jsonl(out / "generations.jsonl", rows)
    shots = f", {summary['few_shot']}-shot" if summary["few_shot"] else ""
    labels = summary.get("labels") or []
    answers = ("generated answers" if summary["mode"] == "generate"
               else f"picked among {len(labels)} labels by likelihood (choices mode)" if labels
               else "picked labels (choices mode)")
    made = " and ".join({"answers": answers, "perplexity": "perplexity", "pair_logprobs": "pair log-probabilities",
                         "completion_logprobs": "completion log-probabilities",
                         "pair_scores": "the reward model's pair scores"}[o]
                        for o in plan.eval.outputs) or "nothing"

    def pace(part: str, s: dict) -> str:  # how fast each part went, as outputs.json's `speed` has it
        rate = s.get("rows_per_second")
        shown = "" if not rate else f", {rate:.1f} rows/s" if rate >= 1 else f", {rate:.2g} rows/s"
        seconds = s.get("seconds") or 0
        took = f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
        return f"{part} {s.get('rows')} rows in {took}{shown}"

    speed = "; ".join(pace(part, s) for part, s in (summary.get("speed") or {}).items())
    ctx.echo(f"  {'teacher' if teacher else 'tuned' if tuned else 'base'} model, {summary['rows']} "
             f"{summary['split']} rows{shots}: {made}" + (f" ({speed})" if speed else ""))
    return {k: v for k, v in summary.items() if k != "labels"}


def generate_base(plan, ctx: StepContext, out: Path) -> dict:
    return _generate(plan, ctx, out, tuned=False)


def generate_tuned(plan, ctx: StepContext, out: Path) -> dict:
    return _generate(plan, ctx, out, tuned=True)


def generate_teacher(plan, ctx: StepContext, out: Path) -> dict:
    return _generate(plan, ctx, out, tuned=False, teacher=True)


# --------------------------------------------------------------------------- eval_*


def _score(plan, ctx: StepContext, out: Path, tuned: bool, teacher: bool = False) -> dict:
    """Score what a generation step saved: metrics.json and predictions.jsonl (each row
    with its scores). No model is loaded, except an LLM judge's."""
    generated_dir = ctx.step_dir((steps.GENERATE_TEACHER if teacher else steps.GENERATE_TUNED if tuned
                                  else steps.GENERATE_BASE).name)
    generated = read_json(generated_dir / "outputs.json")
    rows = read_jsonl(generated_dir / "generations.jsonl")
    base_rows, beta = None, None
    if tuned and not teacher and plan.method.dpo is not None:  # DPO's reward: against the base model, its reference
        base_dir = ctx.step_dir(steps.GENERATE_BASE.name)
        if (base_dir / "generations.jsonl").exists():
            base_rows, beta = read_jsonl(base_dir / "generations.jsonl"), plan.method.dpo.beta
    definitions = [m.model_dump(mode="json", by_alias=True) for m in plan.eval.metrics]
    summary, scored = score_outputs(definitions, generated, rows, base_rows=base_rows, beta=beta,
                                    judge=judge(plan, ctx) if any(d["name"] == "judge" for d in definitions) else None)
    write_json(out / "metrics.json", summary)
    write_jsonl(out / "predictions.jsonl", scored)
    shown = ", ".join(f"{k} {v:.3f}" for k, v in summary["metrics"].items() if isinstance(v, (int, float)))
    ctx.echo(f"  {'teacher' if teacher else 'tuned' if tuned else 'base'} model scored on {summary['rows']} "
             f"{summary['split']} rows: {shown}")
    return summary


def judge(plan, ctx: StepContext) -> Callable:
    """Runs an LLM judge metric over saved answers: the judge model loads once, on the plan's device."""
    loaded: dict = {}

    def run(definition, rows, predictions):
        # Deferred: the judge is a model, loaded only when a judge metric scores.
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        # Deferred, as the libraries above: these import torch.
        from ftspec.runtime.evaluation.evaluate import judge_rows
        from ftspec.runtime.models import hub_id
        from ftspec.runtime.training import builders

        device = builders.resolve_device(plan.compute)
        precision = builders.resolve_precision(plan.compute, device)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
        ref = definition["model"]
        name = ref["name_or_path"]
        if name not in loaded:
            path = str(ctx.root / name) if ref["source"] == "local" else hub_id(name, "eval.metrics")
            where = {}
            if ref["source"] == "local" and path.lower().endswith(".gguf"):  # de-quantised by transformers
                path, where = str(Path(path).parent), {"gguf_file": Path(path).name}
            judge_tokenizer = AutoTokenizer.from_pretrained(path, **where)
            if judge_tokenizer.pad_token is None:
                judge_tokenizer.pad_token = judge_tokenizer.eos_token
            judge_model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **where).to(device)
            loaded[name] = (judge_model, judge_tokenizer)
        judge_model, judge_tokenizer = loaded[name]
        return judge_rows(definition, rows, predictions, judge_model, judge_tokenizer, plan.eval.batch_size)

    return run


def eval_base(plan, ctx: StepContext, out: Path) -> dict:
    return _score(plan, ctx, out, tuned=False)


def eval_tuned(plan, ctx: StepContext, out: Path) -> dict:
    return _score(plan, ctx, out, tuned=True)


def eval_teacher(plan, ctx: StepContext, out: Path) -> dict:
    return _score(plan, ctx, out, tuned=False, teacher=True)


# --------------------------------------------------------------------------- train


def train(plan, ctx: StepContext, out: Path) -> dict:
    """The plan's recipe, in this process or in the several processes compute.launch asks for;
    its checkpoints stay in the store until the step is complete, so that a run cut off resumes."""
    checkpoints = ctx.checkpoints()
    checkpoints.mkdir(parents=True, exist_ok=True)
    job = TrainJob(plan, ctx.root, ctx.data_dir, checkpoints, out, checkpoints / "metrics.jsonl", list(ctx.callbacks),
                   run_name=ctx.run_dir.name)
    if plan.method.objective == "distill":  # the teacher, for logit distillation: as the teach step prepared it
        job.teach_dir = ctx.step_dir(steps.TEACH.name)
    for r in plan.method.grpo.rewards if plan.method.grpo is not None else ():
        if r.kind == "reward_model":  # an earlier stage's, whole, where the recipe (each process) loads it
            # Deferred: the model loaders import torch and transformers.
            from ftspec.runtime.models import materialize_reward_model
            from ftspec.runtime.training.rewards import reward_model_dir

            materialize_reward_model(r.model, ctx.store, ctx.root, reward_model_dir(checkpoints, r.stage))
    with tracking_environment(plan.tracking, ctx.run_dir):  # the W&B project, MLflow experiment…, while training only
        if plan.compute.launch is not None:  # several processes, started and checked by this one
            # Deferred: the launcher imports torch's elastic launcher and transformers.
            from ftspec.runtime.distributed import launcher

            result = launcher.train(job, ctx.echo)
        else:
            # Deferred: the recipes import torch, transformers and trl.
            from ftspec.runtime.recipes import recipe

            try:
                result = recipe(plan.method.objective)(job)
            finally:
                # Deferred with the recipes (it imports torch): training's memory back before the tuned model
                # loads, or before the next trial of a sweep when this one was pruned or failed.
                from ftspec.runtime import memory

                memory.release()
    if result.resumed_from:
        ctx.echo(f"  resumed from {Path(result.resumed_from).name}")
    info = {"steps": result.steps, "train_loss": result.train_loss, "eval_loss": result.eval_loss,
            "resumed_from": Path(result.resumed_from).name if result.resumed_from else None,
            "stopped_early": result.stopped_early}
    write_json(out / "train.json", info)
    if job.metrics.exists():
        shutil.copyfile(job.metrics, out / "metrics.jsonl")
    return info


# --------------------------------------------------------------------------- compare_stages, report


def compare_stages(plan, ctx: StepContext, out: Path) -> dict:
    return compare(plan, ctx, out)


def report(plan, ctx: StepContext, out: Path) -> dict:
    return build_report(ctx.run_dir, plan, out)


STEPS: dict[str, Callable[..., dict]] = {
    steps.TEACH.name: teach,
    steps.PREPARE_DATA.name: prepare_data,
    steps.GENERATE_BASE.name: generate_base,
    steps.EVAL_BASE.name: eval_base,
    steps.TRAIN.name: train,
    steps.GENERATE_TUNED.name: generate_tuned,
    steps.EVAL_TUNED.name: eval_tuned,
    steps.GENERATE_TEACHER.name: generate_teacher,
    steps.EVAL_TEACHER.name: eval_teacher,
    steps.COMPARE_STAGES.name: compare_stages,
    steps.REPORT.name: report,
}
