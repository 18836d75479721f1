"""The run's report: does the tuned model beat the base model?

``build_report(run_dir, plan, out_dir)`` reads what the other steps left in the run
directory (any of it may be missing) and writes into ``out_dir``:

- ``metrics.json``       base, tuned and delta per metric, the gates, the overfitting signal;
- ``predictions.jsonl``  each held-out example with the base and the tuned answer side by side;
- ``report.md``          the same in Markdown, with the charts as PNG files beside it;
- ``report.html``        one self-contained page (charts inlined as base64 PNG, no scripts).

This module never imports torch or transformers; matplotlib is imported only when
the charts are drawn (with the Agg backend), and the report is still written
without charts when it is not installed.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import operator
import re
from pathlib import Path
from typing import Any, Callable, Iterable

__all__ = ["build_report", "check_gates", "overfitting_signal"]

# Metrics for which a smaller value is the better one.
LOWER_IS_BETTER = frozenset({"perplexity"})
OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "==": lambda a, b: math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12),
}
EXAMPLES = 5  # improved / regressed examples shown
OVERFIT_RISE = 0.02  # validation loss this much above its lowest point counts as rising
SPLIT_ORDER = ("train", "validation", "test")


# --------------------------------------------------------------------------- small helpers


def _num(value: Any) -> float | None:
    """A finite number as a float, else None (bools, strings, NaN and infinities are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _clean(value: float) -> float:
    """Round away float noise (0.85 - 0.8 = 0.04999999999999993) so that gates and deltas read as expected."""
    return round(value, 12) + 0.0  # + 0.0 turns -0.0 into 0.0


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _read_jsonl(path: Path) -> list[dict]:
    """The objects of a JSON-lines file; blank or broken lines (a run cut short) are skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return []
    rows = []
    for line in text.split("\n"):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _get(d: Any, *keys: str, default: Any = None) -> Any:
    for key in keys:
        if not isinstance(d, dict) or key not in d:
            return default
        d = d[key]
    return d


def _fmt(value: Any, digits: int = 3) -> str:
    v = _num(value)
    return "—" if v is None else f"{v:.{digits}f}"


def _signed(value: Any, digits: int = 3) -> str:
    v = _num(value)
    return "—" if v is None else f"{v:+.{digits}f}"


def _pct(value: Any) -> str:
    v = _num(value)
    return "—" if v is None else f"{v:.1%}"


def _int(value: Any) -> str:
    v = _num(value)
    if v is None:
        return "—"
    return str(int(v)) if v == int(v) else f"{v:.1f}"


def _rows(value: Any) -> str:
    return "1 row" if _num(value) == 1 else f"{_int(value)} rows"


def _clip(value: Any, limit: int, keep_end: bool = False) -> str:
    """Text cut to ``limit`` characters; with ``keep_end`` the middle goes (a prompt's end is what the model answers)."""
    text = "" if value is None else str(value)
    if len(text) <= limit:
        return text
    if keep_end:
        head = limit // 3
        tail = limit - head - 3
        return text[:head] + " … " + text[-tail:]
    return text[: limit - 1] + "…"


def _dedupe_by_step(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """(step, value) pairs sorted by step, the last value kept where a step was logged twice (a resumed run)."""
    by_step: dict[float, float] = {}
    for step, value in points:
        by_step[step] = value
    return sorted(by_step.items())


def _series(log: Iterable[dict], key: str) -> list[tuple[float, float]]:
    points = []
    for i, entry in enumerate(log or []):
        if not isinstance(entry, dict):
            continue
        value = _num(entry.get(key))
        if value is None:
            continue
        step = _num(entry.get("step"))
        points.append((step if step is not None else float(i), value))
    return _dedupe_by_step(points)


def _step(step: float) -> str:
    return str(int(step)) if step == int(step) else f"{step:g}"


# --------------------------------------------------------------------------- gates


def check_gates(gates: list[dict], base: dict | None, tuned: dict | None) -> list[dict]:
    """Each gate of the plan checked against the metrics (name -> value) of the base and tuned model.

    ``value`` is the tuned metric, or tuned - base for an improvement gate; ``margin``
    is how far the value is on the passing side of the threshold (negative: failing
    by that much; for ``==`` it is minus the distance). ``reason`` says why a gate
    could not be checked (metric missing, no baseline) and is None when it was.
    """
    results = []
    for gate in gates or []:
        metric = gate.get("metric") or gate.get("gate")
        improvement = bool(gate.get("improvement", False))
        op = gate.get("op")
        threshold = _num(gate.get("threshold"))
        row = {
            "gate": gate.get("gate") or (f"improvement.{metric}" if improvement else metric),
            "metric": metric,
            "improvement": improvement,
            "op": op,
            "threshold": gate.get("threshold"),
            "value": None,
            "passed": False,
            "margin": None,
            "reason": None,
        }
        t = _num((tuned or {}).get(metric))
        b = _num((base or {}).get(metric))
        if op not in OPS:
            row["reason"] = f"unknown comparison {op!r}"
        elif threshold is None:
            row["reason"] = f"threshold {gate.get('threshold')!r} is not a number"
        elif tuned is None:
            row["reason"] = "the tuned model was not evaluated"
        elif t is None:
            row["reason"] = f"{metric} was not computed for the tuned model"
        elif improvement and base is None:
            row["reason"] = "no baseline: the base model was not evaluated"
        elif improvement and b is None:
            row["reason"] = f"{metric} was not computed for the base model"
        else:
            value = _clean(t - b) if improvement else t
            row["value"] = value
            row["passed"] = bool(OPS[op](value, threshold))
            if op in (">=", ">"):
                row["margin"] = _clean(value - threshold)
            elif op in ("<=", "<"):
                row["margin"] = _clean(threshold - value)
            else:
                row["margin"] = _clean(-abs(value - threshold))
        results.append(row)
    return results


# --------------------------------------------------------------------------- overfitting


def overfitting_signal(log: list[dict]) -> str | None:
    """A one-sentence warning when the validation loss rises while the training loss falls, else None.

    Warns when the last validation loss is more than 2% above the lowest one, at least
    two evaluations follow the lowest one, and the training loss logged after the
    lowest point is lower on average than the training loss logged up to it.
    """
    evals = _series(log, "eval_loss")
    if len(evals) < 3:
        return None
    low_i = min(range(len(evals)), key=lambda i: evals[i][1])  # the first lowest one
    low_step, low = evals[low_i]
    last_step, last = evals[-1]
    if len(evals) - 1 - low_i < 2:
        return None
    if not last > low + OVERFIT_RISE * abs(low):
        return None
    train = _series(log, "loss")
    before = [v for s, v in train if s <= low_step]
    after = [v for s, v in train if s > low_step]
    if not before or not after:
        return None
    mean_before, mean_after = sum(before) / len(before), sum(after) / len(after)
    if not mean_after < mean_before:
        return None
    rise = f" (+{(last - low) / abs(low):.1%})" if low else ""
    return (f"Validation loss rose from {low:.4f} at step {_step(low_step)} to {last:.4f} at step {_step(last_step)}{rise} "
            f"while the training loss kept falling (mean {mean_before:.4f} up to step {_step(low_step)}, "
            f"{mean_after:.4f} after), so the model is probably overfitting: try fewer epochs or early stopping.")


# --------------------------------------------------------------------------- reading the run


def _metric_values(raw: Any) -> dict | None:
    """name -> value from an eval step's metrics.json (also the older flat form ``{"accuracy": …, "rows": …}``)."""
    if not isinstance(raw, dict):
        return None
    source = raw.get("metrics")
    if not isinstance(source, dict):
        source = {k: v for k, v in raw.items()
                  if k not in ("rows", "few_shot", "split", "details", "mode") and (v is None or _num(v) is not None)}
    return {str(k): _num(v) for k, v in source.items()}


def _prediction(row: dict | None) -> dict | None:
    if row is None:
        return None
    scores = row.get("scores")
    if not isinstance(scores, dict):
        scores = {"accuracy": 1.0 if row["correct"] else 0.0} if isinstance(row.get("correct"), bool) else {}
    return {"prediction": row.get("prediction"), "scores": scores}


def merge_predictions(base_rows: list[dict], tuned_rows: list[dict]) -> list[dict]:
    """Base and tuned answers side by side: matched on ``index`` when both sides have
    distinct integer indices, else by position."""

    def keyed(rows: list[dict]) -> bool:
        idx = [r.get("index") for r in rows]
        return all(isinstance(i, int) and not isinstance(i, bool) for i in idx) and len(set(idx)) == len(idx)

    pairs: list[tuple[Any, dict | None, dict | None]] = []
    if keyed(base_rows) and keyed(tuned_rows):
        b_by = {r["index"]: r for r in base_rows}
        t_by = {r["index"]: r for r in tuned_rows}
        for i in sorted(set(b_by) | set(t_by)):
            pairs.append((i, b_by.get(i), t_by.get(i)))
    else:
        for i in range(max(len(base_rows), len(tuned_rows))):
            b = base_rows[i] if i < len(base_rows) else None
            t = tuned_rows[i] if i < len(tuned_rows) else None
            index = next((r["index"] for r in (t, b) if r is not None and isinstance(r.get("index"), int)), i)
            pairs.append((index, b, t))
    merged = []
    for index, b, t in pairs:
        first = t if t is not None else b
        other = b if first is t else t
        prompt = first.get("prompt") if first.get("prompt") is not None else (other or {}).get("prompt")
        ref = first.get("reference") if first.get("reference") is not None else (other or {}).get("reference")
        merged.append({"index": index, "input": prompt, "reference": ref, "base": _prediction(b), "tuned": _prediction(t)})
    return merged


# --------------------------------------------------------------------------- what the report says


def _direction(metric: str | None) -> int:
    return -1 if metric in LOWER_IS_BETTER else 1


def _verdict(names: list[str], headline: str | None, base: dict | None, tuned: dict | None, rows: Any, split: str) -> str:
    both = [n for n in names if _num((base or {}).get(n)) is not None and _num((tuned or {}).get(n)) is not None]
    if both:
        metric = headline if headline in both else both[0]
        b, t = base[metric], tuned[metric]
        d = _clean(t - b)
        gain = d * _direction(metric)
        word = "beats" if gain > 0 else "does not beat" if gain < 0 else "ties with"
        return f"tuned {word} base on {metric}: {b:.3f} → {t:.3f} ({d:+.3f})"
    on = f" on {rows} {split} rows" if rows is not None else ""
    if tuned is not None:
        have = [n for n in names if _num(tuned.get(n)) is not None]
        if have:
            metric = headline if headline in have else have[0]
            return f"tuned model: {metric} {tuned[metric]:.3f}{on} (no baseline to compare with)"
        return "the tuned model was evaluated but no metric was computed"
    if base is not None:
        have = [n for n in names if _num(base.get(n)) is not None]
        if have:
            metric = headline if headline in have else have[0]
            return f"only the base model was evaluated: {metric} {base[metric]:.3f}{on}"
    return "no evaluation results: the held-out evaluation did not run or left no metrics"


def _movers(rows: list[dict], metric: str | None) -> tuple[list[tuple[float, dict]], list[tuple[float, dict]]]:
    """The examples whose score on ``metric`` improved and regressed most (tuned - base)."""
    if metric is None:
        return [], []
    scored = []
    for r in rows:
        if r["base"] is None or r["tuned"] is None:
            continue
        b, t = _num(r["base"]["scores"].get(metric)), _num(r["tuned"]["scores"].get(metric))
        if b is None or t is None:
            continue
        scored.append((_clean(t - b), r))
    sign = _direction(metric)
    key = lambda p: (-abs(p[0]), p[1]["index"] if isinstance(p[1]["index"], int) else 0)  # noqa: E731
    improved = sorted((p for p in scored if p[0] * sign > 0), key=key)[:EXAMPLES]
    regressed = sorted((p for p in scored if p[0] * sign < 0), key=key)[:EXAMPLES]
    return improved, regressed


def _weakest(rows: list[dict], metric: str | None) -> list[tuple[float, dict]]:
    """Without a baseline: the tuned model's lowest-scoring examples (those below its best score)."""
    if metric is None:
        return []
    scored = [(_num(r["tuned"]["scores"].get(metric)), r) for r in rows if r["tuned"] is not None]
    scored = [(s, r) for s, r in scored if s is not None]
    if not scored:
        return []
    sign = _direction(metric)
    best = max(s * sign for s, _ in scored)
    worst = [p for p in scored if p[0] * sign < best]
    return sorted(worst, key=lambda p: p[0] * sign)[:EXAMPLES]


def _example_metric(rows: list[dict], names: list[str], headline: str | None) -> str | None:
    present = {k for r in rows for side in ("base", "tuned") if r[side] for k in r[side]["scores"]}
    if headline in present:
        return headline
    return next((n for n in names if n in present), None)


# --------------------------------------------------------------------------- a tiny document model
# Both renderers (Markdown and HTML) take the same list of blocks; every piece of text
# in a block is plain text and each renderer escapes it.


class Doc:
    def __init__(self) -> None:
        self.blocks: list[tuple] = []

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", level, text))

    def p(self, text: str, strong: bool = False) -> None:
        self.blocks.append(("p", text, strong))

    def warn(self, text: str) -> None:
        self.blocks.append(("warn", text))

    def table(self, header: list[str], rows: list[list[str]], numeric: Iterable[int] | None = None) -> None:
        """``numeric``: the indices of the right-aligned columns (default: all but the first)."""
        numeric = set(range(1, len(header)) if numeric is None else numeric)
        self.blocks.append(("table", header, rows, numeric))

    def kv(self, pairs: list[tuple[str, str]]) -> None:
        self.blocks.append(("kv", pairs))

    def image(self, caption: str, filename: str) -> None:
        self.blocks.append(("img", caption, filename))


_MD_SPECIAL = re.compile(r"[\\`*\[\]|]|<(?=[A-Za-z/!?])|&(?=#?\w+;)")


def _md_escape(text: Any) -> str:
    """Plain text for one line of Markdown: what could start markup, an HTML tag or an entity is backslash-escaped."""
    text = "" if text is None else str(text)
    text = _MD_SPECIAL.sub(lambda m: "\\" + m.group(0), text)
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", " ⏎ ")


def render_markdown(doc: Doc) -> str:
    out: list[str] = []
    for block in doc.blocks:
        kind = block[0]
        if kind == "h":
            out.append("#" * block[1] + " " + _md_escape(block[2]))
        elif kind == "p":
            text = _md_escape(block[1])
            out.append(f"**{text}**" if block[2] else text)
        elif kind == "warn":
            out.append("> **⚠ " + _md_escape(block[1]) + "**")
        elif kind == "table":
            header, rows, numeric = block[1], block[2], block[3]
            lines = ["| " + " | ".join(_md_escape(h) for h in header) + " |",
                     "|" + "|".join("---:" if i in numeric else "---" for i in range(len(header))) + "|"]
            lines += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in rows]
            out.append("\n".join(lines))
        elif kind == "kv":
            out.append("\n".join(f"- **{_md_escape(k)}:** {_md_escape(v)}" for k, v in block[1]))
        elif kind == "img":
            out.append(f"![{_md_escape(block[1])}]({block[2]})")
    return "\n\n".join(out) + "\n"


CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #1f2328; line-height: 1.45; }
h1 { border-bottom: 1px solid #d0d7de; padding-bottom: .3em; }
h2 { border-bottom: 1px solid #eaecef; padding-bottom: .2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .6em 0; }
th, td { border: 1px solid #d0d7de; padding: .25em .6em; vertical-align: top; }
th { background: #f6f8fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.kv td { white-space: pre-wrap; word-break: break-word; max-width: 900px; }
table.kv td:first-child { font-weight: 600; white-space: nowrap; }
.verdict { font-size: 1.2em; font-weight: 600; }
.warn { background: #fff8c5; border: 1px solid #d4a72c; padding: .6em .9em; border-radius: 6px; }
figure { margin: 1em 0; }
figure img { max-width: 100%; }
figcaption { color: #59636e; font-size: .9em; }
"""


def render_html(doc: Doc, title: str, images: dict[str, bytes]) -> str:
    e = lambda s: html.escape("" if s is None else str(s), quote=True)  # noqa: E731
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>{e(title)}</title>", f"<style>{CSS}</style>", "</head>", "<body>"]
    for block in doc.blocks:
        kind = block[0]
        if kind == "h":
            out.append(f"<h{block[1]}>{e(block[2])}</h{block[1]}>")
        elif kind == "p":
            out.append(f'<p class="verdict">{e(block[1])}</p>' if block[2] else f"<p>{e(block[1])}</p>")
        elif kind == "warn":
            out.append(f'<p class="warn">⚠ {e(block[1])}</p>')
        elif kind == "table":
            header, rows, numeric = block[1], block[2], block[3]
            lines = ["<table>", "<thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr></thead>", "<tbody>"]
            for row in rows:
                cells = "".join(f'<td class="num">{e(c)}</td>' if i in numeric else f"<td>{e(c)}</td>"
                                for i, c in enumerate(row))
                lines.append(f"<tr>{cells}</tr>")
            lines += ["</tbody>", "</table>"]
            out.append("\n".join(lines))
        elif kind == "kv":
            rows = "".join(f"<tr><td>{e(k)}</td><td>{e(v)}</td></tr>" for k, v in block[1])
            out.append(f'<table class="kv"><tbody>{rows}</tbody></table>')
        elif kind == "img":
            data = images.get(block[2])
            if data is None:
                continue
            uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
            out.append(f'<figure><img alt="{e(block[1])}" src="{uri}"><figcaption>{e(block[1])}</figcaption></figure>')
    out += ["</body>", "</html>"]
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- charts


def _figure_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def _loss_chart(Figure, log: list[dict]) -> bytes | None:
    train, evals = _series(log, "loss"), _series(log, "eval_loss")
    if not train and not evals:
        return None
    fig = Figure(figsize=(7, 3.6))
    ax = fig.add_subplot()
    if train:
        ax.plot([s for s, _ in train], [v for _, v in train], label="train loss", color="#1f77b4")
    if evals:
        ax.plot([s for s, _ in evals], [v for _, v in evals], label="validation loss", color="#d62728", marker="o")
        low_step, low = min(evals, key=lambda p: p[1])
        ax.annotate(f"lowest {low:.3f}", (low_step, low), textcoords="offset points", xytext=(6, 8),
                    ha="left", fontsize=8, color="#d62728")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("Loss")
    return _figure_png(fig)


def _metrics_chart(Figure, names: list[str], base: dict | None, tuned: dict | None) -> bytes | None:
    shown = [n for n in names if _num((base or {}).get(n)) is not None or _num((tuned or {}).get(n)) is not None]
    if not shown:
        return None
    values = lambda side, n: _num((side or {}).get(n))  # noqa: E731
    in_unit = lambda n: all(0.0 <= v <= 1.0 for v in (values(base, n), values(tuned, n)) if v is not None)  # noqa: E731
    unit = [n for n in shown if in_unit(n)]
    # metrics in 0..1 share one axis; any other (perplexity) gets an axis of its own
    groups = ([unit] if unit else []) + [[n] for n in shown if not in_unit(n)]
    fig = Figure(figsize=(max(4.0, 1.3 * len(shown) + 2 + 0.8 * (len(groups) - 1)), 3.6))
    grid = fig.add_gridspec(1, len(groups), width_ratios=[len(g) + 0.5 for g in groups])
    width = 0.38
    for g, group in enumerate(groups):
        ax = fig.add_subplot(grid[0, g])
        xs = list(range(len(group)))
        sides = [(label, side, color) for label, side, color in (("base", base, "#9aa5b1"), ("tuned", tuned, "#2b7bba"))
                 if side is not None]
        for k, (label, side, color) in enumerate(sides):
            offset = (k - (len(sides) - 1) / 2) * width
            heights = [values(side, n) or 0.0 for n in group]
            bars = ax.bar([x + offset for x in xs], heights, width, label=label, color=color)
            ax.bar_label(bars, labels=[_fmt(values(side, n)) for n in group], fontsize=7, padding=2)
        ax.set_xticks(xs)
        ax.set_xticklabels(group, rotation=20 if len(group) > 4 else 0)
        if group is unit:
            ax.set_ylim(0, 1.1)
        ax.grid(axis="y", alpha=0.3)
        if g == 0:
            ax.legend(fontsize=8)
    fig.suptitle("Base vs tuned" if base is not None and tuned is not None else "Tuned model" if tuned is not None else "Base model")
    return _figure_png(fig)


def _confusion(details: Any) -> tuple[list[str], list[str], list[list[float]]] | None:
    """(row labels = references, column labels = predictions, counts) of a classification's confusion matrix."""
    cm = _get(details, "classification", "confusion_matrix")
    if not isinstance(cm, dict) or not isinstance(cm.get("matrix"), list) or not cm["matrix"]:
        return None
    columns = [str(x) for x in cm.get("labels") or []]
    rows = [str(x) for x in cm.get("rows") or columns]
    matrix = [[_num(x) or 0.0 for x in row] if isinstance(row, list) else [] for row in cm["matrix"]]
    if len(matrix) != len(rows) or any(len(r) != len(columns) for r in matrix) or not columns:
        return None
    return rows, columns, matrix


def _confusion_chart(Figure, details: Any, title: str) -> bytes | None:
    cm = _confusion(details)
    if cm is None:
        return None
    rows, columns, matrix = cm
    size = max(len(rows), len(columns))
    fig = Figure(figsize=(min(3 + 0.55 * size, 14), min(2.6 + 0.5 * size, 13)))
    ax = fig.add_subplot()
    image = ax.imshow(matrix, cmap="Blues", aspect="auto")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(len(columns)))
    ax.set_xticklabels([_clip(c, 24) for c in columns], rotation=45, ha="right")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([_clip(r, 24) for r in rows])
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    ax.set_title(title)
    if size <= 25:
        top = max((v for r in matrix for v in r), default=0) or 1
        for i, r in enumerate(matrix):
            for j, v in enumerate(r):
                ax.text(j, i, _int(v), ha="center", va="center", fontsize=8,
                        color="white" if v > top / 2 else "#1f2328")
    return _figure_png(fig)


def _charts(log, names, base, tuned, base_details, tuned_details) -> dict[str, bytes]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib.figure import Figure
    except ImportError:
        return {}
    charts = {
        "loss.png": _loss_chart(Figure, log),
        "metrics.png": _metrics_chart(Figure, names, base, tuned),
        "confusion-tuned.png": _confusion_chart(Figure, tuned_details, "Tuned model"),
        "confusion-base.png": _confusion_chart(Figure, base_details, "Base model"),
    }
    return {name: data for name, data in charts.items() if data}


# --------------------------------------------------------------------------- the report


def _describe_model(m: Any) -> str:
    if not isinstance(m, dict):
        return "?"
    if m.get("kind") == "tiny":
        return f"tiny {m.get('architecture', '?')} ({m.get('num_layers', '?')} layers × {m.get('hidden_size', '?')})"
    name = m.get("name_or_path") or m.get("name") or m.get("kind") or "?"
    return f"{name} @ {m['revision']}" if m.get("revision") else str(name)


def _describe_method(m: Any) -> str:
    if not isinstance(m, dict):
        return "?"
    adapter = _get(m, "adapter", "kind") or "?"
    return f"{m.get('objective', '?')} + {'full fine-tuning' if adapter == 'full' else adapter}"


def _example_block(doc: Doc, delta: float | None, row: dict, metric: str) -> None:
    index = row["index"]
    b = _num(_get(row, "base", "scores", metric)) if row["base"] else None
    t = _num(_get(row, "tuned", "scores", metric)) if row["tuned"] else None
    if delta is not None:
        head = f"example {index}: {metric} {_fmt(b)} → {_fmt(t)} ({delta:+.3f})"
    else:
        head = f"example {index}: {metric} {_fmt(t)}"
    doc.h(4, head)
    pairs = [("input", _clip(row["input"], 400, keep_end=True)), ("reference", _clip(row["reference"], 240))]
    if row["base"] is not None:
        pairs.append(("base", _clip(row["base"]["prediction"], 240)))
    if row["tuned"] is not None:
        pairs.append(("tuned", _clip(row["tuned"]["prediction"], 240)))
    doc.kv(pairs)


def _document(plan: dict, result: dict, rows: list[dict], log: list[dict], train: Any, stats: Any,
              images: dict[str, bytes], names: list[str], headline: str | None) -> Doc:
    doc = Doc()
    base, tuned = result["base"], result["tuned"]
    name = result["name"] or "run"
    doc.h(1, f"ftspec report: {name}")
    split, n = result["split"], result["rows"]
    plan_id = str(result["plan_id"] or "")[:12] or "?"
    doc.p(f"plan {plan_id} · model {_describe_model(plan.get('model'))} · method {_describe_method(plan.get('method'))}"
          f" · evaluated on {split}" + (f" ({n} rows)" if n is not None else ""))
    doc.p(_verdict(names, headline, base, tuned, n, split), strong=True)
    gates = result["gates"]
    if gates:
        failed = [g["gate"] for g in gates if not g["passed"]]
        doc.p(f"gates: all {len(gates)} passed" if not failed
              else f"gates: {len(failed)} of {len(gates)} failed ({', '.join(failed)})")
    if result["overfitting"]:
        doc.warn(result["overfitting"])

    # the metric table
    doc.h(2, "Metrics")
    if base is None and tuned is None:
        doc.p("No evaluation results.")
    else:
        table = []
        for m in names:
            b, t = (base or {}).get(m), (tuned or {}).get(m)
            table.append([m + (" (lower is better)" if m in LOWER_IS_BETTER else ""), _fmt(b), _fmt(t),
                          _signed(result["delta"].get(m))])
        doc.table(["metric", "base", "tuned", "delta"], table)
        if base is None:
            doc.p("The base model was not evaluated (no baseline).")
        if "metrics.png" in images:
            doc.image("Base vs tuned per metric", "metrics.png")

    # gates
    doc.h(2, "Gates")
    if not gates:
        doc.p("No gates.")
    else:
        table = []
        for g in gates:
            value = g["value"]
            shown_value = _signed(value) if g["improvement"] else _fmt(value)
            threshold = _num(g["threshold"])
            cond = f"{g['op']} {threshold:g}" if threshold is not None else f"{g['op']} {g['threshold']}"
            table.append(["✓" if g["passed"] else "✗", g["gate"], shown_value, cond, _signed(g["margin"]), g["reason"] or ""])
        doc.table(["", "gate", "value", "threshold", "margin", "note"], table, numeric=(2, 3, 4))
        doc.p("value: the tuned model's metric, or tuned − base for an improvement gate; "
              "margin: how far the value is on the passing side of the threshold.")

    # training
    doc.h(2, "Training")
    train_series, eval_series = _series(log, "loss"), _series(log, "eval_loss")
    if not isinstance(train, dict) and not train_series and not eval_series:
        doc.p("No training record.")
    else:
        train = train if isinstance(train, dict) else {}
        steps = train.get("steps") if train.get("steps") is not None else (
            _step(max(s for s, _ in train_series + eval_series)) if train_series or eval_series else None)
        final_train = train.get("train_loss") if _num(train.get("train_loss")) is not None else (
            train_series[-1][1] if train_series else None)
        final_eval = train.get("eval_loss") if _num(train.get("eval_loss")) is not None else (
            eval_series[-1][1] if eval_series else None)
        pairs = [("steps", "—" if steps is None else str(steps)),
                 ("final train loss", _fmt(final_train, 4)),
                 ("final validation loss", _fmt(final_eval, 4) if final_eval is not None else "— (no validation loss)")]
        if eval_series:
            low_step, low = min(eval_series, key=lambda p: p[1])
            pairs.append(("lowest validation loss", f"{low:.4f} at step {_step(low_step)}"))
        if train.get("stopped_early"):
            pairs.append(("stopped early", "yes"))
        if train.get("resumed_from"):
            pairs.append(("resumed from", str(train["resumed_from"])))
        doc.kv(pairs)
        if "loss.png" in images:
            doc.image("Training and validation loss", "loss.png")

    # data
    doc.h(2, "Data")
    splits = _get(stats, "splits")
    if not isinstance(splits, dict) or not splits:
        doc.p("No data statistics.")
    else:
        order = [s for s in SPLIT_ORDER if s in splits] + sorted(s for s in splits if s not in SPLIT_ORDER)
        table = []
        for s in order:
            st = splits[s] if isinstance(splits[s], dict) else {}
            tok = st.get("tokens") if isinstance(st.get("tokens"), dict) else {}
            table.append([s, _int(st.get("rows")), _int(tok.get("p50")), _int(tok.get("p90")), _int(tok.get("p99")),
                          _int(tok.get("max")), _fmt(tok.get("mean"), 1),
                          f"{_pct(st.get('truncation_rate'))} ({_rows(st.get('truncated_rows'))})",
                          _pct(st.get("loss_token_fraction"))])
        doc.table(["split", "rows", "tokens p50", "p90", "p99", "max", "mean", "truncated", "loss-token share"], table)
    skipped = _num(_get(stats, "skipped_rows"))
    if skipped:
        doc.p(f"Skipped rows: {int(skipped)}.")
        examples = _get(stats, "skipped_examples") or []
        if isinstance(examples, list) and examples:
            doc.kv([(f"skipped {i + 1}", _clip(x, 240)) for i, x in enumerate(examples[:EXAMPLES])])
    elif isinstance(stats, dict):
        doc.p("Skipped rows: 0.")

    # classification
    per_label = {side: _get(result["details"], side, "classification", "per_label") for side in ("base", "tuned")}
    per_label = {k: v for k, v in per_label.items() if isinstance(v, dict) and v}
    confusions = {side: _confusion(result["details"][side]) for side in ("tuned", "base")}
    if per_label or any(confusions.values()):
        doc.h(2, "Classification")
        if per_label:
            labels: list[str] = []
            for side in ("tuned", "base"):
                for label in _get(result["details"], side, "classification", "labels") or list(per_label.get(side, {})):
                    if str(label) not in labels:
                        labels.append(str(label))
            sides = [s for s in ("base", "tuned") if s in per_label]
            header = ["label", "support"] + [f"{s} {k}" for s in sides for k in ("precision", "recall", "F1")]
            table = []
            for label in labels:
                support = next((_get(per_label, s, label, "support") for s in ("tuned", "base")
                                if _get(per_label, s, label, "support") is not None), None)
                row = [label, _int(support)]
                for s in sides:
                    row += [_fmt(_get(per_label, s, label, k)) for k in ("precision", "recall", "f1")]
                table.append(row)
            doc.h(3, "Per label")
            doc.table(header, table)
        for side in ("tuned", "base"):
            cm = confusions[side]
            if cm is None:
                continue
            row_labels, columns, matrix = cm
            doc.h(3, f"Confusion matrix, {side} model (rows: reference, columns: predicted)")
            doc.table(["reference ↓ predicted →"] + columns, [[r] + [_int(v) for v in m] for r, m in zip(row_labels, matrix)])
            if f"confusion-{side}.png" in images:
                doc.image(f"Confusion matrix of the {side} model", f"confusion-{side}.png")

    # examples
    metric = _example_metric(rows, names, headline)
    doc.h(2, "Examples")
    if not rows:
        doc.p("No predictions.")
    elif metric is None:
        doc.p("No per-example scores to rank the examples by.")
    elif any(r["base"] is not None and r["tuned"] is not None for r in rows):
        improved, regressed = _movers(rows, metric)
        better = "lower" if metric in LOWER_IS_BETTER else "higher"
        doc.p(f"Ranked by the per-example {metric} ({better} is better), tuned − base; up to {EXAMPLES} of each.")
        doc.h(3, f"Improved most ({len(improved)})")
        if not improved:
            doc.p("No example improved.")
        for d, r in improved:
            _example_block(doc, d, r, metric)
        doc.h(3, f"Regressed most ({len(regressed)})")
        if not regressed:
            doc.p("No example regressed.")
        for d, r in regressed:
            _example_block(doc, d, r, metric)
    else:
        weakest = _weakest(rows, metric)
        doc.p(f"No baseline to compare with; the tuned model's lowest-scoring examples by {metric}, up to {EXAMPLES}.")
        if not weakest:
            doc.p("Every example has the best score.")
        for _, r in weakest:
            _example_block(doc, None, r, metric)
    return doc


def build_report(run_dir: Path, plan: dict, out_dir: Path) -> dict:
    """Write metrics.json, predictions.jsonl, report.md (with PNG charts) and report.html into
    ``out_dir`` from what the run left in ``run_dir``; returns what metrics.json holds."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = plan if isinstance(plan, dict) else {}
    e = plan.get("eval") if isinstance(plan.get("eval"), dict) else {}

    base_raw = _read_json(run_dir / "eval-base" / "metrics.json")
    tuned_raw = _read_json(run_dir / "eval-tuned" / "metrics.json")
    base, tuned = _metric_values(base_raw), _metric_values(tuned_raw)
    log_path = run_dir / "model" / "metrics.jsonl"
    log = _read_jsonl(log_path if log_path.exists() else run_dir / "metrics.jsonl")
    stats = _read_json(run_dir / "data" / "stats.json")
    train = _read_json(run_dir / "model" / "train.json")
    rows = merge_predictions(_read_jsonl(run_dir / "eval-base" / "predictions.jsonl"),
                             _read_jsonl(run_dir / "eval-tuned" / "predictions.jsonl"))

    names: list[str] = []
    for m in e.get("metrics") or []:
        n = m.get("name") if isinstance(m, dict) else m
        if isinstance(n, str) and n not in names:
            names.append(n)
    headline = names[0] if names else None
    for side in (tuned, base):
        for n in side or {}:
            if n not in names:
                names.append(n)
    if headline is None and names:
        headline = names[0]

    delta = {}
    for n in names:
        b, t = _num((base or {}).get(n)), _num((tuned or {}).get(n))
        if b is not None and t is not None:
            delta[n] = _clean(t - b)
    rows_n = next((r.get("rows") for r in (tuned_raw, base_raw) if isinstance(r, dict) and r.get("rows") is not None),
                  len(rows) if rows else None)
    split = next((r.get("split") for r in (tuned_raw, base_raw) if isinstance(r, dict) and r.get("split")), None) \
        or e.get("split")
    gates = check_gates(e.get("gates") or [], base, tuned)
    result = {
        "plan_id": plan.get("id"),
        "name": plan.get("name"),
        "split": split,
        "rows": rows_n,
        "headline": headline,
        "base": base,
        "tuned": tuned,
        "delta": delta,
        "gates": gates,
        "gates_passed": all(g["passed"] for g in gates),
        "overfitting": overfitting_signal(log),
        "details": {"base": base_raw.get("details") if isinstance(base_raw, dict) else None,
                    "tuned": tuned_raw.get("details") if isinstance(tuned_raw, dict) else None},
    }

    (out_dir / "metrics.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    with open(out_dir / "predictions.jsonl", "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")

    images = _charts(log, names, base, tuned, result["details"]["base"], result["details"]["tuned"])
    for filename, data in images.items():
        (out_dir / filename).write_bytes(data)
    doc = _document(plan, result, rows, log, train, stats, images, names, headline)
    (out_dir / "report.md").write_text(render_markdown(doc), encoding="utf-8")
    title = f"ftspec report: {result['name'] or 'run'}"
    (out_dir / "report.html").write_text(render_html(doc, title, images), encoding="utf-8")
    return result
