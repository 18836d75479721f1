"""The most-frequent-answer baseline: what a model that always gives the training
split's most frequent answer would score, the floor a fine-tuned model should clear."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Mapping

from ftspec.runtime.evaluation.extraction import extract, extraction_key
from ftspec.runtime.evaluation.scorers import KNOWN, MODEL_METRICS, as_text, score

# What the baseline keeps of a training split of any size: at most this many distinct
# references, holding at most this many characters in all. A row whose reference is new
# once either is reached is counted (ReferenceCounts.other), not kept: past a hundred
# thousand distinct answers there is no majority answer worth the memory.
MAX_DISTINCT_REFERENCES = 100_000
MAX_REFERENCE_CHARS = 64 << 20


@dataclass
class ReferenceCounts:
    """How often each reference of the training split occurs, in the order first seen."""

    counts: Counter = field(default_factory=Counter)  # reference -> rows (first seen first)
    rows: int = 0  # the records read, those without a reference included
    other: int = 0  # rows whose reference was new once the caps were reached: counted, not kept


def count_references(references: Iterable[str | None], max_distinct: int | None = None,
                     max_chars: int | None = None) -> ReferenceCounts:
    """Count the references of a stream of training records (None: a record without one),
    one at a time, keeping at most ``max_distinct`` distinct ones of ``max_chars`` characters
    in all (by default :data:`MAX_DISTINCT_REFERENCES` and :data:`MAX_REFERENCE_CHARS`)."""
    max_distinct = MAX_DISTINCT_REFERENCES if max_distinct is None else max_distinct
    max_chars = MAX_REFERENCE_CHARS if max_chars is None else max_chars
    out = ReferenceCounts()
    chars = 0
    for ref in references:
        out.rows += 1
        if ref is None:
            continue
        if ref in out.counts:
            out.counts[ref] += 1
        elif len(out.counts) < max_distinct and chars + len(ref) <= max_chars:
            out.counts[ref] = 1
            chars += len(ref)
        else:
            out.other += 1
    return out


def most_frequent(answers: Iterable[str | None] | Mapping[str | None, int]) -> str | None:
    """The most frequent non-empty answer (stripped), of a list of answers or of answers with
    their counts; a tie goes to the first in sorted order."""
    pairs = answers.items() if isinstance(answers, Mapping) else ((a, 1) for a in answers)
    counts: Counter = Counter()
    for a, n in pairs:
        if a and a.strip():
            counts[a.strip()] += n
    if not counts:
        return None
    return min(counts, key=lambda a: (-counts[a], a))


def majority_predictions(metrics: list[dict], train_references: Mapping[str, int]) -> dict[str, str | None]:
    """For each metric that needs no model, what the most-frequent-answer baseline predicts
    for every row: a training reference whose answer (as the metric's extraction finds it)
    is the most frequent answer of the training references; None without any.

    ``train_references``: each training reference with its number of rows, in the order
    first seen (:func:`count_references`); the answer predicted is the first seen of those
    whose answer is the most frequent, as it was over the list of references.

    The baseline learns from the training split only, never from the rows it is scored on.
    """
    refs: Counter = Counter()
    for r, n in train_references.items():
        refs[as_text(r)] += n
    out: dict[str, str | None] = {}
    cache: dict[str, str | None] = {}
    for metric in metrics:
        name = metric.get("name")
        if name in MODEL_METRICS or name not in KNOWN:
            continue
        spec = metric.get("extract")
        key = extraction_key(spec)
        if key not in cache:
            answers = {r: extract(r, spec) if spec else r.strip() for r in refs}
            tally: Counter = Counter()
            for r, n in refs.items():
                tally[answers[r]] += n
            top = most_frequent(tally)
            cache[key] = None if top is None else next(r for r, a in answers.items() if a.strip() == top).strip()
        out[name] = cache[key]
    return out


def score_majority(metrics: list[dict], train_references: Mapping[str, int], references: list[str],
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
