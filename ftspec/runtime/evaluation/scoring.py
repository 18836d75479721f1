"""Scoring: what a generation step saved, turned into metrics.

The scoring steps (``eval_base``, ``eval_tuned``) run this on the rows a generation
step (``generate_base``, ``generate_tuned``) wrote, so that a change to the metrics
re-scores the saved answers instead of generating them again. No torch here: only an
LLM judge needs a model, and the caller hands in a function that runs it.

Preference pairs (DPO) are scored by log-probability, per pair and then averaged:

- ``preference_accuracy``: the share of pairs whose chosen answer the model gives a
  higher summed log-probability than the rejected one;
- ``logprob_margin``: the mean of log p(chosen) − log p(rejected);
- ``reward_accuracy`` and ``reward_margin`` (the tuned model, against the base model
  it was tuned from, which DPO uses as its reference): DPO's implicit reward of an
  answer is beta × (log p_tuned − log p_base); the share of pairs whose chosen answer
  gets the higher reward, and the mean reward margin. These are what trl logs as
  ``rewards/accuracies`` and ``rewards/margins`` while training, here on held-out pairs.

Feedback rows (KTO) are scored by the log-probability of each row's completion:

- ``feedback_margin``: the mean log p(completion) of the desirable rows minus that of the
  undesirable rows. Each row's score is its share of that difference (+log p × n / n_desirable
  for a desirable row, −log p × n / n_undesirable for an undesirable one), so that the rows'
  mean is the margin and the paired bootstrap over rows gives its interval, and the tuned −
  base difference of a row is the change of its log-probability signed by its label.

A reward model (``method.kind: reward_model``) is scored on preference pairs by its own scores:

- ``pair_accuracy``: the share of pairs whose chosen answer it scores higher than the rejected
  one (chance: 0.5; there is no baseline, an untrained score head being noise);
- ``pair_margin``: the mean of score(chosen) − score(rejected).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from ftspec.runtime.evaluation import scorers as M
from ftspec.spec.schema import (
    FEEDBACK_METRICS,  # feedback_margin
    PREFERENCE_METRICS,  # preference_accuracy, logprob_margin, reward_accuracy, reward_margin
    REWARD_MODEL_METRICS,  # pair_accuracy, pair_margin
)

# judge(definition, rows, predictions) -> (a score in 0..1 or None per row, rows it gave no score for)
Judge = Callable[[Mapping, list, list], tuple]


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def score_outputs(definitions: list[dict], generated: Mapping, rows: list[dict], *,
                  base_rows: list[dict] | None = None, beta: float | None = None,
                  judge: Judge | None = None) -> tuple[dict, list[dict]]:
    """The scoring step's ``metrics.json`` and ``predictions.jsonl``.

    ``definitions``: the plan's metrics as plain data; ``generated`` and ``rows``: what
    the generation step saved; ``base_rows`` and ``beta``: the base model's rows and
    DPO's beta, for the reward metrics (left out without them); ``judge``: runs an LLM
    judge (a judge metric is left out without it).
    """
    names = [d["name"] for d in definitions]
    has_answers = all("prediction" in r for r in rows)
    predictions = [r.get("prediction") for r in rows] if has_answers else None
    references = [r.get("reference") for r in rows]
    aggregate: dict[str, Any] = {}
    per_example: list[dict] = [{} for _ in rows]
    details: dict = {}
    extracted: list = []

    pure = [d for d in definitions
            if d["name"] not in M.MODEL_METRICS
            and d["name"] not in PREFERENCE_METRICS + FEEDBACK_METRICS + REWARD_MODEL_METRICS]
    if pure and predictions is not None:
        result = M.score(pure, predictions, references, labels=generated.get("labels"))
        aggregate.update(result.aggregate)
        for row, scores in zip(per_example, result.per_example):
            row.update(scores)
        details.update(result.details)
        extracted = result.extracted

    for definition in definitions:
        name = definition["name"]
        if name == "perplexity":
            aggregate["perplexity"] = generated.get("perplexity")
        elif name == "judge" and judge is not None and predictions is not None:
            scores, unparsed = judge(definition, rows, predictions)
            parsed = [s for s in scores if s is not None]
            aggregate["judge"] = _mean(parsed)
            details["judge"] = {"unparsed": unparsed, "model": definition["model"]}
            for row, s in zip(per_example, scores):
                if s is not None:
                    row["judge"] = s

    wanted = [n for n in names if n in PREFERENCE_METRICS]
    if wanted and all("chosen_logprob" in r for r in rows):
        values, pair_details = _preference(rows, base_rows, beta, per_example)
        aggregate.update({n: values[n] for n in wanted if n in values})
        details["preference"] = pair_details

    if "feedback_margin" in names and all("completion_logprob" in r for r in rows):
        margin, feedback_details = _feedback(rows, per_example)
        if margin is not None:
            aggregate["feedback_margin"] = margin
        details["feedback"] = feedback_details

    wanted = [n for n in names if n in REWARD_MODEL_METRICS]
    if wanted and rows and all("chosen_score" in r for r in rows):
        values, score_details = _scored_pairs(rows, per_example)
        aggregate.update({n: values[n] for n in wanted})
        details["reward_model"] = score_details

    out_rows = []
    for i, r in enumerate(rows):
        row = {"index": r.get("index", i), "prompt": r.get("prompt"), "reference": r.get("reference"),
               "prediction": r.get("prediction") if has_answers else _preferred(r),
               "scores": {k: v for k, v in per_example[i].items() if k in names}}
        if extracted and extracted[i]:
            row["extracted"] = extracted[i]
        for key in ("chosen", "rejected", "chosen_logprob", "rejected_logprob", "completion", "label",
                    "completion_logprob", "chosen_score", "rejected_score"):
            if key in r:
                row[key] = r[key]
        out_rows.append(row)
    summary = {
        # In the plan's order; a metric that could not be computed is left out.
        "metrics": {n: aggregate[n] for n in names if n in aggregate},
        "details": details,
        "rows": generated.get("rows", len(rows)),
        "split": generated.get("split"),
        "few_shot": generated.get("few_shot", 0),
        "mode": generated.get("mode"),
    }
    return summary, out_rows


def _preferred(row: Mapping) -> str | None:
    """Without generated answers: the answer of the pair the model finds likelier (or scores higher)."""
    if "chosen_score" in row:
        chosen = row["chosen_score"] > row["rejected_score"]
    elif "chosen_logprob" in row:
        chosen = row["chosen_logprob"] > row["rejected_logprob"]
    else:
        return None
    return str(row["chosen"] if chosen else row["rejected"]).strip()


def _scored_pairs(rows: list[dict], per_example: list[dict]) -> tuple[dict, dict]:
    """pair_accuracy and pair_margin of a reward model's scores, and each pair's own."""
    margins = [float(r["chosen_score"]) - float(r["rejected_score"]) for r in rows]
    for row, margin in zip(per_example, margins):
        row["pair_accuracy"], row["pair_margin"] = (1.0 if margin > 0 else 0.0), margin
    details = {"pairs": len(rows), "chance": 0.5,
               "chosen_score": _mean([float(r["chosen_score"]) for r in rows]),
               "rejected_score": _mean([float(r["rejected_score"]) for r in rows])}
    return {"pair_accuracy": _mean([1.0 if m > 0 else 0.0 for m in margins]), "pair_margin": _mean(margins)}, details


def _feedback(rows: list[dict], per_example: list[dict]) -> tuple[float | None, dict]:
    """feedback_margin and each row's share of it (none without rows of both labels)."""
    desirable = [float(r["completion_logprob"]) for r in rows if r["label"]]
    undesirable = [float(r["completion_logprob"]) for r in rows if not r["label"]]
    details = {"desirable": len(desirable), "undesirable": len(undesirable),
               "desirable_logprob": _mean(desirable), "undesirable_logprob": _mean(undesirable)}
    if not desirable or not undesirable:
        return None, details
    n = len(rows)
    for row, r in zip(per_example, rows):
        lp = float(r["completion_logprob"])
        row["feedback_margin"] = lp * n / len(desirable) if r["label"] else -lp * n / len(undesirable)
    return _mean(desirable) - _mean(undesirable), details


def _preference(rows: list[dict], base_rows: list[dict] | None, beta: float | None,
                per_example: list[dict]) -> tuple[dict, dict]:
    values: dict[str, float | None] = {}
    margins = [float(r["chosen_logprob"]) - float(r["rejected_logprob"]) for r in rows]
    wins = [1.0 if m > 0 else 0.0 for m in margins]
    for row, win, margin in zip(per_example, wins, margins):
        row["preference_accuracy"], row["logprob_margin"] = win, margin
    values["preference_accuracy"], values["logprob_margin"] = _mean(wins), _mean(margins)
    details: dict = {
        "pairs": len(rows),
        "chosen_logprob": _mean([float(r["chosen_logprob"]) for r in rows]),
        "rejected_logprob": _mean([float(r["rejected_logprob"]) for r in rows]),
    }

    base = {r.get("index"): r for r in base_rows or [] if "chosen_logprob" in r}
    if beta is not None and base_rows is not None and rows and all(r.get("index") in base for r in rows):
        chosen_rewards, rejected_rewards = [], []
        for row, r in zip(per_example, rows):
            b = base[r.get("index")]
            chosen = beta * (float(r["chosen_logprob"]) - float(b["chosen_logprob"]))
            rejected = beta * (float(r["rejected_logprob"]) - float(b["rejected_logprob"]))
            chosen_rewards.append(chosen)
            rejected_rewards.append(rejected)
            row["reward_accuracy"] = 1.0 if chosen > rejected else 0.0
            row["reward_margin"] = chosen - rejected
        values["reward_accuracy"] = _mean([1.0 if c > r else 0.0 for c, r in zip(chosen_rewards, rejected_rewards)])
        values["reward_margin"] = _mean([c - r for c, r in zip(chosen_rewards, rejected_rewards)])
        details.update(beta=beta, reward_chosen=_mean(chosen_rewards), reward_rejected=_mean(rejected_rewards))
    return values, details
