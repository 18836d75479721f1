"""What learning from rewards adds to a plan: GRPO's rewards (the spec's metrics, a Python
function of the repository, an earlier stage's reward model) and its sampling settings, and a
reward model's own settings and evaluation (no baseline: an untrained score head is noise, so a
reward model is measured against chance)."""

from __future__ import annotations

from typing import Any, Callable

from ftspec.checks import Context, rel
from ftspec.plan.stages import stage_model
from ftspec.spec import schema as S

# Why a reward model's plan has no baseline (`ftspec plan` says it).
NO_BASELINE = ("the base model has no trained score head (its scores are noise), so pair accuracy is compared with "
               "chance, 0.5")


def grpo(ctx: Context, m: S.GRPOMethod, evaluation: dict, earlier: dict[str, Any],
         metric: Callable[[Any, Context, int], dict]) -> dict:
    """The plan's ``method.grpo``; ``metric`` makes a metric reward's plan entry (as eval.metrics holds it),
    ``earlier`` holds the plans of the stages before this one by name."""
    rewards = []
    for i, r in enumerate(m.rewards):
        if isinstance(r, S.ModelReward):
            rewards.append(model_reward(r, earlier))
        elif isinstance(r, S.PythonReward):
            file, function = r.python.rsplit(":", 1)
            rewards.append({"kind": "python", "path": rel(ctx.spec_dir / file, ctx.root),
                            "sha256": ctx.reward_code[i].sha256, "function": function, "weight": r.weight,
                            "missing": r.missing})
        else:
            rewards.append({"kind": "metric", "metric": metric(r, ctx, i), "weight": r.weight, "missing": r.missing})
    return {
        "rewards": rewards,
        "group_size": m.group_size,
        # Completions are as long, and cut where, the evaluation's answers are.
        "max_completion_tokens": m.max_completion_tokens or evaluation["max_new_tokens"],
        "stop": list(evaluation["stop"]),
        "temperature": m.temperature,
        "kl": m.kl,
        "estimator": m.estimator,
        "loss_type": m.loss_type if m.estimator == "group" else None,
        "sample_every": m.sample_every,
    }


def model_reward(r: S.ModelReward, earlier: dict[str, Any]) -> dict:
    """A GRPO reward given by an earlier stage's reward model: that stage's trained model, its
    train key among it, so that a change to the reward model trains the GRPO stage again."""
    return {"kind": "reward_model", "stage": r.reward_model, "model": stage_model(earlier[r.reward_model]),
            "weight": r.weight}


def method_settings(m: Any) -> dict:
    """``method.reward_model`` of a reward model's plan (nothing for another method)."""
    if not isinstance(m, S.RewardModelMethod):
        return {}
    return {"reward_model": {"center_rewards_coefficient": m.center_rewards_coefficient}}


def baseline(spec: Any) -> bool:
    """eval.baseline as the plan holds it: off for a reward model (see :data:`NO_BASELINE`)."""
    return spec.eval.baseline and not isinstance(spec.method, S.RewardModelMethod)
