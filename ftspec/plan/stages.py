"""Stages: several training jobs in one spec, run in order, each starting from the
model of one before it (SFT then DPO; a teacher, then the student distilled from it).

    spec ──load──▶ one effective spec per stage (ftspec.spec.load: the spec without
                   `stages`, the stage's keys over it, then profiles and --set)
         ──check─▶ each validated and checked as a spec of its own, and together
                   (ftspec.checks.rules.stages): what a stage starts from, a teacher
                   stage, one vocabulary for logits
         ──plan──▶ one whole plan per stage; the last is the spec's plan and carries the
                   others in `stages`

A stage that starts from another's model names it in its plan's `model` (kind
``stage``) with that stage's train and prepare_data keys, so every key of the later
stage follows the earlier one: a change to stage 1 re-runs stage 2, a change to stage 2
leaves stage 1 alone. Light: no torch.
"""

from __future__ import annotations

from typing import Any

from ftspec.catalog.steps import PREPARE_DATA, TRAIN

STAGE_DIR = "{run_dir}.stage-{name}"


def stage_dir(run_dir: str, name: str) -> str:
    """The run directory of a stage before the last (the last stage's is the spec's own);
    beside it, so that every stage shares the runs folder's step store."""
    return STAGE_DIR.format(run_dir=run_dir, name=name)


def stage_model(plan: Any) -> dict:
    """A later stage's view of an earlier stage's trained model (see ftspec.plan.model.StageModel)."""
    return {
        "kind": "stage",
        "stage": plan.stage,
        "adapter": plan.method.adapter.kind,
        "train": plan.step(TRAIN.name).key,
        "data": plan.step(PREPARE_DATA.name).key,
        "base": plan.model.model_dump(mode="json"),
    }


def root_model(model: Any) -> Any:
    """The model a chain of stages began with (a plan's model section)."""
    while getattr(model, "kind", None) == "stage":
        model = model.base
    return model
