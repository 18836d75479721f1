"""Bootstrap confidence intervals for the metrics of an evaluation, and for the paired
differences between its sides (the tuned model, the base model, the baseline).

numpy and sacrebleu come with the train extra; they are imported inside the functions
that use them, so importing this module is cheap.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ftspec.runtime.evaluation.scorers import (
    CLASSIFICATION,
    KNOWN,
    MODEL_METRICS,
    SCORERS,
    Scoring,
    as_text,
    clamp,
    f1_positive,
    label_set,
    prepare,
    row_accuracy,
)

# Every metric is written as per-row statistics S (rows × k) and a function of their
# column sums: accuracy is (correct, 1) and the sum's ratio, F1 the confusion matrix's
# cells, BLEU and chrF sacrebleu's sufficient statistics. A bootstrap resample is a row
# of counts W (how often each row was drawn), so every resample's value is f(W @ S):
# one matrix product per metric, and metrics that are not means of rows (f1_macro, BLEU)
# are recomputed on each resample exactly as on the whole split.

RESAMPLES = 1000
SEED = 0
LEVEL = 0.95
INTERVAL_METHOD = "paired percentile bootstrap over rows"


@dataclass
class _Statistic:
    rows: Any  # numpy array, rows × k
    value: Callable[[Any], Any]  # (resamples × k) sums -> (resamples,) values
    # (resamples × rows) counts -> (resamples × k) sums, where not counts @ rows
    reduce: Callable[[Any], Any] | None = None

    def resampled(self, counts):
        """The metric on each resample (a row of ``counts``: how often each row was drawn)."""
        return self.value(self.reduce(counts) if self.reduce is not None else counts @ self.rows)

    def whole(self) -> float:
        """The metric on the rows as they are."""
        import numpy as np

        return float(self.resampled(np.ones((1, len(self.rows))))[0])


def _ratio(sums):
    import numpy as np

    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sums[:, 1] > 0, sums[:, 0] / np.maximum(sums[:, 1], 1e-300), np.nan)


def _mean_statistic(values: list[float | None]) -> _Statistic:
    import numpy as np

    rows = np.array([[0.0, 0.0] if v is None else [float(v), 1.0] for v in values], dtype=float).reshape(-1, 2)
    return _Statistic(rows, _ratio)


def _classification_statistic(metric: dict, preds: list[str], refs: list[str], labels: list[str] | None) -> _Statistic:
    """The confusion matrix's cells as the statistic. Only the cells that occur are kept
    (rows sorted by cell, summed per cell), so many labels cost no memory."""
    import numpy as np

    preds = [p.strip() for p in preds]
    refs = [r.strip() for r in refs]
    label_list = label_set(labels, refs)
    other = len(label_list)  # the index of any answer that is not a label
    index = {label: i for i, label in enumerate(label_list)}
    ref_i = np.array([index.get(r, other) for r in refs], dtype=np.int64)
    pred_i = np.array([index.get(p, other) for p in preds], dtype=np.int64)
    cells = ref_i * (other + 1) + pred_i
    order = np.argsort(cells, kind="stable")
    present, starts = np.unique(cells[order], return_index=True)
    cell_ref, cell_pred = present // (other + 1), present % (other + 1)
    diagonal = (cell_ref == cell_pred) & (cell_ref < other)
    name = metric["name"]
    positive = f1_positive(metric, label_list)[0] if name == "f1" else None
    fixed = bool(labels)  # given labels count in every resample; else a resample's own references are its labels

    def reduce(counts):
        return np.add.reduceat(counts[:, order], starts, axis=1)

    def per_label(sums, of):
        out = np.zeros((len(sums), other + 1))
        np.add.at(out, (slice(None), of), sums)
        return out[:, :other]

    def value(sums):
        tp = np.zeros((len(sums), other + 1))
        tp[:, cell_ref[diagonal]] = sums[:, diagonal]
        tp = tp[:, :other]
        predicted, actual = per_label(sums, cell_pred), per_label(sums, cell_ref)
        fp, fn = predicted - tp, actual - tp
        active = np.ones_like(actual) if fixed else (actual > 0).astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            if name == "f1_micro":
                t, f_p, f_n = (tp * active).sum(1), (fp * active).sum(1), (fn * active).sum(1)
                return np.where(t > 0, 2 * t / np.maximum(2 * t + f_p + f_n, 1), 0.0)
            precision = np.where(predicted > 0, tp / np.maximum(predicted, 1), 0.0)
            recall = np.where(actual > 0, tp / np.maximum(actual, 1), 0.0)
            f1 = np.where(tp > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)
        if name == "f1" and positive is not None:
            if positive not in index:  # a label that occurs nowhere: never a true positive
                return np.zeros(len(sums))
            return f1[:, index[positive]]
        chosen = {"precision": precision, "recall": recall}.get(name, f1)
        return (chosen * active).sum(axis=1) / np.maximum(active.sum(axis=1), 1)

    return _Statistic(np.zeros((len(cells), 0)), value, reduce)


def _sacrebleu_statistic(name: str, preds: list[str], refs: list[str]) -> _Statistic:
    import numpy as np
    from sacrebleu.metrics import BLEU, CHRF

    metric = BLEU() if name == "bleu" else CHRF()
    rows = np.array(metric._extract_corpus_statistics(preds, [refs]), dtype=float)

    def value(sums):
        return np.array([clamp(metric._compute_score_from_stats(list(s)).score / 100) for s in sums])

    return _Statistic(rows, value)


def _statistic(metric: dict, preds: list[str], refs: list[str], labels: list[str] | None,
               scoring: Scoring | None = None) -> _Statistic | None:
    """The per-row statistics of one metric over raw predictions and references (its
    extraction applied here, as ``score`` applies it); None for a metric that needs a model."""
    name = metric["name"]
    if name in MODEL_METRICS or name not in KNOWN:
        return None
    # Extraction, then the metric's declared normalisation: what score() compares.
    preds, refs = prepare(metric, [as_text(p) for p in preds], [as_text(r) for r in refs])
    if name == "accuracy":
        return _mean_statistic(row_accuracy(preds, refs))
    if name in CLASSIFICATION:
        return _classification_statistic(metric, preds, refs, labels)
    if name in ("bleu", "chrf"):
        return _sacrebleu_statistic(name, preds, refs)
    _, per = SCORERS[name](metric, preds, refs, scoring or Scoring(labels))
    return _mean_statistic(per)


def resample_counts(n: int, resamples: int = RESAMPLES, seed: int = SEED, chunk: int = 100):
    """Chunks of (≤ chunk) × n arrays: how often each row is drawn in each bootstrap
    resample, the same for the same seed. A chunk at a time keeps memory small on large splits."""
    import numpy as np

    rng = np.random.default_rng(seed)
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        drawn = rng.integers(0, n, size=(size, n)) + (np.arange(size) * n)[:, None]
        yield np.bincount(drawn.ravel(), minlength=size * n).reshape(size, n).astype(float)


def _percentile(values, level: float) -> list[float] | None:
    import numpy as np

    values = values[np.isfinite(values)]
    if not len(values):
        return None
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return [round(float(low), 12) + 0.0, round(float(high), 12) + 0.0]


def bootstrap_intervals(metrics: list[dict], references: list[str], predictions: dict[str, Any],
                        labels: list[str] | None = None, differences: tuple[tuple[str, str], ...] = (),
                        scores: dict[str, dict[str, list[float | None]]] | None = None,
                        resamples: int = RESAMPLES, seed: int = SEED, level: float = LEVEL) -> dict:
    """Confidence intervals for each metric of each side and for paired differences.

    ``predictions``: side -> the side's predictions, one per reference, either one list
    for every metric or metric name -> list (the most-frequent-answer baseline predicts
    per metric). ``differences``: (a, b) pairs for which the interval of a − b is given.
    ``scores``: side -> metric -> per-row scores for metrics that need a model or are
    scored elsewhere (judge, a preference pair's accuracy or margin; None where a row
    has no score), bootstrapped as the mean of the rows that have one.

    The same resamples of the rows serve every side and metric, so a difference is
    paired: a row drawn twice counts twice for both. A percentile interval at ``level``
    from ``resamples`` resamples with a fixed ``seed``: the same inputs give the same
    intervals. Returns {side: {metric: [low, high] | None}, "a_minus_b": {…}, "method": …}.
    """
    import numpy as np

    n = len(references)
    out: dict[str, Any] = {"method": INTERVAL_METHOD, "resamples": resamples, "seed": seed, "level": level, "rows": n}
    for side in predictions:
        out[side] = {}
    for a, b in differences:
        out[f"{a}_minus_{b}"] = {}
    if n < 2:
        return out
    names, stats = _statistics(metrics, references, predictions, labels, scores)
    parts: dict[tuple[str, str], list] = {k: [] for k in stats}
    for counts in resample_counts(n, resamples, seed):
        for k, stat in stats.items():
            parts[k].append(np.asarray(stat.resampled(counts), dtype=float))
    values = {k: np.concatenate(v) for k, v in parts.items()}
    for name in names:
        for side in predictions:
            out[side][name] = _percentile(values[name, side], level) if (name, side) in values else None
        for a, b in differences:
            both = (name, a) in values and (name, b) in values
            out[f"{a}_minus_{b}"][name] = _percentile(values[name, a] - values[name, b], level) if both else None
    return out


def point_values(metrics: list[dict], references: list[str], predictions: dict[str, Any],
                 labels: list[str] | None = None,
                 scores: dict[str, dict[str, list[float | None]]] | None = None) -> dict[str, dict[str, float | None]]:
    """Each metric of each side on the rows as they are, from the same per-row statistics the
    intervals resample (arguments as :func:`bootstrap_intervals`'): {side: {metric: value | None}},
    None where a metric has no statistic for the side or no row to be computed on."""
    import math

    names, stats = _statistics(metrics, references, predictions, labels, scores)
    out: dict[str, dict[str, float | None]] = {side: {} for side in predictions}
    for name in names:
        for side in predictions:
            value = stats[name, side].whole() if references and (name, side) in stats else None
            out[side][name] = round(value, 12) + 0.0 if value is not None and math.isfinite(value) else None
    return out


def _statistics(metrics: list[dict], references: list[str], predictions: dict[str, Any], labels: list[str] | None,
                scores: dict[str, dict[str, list[float | None]]] | None) -> tuple[list[str], dict]:
    """The metrics' names (each once, in order) and the per-row statistic of each (metric, side) that has one."""
    n = len(references)
    scoring = Scoring(labels)
    for metric in metrics:
        if metric.get("name") == "json_schema":
            scoring.validator(metric)
    stats: dict[tuple[str, str], _Statistic] = {}
    names: list[str] = []
    for metric in metrics:
        name = metric.get("name")
        if name in names:
            continue
        names.append(name)
        for side, preds in predictions.items():
            if isinstance(preds, dict):
                preds = preds.get(name)
            if name in MODEL_METRICS or name not in KNOWN:  # judge, preference metrics: means of row scores
                per = ((scores or {}).get(side) or {}).get(name)
                stat = _mean_statistic(per) if per is not None and len(per) == n else None
            elif preds is None or len(preds) != n:
                stat = None
            else:
                stat = _statistic(metric, preds, references, labels, scoring)
            if stat is not None:
                stats[name, side] = stat
    return names, stats
