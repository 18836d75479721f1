"""The lines a run ends with: where things are, the losses, a GRPO run's rewards, base → tuned (with the
most-frequent-answer baseline and confidence intervals), the verdict, the gates, the warnings."""

from __future__ import annotations

import os
from pathlib import Path

from ftspec.catalog import steps
from ftspec.core.io import read_json, read_jsonl
from ftspec.runtime.report.document import extraction_lines
from ftspec.runtime.report.results import dig, num, series, step_text
from ftspec.runtime.report.sources import console_lines as source_lines
from ftspec.runtime.report.verdict import interval_text, metric_label
from ftspec.runtime.result import RunResult


def shown_path(path: Path, root: Path) -> str:
    """A path relative to the working directory when it is below it; links are not
    followed (the run directory's ``model`` is shown, not where the store keeps it)."""
    shown = os.path.relpath(os.path.abspath(path), os.path.abspath(os.getcwd()))
    return str(path) if shown.startswith("..") else shown


def summary(result: RunResult, root: Path) -> str:
    report = result.report or {}
    minutes, secs = divmod(int(round(result.seconds)), 60)
    lines = [f"done in {minutes}m{secs:02d}s: {shown_path(result.run_dir, root)}"]
    adapter = result.plan.method.adapter.kind
    what = "full model" if adapter == "full" else f"{adapter} adapter"
    model_dir = result.step_dir(steps.TRAIN.name)
    lines.append(f"  model     {shown_path(model_dir, root)}  ({what}, safetensors)")
    losses = loss_line(read_json(model_dir / "train.json", lenient=True), _training_log(result.run_dir, model_dir))
    if losses:
        lines.append(losses)
    lines.extend(reward_lines(report))
    lines.extend(metric_lines(report))
    lines.extend(source_lines(report))  # a mixture: the headline metric per source, and where tuned did worse
    if not result.plan.eval.gates:
        lines.append(no_gates_line(result.plan.spec.profiles))
    if report.get("overfitting"):
        lines.append(f"  warning   {report['overfitting']}")
    if isinstance(report.get("reward_hacking"), str):
        lines.append(f"  warning   {report['reward_hacking']}")
    lines.append(f"  report    {shown_path(result.run_dir / 'report.html', root)}")
    return "\n".join(lines)


def _training_log(run_dir: Path, model_dir: Path) -> list[dict]:
    path = model_dir / "metrics.jsonl"
    return read_jsonl(path if path.exists() else run_dir / "metrics.jsonl", lenient=True)


def loss_line(train: object, log: list[dict]) -> str | None:
    """The final training loss is the last one logged (not the trainer's average over
    the run), and the final validation loss."""
    train = train if isinstance(train, dict) else {}
    logged = series(log, "loss")
    parts = []
    if logged:
        step, value = logged[-1]
        parts.append(f"train {value:.4f} (last logged, step {step_text(step)})")
    if num(train.get("eval_loss")) is not None:
        parts.append(f"validation {train['eval_loss']:.4f}")
    if not parts:
        return None
    steps_done = f" (after {train['steps']} steps)" if train.get("steps") is not None else ""
    return f"  losses    {' · '.join(parts)}{steps_done}"


def reward_lines(report: dict) -> list[str]:
    """A GRPO run: each training reward's first → last quarter mean (nothing for any other run)."""
    rewards = report.get("training_rewards")
    if not isinstance(rewards, dict):
        return []
    parts = []
    for name, r in rewards.items():
        early, late = num(dig(r, "trend", "early")), num(dig(r, "trend", "late"))
        if early is not None and late is not None:
            parts.append(f"{name} {early:.3f} → {late:.3f}")
    return [f"  rewards   {' · '.join(parts)} (training, mean of the first → last quarter of logged steps)"] if parts \
        else []


def no_gates_line(profiles: tuple[str, ...] | list[str]) -> str:
    """The run has no gates: say so, and why when a profile was applied (a profile can clear them)."""
    if profiles:
        which = "profile" if len(profiles) == 1 else "profiles"
        return f"  gates     none (switched off by {which} {', '.join(profiles)})"
    return "  gates     none set"


def metric_lines(report: dict) -> list[str]:
    """The majority / base → tuned table with 95% intervals, the verdict, extraction
    misses and the gates, as the run's last lines."""
    base, tuned = report.get("base") or {}, report.get("tuned") or {}
    majority = report.get("majority") or {}
    intervals = report.get("intervals") or {}
    lines = []
    if tuned:
        method = f" · 95% intervals: {intervals['method']}" if intervals.get("method") else ""
        lines.append(f"  held-out  {report.get('split')} split, {report.get('rows')} rows{method}")
        shown = {name: metric_label(name, report) for name, v in tuned.items() if isinstance(v, (int, float))}
        width = max([14] + [len(label) for label in shown.values()])
        for name, label in shown.items():
            value = tuned[name]
            parts = []
            m = majority.get(name)
            if isinstance(m, (int, float)):
                parts.append(f"majority {m:.3f} · ")
            b = base.get(name)
            ci = interval_text(dig(intervals, "tuned_minus_base", name), signed=True)
            if isinstance(b, (int, float)):
                parts.append(f"base {b:.3f} → tuned {value:.3f} ({value - b:+.3f}" + (f", 95% CI {ci})" if ci else ")"))
            else:
                own = interval_text(dig(intervals, "tuned", name))
                parts.append(f"tuned {value:.3f}" + (f" (95% CI {own})" if own else ""))
            lines.append(f"    {label:<{width}} {''.join(parts)}")
    if report.get("verdict") and (tuned or base):
        lines.append(f"  verdict   {report['verdict']}")
    lines.extend(f"  {line}" for line in extraction_lines(report, nonzero_only=True) if report.get("details"))
    for gate in report.get("gates", []):
        mark = "passed" if gate["passed"] else "FAILED"
        value = f"{gate['value']:.3f}" if isinstance(gate.get("value"), (int, float)) else "n/a"
        extra = f" ({gate['reason']})" if gate.get("reason") else (
            f", margin {gate['margin']:+.3f}" if isinstance(gate.get("margin"), (int, float)) else "")
        lines.append(f"  gate      {gate['gate']} {gate['op']} {gate['threshold']:g}: {value} {mark}{extra}")
    return lines
