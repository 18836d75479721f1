"""The run's report: does the tuned model beat the base model?

``build_report(run_dir, plan, out_dir)`` reads what the other steps left in the run
directory (any of it may be missing) and writes into ``out_dir``:

- ``metrics.json``       base, tuned, the most-frequent-answer baseline and delta per metric, their
                         confidence intervals, the verdict, the gates, the overfitting signal, and for
                         a training mixture every metric per source (``by_source``,
                         :mod:`~ftspec.runtime.report.sources`);
- ``predictions.jsonl``  each held-out example with the base and the tuned answer side by side;
- ``report.md``          the same in Markdown (it links no file: it is also copied to the top of the
                         run directory; the charts, also written as PNG files, are in the HTML);
- ``report.html``        one self-contained page (charts inlined as base64 PNG, no scripts).

A GRPO plan also gets a "Rewards" section: each training reward per step (a chart), its first
and last values, the last sampled completions and the reward hacking check
(:mod:`~ftspec.runtime.report.rewards`).

A plan with stages (or a distillation plan) also gets a "Stages" section: every model of
every stage side by side, from ``stages/comparison.json`` (:mod:`~ftspec.runtime.report.compare`).

It is the one entry point, used by the run's report step and so by ``ftspec report``.
The work is split in three: :mod:`~ftspec.runtime.report.results` computes (metrics,
comparisons, gates), :mod:`~ftspec.runtime.report.document` lays the report out as blocks,
one function per section, and :mod:`~ftspec.runtime.report.render` (with
:mod:`~ftspec.runtime.report.charts`) renders it.

Nothing here imports torch or transformers; matplotlib is imported only when the
charts are drawn, and the report is still written without charts when it is not
installed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ftspec.core.io import write_atomic, write_json, write_jsonl
from ftspec.plan.artifacts import ReportMetrics
from ftspec.runtime.report.charts import draw_charts, stages_chart
from ftspec.runtime.report.compare import load_comparison
from ftspec.runtime.report.document import build_document
from ftspec.runtime.report.render import render_html, render_markdown
from ftspec.runtime.report.results import (
    check_gates,
    compute,
    merge_predictions,
    overfitting_signal,
    read_plan,
    read_run,
)
from ftspec.runtime.report.rewards import grpo_rewards
from ftspec.runtime.report.sources import by_source
from ftspec.runtime.report.verdict import verdict

__all__ = ["build_report", "check_gates", "merge_predictions", "overfitting_signal"]


def build_report(run_dir: Path, plan: Any, out_dir: Path) -> dict:
    """Write metrics.json, predictions.jsonl, report.md (with PNG charts) and report.html into
    ``out_dir`` from what the run left in ``run_dir``; returns what metrics.json holds.

    ``plan``: the plan (or the report step's view of it, or its JSON form); the gates are
    scored here, against the evaluation results.
    """
    out_dir = Path(out_dir)
    results = compute(read_plan(plan), read_run(Path(run_dir)))
    results.grpo = grpo_rewards(results, Path(run_dir))  # a GRPO run: its rewards, sampled completions, the check
    if results.grpo is not None:
        results.summary.update(results.grpo.summary())
    per_source = by_source(results, Path(run_dir))  # a mixture's rows: every metric per source
    if per_source is not None:
        results.summary["by_source"] = per_source
    results.summary["verdict"] = verdict(results.names, results.summary)
    ReportMetrics.model_validate(results.summary)  # the file holds what its published schema says
    write_json(out_dir / "metrics.json", results.summary, sort_keys=False)
    write_jsonl(out_dir / "predictions.jsonl", results.rows)

    images = draw_charts(results)
    stages = load_comparison(Path(run_dir))  # a plan with stages: every stage's models side by side
    if stages is not None:
        chart = stages_chart(stages)
        if chart:
            images["stages.png"] = chart
    for filename, data in images.items():
        write_atomic(out_dir / filename, data)
    doc = build_document(results, images, stages)
    write_atomic(out_dir / "report.md", render_markdown(doc))
    write_atomic(out_dir / "report.html", render_html(doc, images))
    return results.summary
