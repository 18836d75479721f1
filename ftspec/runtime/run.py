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

import json
import os
import platform
import shutil
import subprocess
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ftspec.plan import Plan
from ftspec.rundir import STEP_DIRS, RunLock, finish_step, is_complete, now, read_json, write_json
from ftspec.summary import describe_adapter, describe_model

LIBRARIES = ("torch", "transformers", "peft", "trl", "datasets", "accelerate", "tokenizers")


@dataclass
class RunContext:
    plan: Plan
    root: Path
    run_dir: Path
    echo: Callable[[str], None] = print
    callbacks: list = field(default_factory=list)  # extra trainer callbacks, for tests
    results: dict = field(default_factory=dict)  # what each step reports, for the summary

    def step_dir(self, name: str) -> Path:
        return self.run_dir / STEP_DIRS[name]

    @property
    def data_dir(self) -> Path:
        return self.step_dir("prepare_data")

    def checkpoints(self) -> Path:
        return self.run_dir / "checkpoints" / self.plan.step("train")["key"][:16]


# --------------------------------------------------------------------------- the steps


def step_prepare_data(ctx: RunContext, out: Path) -> dict:
    from ftspec.runtime import data as D
    from ftspec.runtime.models import build_tiny, load_tokenizer

    plan = ctx.plan
    kind = plan["format"]["kind"]
    started = time.perf_counter()
    splits, skipped = D.build_splits(plan.to_dict(), ctx.root)
    for split, records in splits.items():
        D.write_jsonl(out / f"{split}.jsonl", records)
    building = time.perf_counter()
    if plan["model"]["kind"] == "tiny":
        build_tiny(plan["model"], D.training_texts(splits["train"], kind), out / "base-model")
    started += time.perf_counter() - building  # rows/s measures the data, not the tiny model's build
    fmt = plan["format"]
    chat_template = fmt["chat_template"]["text"] if kind == "chat" and fmt["chat_template"] != "model" else None
    tokenizer = load_tokenizer(plan["model"], ctx.root, out, chat_template)
    loss = fmt.get("loss", "completion") if kind != "preference" else "completion"
    stats = {}
    for split, records in splits.items():
        input_ids, labels = D.tokenize(records, kind, tokenizer, loss, split)
        stats[split] = D.token_stats(input_ids, labels, plan["training"]["max_length"])
        if kind != "preference" and split != "test":  # what SFT trains and validates on, tokenized once
            D.save_tokens(out / f"{split}-tokens", input_ids, labels)
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


def _eval_step(ctx: RunContext, out: Path, tuned: bool) -> dict:
    from ftspec.runtime import builders
    from ftspec.runtime.data import write_jsonl
    from ftspec.runtime.evaluate import evaluate
    from ftspec.runtime.models import load_model, load_tokenizer, load_tuned

    plan = ctx.plan
    device = builders.resolve_device(plan["compute"])
    precision = builders.resolve_precision(plan["compute"], device)
    dtype = builders.model_dtype(plan["model"], precision)
    fmt = plan["format"]
    chat_template = fmt["chat_template"]["text"] if fmt["kind"] == "chat" and fmt["chat_template"] != "model" else None
    if tuned:
        from transformers import AutoTokenizer

        model_dir = ctx.step_dir("train")
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        model = load_tuned(plan.to_dict(), ctx.root, ctx.data_dir, model_dir, dtype, device)
    else:
        tokenizer = load_tokenizer(plan["model"], ctx.root, ctx.data_dir, chat_template)
        model = load_model(plan["model"], ctx.root, ctx.data_dir, dtype, device, attention=plan["compute"]["attention"])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token

    def load_judge(metric):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        judge = metric["model"]
        path = str(ctx.root / judge["name_or_path"]) if judge["source"] == "local" else judge["name_or_path"]
        judge_tokenizer = AutoTokenizer.from_pretrained(path)
        if judge_tokenizer.pad_token is None:
            judge_tokenizer.pad_token = judge_tokenizer.eos_token
        return AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device), judge_tokenizer

    summary, rows = evaluate(model, tokenizer, plan.to_dict(), ctx.data_dir, baseline=not tuned, load_judge=load_judge)
    write_json(out / "metrics.json", summary)
    write_jsonl(out / "predictions.jsonl", rows)
    shown = ", ".join(f"{k} {v:.3f}" for k, v in summary["metrics"].items() if isinstance(v, (int, float)))
    shots = f", {summary['few_shot']}-shot" if summary["few_shot"] else ""
    ctx.echo(f"  {'tuned' if tuned else 'base'} model on {summary['rows']} {summary['split']} rows{shots}: {shown}")
    return summary


def step_eval_base(ctx: RunContext, out: Path) -> dict:
    return _eval_step(ctx, out, tuned=False)


def step_eval_tuned(ctx: RunContext, out: Path) -> dict:
    return _eval_step(ctx, out, tuned=True)


def step_train(ctx: RunContext, out: Path) -> dict:
    from ftspec.runtime.job import TrainJob

    checkpoints = ctx.checkpoints()
    checkpoints.mkdir(parents=True, exist_ok=True)
    job = TrainJob(ctx.plan, ctx.root, ctx.data_dir, checkpoints, out, checkpoints / "metrics.jsonl", list(ctx.callbacks))
    if ctx.plan["method"]["objective"] == "dpo":
        from ftspec.runtime.dpo import train_dpo as recipe
    else:
        from ftspec.runtime.sft import train_sft as recipe
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


def step_report(ctx: RunContext, out: Path) -> dict:
    from ftspec.runtime.report import build_report

    return build_report(ctx.run_dir, ctx.plan.to_dict(), out)


STEPS: dict[str, Callable[[RunContext, Path], dict]] = {
    "prepare_data": step_prepare_data,
    "eval_base": step_eval_base,
    "train": step_train,
    "eval_tuned": step_eval_tuned,
    "report": step_report,
}

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
    rows = plan["data"]["rows"]
    t = plan["training"]
    if with_device:
        from ftspec.runtime import builders

        device = builders.resolve_device(plan["compute"])
        where = f"{device} ({builders.resolve_precision(plan['compute'], device)})"
    else:
        where = "not needed (nothing to run)"
    return "\n".join([
        f"ftspec run {plan['name']}  (plan {plan.short_id})",
        f"  model    {describe_model(plan['model'])}",
        f"  method   {plan['method']['objective']} + {describe_adapter(plan['method']['adapter'])}",
        f"  data     train {rows['train']} · validation {rows['validation']} · test {rows['test']} rows; "
        f"{t['total_steps']} steps of {t['effective_batch_size']} rows",
        f"  device   {where}; run directory {_shown(run_dir, root)}",
    ])


def _shown(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def execute(plan: Plan, root: Path, echo: Callable[[str], None] = print, callbacks: list | None = None,
            force: set[str] = frozenset(), only: set[str] | None = None, lock: dict | None = None) -> RunContext:
    """Run every step of the plan that is not already complete under its key, holding
    the run directory's lock (a second run of the same spec is refused, naming the first)."""
    with RunLock((root / plan["output"]["dir"]).resolve()):
        return _execute(plan, root, echo, callbacks, force, only, lock)


def _execute(plan: Plan, root: Path, echo: Callable[[str], None], callbacks: list | None,
             force: set[str], only: set[str] | None, lock: dict | None) -> RunContext:
    """Run every step of the plan that is not already complete under its key.

    ``force`` runs the named steps again even when they are complete; ``only`` runs
    just the named steps, and needs every other step complete already. When every
    step is complete nothing heavy is imported: an unchanged spec returns at once.
    """
    run_dir = (root / plan["output"]["dir"]).resolve()
    ctx = RunContext(plan, root, run_dir, echo, list(callbacks or []))
    names = [s["name"] for s in plan["steps"]]
    done = {s["name"] for s in plan["steps"] if is_complete(ctx.step_dir(s["name"]), s["key"])}
    selected = set(names) if only is None else set(only) & set(names)
    missing = [n for n in names if n not in selected and n not in done]
    if missing:
        from ftspec.errors import Pos, SpecError

        key = plan.step(missing[0])["key"]
        raise SpecError.one(Pos(str(plan["spec"]["path"])), "", f"step {missing[0]} has not run for this plan "
                            f"(key {key[:8]}); run `ftspec run {plan['spec']['path']}` first")
    todo = [n for n in names if n in selected and (n in force or n not in done)]

    started = time.time()
    run_dir.mkdir(parents=True, exist_ok=True)
    if todo:
        quiet_libraries()
    echo(header(plan, run_dir, root, with_device=bool(todo)))
    write_json(run_dir / "plan.json", plan.to_dict())
    previous = {e["name"]: e for e in (read_json(run_dir / "manifest.json") or {}).get("steps", [])}
    manifest = {
        "plan_id": plan.id,
        "name": plan["name"],
        "spec": plan.to_dict()["spec"],
        "spec_files": _spec_files(plan, root),
        "lock": lock,
        "status": "running",
        "pid": os.getpid(),
        "started_at": now(),
        "finished_at": None,
        "versions": _versions(),
        "git": _git(root),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "data": {split: {"path": src.get("path") or src.get("hub"), "sha256": src.get("sha256"), "revision": src.get("revision")}
                 for split, src in plan["data"]["sources"].items()},
        "steps": [],
        "artifacts": {name: STEP_DIRS[name] for name in names},
    }
    write_json(run_dir / "manifest.json", manifest)
    try:
        for step in plan["steps"]:
            name, key = step["name"], step["key"]
            final = ctx.step_dir(name)
            if name not in todo:
                if name in selected:
                    echo(f"{name}: up to date (key {key[:8]})")
                prior = previous.get(name, {})
                entry = dict(prior) if prior.get("key") == key else {"name": name, "key": key, "dir": STEP_DIRS[name]}
                entry["state"] = "reused"
            else:
                echo(f"{name}: running (key {key[:8]})")
                partial = final.with_name(final.name + ".partial")
                shutil.rmtree(partial, ignore_errors=True)
                partial.mkdir(parents=True)
                t0 = time.time()
                ctx.results[name] = STEPS[name](ctx, partial)
                finish_step(partial, final, name, key)
                if name == "train":  # kept only so that an unfinished step resumes
                    shutil.rmtree(ctx.checkpoints(), ignore_errors=True)
                entry = {"name": name, "key": key, "dir": STEP_DIRS[name], "state": "ran",
                         "seconds": round(time.time() - t0, 2), "finished_at": now()}
            manifest["steps"].append(entry)
            write_json(run_dir / "manifest.json", manifest)
        _publish(ctx)
        report = read_json(run_dir / "metrics.json")
        if report:
            manifest["metrics"] = {"base": report.get("base"), "tuned": report.get("tuned"),
                                   "gates_passed": report.get("gates_passed")}
        manifest.update(status="finished", finished_at=now(), seconds=round(time.time() - started, 1))
    except BaseException:
        manifest.update(status="failed", finished_at=now())
        write_json(run_dir / "manifest.json", manifest)
        raise
    write_json(run_dir / "manifest.json", manifest)
    echo(summary(ctx, time.time() - started))
    return ctx


def _spec_files(plan: Plan, root: Path) -> dict[str, str | None]:
    """sha256 of the spec and of each base it extends, as they were when the run started."""
    import hashlib

    out = {}
    for rel_path in [*plan["spec"]["bases"], plan["spec"]["path"]]:
        path = root / rel_path
        out[rel_path] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
    return out


def _publish(ctx: RunContext) -> None:
    """Copy the files people look for first to the top of the run directory."""
    for step, files in (("train", ("metrics.jsonl",)), ("report", REPORT_FILES)):
        for name in files:
            src = ctx.step_dir(step) / name
            if src.exists():
                tmp = ctx.run_dir / f".{name}.tmp"
                shutil.copyfile(src, tmp)
                os.replace(tmp, ctx.run_dir / name)


def summary(ctx: RunContext, seconds: float) -> str:
    report = json.loads((ctx.step_dir("report") / "metrics.json").read_text(encoding="utf-8"))
    minutes, secs = divmod(int(round(seconds)), 60)
    lines = [f"done in {minutes}m{secs:02d}s: {_shown(ctx.run_dir, ctx.root)}"]
    what = "full model" if ctx.plan["method"]["adapter"]["kind"] == "full" else f"{ctx.plan['method']['adapter']['kind']} adapter"
    lines.append(f"  model     {_shown(ctx.step_dir('train'), ctx.root)}  ({what}, safetensors)")
    train_file = ctx.step_dir("train") / "train.json"
    train = json.loads(train_file.read_text(encoding="utf-8")) if train_file.exists() else {}
    if train:
        losses = [f"train {train['train_loss']:.4f}" if train.get("train_loss") is not None else None,
                  f"validation {train['eval_loss']:.4f}" if train.get("eval_loss") is not None else None]
        lines.append(f"  losses    {' · '.join(l for l in losses if l)} (after {train['steps']} steps)")
    lines.extend(metric_lines(report))
    if report.get("overfitting"):
        lines.append(f"  warning   {report['overfitting']}")
    lines.append(f"  report    {_shown(ctx.run_dir / 'report.html', ctx.root)}")
    return "\n".join(lines)


def metric_lines(report: dict) -> list[str]:
    """The base → tuned table and the gates, as the run's last lines."""
    base, tuned = report.get("base") or {}, report.get("tuned") or {}
    lines = []
    if tuned:
        lines.append(f"  held-out  {report.get('split')} split, {report.get('rows')} rows")
        for name, value in tuned.items():
            if not isinstance(value, (int, float)):
                continue
            b = base.get(name)
            if isinstance(b, (int, float)):
                lines.append(f"    {name:<14} base {b:.3f} → tuned {value:.3f} ({value - b:+.3f})")
            else:
                lines.append(f"    {name:<14} tuned {value:.3f}")
    for gate in report.get("gates", []):
        mark = "passed" if gate["passed"] else "FAILED"
        value = f"{gate['value']:.3f}" if isinstance(gate.get("value"), (int, float)) else "n/a"
        extra = f" ({gate['reason']})" if gate.get("reason") else (f", margin {gate['margin']:+.3f}" if isinstance(gate.get("margin"), (int, float)) else "")
        lines.append(f"  gate      {gate['gate']} {gate['op']} {gate['threshold']:g}: {value} {mark}{extra}")
    return lines
