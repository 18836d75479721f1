"""A sweep's results: the trials as rows, the winner chosen on validation, and the files the
sweep folder holds — results.csv, sweep.md, sweep.html (an inline SVG chart, no library) and
winner.json. Light: the standard library and ftspec's io only."""

from __future__ import annotations

import csv
import html
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftspec.core.io import write_atomic, write_json
from ftspec.plan.sweep import Sweep, set_text

HOW = "chosen on validation; test scored once, for the winner"


@dataclass
class Row:
    """One trial as the report shows it."""

    index: int
    values: tuple[tuple[str, Any], ...]
    state: str  # complete | pruned | failed | running | waiting
    value: float | None = None
    interval: list[float] | None = None
    run_dir: str | None = None
    reason: str | None = None
    base: float | None = None  # the base model's objective on validation (one eval_base, shared by the trials)
    base_interval: list[float] | None = None


@dataclass
class Winner:
    row: Row
    runner_up: Row | None
    overlap: bool | None  # None: an interval is missing
    test_value: float | None = None
    test_interval: list[float] | None = None
    test_run_dir: str | None = None
    test_base: float | None = None  # the base model's on test, scored in the winner's run
    test_base_interval: list[float] | None = None
    gates_failed: list[str] = field(default_factory=list)

    def warning(self) -> str | None:
        if self.runner_up is None or not self.overlap:
            return None
        return (f"the winner's validation interval overlaps the runner-up's (trial {self.runner_up.index}): "
                "on this validation split they cannot be told apart (more validation rows would narrow the intervals)")


def choose(sweep: Sweep, rows: list[Row]) -> Winner | None:
    """The best complete trial on the validation objective (ties: the earlier trial), the runner-up,
    and whether their 95% intervals overlap; None when no trial completed."""
    done = [r for r in rows if r.state == "complete" and r.value is not None and math.isfinite(r.value)]
    if not done:
        return None
    sign = -1.0 if sweep.objective.higher_is_better else 1.0
    ranked = sorted(done, key=lambda r: (sign * float(r.value or 0.0), r.index))
    best, second = ranked[0], (ranked[1] if len(ranked) > 1 else None)
    overlap = None
    if second is not None and best.interval and second.interval:
        overlap = best.interval[0] <= second.interval[1] and second.interval[0] <= best.interval[1]
    return Winner(best, second, overlap)


def _num(x: float | None) -> str:
    return "" if x is None else f"{x:.4g}"


def _interval(iv: list[float] | None) -> str:
    return "" if not iv else f"[{iv[0]:.4g}, {iv[1]:.4g}]"


# A cell a spreadsheet would read as a formula (OWASP's list); a number stays a number.
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(value: Any) -> Any:
    """A cell as a spreadsheet shows it, never runs it: text that starts like a formula gets a
    leading ' (a field value, a run directory named by output.dir, a failure's reason)."""
    if not isinstance(value, str) or not value.startswith(_FORMULA):
        return value
    try:
        float(value)
        return value
    except ValueError:
        return "'" + value


def render_csv(sweep: Sweep, rows: list[Row]) -> str:
    names = [f.path for f in sweep.fields]
    metric = sweep.objective.metric
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(["trial", *names, "state", f"validation_{metric}", "low", "high", "run_dir", "reason"])
    for r in rows:
        values = dict(r.values)
        low, high = (r.interval or [None, None])[:2]
        out.writerow([_csv_cell(c) for c in (r.index, *[set_text(values[n]) if n in values else "" for n in names],
                                             r.state, _num(r.value), _num(low), _num(high), r.run_dir or "",
                                             r.reason or "")])
    return buf.getvalue()


def _md_text(text: str) -> str:
    """Text shown as itself in Markdown: no HTML (a value `<img onerror=…>`), no link, emphasis or
    code span a value could open, on one line."""
    text = " ".join(text.split()).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return "".join("\\" + c if c in "\\`*[]|~" else c for c in text)


def headline(sweep: Sweep, winner: Winner | None, pending: bool = False) -> list[str]:
    """What the sweep found, in a few lines (the end of the command's output, and sweep.md's top);
    ``pending``: the winner is not chosen yet (trials are left, or a worker does not choose)."""
    o = sweep.objective
    better = "higher" if o.higher_is_better else "lower"
    if pending:
        return [f"no winner yet: it is chosen on validation {o.metric} ({better} is better) once every trial is "
                "done, by `ftspec sweep` without --worker, and then scored once on test"]
    if winner is None:
        return ["no trial completed: there is no winner"]
    w = winner.row
    values = ", ".join(f"{p}={set_text(v)}" for p, v in w.values)
    base = (f" (the base model: {_num(w.base)} {_interval(w.base_interval)})" if w.base is not None else "")
    lines = [f"winner: trial {w.index} ({values}): validation {o.metric} {_num(w.value)} {_interval(w.interval)}"
             + base, f"how: {HOW} ({o.metric}, {better} is better)"]
    if winner.test_value is not None:
        base = (f", the base model {_num(winner.test_base)} {_interval(winner.test_base_interval)}"
                if winner.test_base is not None else "")
        lines.append(f"test {o.metric} of the winner: {_num(winner.test_value)} {_interval(winner.test_interval)}"
                     f"{base} ({winner.test_run_dir})")
    warning = winner.warning()
    if warning:
        lines.append(f"warning: {warning}")
    return lines


def render_md(sweep: Sweep, rows: list[Row], winner: Winner | None, pending: bool = False) -> str:
    o = sweep.objective
    names = [f.path for f in sweep.fields]
    lines = [f"# Sweep of {sweep.plan.name}", "",
             f"{sweep.method}, {len(rows)} trial(s) over {', '.join(names)}; objective: {_md_text(o.metric)} on the "
             f"validation split ({'higher' if o.higher_is_better else 'lower'} is better). Each trial trains on "
             "the same training split and is scored on validation; the winner is then scored once on test "
             "(choosing on test would overstate it).", ""]
    lines += [f"- {_md_text(line)}" for line in headline(sweep, winner, pending)] + [""]
    lines.append("| trial | " + " | ".join(f"`{n}`" for n in names)
                 + f" | state | validation {_md_text(o.metric)} | 95% interval | run directory |")
    lines.append("|" + "---|" * (len(names) + 5))
    for r in rows:
        values = dict(r.values)
        mark = " **(winner)**" if winner is not None and r is winner.row else ""
        state = r.state + (f": {r.reason}" if r.reason else "")
        cells = [*[set_text(values[n]) if n in values else "" for n in names], state,
                 _num(r.value), _interval(r.interval), r.run_dir or ""]
        lines.append(f"| {r.index}{mark} | " + " | ".join(_md_text(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _svg(sweep: Sweep, rows: list[Row], winner: Winner | None) -> str:
    """Each complete trial's validation objective with its interval, the winner in another colour."""
    points = [r for r in rows if r.value is not None and math.isfinite(r.value)]
    if not points:
        return "<p>No trial has a score yet.</p>"
    ys = [v for r in points for v in [r.value, *(r.interval or [])] if v is not None and math.isfinite(v)]
    low, high = min(ys), max(ys)
    if high - low < 1e-12:
        low, high = low - 0.5, high + 0.5
    width, height, left, top, bottom = max(320, 60 + 48 * len(points)), 260, 56, 16, 40
    plot_h = height - top - bottom

    def y(v: float) -> float:
        return top + (high - v) / (high - low) * plot_h

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="validation {html.escape(sweep.objective.metric)} per trial">',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#888"/>',
             f'<text x="4" y="{top + 4}" font-size="11">{high:.3g}</text>',
             f'<text x="4" y="{top + plot_h}" font-size="11">{low:.3g}</text>']
    for i, r in enumerate(points):
        x = left + 30 + 48 * i
        colour = "#d62728" if winner is not None and r is winner.row else "#1f77b4"
        if r.interval:
            parts.append(f'<line x1="{x}" y1="{y(r.interval[1]):.1f}" x2="{x}" y2="{y(r.interval[0]):.1f}" '
                         f'stroke="{colour}" stroke-width="2"/>')
        parts.append(f'<circle cx="{x}" cy="{y(float(r.value or 0.0)):.1f}" r="4" fill="{colour}">'
                     f'<title>trial {r.index}: {html.escape(_num(r.value))} {html.escape(_interval(r.interval))}'
                     '</title></circle>')
        parts.append(f'<text x="{x}" y="{height - 20}" font-size="11" text-anchor="middle">{r.index}</text>')
    parts.append(f'<text x="{left + 30}" y="{height - 4}" font-size="11">trial (red: the winner; bars: 95% '
                 'interval)</text></svg>')
    return "".join(parts)


def render_html(sweep: Sweep, rows: list[Row], winner: Winner | None, pending: bool = False) -> str:
    o = sweep.objective
    names = [f.path for f in sweep.fields]
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    body = []
    for r in rows:
        values = dict(r.values)
        cells = [str(r.index), *[set_text(values[n]) if n in values else "" for n in names],
                 r.state + (f": {r.reason}" if r.reason else ""), _num(r.value), _interval(r.interval), r.run_dir or ""]
        style = ' style="font-weight:bold"' if winner is not None and r is winner.row else ""
        body.append(f"<tr{style}>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    summary = "".join(f"<li>{html.escape(line)}</li>" for line in headline(sweep, winner, pending))
    title = html.escape(f"Sweep of {sweep.plan.name}")
    return (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head><body>"
            f"<h1>{title}</h1><p>Validation {html.escape(o.metric)} of each trial "
            f"({'higher' if o.higher_is_better else 'lower'} is better), with its 95% interval.</p>"
            f"{_svg(sweep, rows, winner)}<ul>{summary}</ul>"
            f"<table border=\"1\" cellpadding=\"4\"><tr><th>trial</th>{head}<th>state</th>"
            f"<th>validation {html.escape(o.metric)}</th><th>95% interval</th><th>run directory</th></tr>"
            + "".join(body) + "</table></body></html>\n")


def winner_record(sweep: Sweep, winner: Winner) -> dict:
    w = winner.row
    return {
        "trial": w.index, "values": dict(w.values), "sets": sweep.trial_sets(w.values, validation=False),
        "objective": {"metric": sweep.objective.metric, "direction": sweep.objective.direction},
        "validation": {"value": w.value, "interval": w.interval, "run_dir": w.run_dir,
                       "base": w.base, "base_interval": w.base_interval},
        "test": {"value": winner.test_value, "interval": winner.test_interval, "run_dir": winner.test_run_dir,
                 "base": winner.test_base, "base_interval": winner.test_base_interval},
        "how": HOW,
        "runner_up": None if winner.runner_up is None else {"trial": winner.runner_up.index,
                                                            "value": winner.runner_up.value,
                                                            "interval": winner.runner_up.interval},
        "intervals_overlap": winner.overlap,
        "gates_failed": winner.gates_failed,
    }


def write_report(folder: Path, sweep: Sweep, rows: list[Row], winner: Winner | None, pending: bool = False) -> None:
    """results.csv, sweep.md, sweep.html and (with a scored winner) winner.json, each written whole."""
    write_atomic(folder / "results.csv", render_csv(sweep, rows))
    write_atomic(folder / "sweep.md", render_md(sweep, rows, winner, pending))
    write_atomic(folder / "sweep.html", render_html(sweep, rows, winner, pending))
    if winner is not None and winner.test_value is not None:
        write_json(folder / "winner.json", winner_record(sweep, winner))


__all__ = ["HOW", "Row", "Winner", "choose", "headline", "render_csv", "render_html", "render_md", "winner_record",
           "write_report"]
