"""Every metric of the evaluated split per source of a training mixture.

When prepare_data drew the data from several sources (``data.train`` as a list), it wrote
``<split>.sources`` beside each split: the name of the source of each line's record. The
evaluated rows are the split's first rows (``index`` = line), so grouping the paired rows
(those every evaluated side answered) by that name gives each source's rows; each metric is
then computed on a source's rows from the same per-row statistics as the split's own value
and its interval (:func:`~ftspec.runtime.evaluation.intervals.point_values`,
:func:`~ftspec.runtime.evaluation.intervals.bootstrap_intervals`): nothing is scored again,
and a source's accuracy is its rows' share of right answers.

metrics.json's ``by_source`` (absent when the split has one source or no sources file):

    {"split": "test",
     "sources": {NAME: {"rows": n, "base": {metric: value}, "tuned": {…}, "delta": {metric: tuned − base},
                        "intervals": {"base": {metric: [low, high]}, "tuned": {…}, "tuned_minus_base": {…}}}},
     "worse": [{"source", "metric", "base", "tuned", "delta", "significant"}],
     "warnings": ["tuned is worse than base on source …"],
     "note": why there is no breakdown though the split has a sources file (else absent)}

``significant``: the 95% intervals of the base and the tuned model on that source do not
overlap. The report shows the table and the warnings, the run's last lines the headline
metric per source (:func:`console_lines`), and the data section what stats.json says of
each source (available, drawn, times repeated, shares of rows and tokens).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ftspec.catalog.steps import PREPARE_DATA
from ftspec.core.io import BadFileError, iter_jsonl
from ftspec.core.text import printable
from ftspec.data.prepared import sources_file
from ftspec.runtime.evaluation.intervals import bootstrap_intervals, point_values
from ftspec.runtime.report.blocks import Alert, Block, Heading, Paragraph, Table, count, fmt, pct, rows_text, signed
from ftspec.runtime.report.results import Results, clean, dig, direction, num, paired_rows
from ftspec.runtime.report.verdict import interval_text, metric_label

__all__ = ["MAX_SOURCES", "by_source", "console_lines", "data_blocks", "section", "warning_blocks"]

MAX_SOURCES = 64  # more sources than this are not broken down (no mixture has them; a page of tables helps nobody)
NAME_LIMIT = 64  # a source's name is at most this long (the spec's names are; a longer one is not one ftspec wrote)


# --------------------------------------------------------------------------- computing


class _Unusable(Exception):
    """The sources file is there but says nothing the report can group by (its message says why)."""


def _names(path: Path, needed: int) -> list[str]:
    """The first ``needed`` source names of a sources file, each checked: a short printable string
    (read here rather than by ``prepared.iter_sources``, which takes any value as a name)."""
    names: list[str] = []
    try:
        for number, _, value in iter_jsonl(path):
            if not isinstance(value, str) or not 0 < len(value) <= NAME_LIMIT or not value.isprintable():
                raise _Unusable(f"{path.name}:{number} holds no source name")
            names.append(value)
            if len(names) >= needed:
                break
    except BadFileError as exc:
        raise _Unusable(str(exc)) from None
    if len(names) < needed:
        raise _Unusable(f"{path.name} names the source of {len(names)} rows, fewer than the {needed} evaluated")
    return names


def _source_order(names: set[str], stats: Any, seen: list[str]) -> list[str]:
    """The mixture's order (stats.json's, the spec's) first, then the others as they first occur."""
    known = dig(stats, "sources")
    order = [n for n in (known if isinstance(known, dict) else {}) if n in names]
    return order + [n for n in seen if n not in order]


def by_source(r: Results, run_dir: Path) -> dict | None:
    """The ``by_source`` block of metrics.json (module docstring), or None when the evaluated
    split has no sources file or its paired rows come from one source."""
    split = r.summary.get("split")
    if not isinstance(split, str) or not split.isidentifier():
        return None
    path = sources_file(Path(run_dir) / PREPARE_DATA.folder, split)
    if not path.exists() and not path.is_symlink():
        return None
    p = paired_rows(r.plan, r.rows, r.summary.get("details") or {})
    if p is None:
        return None
    out: dict[str, Any] = {"split": split}
    try:
        indices = [row["index"] for row in p.rows]
        if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in indices):
            raise _Unusable("the evaluated rows are not numbered by their line in the split")
        names = _names(path, max(indices) + 1)
        seen = list(dict.fromkeys(names[i] for i in indices))
        if len(seen) > MAX_SOURCES:
            raise _Unusable(f"the evaluated rows come from {len(seen)} sources, more than the {MAX_SOURCES} "
                            "broken down")
    except _Unusable as exc:
        return {**out, "note": f"not broken down by source: {exc}"}
    # Sources the mixture held rows of this split out of, none of which were evaluated (an eval.limit
    # smaller than the split): said, not left silently out of the breakdown.
    known = dig(r.run.stats, "sources")
    missing = [n for n, v in (known if isinstance(known, dict) else {}).items()
               if n not in seen and (num(dig(v, "held_out", split)) or 0) > 0]
    if len(seen) < 2:
        if not seen or not missing:
            return None
        return {**out, "note": f"every evaluated row comes from {seen[0]}; none from {', '.join(missing)}, whose "
                               f"rows of the {split} split lie past eval.limit (raise it to score every source)"}
    groups: dict[str, list[int]] = {n: [] for n in _source_order(set(seen), r.run.stats, seen)}
    for position, i in enumerate(indices):
        groups[names[i]].append(position)
    sides = [s for s in ("base", "tuned") if s in p.predictions]
    out["sources"] = {name: _one_source(p, positions, sides) for name, positions in groups.items()}
    out["worse"] = worse = _worse(out["sources"])
    out["warnings"] = _warnings(worse, out["sources"], r.summary)
    if missing:
        out["missing"] = missing
    return out


def _one_source(p: Any, positions: list[int], sides: list[str]) -> dict:
    """One source's rows: each metric of each side, tuned − base, and their intervals."""
    references = [p.references[i] for i in positions]
    predictions = {s: [p.predictions[s][i] for i in positions] for s in sides}
    scores = {s: {m: [v[i] for i in positions] for m, v in p.scores[s].items()} for s in sides}
    differences = (("tuned", "base"),) if sides == ["base", "tuned"] else ()
    try:
        values = point_values(p.definitions, references, predictions, p.labels, scores)
        intervals = bootstrap_intervals(p.definitions, references, predictions, p.labels, differences, scores)
    except ValueError:  # a metric the rows cannot be scored with again, as for the whole split's intervals
        values, intervals = {s: {} for s in sides}, {}
    base, tuned = values.get("base"), values.get("tuned")
    delta = {m: clean(t - base[m]) for m, t in (tuned or {}).items()
             if base is not None and t is not None and base.get(m) is not None}
    shown = {k: intervals[k] for k in ("base", "tuned", "tuned_minus_base") if k in intervals}
    return {"rows": len(positions), "base": base, "tuned": tuned, "delta": delta, "intervals": shown}


def _overlap(a: Any, b: Any) -> bool | None:
    """Whether two intervals overlap (None when either is missing)."""
    if not all(isinstance(x, list) and len(x) == 2 and all(num(v) is not None for v in x) for x in (a, b)):
        return None
    return a[0] <= b[1] and b[0] <= a[1]


def _worse(sources: dict) -> list[dict]:
    """Every (source, metric) where the tuned model scores worse than the base model."""
    found = []
    for name, s in sources.items():
        for metric, d in s["delta"].items():
            if d * direction(metric) >= 0:
                continue
            overlap = _overlap(dig(s, "intervals", "base", metric), dig(s, "intervals", "tuned", metric))
            found.append({"source": name, "metric": metric, "base": s["base"][metric], "tuned": s["tuned"][metric],
                          "delta": d, "significant": overlap is False})
    return found


def _warnings(worse: list[dict], sources: dict, summary: dict) -> list[str]:
    """One sentence per source the tuned model does worse on, naming each metric and whether it is significant."""
    lines = []
    for name in sources:
        mine = [w for w in worse if w["source"] == name]
        if not mine:
            continue
        parts = []
        for w in mine:
            metric = w["metric"]
            overlap = _overlap(dig(sources, name, "intervals", "base", metric),
                               dig(sources, name, "intervals", "tuned", metric))
            change = interval_text(dig(sources, name, "intervals", "tuned_minus_base", metric), signed=True)
            if w["significant"]:
                said = "significantly: the 95% intervals of base and tuned do not overlap"
            elif overlap:
                said = "the 95% intervals of base and tuned overlap" + (f"; the change's is {change}" if change else "")
            else:
                said = "too few rows for an interval"
            parts.append(f"{metric_label(w['metric'], summary)} {fmt(w['base'])} → {fmt(w['tuned'])} "
                         f"({signed(w['delta'])}; {said})")
        lines.append(f"The tuned model is worse than the base model on source {name} "
                     f"({rows_text(sources[name]['rows'])}): {'; '.join(parts)}.")
    return lines


# --------------------------------------------------------------------------- the report's blocks


def _block(summary: dict) -> dict | None:
    block = summary.get("by_source")
    return block if isinstance(block, dict) else None


def warning_blocks(summary: dict) -> list[Block]:
    """The report's warnings that the mixture hurt a source (at the top of the report)."""
    block = _block(summary) or {}
    return [Alert(w) for w in block.get("warnings") or [] if isinstance(w, str)]


def section(r: Results) -> list[Block]:
    """The "Per source" section: each metric of each source, base → tuned with 95% intervals."""
    block = _block(r.summary)
    if block is None:
        return []
    blocks: list[Block] = [Heading(2, "Per source")]
    if isinstance(block.get("note"), str):
        return blocks + [Paragraph(block["note"][:300] + ".")]
    sources = block.get("sources") if isinstance(block.get("sources"), dict) else {}

    def cell(s: dict, side: str, metric: str, sign: bool = False) -> str:
        value = dig(s, "delta" if side == "tuned_minus_base" else side, metric)
        text = interval_text(dig(s, "intervals", side, metric), signed=sign)
        shown = signed(value) if sign else fmt(value)
        return f"{shown} ({text})" if text and num(value) is not None else shown

    rows, unscored = [], []
    for metric in r.names:
        if all(dig(s, side, metric) is None for s in sources.values() for side in ("base", "tuned")):
            unscored.append(metric)
            continue
        for name, s in sources.items():
            rows.append([name, count(s.get("rows")), metric_label(metric, r.summary), cell(s, "base", metric),
                         cell(s, "tuned", metric), cell(s, "tuned_minus_base", metric, sign=True)])
    blocks.append(Paragraph(f"The {block.get('split')} split's evaluated rows grouped by the mixture's source each "
                            "came from; each metric computed on a source's rows exactly as on the whole split, with "
                            "95% intervals by the same bootstrap (over that source's rows)."))
    blocks.append(Table.of(["source", "rows", "metric", "base", "tuned", "tuned − base"], rows, numeric=(1, 3, 4, 5)))
    if unscored:
        blocks.append(Paragraph(f"Not broken down (no per-row score to group): {', '.join(unscored)}."))
    missing = [str(n) for n in block.get("missing") or () if isinstance(n, str)]
    if missing:
        blocks.append(Paragraph(f"Not evaluated: {', '.join(missing)} (no row of theirs among the evaluated rows; "
                                "raise eval.limit to score every source)."))
    if not block.get("worse"):
        blocks.append(Paragraph("The tuned model does no worse than the base model on any source."))
    return blocks


def data_blocks(stats: Any) -> list[Block]:
    """What stats.json says of each source of the training mixture: rows available and drawn,
    times repeated, the shares of the mixture's rows and tokens, and the rows held out."""
    sources = dig(stats, "sources")
    if not isinstance(sources, dict) or not sources:
        return []
    entries = [(str(n), s) for n, s in list(sources.items())[:MAX_SOURCES]
               if isinstance(s, dict) and len(str(n)) <= NAME_LIMIT]
    drawn_total = sum(num(s.get("drawn")) or 0 for _, s in entries)
    tokens_total = sum(num(s.get("tokens")) or 0 for _, s in entries)
    table = []
    for name, s in entries:
        available, drawn, tokens = num(s.get("available")), num(s.get("drawn")), num(s.get("tokens"))
        repeated = f"{drawn / available:.2f}×" if drawn is not None and available else "—"
        table.append([name, count(available), count(drawn), repeated,
                      pct(drawn / drawn_total) if drawn is not None and drawn_total else "—",
                      count(tokens), pct(tokens / tokens_total) if tokens is not None and tokens_total else "—",
                      count(dig(s, "held_out", "validation")), count(dig(s, "held_out", "test"))])
    return [
        Heading(3, "Sources of the training mixture"),
        Table.of(["source", "available", "drawn", "× repeated", "share of rows", "tokens", "share of tokens",
                  "validation", "test"], table),
        Paragraph("available: the source's training rows after the filter and the held-out split; drawn: the rows "
                  "it puts in the mixture (every row once before any row twice); validation and test: its rows "
                  "held out. data.limit.train, when set, cuts the interleaved mixture and keeps these shares."),
    ]


# --------------------------------------------------------------------------- the run's last lines


def console_lines(report: dict) -> list[str]:
    """The headline metric per source, base → tuned, and the warnings: the run's last lines."""
    block = _block(report)
    if block is None:
        return []
    if isinstance(block.get("note"), str):
        return [f"  sources   {printable(block['note'][:200])}"]
    sources = block.get("sources") if isinstance(block.get("sources"), dict) else {}
    metric = report.get("headline")
    width = max([8] + [len(str(n)) for n in sources])
    lines = []
    for name, s in sources.items():
        b, t = num(dig(s, "base", metric)), num(dig(s, "tuned", metric))
        if t is None:
            continue
        ci = interval_text(dig(s, "intervals", "tuned_minus_base", metric), signed=True)
        change = f"base {b:.3f} → tuned {t:.3f} ({t - b:+.3f}" + (f", 95% CI {ci})" if ci else ")") \
            if b is not None else f"tuned {t:.3f}"
        lines.append(f"    {printable(str(name)):<{width}} {metric_label(str(metric), report)} {change}, "
                     f"{rows_text(s.get('rows'))}")
    if lines:
        lines.insert(0, "  sources   the headline metric per source of the mixture")
    lines.extend(f"  warning   {printable(w)}" for w in block.get("warnings") or [] if isinstance(w, str))
    return lines
