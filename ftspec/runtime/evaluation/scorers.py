"""Metrics computed from predictions and references, without a model.

``score`` takes the spec's metric list (as plain dicts), the model's predictions and
the references, applies each metric's answer extraction (:mod:`.extraction`), and
returns aggregate and per-example scores plus classification details, computing each
metric with its entry in :data:`SCORERS`. ``perplexity`` and ``judge`` need a model,
so the caller computes them; ``score`` leaves them out. The most-frequent-answer
baseline is in :mod:`.baseline`, the confidence intervals in :mod:`.intervals`.

The scoring libraries (scikit-learn, sacrebleu, rouge-score, jsonschema) are imported
inside the functions that use them, so importing this module is cheap; it never
imports torch.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

from ftspec.catalog import metrics as metric_catalog
from ftspec.runtime.evaluation.extraction import NO_ANSWER, extract, extraction_key

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


# --------------------------------------------------------------------------- per-metric scorers
# Each takes (predictions, references) and returns (aggregate, per-example scores).


def _mean(values: list[float]) -> float:
    return float(sum(values) / len(values))


def clamp(value: float) -> float:
    """``value`` kept within [0, 1], the range every score is reported in."""
    return float(min(1.0, max(0.0, value)))


# How the classification metrics compare labels (one confusion matrix serves them all, so
# they share one normalisation; tests/catalog/test_metric_catalog.py holds them to it).
LABELS = metric_catalog.normalization("accuracy")


def normalizer(metric: dict) -> Callable[[str], str]:
    """The normalisation a metric compares answers and references after: the plan's
    (eval.metrics.N.normalization), else its catalog row's (ftspec.catalog.metrics)."""
    chosen = metric.get("normalization") or metric_catalog.get(metric["name"]).normalization
    return metric_catalog.NORMALIZATIONS[chosen].apply if chosen else (lambda text: text)


def prepare(metric: dict, preds: list[str], refs: list[str],
            extracted: tuple[list[str], list[str]] | None = None) -> tuple[list[str], list[str]]:
    """Predictions and references as a metric compares them: its answer extraction
    applied (``extracted``, where the caller made it already; a prediction it finds
    nothing in is NO_ANSWER, equal to no reference), then its normalisation. The scorers
    below compare what this returns as it is."""
    spec = metric.get("extract")
    if spec:
        preds, refs = extracted or ([extract(p, spec) for p in preds], [extract(r, spec) for r in refs])
    normalize = normalizer(metric)
    return ([normalize(p) if p or not spec else NO_ANSWER for p in preds], [normalize(r) for r in refs])


def row_accuracy(preds: list[str], refs: list[str]) -> list[float]:
    """Each row's accuracy: 1.0 where the prediction is the reference (both as prepared), else 0.0."""
    return [1.0 if p == r else 0.0 for p, r in zip(preds, refs)]


def _exact_match(preds, refs):
    scores = row_accuracy(preds, refs)
    return _mean(scores), scores


def _token_f1_one(pred: str, ref: str) -> float:
    p_tokens = pred.split()
    r_tokens = ref.split()
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
    scores = [clamp(scorer.score(r, p)["rougeL"].fmeasure) for p, r in zip(preds, refs)]
    return _mean(scores), scores


def _bleu(preds, refs):
    import sacrebleu

    corpus = clamp(sacrebleu.corpus_bleu(preds, [refs]).score / 100)
    scores = [clamp(sacrebleu.sentence_bleu(p, [r]).score / 100) for p, r in zip(preds, refs)]
    return corpus, scores


def _chrf(preds, refs):
    import sacrebleu

    corpus = clamp(sacrebleu.corpus_chrf(preds, [refs]).score / 100)
    scores = [clamp(sacrebleu.sentence_chrf(p, [r]).score / 100) for p, r in zip(preds, refs)]
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


def label_set(labels: list[str] | None, refs: list[str]) -> list[str]:
    """The classification's labels: those given (normalised as the answers are, in their
    order, once each), else the distinct references in sorted order."""
    if labels:
        seen: dict[str, None] = {}
        for label in labels:
            seen.setdefault(LABELS.apply(str(label)), None)
        return list(seen)
    return sorted(set(refs))


def _classify(preds: list[str], refs: list[str], labels: list[str] | None) -> dict:
    """scikit-learn's per-label and averaged scores, and the confusion matrix."""
    from sklearn.metrics import precision_recall_fscore_support

    preds = [p.strip() for p in preds]
    refs = [r.strip() for r in refs]
    label_list = label_set(labels, refs)
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
        return LABELS.apply(str(positive)), "named by the spec"
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
class Scoring:
    """What the metrics of one scoring share: the labels given, the classifications made
    so far (one per answer extraction), the JSON Schema validators (one per schema) and
    the details the metrics report."""

    labels: list[str] | None
    details: dict = field(default_factory=dict)
    # How each label is shown: as given (eval.choices) or as a reference first wrote it,
    # by its normalised form (what the classification compares).
    spelling: dict[str, str] = field(default_factory=dict)
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
Scorer = Callable[[dict, list[str], list[str], Scoring], tuple[float, list[float]]]


def _answers_only(function: Callable[[list[str], list[str]], tuple[float, list[float]]]) -> Scorer:
    """A metric that needs nothing but the predictions and references, as a :data:`Scorer`."""
    def run(metric: dict, preds: list[str], refs: list[str], scoring: Scoring) -> tuple[float, list[float]]:
        return function(preds, refs)

    return run


def _classification(metric: dict, preds: list[str], refs: list[str], scoring: Scoring) -> tuple[float, list[float]]:
    key = extraction_key(metric.get("extract"))
    if key not in scoring.classified:
        scoring.classified[key] = _classify(preds, refs, scoring.labels)
    classified = scoring.classified[key]
    scoring.details.setdefault("classification", _spelled(classified["details"], scoring.spelling))
    per = row_accuracy(preds, refs)
    value = _classification_value(metric, classified, per)
    if metric["name"] == "f1":
        positive, why = f1_positive(metric, classified["details"]["labels"])
        shown = scoring.spelling.get(positive, positive) if positive is not None else None
        scoring.details["f1"] = ({"average": "binary", "positive": shown, "why": why} if positive is not None
                                 else {"average": "macro", "why": why})
    return value, per


def _spelled(details: dict, spelling: dict[str, str]) -> dict:
    """A classification's details with each label shown as written (see Scoring.spelling)."""
    def show(label: str) -> str:
        return spelling.get(label, label)

    cm = details["confusion_matrix"]
    return {**details, "labels": [show(x) for x in details["labels"]],
            "per_label": {show(k): v for k, v in details["per_label"].items()},
            "confusion_matrix": {**cm, "labels": [show(x) for x in cm["labels"]],
                                 "rows": [show(x) for x in cm["rows"]]}}


def _schema_conformance(metric: dict, preds: list[str], refs: list[str], scoring: Scoring) -> tuple[float, list[float]]:
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


def as_text(value: Any) -> str:
    """A prediction or reference as text: None is empty."""
    return "" if value is None else str(value)


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
    scoring = Scoring(labels)
    # Check schemas before any scoring, so a bad one fails fast.
    for metric in metrics:
        if metric.get("name") == "json_schema":
            scoring.validator(metric)

    preds = [as_text(p) for p in predictions]
    refs = [as_text(r) for r in references]
    n = len(preds)
    result = MetricResult(per_example=[{} for _ in range(n)], extracted=[{} for _ in range(n)],
                          details=scoring.details)
    extractions: dict[str, tuple[list[str], list[str]]] = {}
    prepared: dict[tuple, tuple[list[str], list[str]]] = {}

    for metric in metrics:
        name = metric["name"]
        if name in MODEL_METRICS:
            continue
        if n == 0:
            result.aggregate[name] = None
            continue
        spec = metric.get("extract")
        key = extraction_key(spec)
        if spec and key not in extractions:
            extractions[key] = ([extract(p, spec) for p in preds], [extract(r, spec) for r in refs])
        if spec:
            raw_preds, raw_refs = extractions[key]
            for j in range(n):
                result.extracted[j][name] = {"prediction": raw_preds[j], "reference": raw_refs[j]}
            result.details.setdefault("extraction", {})[name] = {
                "predictions_without_answer": sum(1 for p in raw_preds if not p),
                "references_without_answer": sum(1 for r in raw_refs if not r)}
        if name in CLASSIFICATION:
            for label in [*(labels or []), *(extractions[key][1] if spec else refs)]:
                scoring.spelling.setdefault(LABELS.apply(str(label)), str(label).strip())
        prepared_key = (key, metric.get("normalization") or metric_catalog.get(name).normalization)
        if prepared_key not in prepared:
            prepared[prepared_key] = prepare(metric, preds, refs, extractions.get(key))
        m_preds, m_refs = prepared[prepared_key]

        value, per = SCORERS[name](metric, m_preds, m_refs, scoring)
        result.aggregate[name] = clamp(value)
        for j, s in enumerate(per):
            result.per_example[j][name] = float(s)
    return result
