"""Execute a plan: its steps in order, each computed once per key into the step
store beside the run directory, and shown in the run directory by a link.

    runs/
      .ftspec-store/<step>/<key>/    each step's output (see ftspec/store/rundir.py)
      <name>[@variant]/
        plan.json  manifest.json  metrics.jsonl  metrics.json  predictions.jsonl  report.md  report.html
        data -> …           prepare_data: the splits in TRL's columns, train-/validation-tokens/ (tokenized, for SFT),
                            stats.json (+ base-model/ for tiny models)
        generate-base -> …  generate_base: what the base model answered (and the log-probs the metrics need)
        eval-base -> …      eval_base: those answers scored: metrics.json, predictions.jsonl
        model -> …          train: the model or adapter (safetensors) with its tokenizer, train.json
        generate-tuned -> … generate_tuned: what the tuned model answered
        eval-tuned -> …     eval_tuned: metrics.json, predictions.jsonl
        report -> …         report: metrics.json, predictions.jsonl, report.md, report.html (copied to the top)

A step writes into ``<key>.partial`` in the store, holding the key's lock, and its
completion marker is the last file written there; only then does the folder take
its final name. The trainer's checkpoints stay in the store (``<key>.checkpoints``)
until the train step is complete, so that a run cut off resumes, from any run
directory whose plan has the same train key. A step whose key is complete in the
store is reused, not run again, whichever variant computed it.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ftspec.plan import steps
from ftspec.plan.artifacts import MANIFEST_VERSION, Manifest
from ftspec.plan.model import Plan, chat_template_text
from ftspec.core.io import copy_atomic, read_json, write_json, write_jsonl
from ftspec.plan.compute import describe_launch
from ftspec.store.rundir import RunLock, Store, adopt_legacy, finish_step, link_step, now, store_of
from ftspec.plan.describe import describe_adapter, describe_model

LIBRARIES = ("torch", "transformers", "peft", "trl", "datasets", "accelerate", "tokenizers")


@dataclass
class StepContext:
    """What a step is given besides its view of the plan: where things are, and how to talk."""

    root: Path  # the spec's repository root: plan paths are relative to it
    run_dir: Path
    key: str  # this step's key
    echo: Callable[[str], None] = print
    callbacks: list = field(default_factory=list)  # extra trainer callbacks, for tests
    keys: dict[str, str] = field(default_factory=dict)  # each step of the plan: its key
    store: Store | None = None  # None: the store beside run_dir
    name: str = ""  # this step's name

    def __post_init__(self):
        if self.store is None:
            self.store = store_of(self.run_dir)

    def step_dir(self, name: str) -> Path:
        """Where step ``name``'s output is (in the store, under its key in this plan)."""
        if name in self.keys:
            return self.store.path(name, self.keys[name])
        return self.run_dir / steps.folder(name)

    @property
    def data_dir(self) -> Path:
        return self.step_dir(steps.PREPARE_DATA.name)

    def checkpoints(self) -> Path:
        return self.store.scratch(self.name or steps.TRAIN.name, self.key, "checkpoints")


# --------------------------------------------------------------------------- the steps
# Each step function is given a view of the plan fields its declaration in
# ftspec/plan/steps.py names, and nothing else.


def step_prepare_data(plan, ctx: StepContext, out: Path) -> dict:
    if plan.compute.backend == "bedrock":
        from ftspec.backends.bedrock.steps import prepare

        return prepare(plan, ctx, out)
    from ftspec.runtime.training import data as D
    from ftspec.runtime.models import build_tiny, convert_gguf, load_tokenizer, materialize_stage

    kind = plan.format.kind
    started = time.perf_counter()
    distill = steps.TEACH.name in ctx.keys
    splits, skipped, origins = D.write_splits(plan.data, plan.format, ctx.root, out, distill)
    if distill:  # the teacher's answers in place of the data's
        skipped["teacher_answers"] = _teacher_answers(splits, origins, kind, ctx.step_dir(steps.TEACH.name), out)
    building = time.perf_counter()
    if plan.model.kind == "tiny":
        build_tiny(plan.model, D.training_texts(splits["train"], kind), out / "base-model")
    elif plan.model.kind == "stage":  # an earlier stage's model, whole: this stage starts from it
        made = materialize_stage(plan.model, ctx.store, ctx.root, out / "base-model")
        skipped["stage_model"] = made
        ctx.echo(f"  starts from stage {made['stage']}'s model ({made['parameters'] / 1e6:.2f}M parameters"
                 + (", its LoRA adapter merged into its base)" if made["merged"] else ")"))
    elif plan.model.gguf_file:  # de-quantised once here; every later step loads the safetensors folder
        converted = convert_gguf(plan.model, ctx.root, out / "base-model")
        skipped["gguf_conversion"] = converted
        ctx.echo(f"  converted {converted['gguf_file']} ({converted['architecture']}, "
                 f"{converted['parameters'] / 1e6:.0f}M parameters) to safetensors in {converted['seconds']:.0f}s")
    started += time.perf_counter() - building  # rows/s measures the data, not the model's build
    tokenizer = load_tokenizer(plan.model, ctx.root, out, chat_template_text(plan.format))
    loss = plan.format.loss if kind != "preference" else "completion"
    stats = {}
    for split, records in splits.items():
        input_ids, labels = D.tokenize(records, kind, tokenizer, loss, split)
        stats[split] = D.token_stats(input_ids, labels, plan.training.max_length)
        if kind != "preference" and split != "test":  # what SFT trains and validates on, tokenized once
            D.save_tokens(out / f"{split}-tokens", input_ids, labels)
    if kind != "preference" and stats["train"]["loss_token_fraction"] == 0:
        # Every answer lies past max_length: the trainer would drop every row and train nothing.
        from ftspec.core.errors import Pos, SpecError

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
    write_json(out / "stats.json", {"splits": stats, **skipped, **extra, "preparation": speed})
    rows = " · ".join(f"{s} {v['rows']}" for s, v in stats.items())
    t = stats["train"]
    dropped = sum(skipped.get("filtered_rows", {}).values())
    ctx.echo(f"  rows {rows}; train tokens p50 {t['tokens']['p50']} / p99 {t['tokens']['p99']}, "
             f"truncated {t['truncation_rate']:.1%}, loss on {t['loss_token_fraction']:.1%} of tokens"
             + (f"; data.filter dropped {dropped} rows" if "filtered_rows" in skipped else "")
             + (f"; skipped {skipped['skipped_rows']} bad rows" if skipped["skipped_rows"] else "")
             + (f"; {speed['rows_per_second']:.0f} rows/s" if speed["rows_per_second"] else ""))
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


def _teacher_answers(splits: dict, origins: dict, kind: str, teach_dir: Path, out: Path) -> dict:
    """Put the teacher's kept answers in place of the training and validation rows' own
    (which are never read), leave out the rows whose answers the filter dropped, and write
    those splits (and their origins) again. The test split keeps the data's answers: it
    is what every model is scored against."""
    from ftspec.core.io import read_jsonl
    from ftspec.runtime.evaluation.teach import with_answers

    rows = read_jsonl(teach_dir / "answers.jsonl")
    counts = {}
    for split in ("train", "validation"):
        if split not in splits:
            continue
        mine = sorted((r for r in rows if r["split"] == split), key=lambda r: r["index"])
        if len(mine) != len(splits[split]):
            raise RuntimeError(f"the teacher answered {len(mine)} {split} rows, the data has {len(splits[split])}")
        records, dropped = with_answers(splits[split], kind, mine)
        if not records:
            from ftspec.core.errors import Pos, SpecError

            raise SpecError.one(Pos("method.filter"), "method.filter", f"drops the teacher's answer to every {split} row "
                                f"({len(mine)}); nothing is left to {'train on' if split == 'train' else 'validate on'}",
                                f"read {teach_dir / 'answers.jsonl'}")
        kept = [r["index"] for r in mine if r["kept"]]
        splits[split] = records
        origins[split] = [origins[split][i] for i in kept]
        write_jsonl(out / f"{split}.jsonl", records)
        counts[split] = {"rows": len(mine), "kept": len(records), "dropped": dropped}
    write_json(out / "origins.json", origins)
    return counts


def _rows_against_plan(data, stats: dict) -> dict:
    """The splits whose prepared rows differ from the plan's count (where the plan knew it)."""
    out = {}
    for split, v in stats.items():
        want = getattr(data.rows, split, None)
        if want is not None and want != v["rows"]:
            out[split] = {"plan": want, "prepared": v["rows"], "estimated": split in data.rows_estimated}
    return out


def load_evaluated(plan, root: Path, data_dir: Path, model_dir: Path | None = None):
    """The model a generation step runs and its tokenizer: the base model (as prepared),
    or with ``model_dir`` the tuned one. ``ftspec generate`` loads through here too, so
    that what it answers is what the evaluation measured."""
    from ftspec.runtime.training import builders
    from ftspec.runtime.models import load_model, load_tokenizer, load_tuned

    device = builders.resolve_device(plan.compute)
    precision = builders.resolve_precision(plan.compute, device)
    dtype = builders.model_dtype(plan.model, precision)
    if model_dir is not None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        model = load_tuned(plan.model, plan.method.adapter.kind, plan.compute.attention, root, data_dir,
                           model_dir, dtype, device)
    else:
        tokenizer = load_tokenizer(plan.model, root, data_dir, chat_template_text(plan.format))
        model = load_model(plan.model, root, data_dir, dtype, device, attention=plan.compute.attention)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def load_teacher(plan, root: Path, teach_dir: Path):
    """A distillation's teacher and its tokenizer, on the plan's device and precision."""
    from ftspec.runtime.training import builders
    from ftspec.runtime.models import load_teacher as load

    teacher = plan.method.distill.teacher
    device = builders.resolve_device(plan.compute)
    dtype = builders.model_dtype(teacher, builders.resolve_precision(plan.compute, device))
    return load(teacher, root, teach_dir, dtype, device, plan.compute.attention, chat_template_text(plan.format))


def step_teach(plan, ctx: StepContext, out: Path) -> dict:
    """The teacher answers the training and validation prompts, in batches, each batch
    saved as it is done (in the store, beside the step), so that a run cut off asks only
    for what is missing. Every answer, kept or dropped and why, is in answers.jsonl."""
    from ftspec.core.io import write_jsonl
    from ftspec.runtime.training import data as D
    from ftspec.runtime.models import convert_gguf, materialize_stage
    from ftspec.runtime.evaluation.teach import run_teacher, summary, teacher_prompts

    teacher = plan.method.distill.teacher
    if teacher.kind == "stage":
        made = materialize_stage(teacher, ctx.store, ctx.root, out / "base-model")
        ctx.echo(f"  teacher: stage {made['stage']}'s model ({made['parameters'] / 1e6:.2f}M parameters"
                 + (", its LoRA adapter merged)" if made["merged"] else ")"))
    elif teacher.gguf_file:
        made = convert_gguf(teacher, ctx.root, out / "base-model")
        ctx.echo(f"  teacher: {made['gguf_file']} converted ({made['parameters'] / 1e6:.0f}M parameters)")
    model, tokenizer = load_teacher(plan, ctx.root, out)
    splits, _ = D.build_splits(plan.data, plan.format, ctx.root, distill=True)
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


def _generate_step(plan, ctx: StepContext, out: Path, tuned: bool, teacher: bool = False) -> dict:
    """Run one model (base, tuned or a distillation's teacher) on the evaluation split and
    save what the scoring step needs: outputs.json and generations.jsonl."""
    from ftspec.runtime.evaluation.evaluate import generate_outputs

    if teacher:
        model, tokenizer = load_teacher(plan, ctx.root, ctx.step_dir(steps.TEACH.name))
    else:
        model, tokenizer = load_evaluated(plan, ctx.root, ctx.data_dir, ctx.step_dir(steps.TRAIN.name) if tuned else None)

    # The few-shot examples of a baseline are for the base model only: the tuned model and
    # the teacher answer as they are used.
    summary, rows = generate_outputs(model, tokenizer, plan.eval, plan.format.kind, plan.training.max_length,
                                     ctx.data_dir, baseline=not tuned and not teacher)
    write_json(out / "outputs.json", summary)
    write_jsonl(out / "generations.jsonl", rows)
    shots = f", {summary['few_shot']}-shot" if summary["few_shot"] else ""
    labels = summary.get("labels") or []
    answers = ("generated answers" if summary["mode"] == "generate"
               else f"picked among {len(labels)} labels by likelihood (choices mode)" if labels else "picked labels (choices mode)")
    made = " and ".join({"answers": answers, "perplexity": "perplexity", "pair_logprobs": "pair log-probabilities"}[o]
                        for o in plan.eval.outputs) or "nothing"
    ctx.echo(f"  {'teacher' if teacher else 'tuned' if tuned else 'base'} model, {summary['rows']} {summary['split']} rows{shots}: {made}")
    return {k: v for k, v in summary.items() if k != "labels"}


def step_generate_base(plan, ctx: StepContext, out: Path) -> dict:
    if plan.compute.backend == "bedrock":
        from ftspec.backends.bedrock.steps import generate

        return generate(plan, ctx, out, tuned=False)
    return _generate_step(plan, ctx, out, tuned=False)


def step_generate_tuned(plan, ctx: StepContext, out: Path) -> dict:
    if plan.compute.backend == "bedrock":
        from ftspec.backends.bedrock.steps import generate

        return generate(plan, ctx, out, tuned=True)
    return _generate_step(plan, ctx, out, tuned=True)


def step_generate_teacher(plan, ctx: StepContext, out: Path) -> dict:
    return _generate_step(plan, ctx, out, tuned=False, teacher=True)


def _eval_step(plan, ctx: StepContext, out: Path, tuned: bool, teacher: bool = False) -> dict:
    """Score what a generation step saved: metrics.json and predictions.jsonl (each row
    with its scores). No model is loaded, except an LLM judge's."""
    from ftspec.core.io import read_jsonl
    from ftspec.runtime.evaluation.scoring import score_outputs

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
                                    judge=_judge(plan, ctx) if any(d["name"] == "judge" for d in definitions) else None)
    write_json(out / "metrics.json", summary)
    write_jsonl(out / "predictions.jsonl", scored)
    shown = ", ".join(f"{k} {v:.3f}" for k, v in summary["metrics"].items() if isinstance(v, (int, float)))
    ctx.echo(f"  {'teacher' if teacher else 'tuned' if tuned else 'base'} model scored on {summary['rows']} "
             f"{summary['split']} rows: {shown}")
    return summary


def _judge(plan, ctx: StepContext):
    """Runs an LLM judge metric over saved answers: the judge model loads once, on the plan's device."""
    loaded: dict = {}

    def judge(definition, rows, predictions):
        import torch

        from ftspec.runtime.training import builders
        from ftspec.runtime.evaluation.evaluate import judge_rows
        from ftspec.runtime.models import hub_id

        device = builders.resolve_device(plan.compute)
        precision = builders.resolve_precision(plan.compute, device)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
        ref = definition["model"]
        name = ref["name_or_path"]
        if name not in loaded:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            path = str(ctx.root / name) if ref["source"] == "local" else hub_id(name, "eval.metrics")
            where = {}
            if ref["source"] == "local" and path.lower().endswith(".gguf"):  # de-quantised by transformers
                path, where = str(Path(path).parent), {"gguf_file": Path(path).name}
            judge_tokenizer = AutoTokenizer.from_pretrained(path, **where)
            if judge_tokenizer.pad_token is None:
                judge_tokenizer.pad_token = judge_tokenizer.eos_token
            loaded[name] = (AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **where).to(device), judge_tokenizer)
        judge_model, judge_tokenizer = loaded[name]
        return judge_rows(definition, rows, predictions, judge_model, judge_tokenizer, plan.eval.batch_size)

    return judge


def step_eval_base(plan, ctx: StepContext, out: Path) -> dict:
    return _eval_step(plan, ctx, out, tuned=False)


def step_eval_tuned(plan, ctx: StepContext, out: Path) -> dict:
    return _eval_step(plan, ctx, out, tuned=True)


def step_eval_teacher(plan, ctx: StepContext, out: Path) -> dict:
    return _eval_step(plan, ctx, out, tuned=False, teacher=True)


def step_compare_stages(plan, ctx: StepContext, out: Path) -> dict:
    from ftspec.runtime.report.compare import compare

    return compare(plan, ctx, out)


def step_train(plan, ctx: StepContext, out: Path) -> dict:
    if plan.compute.backend == "bedrock":
        from ftspec.backends.bedrock.steps import train

        return train(plan, ctx, out)
    from ftspec.runtime.training.job import TrainJob

    checkpoints = ctx.checkpoints()
    checkpoints.mkdir(parents=True, exist_ok=True)
    job = TrainJob(plan, ctx.root, ctx.data_dir, checkpoints, out, checkpoints / "metrics.jsonl", list(ctx.callbacks),
                   run_name=ctx.run_dir.name)
    if plan.method.objective == "distill":  # the teacher, for logit distillation: as the teach step prepared it
        job.teach_dir = ctx.step_dir(steps.TEACH.name)
    from ftspec.runtime.training.job import recipe
    from ftspec.runtime.training.tracking import tracking_environment

    with tracking_environment(plan.tracking, ctx.run_dir):  # the W&B project, MLflow experiment…, while training only
        if plan.compute.launch is not None:  # several processes, started and checked by this one
            from ftspec.runtime.distributed import launch as workers

            result = workers.train(job, ctx.echo)
        else:
            result = recipe(plan.method.objective)(job)
    if result.resumed_from:
        ctx.echo(f"  resumed from {Path(result.resumed_from).name}")
    info = {"steps": result.steps, "train_loss": result.train_loss, "eval_loss": result.eval_loss,
            "resumed_from": Path(result.resumed_from).name if result.resumed_from else None,
            "stopped_early": result.stopped_early}
    write_json(out / "train.json", info)
    if job.metrics.exists():
        shutil.copyfile(job.metrics, out / "metrics.jsonl")
    return info


REPORT_FILES = ("metrics.json", "predictions.jsonl", "report.md", "report.html")


def step_report(plan, ctx: StepContext, out: Path) -> dict:
    from ftspec.runtime.report.build import build_report

    return build_report(ctx.run_dir, plan, out)


# --------------------------------------------------------------------------- the run


def _versions() -> dict:
    from ftspec.commands.lock import versions

    return {"python": platform.python_version(), **versions(LIBRARIES)}


def _inputs(plan: Plan) -> list[str]:
    """The files a plan reads, relative to the repository root: the spec, its bases,
    local data files and template files."""
    found = [plan.spec.path, *plan.spec.bases]

    def walk(node) -> None:
        if isinstance(node, dict):
            if node.get("kind") == "file" and isinstance(node.get("path"), str):
                found.append(node["path"])
            if node.get("source") == "file" and isinstance(node.get("ref"), str) and node["ref"]:
                found.append(node["ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    body = plan.to_dict()
    walk({k: body[k] for k in ("data", "format", "eval") if k in body})
    return sorted(set(found))


def _git(root: Path, inputs: list[str] = ()) -> dict | None:
    """The commit of the spec's repository, and whether what ran differs from it:
    ``dirty`` when a tracked file is modified or any input of the plan (the spec, its
    bases, data and template files) is modified or not tracked at all."""
    if not (root / ".git").exists():
        return None

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)

    try:
        commit = git("rev-parse", "HEAD")
        if commit.returncode != 0:
            return None
        changed = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
        inputs = [i for i in inputs if (root / i).exists()]
        tracked = set(git("ls-files", "--", *inputs).stdout.splitlines()) if inputs else set()
        modified = set()
        if inputs:
            for line in git("status", "--porcelain", "--untracked-files=no", "--", *inputs).stdout.splitlines():
                modified.add(line[3:].strip().strip('"'))
    except (OSError, subprocess.TimeoutExpired):
        return None
    untracked = sorted(i for i in inputs if i not in tracked)
    return {"commit": commit.stdout.strip(), "dirty": bool(changed or untracked or modified),
            "untracked_inputs": untracked, "modified_inputs": sorted(modified)}


# Deprecation notices a library raises from inside itself, which nothing ftspec passes
# can change: (message, category, module the warning is raised in). Only these are
# silenced, by name; any other deprecation notice is left to Python's own rules, so one
# that ftspec's use of a library causes is seen (tests/test_library_warnings.py runs
# tiny runs and fails on any).
LIBRARY_NOTICES = (
    # peft reads `model.is_gradient_checkpointing`, renamed in transformers 5, whenever it
    # wraps a model in an adapter or loads one (PeftModel.__init__, peft 0.21).
    (r"`is_gradient_checkpointing` is deprecated", FutureWarning, r"transformers\.modeling_utils"),
)


def quiet_libraries() -> None:
    """Keep the libraries' messages to what matters: their log at errors only, and none of
    the deprecation notices they raise from inside themselves (:data:`LIBRARY_NOTICES`);
    a deprecation ftspec causes is not hidden."""
    for message, category, module in LIBRARY_NOTICES:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        from datasets.utils import logging as ds_logging

        ds_logging.set_verbosity_error()
        ds_logging.disable_progress_bar()
    except ImportError:
        pass


def header(plan: Plan, run_dir: Path, root: Path, threads: dict | None = None) -> str:
    """The run's first lines; ``threads``: what :func:`builders.apply_threads` set (None:
    nothing runs, so no device is needed)."""
    t = plan.training
    if plan.compute.backend == "bedrock":
        b = plan.compute.bedrock
        where = f"Amazon Bedrock, {b.region} ({b.customization.lower().replace('_', ' ')} of {plan.model.id})"
    elif threads is not None:
        from ftspec.runtime.training import builders

        device = builders.resolve_device(plan.compute)
        precision = builders.resolve_precision(plan.compute, device)
        # `auto` is shown with what it resolved to on this machine; a precision the plan fixed, as it is.
        shown = f"{precision}, auto" if plan.compute.precision == "auto" else precision
        where = f"{device} ({shown}; {builders.describe_threads(threads)})"
    else:
        where = "not needed (nothing to run)"
    return "\n".join([
        f"ftspec run {plan.name}  (plan {plan.short_id})",
        f"  model    {describe_model(plan.model)}",
        f"  method   {plan.method.objective} + {describe_adapter(plan.method.adapter)}",
        f"  data     train {plan.data.rows_shown('train')} · validation {plan.data.rows_shown('validation')} · "
        f"test {plan.data.rows_shown('test')} rows; "
        + (f"{t.total_steps} steps of {t.effective_batch_size} rows" if plan.compute.backend == "local" else
           "trained by Bedrock with " + (", ".join(f"{k} {v}" for k, v in plan.compute.bedrock.hyperparameters.items())
                                         or "the family's defaults")),
        f"  device   {where}; run directory {_shown(run_dir, root)}",
    ] + ([f"  training {describe_launch(plan.compute)}; only the main process writes, evaluation runs in this one"]
         if plan.compute.launch is not None else []))


def _shown(path: Path, root: Path) -> str:
    """A path relative to the working directory when it is below it; links are not
    followed (the run directory's ``model`` is shown, not where the store keeps it)."""
    shown = os.path.relpath(os.path.abspath(path), os.path.abspath(os.getcwd()))
    return str(path) if shown.startswith("..") else shown


@dataclass
class StepOutcome:
    name: str
    key: str
    folder: Path
    state: str  # "ran" or "reused"
    seconds: float | None = None
    result: dict | None = None  # what the step returned, when it ran


@dataclass
class RunResult:
    """What a run did, for the CLI to decide its exit status and for tests to read."""

    plan: Plan
    run_dir: Path
    steps: list[StepOutcome]
    report: dict | None  # the report step's metrics.json: metrics, gates
    seconds: float
    stages: list["RunResult"] = field(default_factory=list)  # a spec with stages: the earlier stages' runs

    def outcome(self, name: str) -> StepOutcome:
        return next(s for s in self.steps if s.name == name)

    def step_dir(self, name: str) -> Path:
        return self.run_dir / steps.folder(name)

    @property
    def failed_gates(self) -> list[dict]:
        """The gates not met, of this run and of its earlier stages (named ``stage:gate``)."""
        failed = [{**g, "gate": f"{s.plan.stage}:{g.get('gate')}"} for s in self.stages for g in s.failed_gates]
        own = [g for g in (self.report or {}).get("gates", []) if not g.get("passed")]
        if self.plan.stage is not None:
            own = [{**g, "gate": f"{self.plan.stage}:{g.get('gate')}"} for g in own]
        return failed + own

    @property
    def ran(self) -> list[str]:
        return [s.name for s in self.steps if s.state == "ran"]


def run_dir_of(plan: Plan, root: Path) -> Path:
    return (root / plan.output.dir).resolve()


def execute(plan: Plan, root: Path, echo: Callable[[str], None] = print, callbacks: list | None = None,
            force: set[str] = frozenset(), only: set[str] | None = None, lock: dict | None = None) -> RunResult:
    """Run every step of the plan that is not already complete under its key, holding
    the run directory's lock (a second run of the same spec is refused, naming the first).
    A plan with stages runs each stage's plan in order, each in its own run directory; a
    stage whose gates fail stops the run before the stages that would build on it."""
    if plan.stages:
        return _execute_stages(plan, root, echo, callbacks, force, only, lock)
    return _execute_one(plan, root, echo, callbacks, force, only, lock)


def _execute_stages(plan: Plan, root: Path, echo: Callable[[str], None], callbacks: list | None,
                    force: set[str], only: set[str] | None, lock: dict | None) -> RunResult:
    started = time.time()
    done: list[RunResult] = []
    total = len(plan.stages) + 1
    # --force and --only name steps of every stage (`ftspec report` reports each again).
    for i, stage_plan in enumerate(plan.stages, 1):
        echo(f"stage {i}/{total}: {stage_plan.stage}")
        result = _execute_one(stage_plan, root, echo, callbacks, force, only, lock)
        done.append(result)
        if result.failed_gates:
            names = ", ".join(str(g.get("gate")) for g in result.failed_gates)
            echo(f"stage {stage_plan.stage} did not meet its gates ({names}); the stages after it are not run")
            return RunResult(plan, run_dir_of(plan, root), [], None, time.time() - started, done)
    echo(f"stage {total}/{total}: {plan.stage}")
    result = _execute_one(plan, root, echo, callbacks, force, only, lock)
    result.stages, result.seconds = done, time.time() - started
    return result


def _execute_one(plan: Plan, root: Path, echo: Callable[[str], None], callbacks: list | None,
                 force: set[str], only: set[str] | None, lock: dict | None) -> RunResult:
    launch = plan.compute.launch
    if launch is not None and launch.nodes > 1:
        from ftspec.runtime.distributed import launch as workers

        rdzv = workers.rendezvous(launch.nodes)
        if rdzv.node_rank != 0:
            return _other_node(plan, root, echo, callbacks, rdzv)
    with RunLock(run_dir_of(plan, root)):
        return _execute(plan, root, echo, callbacks, force, only, lock)


def _other_node(plan: Plan, root: Path, echo: Callable[[str], None], callbacks: list | None, rdzv) -> RunResult:
    """Every node but the first: prepare the data (once, when the store is shared: the step's
    lock makes one node compute it), start this node's training processes, and leave the
    rest to node 0, which holds the run directory, saves the model, evaluates and reports."""
    from ftspec.runtime.distributed import launch as workers
    from ftspec.runtime.training.builders import apply_threads
    from ftspec.runtime.training.job import TrainJob

    started = time.time()
    run_dir = run_dir_of(plan, root)
    store = store_of(run_dir)
    keys = {s.name: s.key for s in plan.steps}
    quiet_libraries()
    apply_threads(plan.compute)
    echo(f"ftspec run {plan.name}  (plan {plan.short_id}): node {rdzv.node_rank} of {rdzv.nodes}, "
         f"rendezvous {rdzv.addr}:{rdzv.port} ({rdzv.source})")
    prepare = steps.PREPARE_DATA.name
    with _step_lock(store, prepare, keys[prepare], echo):
        if not store.complete(prepare, keys[prepare]):
            echo(f"{prepare}: running (key {keys[prepare][:8]})")
            _compute(plan, steps.step(prepare), store, StepContext(root, run_dir, keys[prepare], echo, [], keys, store, prepare))
    train = steps.TRAIN.name
    ctx = StepContext(root, run_dir, keys[train], echo, list(callbacks or []), keys, store, train)
    checkpoints = ctx.checkpoints()
    checkpoints.mkdir(parents=True, exist_ok=True)
    echo(f"{train}: running (key {keys[train][:8]}) with node 0")
    job = TrainJob(steps.view(plan, steps.TRAIN), root, ctx.data_dir, checkpoints, checkpoints / f"node-{rdzv.node_rank}",
                   checkpoints / "metrics.jsonl", list(callbacks or []), run_name=run_dir.name)
    workers.train(job, echo)
    echo(f"node {rdzv.node_rank}: training finished in {round(time.time() - started)}s; node 0 saves the model, "
         "evaluates and writes the report")
    return RunResult(plan, run_dir, [], None, time.time() - started)


def run_step(plan: Plan, step_def: steps.StepDef, ctx: StepContext, out: Path) -> dict:
    """Run one step on its view of the plan: the fields it declares, nothing else."""
    return step_def.function()(steps.view(plan, step_def), ctx, out)


def _execute(plan: Plan, root: Path, echo: Callable[[str], None], callbacks: list | None,
             force: set[str], only: set[str] | None, lock: dict | None) -> RunResult:
    """Run every step of the plan that is not already complete under its key.

    ``force`` runs the named steps again even when they are complete; ``only`` runs
    just the named steps, and needs every other step complete already. When every
    step is complete nothing heavy is imported: an unchanged spec returns at once.
    """
    run_dir = run_dir_of(plan, root)
    store = store_of(run_dir)
    adopt_legacy(run_dir, store)
    names = [s.name for s in plan.steps]
    keys = {s.name: s.key for s in plan.steps}
    done = {n for n in names if store.complete(n, keys[n])}
    selected = set(names) if only is None else set(only) & set(names)
    missing = [n for n in names if n not in selected and n not in done]
    if missing:
        from ftspec.core.errors import Pos, SpecError

        raise SpecError.one(Pos(str(plan.spec.path)), "", f"step {missing[0]} has not run for this plan "
                            f"(key {keys[missing[0]][:8]}); run `ftspec run {plan.spec.path}` first")
    todo = [n for n in names if n in selected and (n in force or n not in done)]

    started = time.time()
    run_dir.mkdir(parents=True, exist_ok=True)
    threads = None
    if todo and plan.compute.backend == "local":
        from ftspec.runtime.training.builders import apply_threads

        quiet_libraries()
        # Once for the whole run, before any step computes. The train step's key covers
        # them (it reads all of `compute`): on one machine the losses came out the same
        # with 1 and 2 threads, but a library may sum in another order with more.
        threads = apply_threads(plan.compute)
    echo(header(plan, run_dir, root, threads))
    write_json(run_dir / "plan.json", plan.to_dict())
    previous = {e["name"]: e for e in _manifest_steps(read_json(run_dir / "manifest.json", lenient=True))}
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "plan_id": plan.id,
        "name": plan.name,
        "spec": plan.spec.model_dump(mode="json"),
        "spec_files": _spec_files(plan, root),
        "lock": lock,
        "status": "running",
        "pid": os.getpid(),
        "started_at": now(),
        "finished_at": None,
        "versions": _versions(),
        "git": _git(root, _inputs(plan)),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "data": {split: {"path": getattr(src, "path", None) or getattr(src, "hub", None),
                         "sha256": getattr(src, "sha256", None), "revision": getattr(src, "revision", None)}
                 for split, src in plan.data.sources.items()},
        "steps": [],
        "artifacts": {name: steps.folder(name) for name in names},
    }
    _write_manifest(run_dir, manifest)
    outcomes: list[StepOutcome] = []
    try:
        for step in plan.steps:
            step_def = steps.step(step.name)
            name, key = step.name, step.key
            final = store.path(name, key)
            stored = os.path.relpath(final, run_dir)
            ran = False
            if name in todo:
                with _step_lock(store, name, key, echo):
                    if name in force or not store.complete(name, key):  # a run beside this one may have done it
                        echo(f"{name}: running (key {key[:8]})")
                        t0 = time.time()
                        result = _compute(plan, step_def, store, StepContext(
                            root, run_dir, key, echo, list(callbacks or []), keys, store, name))
                        seconds = round(time.time() - t0, 2)
                        ran = True
            elif name in selected:
                echo(f"{name}: up to date (key {key[:8]})")
            link_step(run_dir, step_def.folder, final)
            if ran:
                entry = {"name": name, "key": key, "dir": step_def.folder, "stored": stored, "state": "ran",
                         "seconds": seconds, "finished_at": now()}
                outcomes.append(StepOutcome(name, key, run_dir / step_def.folder, "ran", seconds, result))
            else:
                if name in todo:
                    echo(f"{name}: computed by a run beside this one (key {key[:8]})")
                entry = {"name": name, "key": key, "dir": step_def.folder, "stored": stored, "state": "reused"}
                prior = previous.get(name, {})
                if prior.get("key") == key:  # when it ran, as the earlier manifest says
                    entry.update({k: prior[k] for k in ("seconds", "finished_at") if isinstance(prior.get(k), (int, float, str))})
                outcomes.append(StepOutcome(name, key, run_dir / step_def.folder, "reused"))
            manifest["steps"].append(entry)
            _write_manifest(run_dir, manifest)
        _publish(run_dir)
        if plan.compute.backend == "bedrock":  # the job and the custom model it made, where a reviewer looks first
            from ftspec.backends.bedrock.steps import MODEL

            made = read_json(run_dir / steps.folder(steps.TRAIN.name) / MODEL, lenient=True)
            if isinstance(made, dict):
                manifest["bedrock"] = made
        report = read_json(run_dir / steps.folder(steps.REPORT.name) / "metrics.json")
        report = report if isinstance(report, dict) else None
        if report:
            manifest["metrics"] = {"base": report.get("base"), "tuned": report.get("tuned"),
                                   "gates_passed": report.get("gates_passed")}
        manifest.update(status="finished", finished_at=now(), seconds=round(time.time() - started, 1))
    except BaseException:
        manifest.update(status="failed", finished_at=now())
        _write_manifest(run_dir, manifest)
        raise
    _write_manifest(run_dir, manifest)
    result = RunResult(plan, run_dir, outcomes, report, time.time() - started)
    from ftspec.runtime.report.console import summary

    echo(summary(result, root))
    return result


def _compute(plan: Plan, step_def: steps.StepDef, store: Store, ctx: StepContext) -> dict:
    """Run one step into its ``.partial`` folder in the store and make it final."""
    partial = store.partial(step_def.name, ctx.key)
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    result = run_step(plan, step_def, ctx, partial)
    finish_step(partial, store.path(step_def.name, ctx.key), step_def.name, ctx.key)
    # Kept only so that an unfinished step resumes.
    shutil.rmtree(ctx.checkpoints(), ignore_errors=True)
    return result


class _step_lock:
    """The store's lock on one step key, so that two runs beside each other (two variants
    sharing a step) compute it once: the second waits, then finds it complete."""

    def __init__(self, store: Store, name: str, key: str, echo: Callable[[str], None]):
        self.lock = store.step_lock(name, key)
        self.name, self.key, self.echo = name, key, echo

    def __enter__(self):
        import filelock

        try:
            self.lock.acquire(timeout=0)
        except filelock.Timeout:
            self.echo(f"{self.name}: waiting for another run computing it (key {self.key[:8]})")
            self.lock.acquire()
        return self

    def __exit__(self, *exc):
        self.lock.release()


def _write_manifest(run_dir: Path, manifest: dict) -> None:
    """manifest.json, checked against its published schema (schema/manifest.schema.json)."""
    write_json(run_dir / "manifest.json", Manifest.model_validate(manifest).model_dump(mode="json"))


def _manifest_steps(manifest) -> list[dict]:
    """The step entries of an earlier manifest; nothing from one that was edited into another shape."""
    entries = manifest.get("steps") if isinstance(manifest, dict) else None
    return [e for e in entries if isinstance(e, dict) and isinstance(e.get("name"), str)] if isinstance(entries, list) else []


def _spec_files(plan: Plan, root: Path) -> dict[str, str | None]:
    """sha256 of the spec and of each base it extends, as they were when the run started."""
    import hashlib

    out = {}
    for rel_path in [*plan.spec.bases, plan.spec.path]:
        path = root / rel_path
        out[rel_path] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
    return out


def _publish(run_dir: Path) -> None:
    """Copy the files people look for first to the top of the run directory."""
    for step_def, files in ((steps.TRAIN, ("metrics.jsonl",)), (steps.REPORT, REPORT_FILES)):
        for name in files:
            src = run_dir / step_def.folder / name
            if src.exists():
                copy_atomic(src, run_dir / name)
