"""A GRPO run's rewards in the report: how each training reward moved, the completions sampled
last, and the reward hacking check.

The train step of a GRPO run logs, per step, each reward's mean and standard deviation over
that step's completions (``rewards/NAME/mean``, ``rewards/NAME/std``) and their weighted sum
(``reward``, ``reward_std``) in ``model/metrics.jsonl``, and every ``sample_every``-th step's
prompts, completions and rewards in ``model/completions.jsonl``. From these,
:func:`grpo_rewards` makes what the report shows; :func:`reward_hacking` holds the one rule
that says when a reward rose in training while the held-out evaluation did not follow.

A run that is not GRPO gets None here, and its report is what it always was.
No torch, no matplotlib here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ftspec.catalog.steps import TRAIN
from ftspec.core.io import BadFileError, iter_jsonl
from ftspec.runtime.report.results import Results, dig, direction, interval_says, num, series
from ftspec.runtime.report.verdict import interval_text

__all__ = ["COMPLETIONS", "Grpo", "RewardCheck", "grpo_rewards", "reward_hacking", "trend"]

COMPLETIONS = "completions.jsonl"  # written by the GRPO recipe beside the model
TOTAL = "reward"  # TRL's name for the weighted sum of the rewards, logged beside each one
RISE_EFFECT = 0.5  # a rise of half the reward's spread between completions is a clear one
MIN_STEPS = 4  # fewer logged steps have no first and last quarter to compare
SHOWN = 2  # sampled completions shown from each end (highest and lowest reward)
TEXT = 2000  # characters of a prompt, completion or reference kept (the report shows fewer)
KEPT = 4096  # sampled completions of one step kept while reading (a step has batch_size of them)
EXPLOIT = ("the policy may be exploiting the reward rather than learning the task (e.g. valid JSON with the wrong "
           "fields); read the sampled completions")


# --------------------------------------------------------------------------- the rewards of the plan


@dataclass(frozen=True)
class Reward:
    name: str  # as TRL logs it: rewards/<name>/mean
    kind: str  # "metric", "python" or "reward_model" (only a metric has a held-out counterpart)
    metric: str | None  # the held-out metric a metric reward is scored as
    weight: float
    source: str  # what the spec named: the metric, or path:function


def plan_rewards(method: Any) -> list[Reward]:
    """The plan's rewards (its method section, JSON-shaped), named as the recipe names them
    (ftspec.runtime.training.rewards.reward_names: the metric or the function, a repeated
    name numbered _2, _3…); [] for a plan that is not GRPO."""
    if not isinstance(method, Mapping) or method.get("objective") != "grpo":
        return []
    out: list[Reward] = []
    for r in dig(method, "grpo", "rewards") or []:
        if not isinstance(r, Mapping):
            continue
        kind = r.get("kind") if r.get("kind") in ("python", "reward_model") else "metric"
        metric = dig(r, "metric", "name") if kind == "metric" else None
        base = str({"python": r.get("function"), "reward_model": r.get("stage")}.get(kind, metric))
        name, n = base, 2
        while name in {x.name for x in out}:
            name, n = f"{base}_{n}", n + 1
        weight = num(r.get("weight"))
        source = {"python": f"{r.get('path')}:{r.get('function')}",
                  "reward_model": f"reward model of stage {r.get('stage')}"}.get(kind, str(metric))
        out.append(Reward(name, kind, metric if isinstance(metric, str) else None,
                          1.0 if weight is None else weight, source))
    return out


# --------------------------------------------------------------------------- how a reward moved


def trend(log: list[dict], mean_key: str, std_key: str) -> dict | None:
    """How one logged reward moved over training, None when it was never logged.

    ``first``/``last``: the first and last logged value (with their steps); ``early``/``late``:
    the mean of the first and of the last quarter of the logged steps (at least one step each);
    ``spread``: the reward's typical spread between the completions of one step, the mean of
    what was logged as its standard deviation (``std_key``), or, where that is 0 or missing,
    the standard deviation of the logged means; ``rose``: whether it clearly rose (see
    :func:`reward_hacking`)."""
    means = series(log, mean_key)
    if not means:
        return None
    values = [v for _, v in means]
    quarter = max(1, len(values) // 4)
    early, late = sum(values[:quarter]) / quarter, sum(values[-quarter:]) / quarter
    stds = [v for _, v in series(log, std_key) if v >= 0]
    spread = sum(stds) / len(stds) if stds else 0.0
    if spread <= 0:
        centre = sum(values) / len(values)
        spread = (sum((v - centre) ** 2 for v in values) / len(values)) ** 0.5
    rise = late - early
    return {"steps": len(values), "first_step": means[0][0], "first": values[0], "last_step": means[-1][0],
            "last": values[-1], "early": early, "late": late, "spread": spread,
            "rose": len(values) >= MIN_STEPS and rise > 0 and spread > 0 and rise >= RISE_EFFECT * spread}


# --------------------------------------------------------------------------- the reward hacking check


@dataclass(frozen=True)
class RewardCheck:
    warning: str | None  # said in the report and in the run's closing lines
    note: str  # what was checked, in the report


def reward_hacking(rewards: Mapping, summary: Mapping) -> RewardCheck:
    """Did a training reward rise while the held-out evaluation did not improve?

    ``rewards``: name -> {"kind", "metric", "trend"} for each reward of the plan, plus the weighted
    sum under ``"reward"`` (:func:`trend` of each); ``summary``: what the report's metrics.json
    holds (base, tuned, delta, intervals).

    The rule. A reward *clearly rose* when at least 4 steps were logged and the mean of the last
    quarter of its logged values exceeds the mean of the first quarter by at least half its
    spread (an effect size of 0.5: the spread is the standard deviation of the reward between
    the completions of a step, which GRPO's advantages are measured in, averaged over the logged
    steps). A held-out metric *improved* when the 95% paired interval of tuned − base lies wholly
    on its better side (without an interval: when tuned − base is on its better side).

    - Each metric reward that clearly rose is compared with the same metric on the held-out
      rows; where that did not improve (the interval holds 0, or lies on the worse side), the
      warning says so: the policy may be exploiting the reward.
    - A Python reward has no held-out counterpart. Only when every reward is Python, the summed
      reward is checked instead: it clearly rose while no held-out metric improved → warning;
      no held-out metric compares tuned with base → the note says the check could not be made.
    - Without the base model's evaluation there is no tuned − base to compare with: no warning,
      and the note says so.
    """
    named = {k: v for k, v in rewards.items() if k != TOTAL and isinstance(v, Mapping)}
    metric_rewards = {k: v for k, v in named.items() if v.get("kind") == "metric" and v.get("metric")}
    if not named:
        return RewardCheck(None, "No reward was logged in training, so there is nothing to check.")
    base, tuned = summary.get("base"), summary.get("tuned")
    compared = [m for m in (tuned or {}) if num((base or {}).get(m)) is not None and num(tuned[m]) is not None]
    if metric_rewards:
        risen = {k: v for k, v in metric_rewards.items() if dig(v, "trend", "rose")}
        if not risen:
            return RewardCheck(None, f"No metric reward clearly rose in training ({_rule()}), so none is checked "
                                     "against the held-out evaluation.")
        if not compared:
            return RewardCheck(None, "Not checked: the held-out evaluation has no tuned − base comparison (the base "
                                     "or the tuned model was not evaluated).")
        flagged, followed = [], []
        for name, r in risen.items():
            metric = r["metric"]
            if metric not in compared:
                continue
            if _improved(metric, summary) == 1:
                followed.append(name)
            else:
                flagged.append(f"the training reward {name} rose from {_rose(r['trend'])} but held-out {metric} did "
                               f"not improve ({_difference(metric, summary)})")
        if flagged:
            return RewardCheck(_capital("; ".join(flagged)) + ": " + EXPLOIT + ".",
                               f"Checked: each metric reward that clearly rose in training ({_rule()}) against the "
                               "same metric on the held-out rows, tuned − base.")
        if not followed:
            return RewardCheck(None, "Not checked: the held-out evaluation did not score the metrics of the rewards "
                                     "that rose.")
        return RewardCheck(None, f"Every metric reward that clearly rose in training ({', '.join(followed)}) "
                                 "improved on the held-out rows too (tuned − base, on its better side).")
    # No reward is a metric (Python functions, reward models): the summed reward against the
    # held-out metrics in general.
    total = dig(rewards, TOTAL, "trend")
    own = "The rewards are Python functions or reward models, with no held-out counterpart"
    if not isinstance(total, Mapping) or not total.get("rose"):
        return RewardCheck(None, f"{own}; their weighted sum did not clearly rise in training ({_rule()}).")
    if not compared:
        return RewardCheck(None, f"{own}, and the held-out evaluation has no tuned − base comparison: whether the "
                                 "policy exploits the reward could not be checked.")
    if any(_improved(m, summary) == 1 for m in compared):
        better = ", ".join(m for m in compared if _improved(m, summary) == 1)
        return RewardCheck(None, f"{own}; their weighted sum rose in training and held-out {better} improved with it.")
    shown = "; ".join(f"{m} {_difference(m, summary)}" for m in compared)
    return RewardCheck(
        f"The summed training reward rose from {_rose(total)} but no held-out metric improved ({shown}; the rewards "
        f"are Python functions or reward models, with no held-out counterpart): {EXPLOIT}.",
        f"Checked: the weighted sum of the rewards ({_rule()}) against every held-out metric, tuned − base.")


def _rule() -> str:
    return (f"its mean over the last quarter of the logged steps above that over the first by at least "
            f"{RISE_EFFECT:g} of its spread between completions")


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _rose(t: Mapping) -> str:
    return (f"{t['early']:.3f} to {t['late']:.3f} (mean of the first and last quarter of "
            f"{t['steps']} logged steps)")


def _improved(metric: str, summary: Mapping) -> int | None:
    """+1 improved, 0 within noise, -1 worse (interval_says), by the value without an interval."""
    says = interval_says(dig(summary, "intervals", "tuned_minus_base", metric), metric)
    if says is not None:
        return says
    d = num((summary.get("delta") or {}).get(metric))
    return None if d is None else (1 if d * direction(metric) > 0 else -1 if d * direction(metric) < 0 else 0)


def _difference(metric: str, summary: Mapping) -> str:
    d = num((summary.get("delta") or {}).get(metric))
    ci = interval_text(dig(summary, "intervals", "tuned_minus_base", metric), signed=True)
    shown = "—" if d is None else f"{d:+.3f}"
    return f"{shown}, 95% CI {ci}" if ci else shown


# --------------------------------------------------------------------------- everything together


@dataclass
class Grpo:
    """What the report shows of a GRPO run's training."""

    rewards: list[Reward]
    trends: dict[str, dict]  # reward name (and "reward", the weighted sum) -> trend()
    check: RewardCheck
    sample_step: int | None = None  # the last step whose completions were sampled
    sampled: int = 0  # how many completions it sampled
    samples: list[dict] = field(default_factory=list)  # the ones shown, highest total reward first

    def summary(self) -> dict:
        """What metrics.json adds for a GRPO run."""
        trends = {r.name: {"kind": r.kind, "metric": r.metric, "weight": r.weight, "trend": self.trends.get(r.name)}
                  for r in self.rewards}
        trends[TOTAL] = {"kind": "sum", "metric": None, "weight": None, "trend": self.trends.get(TOTAL)}
        return {"training_rewards": trends, "reward_hacking": self.check.warning}


def grpo_rewards(results: Results, run_dir: Path) -> Grpo | None:
    """A GRPO run's rewards, its reward hacking check and its last sampled completions; None
    for any other run."""
    rewards = plan_rewards(results.plan.method)
    if not rewards:
        return None
    log = results.run.log
    trends = {r.name: trend(log, f"rewards/{r.name}/mean", f"rewards/{r.name}/std") for r in rewards}
    trends[TOTAL] = trend(log, TOTAL, "reward_std")
    grpo = Grpo(rewards, {k: v for k, v in trends.items() if v is not None}, RewardCheck(None, ""))
    grpo.check = reward_hacking(grpo.summary()["training_rewards"], results.summary)
    flat = flat_groups(log)
    if flat is not None:
        grpo.check = RewardCheck(" ".join(w for w in (flat, grpo.check.warning) if w), grpo.check.note)
    grpo.sample_step, grpo.sampled, grpo.samples = last_samples(Path(run_dir) / TRAIN.folder / COMPLETIONS, rewards)
    return grpo


# Groups whose completions all scored the same reward teach GRPO nothing (their advantages are 0).
FLAT_GROUPS = 0.9


def flat_groups(log: list[dict]) -> str | None:
    """A warning when, over the logged steps, at least FLAT_GROUPS of the groups had every completion
    score the same summed reward (TRL's ``frac_reward_zero_std``): GRPO learns only from differences
    within a group, so such a run trained on almost nothing. None otherwise."""
    shares = [v for r in log if (v := num(r.get("frac_reward_zero_std"))) is not None]
    if len(shares) < 2:
        return None
    share = sum(shares) / len(shares)
    if share < FLAT_GROUPS:
        return None
    return (f"In {share:.0%} of the groups every completion scored the same reward, so GRPO had almost nothing to "
            "learn from: a completion cut at a stop string before its answer (eval.stop; the plan's "
            "method line shows where completions are cut), a task the model never scores on, or a reward that "
            "does not vary. Read the sampled completions.")


def last_samples(path: Path, rewards: list[Reward]) -> tuple[int | None, int, list[dict]]:
    """(step, how many, the shown ones) of the last step in completions.jsonl: up to SHOWN
    completions with the highest weighted reward and SHOWN with the lowest, highest first.
    Read leniently: a line cut short or of another shape is skipped; a file that cannot be
    read is no samples. What is kept while reading is bounded (KEPT lines of one step, each
    text cut to TEXT characters), whatever the file holds."""
    weights = {r.name: r.weight for r in rewards}
    step, count, kept = None, 0, []
    try:
        for _, _, row in iter_jsonl(path, lenient=True):
            s = row.get("step")  # the recipe writes the step as a whole number
            if not isinstance(s, int) or isinstance(s, bool) or not 0 <= s < 2**63 or (step is not None and s < step):
                continue
            if s != step:
                step, count, kept = s, 0, []
            count += 1
            if len(kept) < KEPT:
                kept.append(_sample(count, row, weights))
    except BadFileError:
        return None, 0, []
    ranked = sorted(kept, key=lambda x: (-x["total"], x["number"]))
    return step, count, ranked if len(ranked) <= 2 * SHOWN else ranked[:SHOWN] + ranked[-SHOWN:]


def _sample(number: int, row: dict, weights: Mapping[str, float]) -> dict:
    scores = row.get("rewards") if isinstance(row.get("rewards"), dict) else {}
    values = {name: num(scores.get(name)) for name in weights}
    reference = row.get("reference")
    return {"number": number, "prompt": _text(row.get("prompt"), keep_end=True),
            "completion": _text(row.get("completion")), "reference": None if reference is None else _text(reference),
            "rewards": values,
            "total": sum(weights[n] * v for n, v in values.items() if v is not None)}


def _text(value: Any, keep_end: bool = False) -> str:
    """Text of the run, cut to TEXT characters (a prompt keeps its end: what the model answers)."""
    text = value if isinstance(value, str) else "" if value is None else str(value)[:TEXT]
    return text if len(text) <= TEXT else text[-TEXT:] if keep_end else text[:TEXT]
