"""The report's numbers: what the run's files say, compared and checked.

Reads what the steps left in a run directory (any of it may be missing or cut
short), and computes from it, without formatting anything: each metric of the base
and the tuned model and their difference, the most-frequent-answer baseline (learnt
from the training split), 95% intervals of each (a paired bootstrap over rows), the
gates, the overfitting signal, the base and tuned answers side by side, and the
examples that moved most.

The plan is read in one place only, :func:`read_plan`.
No torch, no transformers, no matplotlib here.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from ftspec.catalog import metrics as metric_catalog
from ftspec.catalog.steps import EVAL_BASE, EVAL_TUNED, PREPARE_DATA, TRAIN
from ftspec.core.io import iter_jsonl, read_json, read_jsonl
from ftspec.data.prepared import split_file
from ftspec.runtime.evaluation import scorers as M
from ftspec.runtime.evaluation.baseline import ReferenceCounts, count_references, majority_predictions, score_majority
from ftspec.runtime.evaluation.intervals import bootstrap_intervals

__all__ = [
    "LOWER_IS_BETTER", "PlanFacts", "Results", "RunFiles", "check_gates", "compute", "interval_says",
    "merge_predictions", "overfitting_signal", "Paired", "paired_rows", "read_plan", "read_run",
]

# Metrics for which a smaller value is the better one.
LOWER_IS_BETTER = metric_catalog.lower_is_better()
OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "==": lambda a, b: math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12),
}
EXAMPLES = 5  # improved / regressed examples shown
SERIES_LIMIT = 1e100  # a logged step or value beyond this is not one a run wrote
OVERFIT_RISE = 0.02  # validation loss this much above its lowest point counts as rising


# --------------------------------------------------------------------------- small helpers


def num(value: Any) -> float | None:
    """A finite number as a float, else None (bools, strings, NaN and infinities are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def clean(value: float) -> float:
    """Round away float noise (0.85 - 0.8 = 0.04999999999999993) so that gates and deltas read as expected."""
    return round(value, 12) + 0.0  # + 0.0 turns -0.0 into 0.0


def dig(d: Any, *keys: str, default: Any = None) -> Any:
    """``d[k1][k2]…`` through dicts, ``default`` where a level is missing or not a dict."""
    for key in keys:
        if not isinstance(d, dict) or key not in d:
            return default
        d = d[key]
    return d


def direction(metric: str | None) -> int:
    """+1 where a larger value of the metric is better, -1 where a smaller one is."""
    return -1 if metric in LOWER_IS_BETTER else 1


def interval_says(interval: Any, metric: str | None) -> int | None:
    """What the interval of a difference (a − b) of ``metric`` says: +1 when all of it
    lies on a's better side of 0, -1 when all on its worse side, 0 when it holds 0
    (within noise), None without an interval."""
    if not isinstance(interval, (list, tuple)) or len(interval) != 2:
        return None
    low, high = num(interval[0]), num(interval[1])
    if low is None or high is None:
        return None
    sign = direction(metric)
    low, high = sorted((low * sign, high * sign))
    return 1 if low > 0 else -1 if high < 0 else 0


def series(log: Iterable[dict], key: str) -> list[tuple[float, float]]:
    """(step, value) of one logged quantity, by step; the last value kept where a step
    was logged twice (a resumed run)."""
    by_step: dict[float, float] = {}
    for i, entry in enumerate(log or []):
        if not isinstance(entry, dict):
            continue
        value = num(entry.get(key))
        # a value no training logs (its span with another would overflow a float: no axis can show it)
        if value is None or abs(value) > SERIES_LIMIT:
            continue
        step = num(entry.get("step"))
        if step is not None and not 0 <= step <= SERIES_LIMIT:
            step = None
        by_step[step if step is not None else float(i)] = value
    return sorted(by_step.items())


def step_text(step: float) -> str:
    return str(int(step)) if step == int(step) else f"{step:g}"


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class PlanFacts:
    """What the report takes from the plan."""

    name: str | None = None
    plan_id: str | None = None
    model: Any = None  # JSON-shaped (dict), for the header line
    method: Any = None
    split: str | None = None
    metric_names: tuple[str, ...] = ()
    gates: tuple[dict, ...] = ()  # {gate, metric, improvement, op, threshold}
    metrics: tuple[dict, ...] = ()  # each metric's definition, JSON-shaped (name, extract, positive…)


def read_plan(plan: Any) -> PlanFacts:
    """The fields of the plan the report uses: the only place the report reads the plan.

    Takes the report step's view of the plan (or the plan itself), read by attribute:
    a field the report step does not declare (ftspec/catalog/steps.py) raises, it does not read
    as None. The plan's id is not among them (a report stays valid for every plan with
    the same report key), so it is left out. JSON-shaped data (what ``plan.json``
    holds) is read too, for tools that rebuild a report from files.
    """
    if isinstance(plan, Mapping):
        return _read_plan_json(plan)
    e = plan.eval
    names: list[str] = []
    for m in e.metrics:
        if m.name not in names:
            names.append(m.name)
    gates = tuple({k: getattr(g, k) for k in ("gate", "metric", "improvement", "op", "threshold")} for g in e.gates)
    return PlanFacts(name=plan.name, plan_id=None, model=_data(plan.model), method=_data(plan.method),
                     split=e.split, metric_names=tuple(names), gates=gates,
                     metrics=tuple(_data(m) for m in e.metrics))


def _read_plan_json(plan: Mapping) -> PlanFacts:
    get = lambda obj, name: obj.get(name) if isinstance(obj, Mapping) else None  # noqa: E731
    e = get(plan, "eval")
    names: list[str] = []
    for m in get(e, "metrics") or ():
        n = m if isinstance(m, str) else get(m, "name")
        if isinstance(n, str) and n not in names:
            names.append(n)
    gates = tuple({k: get(g, k) for k in ("gate", "metric", "improvement", "op", "threshold")}
                  for g in get(e, "gates") or ())
    plan_id = get(plan, "id")
    definitions = tuple({"name": m} if isinstance(m, str) else dict(m) for m in get(e, "metrics") or ()
                        if isinstance(m, str) or (isinstance(m, Mapping) and isinstance(m.get("name"), str)))
    return PlanFacts(
        name=get(plan, "name"),
        plan_id=plan_id if isinstance(plan_id, str) else None,
        model=_data(get(plan, "model")),
        method=_data(get(plan, "method")),
        split=get(e, "split"),
        metric_names=tuple(names),
        gates=gates,
        metrics=definitions,
    )


def _data(value: Any) -> Any:
    """A plan section as JSON-shaped data, whether it came as a mapping or as a model."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json", by_alias=True)
    if isinstance(value, Mapping):
        return {k: _data(v) for k, v in value.items()}
    return value


# --------------------------------------------------------------------------- the run's files


@dataclass
class RunFiles:
    """What the steps left in a run directory; None (or empty) for what is missing or unreadable."""

    base_raw: Any = None  # eval-base/metrics.json
    tuned_raw: Any = None  # eval-tuned/metrics.json
    base_rows: list[dict] = field(default_factory=list)  # eval-base/predictions.jsonl
    tuned_rows: list[dict] = field(default_factory=list)
    log: list[dict] = field(default_factory=list)  # the training log, model/metrics.jsonl
    train: Any = None  # model/train.json
    stats: Any = None  # data/stats.json
    # data/train.jsonl, the training split formatted: its references counted as it is read
    # (bounded, whatever its size), for the most-frequent-answer baseline
    train_references: ReferenceCounts = field(default_factory=ReferenceCounts)


def read_run(run_dir: Path) -> RunFiles:
    """Every file the report reads, read leniently: a broken file counts as missing,
    and a JSON-lines file cut short keeps its complete lines."""
    run_dir = Path(run_dir)
    base, tuned, model = run_dir / EVAL_BASE.folder, run_dir / EVAL_TUNED.folder, run_dir / TRAIN.folder
    log_path = model / "metrics.jsonl"
    return RunFiles(
        base_raw=read_json(base / "metrics.json", lenient=True),
        tuned_raw=read_json(tuned / "metrics.json", lenient=True),
        base_rows=read_jsonl(base / "predictions.jsonl", lenient=True),
        tuned_rows=read_jsonl(tuned / "predictions.jsonl", lenient=True),
        log=read_jsonl(log_path if log_path.exists() else run_dir / "metrics.jsonl", lenient=True),
        train=read_json(model / "train.json", lenient=True),
        stats=read_json(run_dir / PREPARE_DATA.folder / "stats.json", lenient=True),
        train_references=count_references(
            train_reference(r) for _, _, r in iter_jsonl(split_file(run_dir / PREPARE_DATA.folder, "train"),
                                                         lenient=True)),
    )


# --------------------------------------------------------------------------- gates


def check_gates(gates: Iterable[dict], base: dict | None, tuned: dict | None) -> list[dict]:
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
        threshold = num(gate.get("threshold"))
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
        t = num((tuned or {}).get(metric))
        b = num((base or {}).get(metric))
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
            value = clean(t - b) if improvement else t
            row["value"] = value
            row["passed"] = bool(OPS[op](value, threshold))
            if op in (">=", ">"):
                row["margin"] = clean(value - threshold)
            elif op in ("<=", "<"):
                row["margin"] = clean(threshold - value)
            else:
                row["margin"] = clean(-abs(value - threshold))
        results.append(row)
    return results


# --------------------------------------------------------------------------- overfitting


def overfitting_signal(log: list[dict]) -> str | None:
    """A one-sentence warning when the validation loss rises while the training loss falls, else None.

    Warns when the last validation loss is more than 2% above the lowest one, at least
    two evaluations follow the lowest one, and the training loss logged after the
    lowest point is lower on average than the training loss logged up to it.
    """
    evals = series(log, "eval_loss")
    if len(evals) < 3:
        return None
    low_i = min(range(len(evals)), key=lambda i: evals[i][1])  # the first lowest one
    low_step, low = evals[low_i]
    last_step, last = evals[-1]
    if len(evals) - 1 - low_i < 2:
        return None
    if not last > low + OVERFIT_RISE * abs(low):
        return None
    train = series(log, "loss")
    before = [v for s, v in train if s <= low_step]
    after = [v for s, v in train if s > low_step]
    if not before or not after:
        return None
    mean_before, mean_after = sum(before) / len(before), sum(after) / len(after)
    if not mean_after < mean_before:
        return None
    rise = f" (+{(last - low) / abs(low):.1%})" if low else ""
    return (f"Validation loss rose from {low:.4f} at step {step_text(low_step)} to {last:.4f} at step "
            f"{step_text(last_step)}{rise} while the training loss kept falling (mean {mean_before:.4f} up to step "
            f"{step_text(low_step)}, {mean_after:.4f} after), so the model is probably overfitting: try fewer epochs "
            "or early stopping.")


# --------------------------------------------------------------------------- evaluation results


def metric_values(raw: Any) -> dict | None:
    """name -> value from an eval step's metrics.json (also the older flat form ``{"accuracy": …, "rows": …}``)."""
    if not isinstance(raw, dict):
        return None
    source = raw.get("metrics")
    if not isinstance(source, dict):
        source = {k: v for k, v in raw.items()
                  if k not in ("rows", "few_shot", "split", "details", "mode") and (v is None or num(v) is not None)}
    # a name the report prints must be one a metric could have (not an escape sequence, not a page of text)
    return {str(k): num(v) for k, v in source.items() if str(k).isprintable() and len(str(k)) <= 64}


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
        merged.append({"index": index, "input": prompt, "reference": ref, "base": _prediction(b),
                       "tuned": _prediction(t)})
    return merged


def confusion(details: Any) -> tuple[list[str], list[str], list[list[float]]] | None:
    """(row labels = references, column labels = predictions, counts) of a classification's confusion matrix."""
    cm = dig(details, "classification", "confusion_matrix")
    if not isinstance(cm, dict) or not isinstance(cm.get("matrix"), list) or not cm["matrix"]:
        return None
    columns = [str(x) for x in cm.get("labels") or []]
    rows = [str(x) for x in cm.get("rows") or columns]
    matrix = [[num(x) or 0.0 for x in row] if isinstance(row, list) else [] for row in cm["matrix"]]
    if len(matrix) != len(rows) or any(len(r) != len(columns) for r in matrix) or not columns:
        return None
    return rows, columns, matrix


# --------------------------------------------------------------------------- examples that moved


def movers(rows: list[dict], metric: str | None) -> tuple[list[tuple[float, dict]], list[tuple[float, dict]]]:
    """The examples whose score on ``metric`` improved and regressed most (tuned - base)."""
    if metric is None:
        return [], []
    scored = []
    for r in rows:
        if r["base"] is None or r["tuned"] is None:
            continue
        b, t = num(r["base"]["scores"].get(metric)), num(r["tuned"]["scores"].get(metric))
        if b is None or t is None:
            continue
        scored.append((clean(t - b), r))
    sign = direction(metric)
    key = lambda p: (-abs(p[0]), p[1]["index"] if isinstance(p[1]["index"], int) else 0)  # noqa: E731
    improved = sorted((p for p in scored if p[0] * sign > 0), key=key)[:EXAMPLES]
    regressed = sorted((p for p in scored if p[0] * sign < 0), key=key)[:EXAMPLES]
    return improved, regressed


def weakest(rows: list[dict], metric: str | None) -> list[tuple[float, dict]]:
    """Without a baseline: the tuned model's lowest-scoring examples (those below its best score)."""
    if metric is None:
        return []
    scored = [(num(r["tuned"]["scores"].get(metric)), r) for r in rows if r["tuned"] is not None]
    scored = [(s, r) for s, r in scored if s is not None]
    if not scored:
        return []
    sign = direction(metric)
    best = max(s * sign for s, _ in scored)
    worst = [p for p in scored if p[0] * sign < best]
    return sorted(worst, key=lambda p: p[0] * sign)[:EXAMPLES]


def example_metric(rows: list[dict], names: Iterable[str], headline: str | None) -> str | None:
    """The metric the examples are ranked by: the headline metric where examples have its score."""
    present = {k for r in rows for side in ("base", "tuned") if r[side] for k in r[side]["scores"]}
    if headline in present:
        return headline
    return next((n for n in names if n in present), None)


# --------------------------------------------------------------------------- everything together


@dataclass
class Results:
    """What the report shows: ``summary`` is what metrics.json holds, ``rows`` what predictions.jsonl holds."""

    plan: PlanFacts
    summary: dict
    rows: list[dict]  # base and tuned answers side by side
    names: list[str]  # every metric, the plan's first, in the plan's order
    run: RunFiles
    grpo: Any = None  # a GRPO run's rewards (ftspec.runtime.report.rewards.Grpo), None for any other run

    @property
    def headline(self) -> str | None:
        return self.summary["headline"]


def compute(plan: PlanFacts, run: RunFiles) -> Results:
    base, tuned = metric_values(run.base_raw), metric_values(run.tuned_raw)
    rows = merge_predictions(run.base_rows, run.tuned_rows)

    names = list(plan.metric_names)
    headline = names[0] if names else None
    for side in (tuned, base):
        for n in side or {}:
            if n not in names:
                names.append(n)
    if headline is None and names:
        headline = names[0]

    delta = {}
    for n in names:
        b, t = num((base or {}).get(n)), num((tuned or {}).get(n))
        if b is not None and t is not None:
            delta[n] = clean(t - b)
    raws = (run.tuned_raw, run.base_raw)
    # What an eval step's metrics.json says is used only where it has the shape the report
    # publishes (a count, a split's name); anything else in a file edited by hand is not shown.
    rows_n = next((r["rows"] for r in raws if isinstance(r, dict) and isinstance(r.get("rows"), int)
                   and not isinstance(r["rows"], bool) and r["rows"] >= 0), len(rows) if rows else None)
    split = next((r["split"] for r in raws if isinstance(r, dict) and isinstance(r.get("split"), str)
                  and r["split"].isidentifier()), None) or plan.split
    gates = check_gates(plan.gates, base, tuned)
    details = {"base": run.base_raw.get("details") if isinstance(run.base_raw, dict) else None,
               "tuned": run.tuned_raw.get("details") if isinstance(run.tuned_raw, dict) else None}
    majority, answers, intervals = honest_comparison(plan, run, rows, details)
    summary = {
        "plan_id": plan.plan_id,
        "name": plan.name,
        "split": split,
        "rows": rows_n,
        "headline": headline,
        "base": base,
        "tuned": tuned,
        "delta": delta,
        "majority": majority,
        "majority_answers": answers,
        "intervals": intervals,
        "gates": gates,
        "gates_passed": all(g["passed"] for g in gates),
        "overfitting": overfitting_signal(run.log),
        "details": details,
    }
    return Results(plan, summary, rows, names, run)


# --------------------------------------------------------------------------- baseline and intervals


def train_reference(record: Any) -> str | None:
    """The expected answer of a record of the prepared training split, whatever its format
    (prompt/completion, preference or chat), as evaluation compares it."""
    if not isinstance(record, dict):
        return None
    for key in ("completion", "chosen"):
        if isinstance(record.get(key), str):
            return record[key].strip()
    messages = record.get("messages")
    if isinstance(messages, list):
        for msg in reversed(messages):
            if isinstance(msg, dict) and msg.get("role") == "assistant" and isinstance(msg.get("content"), str):
                return msg["content"].strip()
    return None


def eval_labels(details: Mapping) -> list[str] | None:
    """The label set the evaluation scored its classification metrics with."""
    for side in ("tuned", "base"):
        labels = dig(details, side, "classification", "labels")
        if isinstance(labels, list) and labels and all(isinstance(x, str) for x in labels):
            return labels
    return None


@dataclass
class Paired:
    """The rows every evaluated side answered, as the intervals score them: the metrics'
    definitions, the references, each side's predictions and per-row scores, the label set."""

    definitions: list[dict]
    rows: list[dict]  # merged rows (index, reference, base, tuned)
    references: list[str]
    labels: list[str] | None
    predictions: dict[str, Any]  # side -> its predictions, one per row
    scores: dict[str, dict[str, list[float | None]]]  # side -> metric -> per-row scores (metrics scored by rows)


def paired_rows(plan: PlanFacts, rows: list[dict], details: Mapping) -> Paired | None:
    """The paired comparison's inputs (None without metrics or rows every evaluated side answered)."""
    definitions = [m for m in plan.metrics if isinstance(m.get("name"), str)]
    sides = [s for s in ("base", "tuned") if any(r[s] is not None for r in rows)]
    paired = [r for r in rows if all(r[s] is not None for s in sides)]
    if not definitions or not paired:
        return None
    references = ["" if r["reference"] is None else str(r["reference"]) for r in paired]
    labels = eval_labels(details)
    if labels is not None and sorted(labels) == sorted({ref.strip() for ref in references}):
        labels = None  # the references' own labels: a resample is scored on the labels it holds, as score() would
    predictions: dict[str, Any] = {s: [str(r[s]["prediction"] or "") for r in paired] for s in sides}
    by_rows = [m["name"] for m in definitions if m["name"] in M.MODEL_METRICS or m["name"] not in M.KNOWN]
    scores = {s: {n: [num(r[s]["scores"].get(n)) for r in paired] for n in by_rows} for s in sides}
    return Paired(definitions, paired, references, labels, predictions, scores)


def honest_comparison(plan: PlanFacts, run: RunFiles, rows: list[dict],
                      details: Mapping) -> tuple[dict | None, dict | None, dict | None]:
    """The most-frequent-answer baseline (learnt from the training split, scored on the
    evaluated rows) and the confidence intervals of every metric of each side and of
    tuned − base and tuned − majority: (majority metrics, its answers, intervals)."""
    p = paired_rows(plan, rows, details)
    if p is None:
        return None, None, None
    train_refs = run.train_references.counts
    majority = answers = None
    predictions = dict(p.predictions)
    if train_refs:
        majority, answers = score_majority(p.definitions, train_refs, p.references, p.labels)
        majority, answers = (majority, answers) if majority else (None, None)  # no metric it applies to
        chosen = majority_predictions(p.definitions, train_refs)
        predictions["majority"] = {name: [text] * len(p.references) for name, text in chosen.items()
                                   if text is not None}
    differences = tuple(pair for pair in (("tuned", "base"), ("tuned", "majority")) if set(pair) <= set(predictions))
    try:
        intervals = bootstrap_intervals(p.definitions, p.references, predictions, p.labels, differences, p.scores)
    except ValueError:  # a metric the rows cannot be scored with again (a schema that no longer reads)
        intervals = None
    return majority, answers, intervals
