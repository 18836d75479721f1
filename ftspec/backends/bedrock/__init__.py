"""Amazon Bedrock model customization: compute.backend bedrock.

Bedrock prepares, trains and generates (ftspec.backends.bedrock.steps); the scoring,
comparison and report are the local backend's. The modules here import boto3 inside
their functions only, so that nothing but a Bedrock run needs it.
"""

from __future__ import annotations

from pathlib import Path

from ftspec.backends.backend import Backend
from ftspec.backends.bedrock.steps import MODEL, STEPS
from ftspec.catalog import steps
from ftspec.core.io import read_json
from ftspec.plan.model import Plan


def where(plan: Plan, threads: dict | None) -> str:
    b = plan.compute.bedrock
    return f"Amazon Bedrock, {b.region} ({b.customization.lower().replace('_', ' ')} of {plan.model.id})"


def schedule(plan: Plan) -> str:
    return "trained by Bedrock with " + (", ".join(f"{k} {v}" for k, v in plan.compute.bedrock.hyperparameters.items())
                                         or "the family's defaults")


def manifest(run_dir: Path) -> dict:
    """The job and the custom model it made, where a reviewer looks first."""
    made = read_json(run_dir / steps.folder(steps.TRAIN.name) / MODEL, lenient=True)
    return {"bedrock": made} if isinstance(made, dict) else {}


BACKEND = Backend("bedrock", STEPS, where=where, schedule=schedule, manifest=manifest)
