"""The verdict: one sentence on the headline metric that claims only what the intervals say.

The tuned model is compared with each baseline the run has — the base model, and the
most-frequent-answer baseline (always answering the training split's most frequent
answer) — by the 95% interval of the paired difference, tuned − baseline. "better" only
where that interval lies on the better side of 0, "worse" only where it lies on the
other, and the sentence names both comparisons at once, so that one margin is never
called better than the base model and no better than the baseline in two clauses that
read as a contradiction. metrics.json, the report and the run's closing lines all show
this one sentence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ftspec.runtime.report.results import clean, dig, interval_says, num

# What the interval of tuned − baseline says, as the verdict words it.
RELATION = {1: "better than", 0: "not shown to be better than", -1: "worse than"}


@dataclass(frozen=True)
class Comparison:
    """The tuned model against one baseline on one metric."""

    who: str  # as the claim names it: "base", "always answering 'yes'"
    short: str  # as the numbers name it: "base", "always 'yes'"
    value: float  # the baseline's score
    interval: Any  # the 95% interval of tuned − baseline, or None
    says: int | None  # interval_says of it: +1 better, 0 within noise, -1 worse, None without one


def verdict(names: list[str], s: dict) -> str:
    """One line on the headline metric (``s``: what metrics.json holds): is the tuned model
    better than the base model and than the most-frequent-answer baseline, each by more than
    the noise of the evaluated rows?"""
    base, tuned, headline, rows, split = s["base"], s["tuned"], s["headline"], s["rows"], s["split"]
    both = [n for n in names if num((base or {}).get(n)) is not None and num((tuned or {}).get(n)) is not None]
    on = f" on {rows} {split} rows" if rows is not None else ""
    if both:
        metric = headline if headline in both else both[0]
        comparisons = [_comparison(metric, s, "base", "base", base[metric], "tuned_minus_base")]
        comparisons += _majority(metric, s)
        return _sentence(metric, s, comparisons)
    if tuned is not None:
        metric = _shown_metric(names, headline, tuned)
        if not metric:
            return "the tuned model was evaluated but no metric was computed"
        majority = _majority(metric, s)
        if majority:
            return _sentence(metric, s, majority) + " (the base model was not evaluated)"
        return f"tuned model: {metric_label(metric, s)} {tuned[metric]:.3f}{on} (no baseline to compare with)"
    if base is not None:
        metric = _shown_metric(names, headline, base)
        if metric:
            return f"only the base model was evaluated: {metric_label(metric, s)} {base[metric]:.3f}{on}"
    return "no evaluation results: the held-out evaluation did not run or left no metrics"


def _comparison(metric: str, s: dict, who: str, short: str, value: float, difference: str) -> Comparison:
    interval = dig(s, "intervals", difference, metric)
    return Comparison(who, short, value, interval, interval_says(interval, metric))


def _majority(metric: str, s: dict) -> list[Comparison]:
    """The most-frequent-answer baseline's comparison, where the run has that baseline for ``metric``."""
    value = num((s.get("majority") or {}).get(metric))
    if value is None:
        return []
    answer = (s.get("majority_answers") or {}).get(metric)
    if isinstance(answer, str):
        shown = repr(answer if len(answer) <= 40 else answer[:39] + "…")
        who, short = f"always answering {shown}", f"always {shown}"
    else:
        who, short = "the most frequent answer", "majority"
    return [_comparison(metric, s, who, short, value, "tuned_minus_majority")]


def _sentence(metric: str, s: dict, comparisons: list[Comparison]) -> str:
    """The claim, then the numbers of each comparison: ``claim: base 0.500 → tuned 0.950 (+0.450,
    95% CI …); always 'yes' 0.500 → tuned 0.950 (…)``."""
    shown = metric_label(metric, s)
    t = s["tuned"][metric]
    numbers = []
    for c in comparisons:
        ci = interval_text(c.interval, signed=True)
        numbers.append(f"{c.short} {c.value:.3f} → tuned {t:.3f} ({clean(t - c.value):+.3f}"
                       + (f", 95% CI {ci})" if c.says is not None else "; no interval for this metric)"))
    return f"{_claim(shown, comparisons)}: {'; '.join(numbers)}"


def _claim(shown: str, comparisons: list[Comparison]) -> str:
    says = [c.says for c in comparisons]
    if None in says:  # too few rows, or a metric without an interval: no claim either way
        return f"tuned vs {' and '.join(c.who for c in comparisons)} on {shown}"
    noise = " (difference within noise)"
    if len(set(says)) == 1:  # the same relation to every baseline: said once
        joiner = " or than " if says[0] == 0 else " and than "
        within = "" if says[0] != 0 else noise if len(says) == 1 else " (differences within noise)"
        return f"tuned is {RELATION[says[0]]} {joiner.join(c.who for c in comparisons)} on {shown}{within}"
    first, second = comparisons
    # "but" where one comparison is a win and the other is not; "and" where neither is
    joiner = ", but" if 1 in says else ", and"
    return (f"tuned is {RELATION[first.says]} {first.who} on {shown}{noise if first.says == 0 else ''}"
            f"{joiner} {RELATION[second.says]} {second.who}{noise if second.says == 0 else ''}")


def _shown_metric(names: list[str], headline: str | None, side: dict) -> str | None:
    """The headline metric when this side has it, else the first one it has."""
    have = [n for n in names if num(side.get(n)) is not None]
    return (headline if headline in have else have[0]) if have else None


def metric_label(metric: str, s: dict) -> str:
    """A metric's name as the report shows it: which F1 ``f1`` is."""
    if metric != "f1":
        return metric
    f1 = dig(s, "details", "tuned", "f1") or dig(s, "details", "base", "f1")
    if not isinstance(f1, dict):
        return metric
    if f1.get("average") == "binary" and isinstance(f1.get("positive"), str):
        return f"f1 (positive: {f1['positive']})"
    return "f1 (macro)" if f1.get("average") == "macro" else metric


def interval_text(interval: Any, signed: bool = False) -> str:
    if not isinstance(interval, (list, tuple)) or len(interval) != 2 or any(num(x) is None for x in interval):
        return ""
    spec = "+.3f" if signed else ".3f"
    return f"{interval[0]:{spec}} to {interval[1]:{spec}}"
