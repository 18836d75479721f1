"""The most-frequent-answer baseline: what a model that always gives the training
split's most frequent answer would score, the floor a fine-tuned model should clear."""

from __future__ import annotations

from collections import Counter

from ftspec.runtime.evaluation.extraction import extract, extraction_key
from ftspec.runtime.evaluation.scorers import KNOWN, MODEL_METRICS, as_text, score


def most_frequent(answers: list[str]) -> str | None:
    """The most frequent non-empty answer (stripped); a tie goes to the first in sorted order."""
    counts = Counter(a.strip() for a in answers if a and a.strip())
    if not counts:
        return None
    return min(counts, key=lambda a: (-counts[a], a))


def majority_predictions(metrics: list[dict], train_references: list[str]) -> dict[str, str | None]:
    """For each metric that needs no model, what the most-frequent-answer baseline predicts
    for every row: a training reference whose answer (as the metric's extraction finds it)
    is the most frequent answer of the training references; None without any.

    The baseline learns from the training split only, never from the rows it is scored on.
    """
    refs = [as_text(r) for r in train_references]
    out: dict[str, str | None] = {}
    cache: dict[str, str | None] = {}
    for metric in metrics:
        name = metric.get("name")
        if name in MODEL_METRICS or name not in KNOWN:
            continue
        spec = metric.get("extract")
        key = extraction_key(spec)
        if key not in cache:
            answers = [extract(r, spec) for r in refs] if spec else [r.strip() for r in refs]
            top = most_frequent(answers)
            cache[key] = None if top is None else next(r for r, a in zip(refs, answers) if a.strip() == top).strip()
        out[name] = cache[key]
    return out


def score_majority(metrics: list[dict], train_references: list[str], references: list[str],
                   labels: list[str] | None = None) -> tuple[dict[str, float | None], dict[str, str | None]]:
    """The most-frequent-answer baseline scored on ``references`` with every metric that
    needs no model: (metric -> value, metric -> the answer it predicts)."""
    chosen = majority_predictions(metrics, train_references)
    values: dict[str, float | None] = {}
    for metric in metrics:
        name = metric.get("name")
        if name not in chosen:
            continue
        answer = chosen[name]
        if answer is None or not references:
            values[name] = None
            continue
        values[name] = score([metric], [answer] * len(references), references, labels).aggregate.get(name)
    answers = {}
    for metric in metrics:
        if metric.get("name") in chosen:
            spec = metric.get("extract")
            answer = chosen[metric["name"]]
            answers[metric["name"]] = None if answer is None else (extract(answer, spec) if spec else answer)
    return values, answers
