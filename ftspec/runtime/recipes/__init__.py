"""The training recipes, one readable file per objective (``method.objective``), and the
table that picks one. Adding a training method is one recipe module and one row of
:data:`RECIPES`. Importing this package imports torch, transformers and trl."""

from __future__ import annotations

from typing import Callable

from ftspec.runtime.recipes.distill import train_distill
from ftspec.runtime.recipes.dpo import train_dpo
from ftspec.runtime.recipes.grpo import train_grpo
from ftspec.runtime.recipes.kto import train_kto
from ftspec.runtime.recipes.reward_model import train_reward_model
from ftspec.runtime.recipes.sft import train_sft
from ftspec.runtime.training.job import TrainJob, TrainResult

Recipe = Callable[[TrainJob], TrainResult]

RECIPES: dict[str, Recipe] = {
    "sft": train_sft,
    "dpo": train_dpo,
    "distill": train_distill,
    "grpo": train_grpo,
    "kto": train_kto,
    "reward_model": train_reward_model,
}


def recipe(objective: str) -> Recipe:
    """The training recipe of ``method.objective``."""
    try:
        return RECIPES[objective]
    except KeyError:
        raise LookupError(f"no training recipe for method.objective {objective!r} "
                          f"(there are: {', '.join(RECIPES)})") from None
