"""Execute a plan: its steps in order, each writing into its own folder of the run
directory, made final only when the step has finished.

    runs/<name>/
      plan.json  manifest.json  metrics.jsonl  metrics.json  predictions.jsonl  report.md  report.html
      data/        prepare_data: the splits in TRL's columns, train-/validation-tokens/ (tokenized, for SFT),
                   stats.json (+ base-model/ for tiny models)
      eval-base/   eval_base: metrics.json, predictions.jsonl
      model/       train: the model or adapter (safetensors) with its tokenizer, train.json
      eval-tuned/  eval_tuned: metrics.json, predictions.jsonl
      report/      report: metrics.json, predictions.jsonl, report.md, report.html (copied to the top)
      checkpoints/<train key>/   the trainer's checkpoints, kept until the train step is complete,
                                 so that a crashed run resumes

A step writes into ``<folder>.partial`` and its completion marker is the last
file written there; only then does the folder take its final name. A step whose
folder holds a marker with the step's current key is reused, not run again.
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

from ftspec import steps
from ftspec.artifacts import MANIFEST_VERSION, Manifest
from ftspec.plan import Plan, chat_template_text
from ftspec.io import copy_atomic, read_json, write_json, write_jsonl
from ftspec.rundir import RunLock, finish_step, is_complete, now
from ftspec.summary import describe_adapter, describe_model

LIBRARIES = ("torch", "transformers", "peft", "trl", "datasets", "accelerate", "tokenizers")


@dataclass
class StepContext:
    """What a step is given besides its view of the plan: where things are, and how to talk."""

    root: Path  # the spec's repository root: plan paths are relative to it
    run_dir: Path
    key: str  # this step's key
    echo: Callable[[str], None] = print
    callbacks: list = field(default_factory=list)  # extra trainer callbacks, for tests

    def step_dir(self, name: str) -> Path:
        return self.run_dir / steps.folder(name)

    @property
    def data_dir(self) -> Path:
        return self.step_dir(steps.PREPARE_DATA.name)

    def checkpoints(self) -> Path:
        return checkpoints_dir(self.run_dir, self.key)


def checkpoints_dir(run_dir: Path, train_key: str) -> Path:
    """The trainer's checkpoints for one train key, kept across crashes until the step is complete."""
    return run_dir / "checkpoints" / train_key[:16]


# --------------------------------------------------------------------------- the steps
# Each step function is given a view of the plan fields its declaration in
# ftspec/steps.py names, and nothing else.


def step_prepare_data(plan, ctx: StepContext, out: Path) -> dict:
    from ftspec.runtime import data as D
    from ftspec.runtime.models import build_tiny, load_tokenizer

    kind = plan.format.kind
    started = time.perf_counter()
    splits, skipped = D.build_splits(plan.data, plan.format, ctx.root)
    write_json(out / "origins.json", skipped.pop("origins"))
    for split, records in splits.items():
        D.write_jsonl(out / f"{split}.jsonl", records)
    building = time.perf_counter()
    if plan.model.kind == "tiny":
        build_tiny(plan.model, D.training_texts(splits["train"], kind), out / "base-model")
    started += time.perf_counter() - building  # rows/s measures the data, not the tiny model's build
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
        from ftspec.errors import Pos, SpecError

        t = stats["train"]["tokens"]
        raise SpecError.one(Pos("training.max_length"), "training.max_length",
                            f"no training row keeps a token of its answer within {plan.training.max_length} tokens "
                            f"(rows are {t['p50']} tokens at the median, {t['max']} at most)",
                            "raise training.max_length, or shorten the prompts")
    seconds = time.perf_counter() - started
    total = sum(v["rows"] for v in stats.values())
    speed = {"seconds": round(seconds, 2), "rows_per_second": round(total / seconds, 1) if seconds > 0 else None}
    write_json(out / "stats.json", {"splits": stats, **skipped, "preparation": speed})
    rows = " · ".join(f"{s} {v['rows']}" for s, v in stats.items())
    t = stats["train"]
    ctx.echo(f"  rows {rows}; train tokens p50 {t['tokens']['p50']} / p99 {t['tokens']['p99']}, "
             f"truncated {t['truncation_rate']:.1%}, loss on {t['loss_token_fraction']:.1%} of tokens"
             + (f"; skipped {skipped['skipped_rows']} bad rows" if skipped["skipped_rows"] else "")
             + (f"; {speed['rows_per_second']:.0f} rows/s" if speed["rows_per_second"] else ""))
    return {"stats": stats}


def _eval_step(plan, ctx: StepContext, out: Path, tuned: bool) -> dict:
    from ftspec.runtime import builders
    from ftspec.runtime.evaluate import evaluate
    from ftspec.runtime.models import hub_id, load_model, load_tokenizer, load_tuned

    device = builders.resolve_device(plan.compute)
    precision = builders.resolve_precision(plan.compute, device)
    dtype = builders.model_dtype(plan.model, precision)
    if tuned:
        from transformers import AutoTokenizer

        model_dir = ctx.step_dir(steps.TRAIN.name)
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        model = load_tuned(plan.model, plan.method.adapter.kind, plan.compute.attention, ctx.root, ctx.data_dir,
                           model_dir, dtype, device)
    else:
        tokenizer = load_tokenizer(plan.model, ctx.root, ctx.data_dir, chat_template_text(plan.format))
        model = load_model(plan.model, ctx.root, ctx.data_dir, dtype, device, attention=plan.compute.attention)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token

    def load_judge(metric):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        judge = metric.model
        path = str(ctx.root / judge.name_or_path) if judge.source == "local" else hub_id(judge.name_or_path, "eval.metrics")
        judge_tokenizer = AutoTokenizer.from_pretrained(path)
        if judge_tokenizer.pad_token is None:
            judge_tokenizer.pad_token = judge_tokenizer.eos_token
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device), judge_tokenizer

    summary, rows = evaluate(model, tokenizer, plan.eval, plan.format.kind, plan.training.max_length, ctx.data_dir,
                             baseline=not tuned, load_judge=load_judge)
    write_json(out / "metrics.json", summary)
    write_jsonl(out / "predictions.jsonl", rows)
    shown = ", ".join(f"{k} {v:.3f}" for k, v in summary["metrics"].items() if isinstance(v, (int, float)))
    shots = f", {summary['few_shot']}-shot" if summary["few_shot"] else ""
    ctx.echo(f"  {'tuned' if tuned else 'base'} model on {summary['rows']} {summary['split']} rows{shots}: {shown}")
    return summary


def step_eval_base(plan, ctx: StepContext, out: Path) -> dict:
    return _eval_step(plan, ctx, out, tuned=False)


def step_eval_tuned(plan, ctx: StepContext, out: Path) -> dict:
    return _eval_step(plan, ctx, out, tuned=True)


def step_train(plan, ctx: StepContext, out: Path) -> dict:
    from ftspec.runtime.job import TrainJob

    checkpoints = ctx.checkpoints()
    checkpoints.mkdir(parents=True, exist_ok=True)
    job = TrainJob(plan, ctx.root, ctx.data_dir, checkpoints, out, checkpoints / "metrics.jsonl", list(ctx.callbacks))
    if plan.method.objective == "dpo":
        from ftspec.runtime.dpo import train_dpo as recipe
    else:
        from ftspec.runtime.sft import train_sft as recipe
    from ftspec.runtime.tracking import tracking_environment

    with tracking_environment(plan.tracking, ctx.run_dir):  # the W&B project, MLflow experiment…, while training only
        result = recipe(job)
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
    from ftspec.runtime.report import build_report

    return build_report(ctx.run_dir, plan, out)


# --------------------------------------------------------------------------- the run


def _versions() -> dict:
    from ftspec.lock import versions

    return {"python": platform.python_version(), **versions(LIBRARIES)}


def _git(root: Path) -> dict | None:
    if not (root / ".git").exists():
        return None
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if commit.returncode != 0:
        return None
    return {"commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip())}


def quiet_libraries() -> None:
    """Keep the libraries' messages to what matters: errors, not deprecation notices."""
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*mtime may not be reliable.*")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        from datasets.utils import logging as ds_logging

        ds_logging.set_verbosity_error()
        ds_logging.disable_progress_bar()
    except ImportError:
        pass


def header(plan: Plan, run_dir: Path, root: Path, with_device: bool = True) -> str:
    rows = plan.data.rows
    t = plan.training
    if with_device:
        from ftspec.runtime import builders

        device = builders.resolve_device(plan.compute)
        where = f"{device} ({builders.resolve_precision(plan.compute, device)})"
    else:
        where = "not needed (nothing to run)"
    return "\n".join([
        f"ftspec run {plan.name}  (plan {plan.short_id})",
        f"  model    {describe_model(plan.model)}",
        f"  method   {plan.method.objective} + {describe_adapter(plan.method.adapter)}",
        f"  data     train {rows.train} · validation {rows.validation} · test {rows.test} rows; "
        f"{t.total_steps} steps of {t.effective_batch_size} rows",
        f"  device   {where}; run directory {_shown(run_dir, root)}",
    ])


def _shown(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


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

    def outcome(self, name: str) -> StepOutcome:
        return next(s for s in self.steps if s.name == name)

    def step_dir(self, name: str) -> Path:
        return self.run_dir / steps.folder(name)

    @property
    def failed_gates(self) -> list[dict]:
        return [g for g in (self.report or {}).get("gates", []) if not g.get("passed")]

    @property
    def ran(self) -> list[str]:
        return [s.name for s in self.steps if s.state == "ran"]


def run_dir_of(plan: Plan, root: Path) -> Path:
    return (root / plan.output.dir).resolve()


def execute(plan: Plan, root: Path, echo: Callable[[str], None] = print, callbacks: list | None = None,
            force: set[str] = frozenset(), only: set[str] | None = None, lock: dict | None = None) -> RunResult:
    """Run every step of the plan that is not already complete under its key, holding
    the run directory's lock (a second run of the same spec is refused, naming the first)."""
    with RunLock(run_dir_of(plan, root)):
        return _execute(plan, root, echo, callbacks, force, only, lock)


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
    names = [s.name for s in plan.steps]
    done = {s.name for s in plan.steps if is_complete(run_dir / steps.folder(s.name), s.key)}
    selected = set(names) if only is None else set(only) & set(names)
    missing = [n for n in names if n not in selected and n not in done]
    if missing:
        from ftspec.errors import Pos, SpecError

        key = plan.step(missing[0]).key
        raise SpecError.one(Pos(str(plan.spec.path)), "", f"step {missing[0]} has not run for this plan "
                            f"(key {key[:8]}); run `ftspec run {plan.spec.path}` first")
    todo = [n for n in names if n in selected and (n in force or n not in done)]

    started = time.time()
    run_dir.mkdir(parents=True, exist_ok=True)
    if todo:
        quiet_libraries()
    echo(header(plan, run_dir, root, with_device=bool(todo)))
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
        "git": _git(root),
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
            final = run_dir / step_def.folder
            if name not in todo:
                if name in selected:
                    echo(f"{name}: up to date (key {key[:8]})")
                prior = previous.get(name, {})
                entry = {"name": name, "key": key, "dir": step_def.folder, "state": "reused"}
                if prior.get("key") == key:  # when it ran, as the earlier manifest says
                    entry.update({k: prior[k] for k in ("seconds", "finished_at") if isinstance(prior.get(k), (int, float, str))})
                outcomes.append(StepOutcome(name, key, final, "reused"))
            else:
                echo(f"{name}: running (key {key[:8]})")
                partial = final.with_name(final.name + ".partial")
                shutil.rmtree(partial, ignore_errors=True)
                partial.mkdir(parents=True)
                t0 = time.time()
                ctx = StepContext(root, run_dir, key, echo, list(callbacks or []))
                result = run_step(plan, step_def, ctx, partial)
                finish_step(partial, final, name, key)
                if step_def is steps.TRAIN:  # kept only so that an unfinished step resumes
                    shutil.rmtree(ctx.checkpoints(), ignore_errors=True)
                seconds = round(time.time() - t0, 2)
                entry = {"name": name, "key": key, "dir": step_def.folder, "state": "ran",
                         "seconds": seconds, "finished_at": now()}
                outcomes.append(StepOutcome(name, key, final, "ran", seconds, result))
            manifest["steps"].append(entry)
            _write_manifest(run_dir, manifest)
        _publish(run_dir)
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
    from ftspec.runtime.closing import summary

    echo(summary(result, root))
    return result


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
