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

CLASSIFICATION = {"accuracy", "precision", "recall", "f1", "f1_macro", "f1_micro"}
MODEL_METRICS = {"perplexity", "judge"}
TEXT_METRICS = {"exact_match", "token_f1", "rouge_l", "bleu", "chrf", "json_valid", "json_schema"}
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
    from ftspec.templates import environment

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
            from ftspec.templates import render

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
        "details": {
            "labels": label_list,
            "per_label": per_label,
            "confusion_matrix": {"labels": columns, "rows": rows, "matrix": matrix},
        },
    }


def _classification_value(name: str, result: dict, correct: list[float]) -> float:
    if name == "accuracy":
        return _mean(correct)
    macro_p, macro_r, macro_f = result["averages"]["macro"]
    return {
        "precision": macro_p,
        "recall": macro_r,
        "f1": macro_f,
        "f1_macro": macro_f,
        "f1_micro": result["averages"]["micro"][2],
    }[name]


# --------------------------------------------------------------------------- score

_SCORERS: dict[str, Callable] = {
    "exact_match": _exact_match,
    "token_f1": _token_f1,
    "rouge_l": _rouge_l,
    "bleu": _bleu,
    "chrf": _chrf,
    "json_valid": _json_valid,
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
    # Check schemas before any scoring, so a bad one fails fast.
    validators = {i: _json_schema_validator(_schema_of(metric))
                  for i, metric in enumerate(metrics) if metric.get("name") == "json_schema"}

    preds = [_text(p) for p in predictions]
    refs = [_text(r) for r in references]
    n = len(preds)
    result = MetricResult(per_example=[{} for _ in range(n)], extracted=[{} for _ in range(n)])
    extractions: dict[str, tuple[list[str], list[str]]] = {}
    classifications: dict[str, dict] = {}

    for i, metric in enumerate(metrics):
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

        if name in CLASSIFICATION:
            if key not in classifications:
                classifications[key] = _classify(m_preds, m_refs, labels)
            classified = classifications[key]
            result.details.setdefault("classification", classified["details"])
            per = _accuracy(m_preds, m_refs)
            value = _classification_value(name, classified, per)
        elif name == "json_schema":
            value, per = _json_schema(validators[i])(m_preds, m_refs)
        else:
            value, per = _SCORERS[name](m_preds, m_refs)

        result.aggregate[name] = _clamp(value)
        for j, s in enumerate(per):
            result.per_example[j][name] = float(s)
    return result
