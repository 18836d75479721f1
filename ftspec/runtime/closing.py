"""The lines a run ends with: where things are, the losses, base → tuned, the gates."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ftspec import steps
from ftspec.io import read_json

if TYPE_CHECKING:
    from ftspec.runtime.run import RunResult


def _shown(path: Path, root: Path) -> str:
    from ftspec.runtime.run import _shown as shown

    return shown(path, root)


def summary(result: RunResult, root: Path) -> str:
    report = result.report or {}
    minutes, secs = divmod(int(round(result.seconds)), 60)
    lines = [f"done in {minutes}m{secs:02d}s: {_shown(result.run_dir, root)}"]
    adapter = result.plan.method.adapter.kind
    what = "full model" if adapter == "full" else f"{adapter} adapter"
    model_dir = result.step_dir(steps.TRAIN.name)
    lines.append(f"  model     {_shown(model_dir, root)}  ({what}, safetensors)")
    train = read_json(model_dir / "train.json", lenient=True)
    if isinstance(train, dict) and train:
        losses = [f"train {train['train_loss']:.4f}" if isinstance(train.get("train_loss"), (int, float)) else None,
                  f"validation {train['eval_loss']:.4f}" if isinstance(train.get("eval_loss"), (int, float)) else None]
        lines.append(f"  losses    {' · '.join(l for l in losses if l)} (after {train.get('steps')} steps)")
    lines.extend(metric_lines(report))
    if report.get("overfitting"):
        lines.append(f"  warning   {report['overfitting']}")
    lines.append(f"  report    {_shown(result.run_dir / 'report.html', root)}")
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
