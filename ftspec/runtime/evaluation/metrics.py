"""Metrics computed from predictions and references, without a model.

``score`` takes the spec's metric list (as plain dicts), the model's predictions and
the references, applies each metric's answer extraction, and returns aggregate and
per-example scores plus classification details. ``perplexity`` and ``judge`` need a
model, so the caller computes them; ``score`` leaves them out.

The scoring libraries (scikit-learn, sacrebleu, rouge-score, jsonschema) are imported
inside the functions that use them, so importing this module is cheap; it never
imports torch.
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable

from ftspec.catalog import metrics as metric_catalog

# The catalog's families (ftspec.catalog.metrics): ``score`` computes the classification and
# text metrics, from the answers alone; the model metrics are computed where the model is.
CLASSIFICATION = set(metric_catalog.names(family="classification"))
MODEL_METRICS = set(metric_catalog.names(family="model"))
TEXT_METRICS = set(metric_catalog.names(family="text"))
KNOWN = CLASSIFICATION | MODEL_METRICS | TEXT_METRICS

OTHER = "(other)"


@dataclass
class MetricResult:
    aggregate: dict[str, float | None] = field(default_factory=dict)
    per_example: list[dict[str, float]] = field(default_factory=list)
    extracted: list[dict] = field(default_factory=list)
    details: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- extraction


@lru_cache(maxsize=64)
def _compiled_template(text: str):
    from ftspec.data.templates import environment

    return environment().from_string(text)


def _template_text(template: Any) -> str:
    if isinstance(template, str):
        return template
    if isinstance(template, dict):
        return template["text"]
    return getattr(template, "text")


def extract(text: str, spec: dict | None) -> str:
    """The answer inside ``text`` as ``spec`` (an ``Extract`` as a dict) finds it.

    ``regex``: all matches, the first or last per ``which`` (default ``last``); group 1
    when the pattern has a group, else the whole match; no match gives "".
    ``template``: the sandboxed jinja text rendered with the variable ``text``; any
    error gives "". With no spec the text itself. The result is stripped.
    """
    text = "" if text is None else str(text)
    if not spec:
        return text.strip()
    regex = spec.get("regex")
    template = spec.get("template")
    if regex is not None:
        pattern = compile_bounded(regex)
        matches = bounded_matches(pattern, text)
        if not matches:
            return ""
        match = matches[0] if spec.get("which", "last") == "first" else matches[-1]
        answer = match.group(1) if pattern.groups >= 1 else match.group(0)
        return (answer or "").strip()
    if template is not None:
        try:
            from ftspec.data.templates import render

            rendered = render(_compiled_template(_template_text(template)), {"text": text})
        except Exception:  # syntax, undefined, sandbox and type errors alike
            return ""
        return str(rendered).strip()
    return text.strip()


# What a prediction whose extraction found nothing is scored as: equal to no reference.
NO_ANSWER = "\x00(no answer)"

# A spec's regular expression meets text the model wrote: a pattern that backtracks
# without end on some output (``(a|aa)+$``) must not hang the evaluation. The `regex`
# package (re's syntax) can stop a match after a time; such a text counts as no match.
REGEX_SECONDS = 1.0


@lru_cache(maxsize=64)
def compile_bounded(pattern: str):
    import regex

    return regex.compile(pattern)


def bounded_matches(pattern, text: str, first_only: bool = False) -> list:
    """The matches of a compiled ``compile_bounded`` pattern in ``text``; none when
    matching takes longer than REGEX_SECONDS."""
    try:
        if first_only:
            m = pattern.search(text, timeout=REGEX_SECONDS)
            return [m] if m else []
        return list(pattern.finditer(text, timeout=REGEX_SECONDS))
    except TimeoutError:
        return []


# --------------------------------------------------------------------------- per-metric scorers
# Each takes (predictions, references) and returns (aggregate, per-example scores).


def _mean(values: list[float]) -> float:
    return float(sum(values) / len(values))


def _clamp(value: float) -> float:
    return float(min(1.0, max(0.0, value)))


def _accuracy(preds: list[str], refs: list[str]) -> list[float]:
    return [1.0 if p.strip() == r.strip() else 0.0 for p, r in zip(preds, refs)]


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower-case, drop punctuation and articles, collapse whitespace."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _exact_match(preds, refs):
    scores = [1.0 if normalize_answer(p) == normalize_answer(r) else 0.0 for p, r in zip(preds, refs)]
    return _mean(scores), scores


def _token_f1_one(pred: str, ref: str) -> float:
    p_tokens = normalize_answer(pred).split()
    r_tokens = normalize_answer(ref).split()
    if not p_tokens or not r_tokens:
        return 1.0 if p_tokens == r_tokens else 0.0
    same = sum((Counter(p_tokens) & Counter(r_tokens)).values())
    if same == 0:
        return 0.0
    precision = same / len(p_tokens)
    recall = same / len(r_tokens)
    return 2 * precision * recall / (precision + recall)


def _token_f1(preds, refs):
    scores = [_token_f1_one(p, r) for p, r in zip(preds, refs)]
    return _mean(scores), scores


def _rouge_l(preds, refs):
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"])
    scores = [_clamp(scorer.score(r, p)["rougeL"].fmeasure) for p, r in zip(preds, refs)]
    return _mean(scores), scores


def _bleu(preds, refs):
    import sacrebleu

    corpus = _clamp(sacrebleu.corpus_bleu(preds, [refs]).score / 100)
    scores = [_clamp(sacrebleu.sentence_bleu(p, [r]).score / 100) for p, r in zip(preds, refs)]
    return corpus, scores


def _chrf(preds, refs):
    import sacrebleu

    corpus = _clamp(sacrebleu.corpus_chrf(preds, [refs]).score / 100)
    scores = [_clamp(sacrebleu.sentence_chrf(p, [r]).score / 100) for p, r in zip(preds, refs)]
    return corpus, scores


def _parse_json(text: str) -> tuple[bool, Any]:
    try:
        return True, json.loads(text.strip())
    except (ValueError, RecursionError):
        return False, None


def _json_valid(preds, refs):
    scores = [1.0 if _parse_json(p)[0] else 0.0 for p in preds]
    return _mean(scores), scores


def _schema_of(metric: dict) -> Any:
    raw = metric.get("schema")
    if isinstance(raw, dict) and "text" in raw:
        raw = raw["text"]
    if not isinstance(raw, str):
        raise ValueError("metric 'json_schema' needs the schema's text (schema: {path, text, sha256})")
    try:
        schema = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"metric 'json_schema': the schema is not valid JSON: {exc}") from None
    return schema


def _json_schema_validator(schema: Any):
    import jsonschema
    from jsonschema import validators

    cls = validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except jsonschema.exceptions.SchemaError as exc:
        raise ValueError(f"metric 'json_schema': the schema is not a valid JSON Schema: {exc.message}") from None
    return cls(schema)


def _json_schema(validator) -> Callable:
    def run(preds, refs):
        scores = []
        for p in preds:
            ok, value = _parse_json(p)
            valid = False
            if ok:
                try:
                    valid = bool(validator.is_valid(value))
                except Exception:  # an unresolvable $ref and the like: not valid
                    valid = False
            scores.append(1.0 if valid else 0.0)
        return _mean(scores), scores

    return run


# --------------------------------------------------------------------------- classification


def _label_set(labels: list[str] | None, refs: list[str]) -> list[str]:
    if labels:
        seen: dict[str, None] = {}
        for label in labels:
            seen.setdefault(str(label).strip(), None)
        return list(seen)
    return sorted(set(refs))


def _classify(preds: list[str], refs: list[str], labels: list[str] | None) -> dict:
    """scikit-learn's per-label and averaged scores, and the confusion matrix."""
    from sklearn.metrics import precision_recall_fscore_support

    preds = [p.strip() for p in preds]
    refs = [r.strip() for r in refs]
    label_list = _label_set(labels, refs)
    averages = {}
    for average in ("macro", "micro"):
        p, r, f, _ = precision_recall_fscore_support(refs, preds, labels=label_list, average=average,
                                                     zero_division=0)
        averages[average] = (float(p), float(r), float(f))
    p, r, f, s = precision_recall_fscore_support(refs, preds, labels=label_list, average=None, zero_division=0)
    per_label = {
        label: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
        for i, label in enumerate(label_list)
    }

    index = {label: i for i, label in enumerate(label_list)}
    other_pred = any(x not in index for x in preds)
    other_ref = any(x not in index for x in refs)
    columns = label_list + ([OTHER] if other_pred else [])
    rows = label_list + ([OTHER] if other_ref else [])
    matrix = [[0] * len(columns) for _ in rows]
    for ref, pred in zip(refs, preds):
        matrix[index.get(ref, len(label_list))][index.get(pred, len(label_list))] += 1

    return {
        "averages": averages,
        "positive_f1": lambda label: _one_label_f1(preds, refs, label),
        "details": {
            "labels": label_list,
            "per_label": per_label,
            "confusion_matrix": {"labels": columns, "rows": rows, "matrix": matrix},
        },
    }


def f1_positive(metric: dict, labels: list[str]) -> tuple[str | None, str]:
    """Which label ``f1`` is the F1 of, and why: the label the metric names
    (``positive``), else with exactly two labels the second in sorted order (as
    scikit-learn's binary F1 with ``pos_label`` the larger label); None with more
    labels, where ``f1`` is the macro average."""
    positive = metric.get("positive")
    if positive is not None:
        return str(positive).strip(), "named by the spec"
    if len(labels) == 2:
        return sorted(labels)[1], "the second of the two labels in sorted order"
    return None, "macro average over the labels"


def _classification_value(metric: dict, result: dict, correct: list[float]) -> float:
    name = metric["name"]
    if name == "accuracy":
        return _mean(correct)
    if name == "f1":
        positive, _ = f1_positive(metric, result["details"]["labels"])
        if positive is not None:
            return result["positive_f1"](positive)
    macro_p, macro_r, macro_f = result["averages"]["macro"]
    return {
        "precision": macro_p,
        "recall": macro_r,
        "f1": macro_f,
        "f1_macro": macro_f,
        "f1_micro": result["averages"]["micro"][2],
    }[name]


def _one_label_f1(preds: list[str], refs: list[str], label: str) -> float:
    """F1 of one label against the rest (zero when it is never predicted nor referenced)."""
    tp = sum(1 for p, r in zip(preds, refs) if p == r == label)
    fp = sum(1 for p, r in zip(preds, refs) if p == label != r)
    fn = sum(1 for p, r in zip(preds, refs) if r == label != p)
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


# --------------------------------------------------------------------------- score


@dataclass
class _Scoring:
    """What the metrics of one scoring share: the labels given, the classifications made
    so far (one per answer extraction), the JSON Schema validators (one per schema) and
    the details the metrics report."""

    labels: list[str] | None
    details: dict = field(default_factory=dict)
    classified: dict[str, dict] = field(default_factory=dict)
    validators: dict[str, Any] = field(default_factory=dict)

    def validator(self, metric: dict) -> Any:
        """The validator of a json_schema metric's schema; ValueError for a bad schema."""
        schema = _schema_of(metric)
        key = json.dumps(schema, sort_keys=True)
        if key not in self.validators:
            self.validators[key] = _json_schema_validator(schema)
        return self.validators[key]


# (metric definition, predictions and references after its extraction, what the scoring
# shares) -> (the metric's value, each row's score)
Scorer = Callable[[dict, list[str], list[str], _Scoring], tuple[float, list[float]]]


def _answers_only(function: Callable[[list[str], list[str]], tuple[float, list[float]]]) -> Scorer:
    """A metric that needs nothing but the predictions and references, as a :data:`Scorer`."""
    def run(metric: dict, preds: list[str], refs: list[str], scoring: _Scoring) -> tuple[float, list[float]]:
        return function(preds, refs)

    return run


def _classification(metric: dict, preds: list[str], refs: list[str], scoring: _Scoring) -> tuple[float, list[float]]:
    key = _extract_key(metric.get("extract"))
    if key not in scoring.classified:
        scoring.classified[key] = _classify(preds, refs, scoring.labels)
    classified = scoring.classified[key]
    scoring.details.setdefault("classification", classified["details"])
    per = _accuracy(preds, refs)
    value = _classification_value(metric, classified, per)
    if metric["name"] == "f1":
        positive, why = f1_positive(metric, classified["details"]["labels"])
        scoring.details["f1"] = ({"average": "binary", "positive": positive, "why": why} if positive is not None
                                 else {"average": "macro", "why": why})
    return value, per


def _schema_conformance(metric: dict, preds: list[str], refs: list[str], scoring: _Scoring) -> tuple[float, list[float]]:
    return _json_schema(scoring.validator(metric))(preds, refs)


# The implementation of every metric of the catalog's classification and text families, by name.
SCORERS: dict[str, Scorer] = {
    "accuracy": _classification,
    "precision": _classification,
    "recall": _classification,
    "f1": _classification,
    "f1_macro": _classification,
    "f1_micro": _classification,
    "exact_match": _answers_only(_exact_match),
    "token_f1": _answers_only(_token_f1),
    "rouge_l": _answers_only(_rouge_l),
    "bleu": _answers_only(_bleu),
    "chrf": _answers_only(_chrf),
    "json_valid": _answers_only(_json_valid),
    "json_schema": _schema_conformance,
}


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _extract_key(spec: dict | None) -> str:
    if not spec:
        return ""
    spec = dict(spec)
    if spec.get("template") is not None:
        spec["template"] = _template_text(spec["template"])
    return json.dumps(spec, sort_keys=True, default=str)


def score(metrics: list[dict], predictions: list[str], references: list[str],
          labels: list[str] | None = None) -> MetricResult:
    """Score ``predictions`` against ``references`` with every metric in ``metrics``
    that needs no model (``perplexity`` and ``judge`` are skipped).

    Each metric is a dict with ``name``, optional ``extract`` (see ``extract``) and,
    for ``json_schema``, ``schema: {"text": ...}``. ``labels`` fixes the label set of
    the classification metrics (default: the sorted distinct references).
    Raises ValueError for an unknown metric name, a bad schema or mismatched lengths.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    names = [metric.get("name") for metric in metrics]
    unknown = [name for name in names if name not in KNOWN]
    if unknown:
        raise ValueError(f"unknown metric{'s' if len(unknown) > 1 else ''}: {', '.join(map(str, unknown))} "
                         f"(known: {', '.join(sorted(KNOWN))})")
    scoring = _Scoring(labels)
    # Check schemas before any scoring, so a bad one fails fast.
    for metric in metrics:
        if metric.get("name") == "json_schema":
            scoring.validator(metric)

    preds = [_text(p) for p in predictions]
    refs = [_text(r) for r in references]
    n = len(preds)
    result = MetricResult(per_example=[{} for _ in range(n)], extracted=[{} for _ in range(n)],
                          details=scoring.details)
    extractions: dict[str, tuple[list[str], list[str]]] = {}

    for metric in metrics:
        name = metric["name"]
        if name in MODEL_METRICS:
            continue
        if n == 0:
            result.aggregate[name] = None
            continue
        spec = metric.get("extract")
        key = _extract_key(spec)
        if key not in extractions:
            if spec:
                extractions[key] = ([extract(p, spec) for p in preds], [extract(r, spec) for r in refs])
            else:
                extractions[key] = (preds, refs)
        m_preds, m_refs = extractions[key]
        if spec:
            for j in range(n):
                result.extracted[j][name] = {"prediction": m_preds[j], "reference": m_refs[j]}
            result.details.setdefault("extraction", {})[name] = {
                "predictions_without_answer": sum(1 for p in m_preds if not p),
                "references_without_answer": sum(1 for r in m_refs if not r)}
            # An extraction that finds nothing is a miss, never a match (not even with a
            # reference the extraction found nothing in either).
            m_preds = [p if p else NO_ANSWER for p in m_preds]

        value, per = SCORERS[name](metric, m_preds, m_refs, scoring)
        result.aggregate[name] = _clamp(value)
        for j, s in enumerate(per):
            result.per_example[j][name] = float(s)
    return result


# --------------------------------------------------------------------------- the most-frequent-answer baseline


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
    refs = [_text(r) for r in train_references]
    out: dict[str, str | None] = {}
    cache: dict[str, str | None] = {}
    for metric in metrics:
        name = metric.get("name")
        if name in MODEL_METRICS or name not in KNOWN:
            continue
        spec = metric.get("extract")
        key = _extract_key(spec)
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


# --------------------------------------------------------------------------- confidence intervals
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
    label_list = _label_set(labels, refs)
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
        return np.array([_clamp(metric._compute_score_from_stats(list(s)).score / 100) for s in sums])

    return _Statistic(rows, value)


def _statistic(metric: dict, preds: list[str], refs: list[str], labels: list[str] | None,
               scoring: _Scoring | None = None) -> _Statistic | None:
    """The per-row statistics of one metric over raw predictions and references (its
    extraction applied here, as ``score`` applies it); None for a metric that needs a model."""
    name = metric["name"]
    if name in MODEL_METRICS or name not in KNOWN:
        return None
    spec = metric.get("extract")
    preds = [_text(p) for p in preds]
    refs = [_text(r) for r in refs]
    if spec:
        preds = [extract(p, spec) or NO_ANSWER for p in preds]
        refs = [extract(r, spec) for r in refs]
    if name == "accuracy":
        return _mean_statistic(_accuracy(preds, refs))
    if name in CLASSIFICATION:
        return _classification_statistic(metric, preds, refs, labels)
    if name in ("bleu", "chrf"):
        return _sacrebleu_statistic(name, preds, refs)
    _, per = SCORERS[name](metric, preds, refs, scoring or _Scoring(labels))
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
    scoring = _Scoring(labels)
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
