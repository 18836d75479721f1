"""The report's charts as PNG bytes: the loss curves, base vs tuned per metric, the
confusion matrices, and a GRPO run's training rewards.

matplotlib is imported only when the charts are drawn (with the Agg backend); without
it there are no charts and the report is written without them.
"""

from __future__ import annotations

import io
from typing import Any

from ftspec.runtime.report.blocks import clip, count, fmt
from ftspec.runtime.report.results import Results, confusion, num, series


def draw_charts(r: Results) -> dict[str, bytes]:
    """filename -> PNG bytes of each chart there is data for; {} without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib.figure import Figure
    except ImportError:
        return {}
    s = r.summary
    charts = {
        "loss.png": _loss_chart(Figure, r.run.log),
        "metrics.png": _metrics_chart(Figure, r.names, s["base"], s["tuned"], s.get("majority"), s.get("intervals")),
        "confusion-tuned.png": _confusion_chart(Figure, s["details"]["tuned"], "Tuned model"),
        "confusion-base.png": _confusion_chart(Figure, s["details"]["base"], "Base model"),
    }
    if r.grpo is not None:  # a GRPO run: its training rewards per step
        charts["rewards.png"] = _rewards_chart(Figure, r.run.log, [x.name for x in r.grpo.rewards])
    return {name: data for name, data in charts.items() if data}


def _figure_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    return buf.getvalue()


def _loss_chart(Figure, log: list[dict]) -> bytes | None:
    train, evals = series(log, "loss"), series(log, "eval_loss")
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


_REWARD_COLORS = ("#2b7bba", "#1b9e77", "#e07b39", "#7570b3", "#66a61e", "#e7298a", "#a6761d")


def _rewards_chart(Figure, log: list[dict], names: list[str]) -> bytes | None:
    """Each reward's mean per step, its standard deviation between the step's completions as a band,
    and their weighted sum (what GRPO maximises), dashed."""
    lines = [(name, series(log, f"rewards/{name}/mean"), dict(series(log, f"rewards/{name}/std"))) for name in names]
    lines.append(("reward (weighted sum)", series(log, "reward"), dict(series(log, "reward_std"))))
    if not any(points for _, points, _ in lines):
        return None
    fig = Figure(figsize=(7, 3.6))
    ax = fig.add_subplot()
    for k, (label, points, spread) in enumerate(lines):
        if not points:
            continue
        total = k == len(lines) - 1
        color = "#1f2328" if total else _REWARD_COLORS[k % len(_REWARD_COLORS)]
        steps, values = [s for s, _ in points], [v for _, v in points]
        ax.plot(steps, values, label=label, color=color, linestyle="--" if total else "-",
                marker="o" if len(points) == 1 else None)
        if not total and any(s in spread for s in steps):
            ax.fill_between(steps, [v - spread.get(s, 0.0) for s, v in points],
                            [v + spread.get(s, 0.0) for s, v in points], color=color, alpha=0.15, linewidth=0)
    ax.set_xlabel("step")
    ax.set_ylabel("reward (mean of the step's completions)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Training rewards (bands: ± one standard deviation between completions)")
    return _figure_png(fig)


def _metrics_chart(Figure, names: list[str], base: dict | None, tuned: dict | None, majority: dict | None = None,
                   intervals: dict | None = None) -> bytes | None:
    """Bars per metric (the most-frequent-answer baseline, base, tuned), with their 95% intervals as error bars."""
    shown = [n for n in names if num((base or {}).get(n)) is not None or num((tuned or {}).get(n)) is not None]
    if not shown:
        return None
    values = lambda side, n: num((side or {}).get(n))  # noqa: E731
    in_unit = lambda n: all(0.0 <= v <= 1.0 for v in (values(base, n), values(tuned, n)) if v is not None)  # noqa: E731
    unit = [n for n in shown if in_unit(n)]
    # metrics in 0..1 share one axis; any other (perplexity) gets an axis of its own
    groups = ([unit] if unit else []) + [[n] for n in shown if not in_unit(n)]
    fig = Figure(figsize=(max(4.0, 1.3 * len(shown) + 2 + 0.8 * (len(groups) - 1)), 3.6))
    grid = fig.add_gridspec(1, len(groups), width_ratios=[len(g) + 0.5 for g in groups])
    width = 0.38 if not majority else 0.27
    for g, group in enumerate(groups):
        ax = fig.add_subplot(grid[0, g])
        xs = list(range(len(group)))
        sides = [(label, side, color) for label, side, color in (
            ("majority", majority, "#e3d6b4"), ("base", base, "#9aa5b1"), ("tuned", tuned, "#2b7bba"))
            if side and any(values(side, n) is not None for n in group)]
        for k, (label, side, color) in enumerate(sides):
            offset = (k - (len(sides) - 1) / 2) * width
            heights = [values(side, n) or 0.0 for n in group]
            errors = [_error(heights[i], ((intervals or {}).get(label) or {}).get(n)) for i, n in enumerate(group)]
            yerr = [[e[0] for e in errors], [e[1] for e in errors]] if any(e != (0.0, 0.0) for e in errors) else None
            bars = ax.bar([x + offset for x in xs], heights, width, label=label, color=color,
                          yerr=yerr, capsize=3 if yerr else 0, error_kw={"elinewidth": 1, "ecolor": "#444c56"})
            # with error bars, the value sits inside its bar, clear of the whisker
            ax.bar_label(bars, labels=[fmt(values(side, n)) for n in group], fontsize=7,
                         **({"label_type": "center", "color": "white" if label == "tuned" else "#1f2328"} if yerr
                            else {"padding": 2}))
        _metric_axes(ax, xs, group, 1.1 if group is unit else None)
        if g == 0:
            ax.legend(fontsize=8)
    title = ("Base vs tuned" if base is not None and tuned is not None
             else "Tuned model" if tuned is not None else "Base model")
    fig.suptitle(title + (", with 95% intervals" if intervals and intervals.get("method") else ""))
    return _figure_png(fig)


def _error(height: float, interval) -> tuple[float, float]:
    """(below, above) the bar's top to draw its interval; none without one."""
    if not isinstance(interval, (list, tuple)) or len(interval) != 2:
        return 0.0, 0.0
    low, high = num(interval[0]), num(interval[1])
    if low is None or high is None:
        return 0.0, 0.0
    return max(0.0, height - low), max(0.0, high - height)


# The stages chart's colours by role; a second model of the same role takes the next shade.
_ROLE_COLORS = {"base": ("#9aa5b1", "#c5ccd3", "#6e7781"), "tuned": ("#2b7bba", "#1b9e77", "#7570b3", "#66a61e"),
                "teacher": ("#e07b39", "#f2b279", "#b35806")}


def stages_chart(comparison: dict) -> bytes | None:
    """Grouped bars per metric, one bar per model of every stage (the comparable ones,
    those evaluated on this stage's rows), in the comparison's order; None without
    matplotlib or without a value to draw."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib.figure import Figure
    except ImportError:
        return None
    models = [m for m in comparison.get("models") or [] if isinstance(m, dict) and m.get("comparable", True)]
    value = lambda m, n: num((m.get("metrics") or {}).get(n))  # noqa: E731
    names = [n for n in comparison.get("metrics") or [] if any(value(m, n) is not None for m in models)]
    if not names:
        return None
    in_unit = lambda n: all(0.0 <= value(m, n) <= 1.0 for m in models if value(m, n) is not None)  # noqa: E731
    unit = [n for n in names if in_unit(n)]
    groups = ([unit] if unit else []) + [[n] for n in names if not in_unit(n)]
    used: dict[str, int] = {}
    colors = []
    for m in models:
        shades = _ROLE_COLORS.get(m.get("role"), _ROLE_COLORS["tuned"])
        colors.append(shades[used.get(m.get("role"), 0) % len(shades)])
        used[m.get("role")] = used.get(m.get("role"), 0) + 1
    width = min(0.8 / len(models), 0.38)
    fig = Figure(figsize=(max(4.0, (0.35 * len(models) + 0.6) * len(names) + 2.5), 3.8))
    grid = fig.add_gridspec(1, len(groups), width_ratios=[len(g) + 0.5 for g in groups])
    for g, group in enumerate(groups):
        ax = fig.add_subplot(grid[0, g])
        xs = list(range(len(group)))
        for k, m in enumerate(models):
            offset = (k - (len(models) - 1) / 2) * width
            heights = [value(m, n) for n in group]
            bars = ax.bar([x + offset for x in xs], [h or 0.0 for h in heights], width, label=str(m.get("model")),
                          color=colors[k])
            ax.bar_label(bars, labels=[fmt(h) for h in heights], fontsize=6, padding=2,
                         rotation=90 if len(models) > 3 else 0)
        _metric_axes(ax, xs, group, 1.2 if group is unit else None)
        if g == 0:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0) if len(groups) == 1 else None)
    fig.suptitle("Every model of every stage")
    return _figure_png(fig)


def _confusion_chart(Figure, details: Any, title: str) -> bytes | None:
    cm = confusion(details)
    if cm is None:
        return None
    rows, columns, matrix = cm
    size = max(len(rows), len(columns))
    fig = Figure(figsize=(min(3 + 0.55 * size, 14), min(2.6 + 0.5 * size, 13)))
    ax = fig.add_subplot()
    image = ax.imshow(matrix, cmap="Blues", aspect="auto")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(len(columns)))
    ax.set_xticklabels([clip(c, 24) for c in columns], rotation=45, ha="right")
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([clip(r, 24) for r in rows])
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    ax.set_title(title)
    if size <= 25:
        top = max((v for r in matrix for v in r), default=0) or 1
        for i, r in enumerate(matrix):
            for j, v in enumerate(r):
                ax.text(j, i, count(v), ha="center", va="center", fontsize=8,
                        color="white" if v > top / 2 else "#1f2328")
    return _figure_png(fig)


def _metric_axes(ax, xs, names, top: float | None) -> None:
    """One panel of metrics side by side: named ticks, a light grid, scores (0 to 1) on one scale."""
    ax.set_xticks(xs)
    ax.set_xticklabels(names, rotation=20 if len(names) > 4 else 0)
    if top is not None:
        ax.set_ylim(0, top)
    ax.grid(axis="y", alpha=0.3)
