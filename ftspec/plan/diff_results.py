"""``ftspec diff --results``: the evaluation results of both sides of a change, shown
under the plan diff — each metric of the base model, the old and the new tuned model with
its 95% interval, and each side's gates.

The numbers are each side's report ``metrics.json`` as the step store holds it under that
side's own report key (read by ftspec.store.results, given here as data); a side without
them says why in one line. Plain text for the terminal, Markdown for a pull-request
comment (long parts in ``<details>``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Optional

from ftspec.core.text import printable
from ftspec.plan.artifacts import GateResult, ReportMetrics
from ftspec.plan.diff import number

NONE = "—"


@dataclass(frozen=True)
class SideResults:
    """One side's results: its report's metrics, or a line saying why there are none."""

    metrics: Optional[ReportMetrics] = None
    note: Optional[str] = None  # why there are none: "not run yet"
    command: Optional[str] = None  # what computes them: "ftspec run specs/x.yaml"


@dataclass(frozen=True)
class DiffResults:
    old: SideResults
    new: SideResults
    # Both plans have the same report key: one report, the same numbers on both sides.
    same: bool = False

    def any(self) -> bool:
        return self.old.metrics is not None or self.new.metrics is not None


# --------------------------------------------------------------------------- numbers


def _num(value: Optional[float]) -> str:
    return NONE if value is None else f"{value:.3f}"


def _signed(value: Optional[float]) -> str:
    return NONE if value is None else f"{value:+.3f}"


def _interval(pair: Optional[list[float]], signed: bool = False) -> str:
    if not pair or len(pair) != 2 or any(v is None for v in pair):
        return ""
    f = _signed if signed else _num
    return f"{f(pair[0])} to {f(pair[1])}"


def _value(m: Optional[ReportMetrics], side: str, metric: str, with_interval: bool = True) -> str:
    """``0.450 (0.330 to 0.570)``: a model's metric with its interval, or — when there is none."""
    if m is None:
        return NONE
    values = getattr(m, side) or {}
    value = values.get(metric)
    if value is None:
        return NONE
    bounds = getattr(m.intervals, side, None) if m.intervals is not None and with_interval else None
    ci = _interval((bounds or {}).get(metric))
    return f"{_num(value)} ({ci})" if ci else _num(value)


def _metric_names(*sides: Optional[ReportMetrics]) -> list[str]:
    names: list[str] = []
    for m in sides:
        if m is None:
            continue
        for part in (m.tuned or {}, m.base or {}):
            names += [n for n in part if n not in names]
    return names


def _where(m: Optional[ReportMetrics]) -> str:
    if m is None:
        return ""
    split = f"{m.split} split" if m.split else "held-out rows"
    return f"{split}, {m.rows} rows" if m.rows is not None else split


def _scope(r: DiffResults) -> str:
    """What was scored, once when both sides scored the same, else each side's."""
    old, new = (_where(s.metrics) for s in (r.old, r.new))
    level = next((s.metrics.intervals.level for s in (r.new, r.old)
                  if s.metrics is not None and s.metrics.intervals is not None), None)
    scope = old or new if (old == new or not (old and new)) else f"old: {old}; new: {new}"
    return scope + (f"; {number(round(level * 100, 6))}% intervals" if level is not None else "")


def _gate_expr(g: GateResult) -> str:
    return f"{g.gate} {g.op} {number(g.threshold)}"


def _gate_value(g: GateResult) -> str:
    if g.value is None:
        return g.reason or "no value"
    return _signed(g.value) if g.improvement else _num(g.value)


def _gate(g: GateResult) -> str:
    return f"{_gate_expr(g)} ({_gate_value(g)})"


def _gates_words(m: Optional[ReportMetrics], shown=_gate, passed: str = "", failed_mark: str = "") -> str:
    """One side's gates in a line: passed, or which failed (each as ``shown`` writes a gate)."""
    if m is None:
        return "no results"
    if not m.gates:
        return "no gates"
    failed = [g for g in m.gates if not g.passed]
    if not failed:
        return f"{passed}passed {len(m.gates)}/{len(m.gates)}"
    return f"{failed_mark}failed {len(failed)}/{len(m.gates)}: " + "; ".join(shown(g) for g in failed)


MAX_SOURCES = 64  # as the report: more sources than this are not broken down


def _by_source(m: Optional[ReportMetrics]) -> dict[str, dict]:
    """A report's metrics per source of a training mixture (its ``by_source`` block; {} without one)."""
    block = getattr(m, "by_source", None) if m is not None else None  # a field newer reports add
    sources = block.get("sources") if isinstance(block, dict) else None
    if not isinstance(sources, dict):
        return {}
    return {str(k)[:64]: v for k, v in list(sources.items())[:MAX_SOURCES] if isinstance(v, dict)}


def _source_num(s: dict, side: str, metric: str) -> Optional[float]:
    values = s.get(side)
    value = values.get(metric) if isinstance(values, dict) else None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def _source_value(s: dict, side: str, metric: str) -> str:
    value = _source_num(s, side, metric)
    bounds = s.get("intervals", {}).get(side) if isinstance(s.get("intervals"), dict) else None
    pair = bounds.get(metric) if isinstance(bounds, dict) else None
    ok = isinstance(pair, list) and len(pair) == 2 and all(isinstance(v, (int, float)) for v in pair)
    ci = _interval(pair) if ok and value is not None else ""
    return f"{_num(value)} ({ci})" if ci else _num(value)


def _source_rows(r: DiffResults, metric: str) -> list[list[str]]:
    """One row per source of the metric, when every side shown has the report broken down per source."""
    if r.same:
        sources = _by_source(r.new.metrics or r.old.metrics)
        return [[f"{metric}, source {name}", _source_value(s, "base", metric), _source_value(s, "tuned", metric),
                 _signed(_source_num(s, "delta", metric))] for name, s in sources.items()]
    old, new = _by_source(r.old.metrics), _by_source(r.new.metrics)
    if not old or not new:
        return []
    rows = []
    for name in [*new, *(n for n in old if n not in new)]:
        o, n = old.get(name, {}), new.get(name, {})
        bases = [_source_num(x, "base", metric) for x in (o, n)]
        base = f"{_num(bases[0])} → {_num(bases[1])}" if bases[0] != bases[1] else _source_value(n or o, "base", metric)
        tuned = [_source_num(x, "tuned", metric) for x in (o, n)]
        change = _signed(tuned[1] - tuned[0]) if None not in tuned else NONE
        rows.append([f"{metric}, source {name}", base, _source_value(o, "tuned", metric),
                     _source_value(n, "tuned", metric), change])
    return rows


def _rows(r: DiffResults) -> tuple[list[str], list[list[str]]]:
    """The results table: a header and one row per metric (then, for a training mixture whose
    reports are broken down per source, one row per source of it)."""
    old, new = r.old.metrics, r.new.metrics
    names = _metric_names(new, old)
    if r.same:
        m = new or old
        head = ["metric", "base", "tuned", "tuned − base"]
        return head, [row for n in names for row in (
            [[n, _value(m, "base", n), _value(m, "tuned", n), _signed((m.delta or {}).get(n))]]
            + _source_rows(r, n))]
    head = ["metric", "base", "old tuned", "new tuned", "new − old"]
    rows = []
    for n in names:
        bases = [(m.base or {}).get(n) if m is not None else None for m in (old, new)]
        if old is not None and new is not None and bases[0] != bases[1]:
            base = f"{_num(bases[0])} → {_num(bases[1])}"  # the base model scored on other rows (a data change)
        else:
            base = _value(new if new is not None else old, "base", n)
        tuned = [(m.tuned or {}).get(n) if m is not None else None for m in (old, new)]
        change = _signed(tuned[1] - tuned[0]) if None not in tuned else NONE
        rows.append([n, base, _value(old, "tuned", n), _value(new, "tuned", n), change])
        rows += _source_rows(r, n)
    return head, rows


def _notes(r: DiffResults) -> list[str]:
    """One line per side without results: why, and the command that computes them."""
    sides = [("both sides:", r.new)] if r.same else [("old side", r.old), ("new side", r.new)]
    return [f"{side} {s.note}" + (f": {s.command}" if s.command else "")
            for side, s in sides if s.metrics is None and s.note]


# --------------------------------------------------------------------------- text


def render_results_text(r: DiffResults) -> list[str]:
    lines: list[str] = []
    if not r.any():
        return lines + ["results: none in the step store"] + [f"  {printable(x)}" for x in _notes(r)]
    lines.append(f"results ({_scope(r)})" + (": the same report on both sides" if r.same else ""))
    head, rows = _rows(r)
    table = [head] + [[printable(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in table]
    if r.same:
        lines.append(f"gates: {printable(_gates_words(r.new.metrics or r.old.metrics))}")
    else:
        lines.append(f"gates: old {printable(_gates_words(r.old.metrics))}; "
                     f"new {printable(_gates_words(r.new.metrics))}")
    lines += [printable(x) for x in _notes(r)]
    return lines


# --------------------------------------------------------------------------- markdown


def md_text(text: str) -> str:
    """Text from a spec, a plan or a report in a Markdown table cell or line: no control, no
    markup of its own (emphasis, links, HTML such as ``</details>``, entities, a cell's ``|``)."""
    text = printable(text)
    for ch in "\\`*_[]<>|&~":
        text = text.replace(ch, "\\" + ch)
    return text


def md_code(text: str) -> str:
    """A code span whatever the text holds: fenced by one backtick more than its longest run of
    them, so that no run inside can close it early and let the rest be read as Markdown (a
    prompt holding ```` `` </details> **approved** ````); a ``|`` escaped for a table cell."""
    text = printable(text).replace("|", "\\|")
    longest = max((len(x) for x in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if longest else ""
    return f"{fence}{pad}{text}{pad}{fence}"



def _md_gates(m: Optional[ReportMetrics]) -> str:
    return _gates_words(m, lambda g: f"{md_code(_gate_expr(g))} ({md_text(_gate_value(g))})", "✅ ", "❌ ")


def _md_notes(r: DiffResults) -> list[str]:
    sides = [("both sides:", r.new)] if r.same else [("old side", r.old), ("new side", r.new)]
    return [f"{side} {md_text(s.note)}" + (f": {md_code(s.command)}" if s.command else "")
            for side, s in sides if s.metrics is None and s.note]


def render_results_markdown(r: DiffResults) -> list[str]:
    """The results section of the comment: the table and the gates in view, each side's
    details (tuned − base, the most-frequent-answer baseline, every gate) collapsed."""
    if not r.any():
        return ["**Results:** none in the step store."] + [f"- {x}" for x in _md_notes(r)] + [""]
    title = f"**Results** ({md_text(_scope(r))})" + (": the same report on both sides" if r.same else "")
    head, rows = _rows(r)
    lines = [title, "", "| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    lines += ["| " + " | ".join([md_code(row[0])] + [md_text(c) for c in row[1:]]) + " |" for row in rows]
    lines.append("")
    if r.same:
        lines.append(f"**Gates:** {_md_gates(r.new.metrics or r.old.metrics)}")
    else:
        lines.append(f"**Gates:** old {_md_gates(r.old.metrics)} · new {_md_gates(r.new.metrics)}")
    lines += [""] + [f"> {x}" for x in _md_notes(r)] + ([""] if _notes(r) else [])
    details = _md_details(r)
    if details:
        lines += ["<details><summary>Per-metric details</summary>", ""] + details + ["</details>", ""]
    return lines


def _md_details(r: DiffResults) -> list[str]:
    lines: list[str] = []
    sides = [("", r.new)] if r.same else [("old ", r.old), ("new ", r.new)]
    for label, side in sides:
        m = side.metrics
        if m is None:
            continue
        names = _metric_names(m)
        lines += [f"**{label}tuned − base** (paired interval) and the most-frequent-answer baseline", "",
                  "| metric | tuned − base | majority |", "| --- | --- | --- |"]
        for n in names:
            diff = (m.delta or {}).get(n)
            ci = _interval(((m.intervals.tuned_minus_base if m.intervals else None) or {}).get(n), signed=True)
            majority = (m.majority or {}).get(n)
            lines.append(f"| {md_code(n)} | {_signed(diff)}{f' ({ci})' if ci and diff is not None else ''} | "
                         f"{_num(majority)} |")
        lines.append("")
        if m.gates:
            lines += [f"**{label}gates**", "", "| gate | value | passed |", "| --- | --- | --- |"]
            lines += [f"| {md_code(_gate_expr(g))} | {md_text(_gate_value(g))} | {'✅' if g.passed else '❌'} |"
                      for g in m.gates]
            lines.append("")
    return lines

