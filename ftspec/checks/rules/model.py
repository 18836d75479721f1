"""Rules on the model: a hub model is pinned, rows fit its positions."""

from __future__ import annotations

from typing import Iterator

from ftspec.checks.facts import Context
from ftspec.checks.registry import WHOLE_SPEC, rule
from ftspec.core.errors import Issue


@rule(reads=("model",))
def check_model_revision(ctx: Context) -> Iterator[Issue]:
    """A hub model without a pinned revision can change under the spec."""
    m = ctx.spec.model
    if ctx.model and ctx.model.source == "hub" and not m.revision:
        yield ctx.warning(("model", "base"), f"hub model '{m.base}' has no pinned revision; "
                                             "set model.revision to a commit hash")


@rule(reads=WHOLE_SPEC)
def check_max_length(ctx: Context) -> Iterator[Issue]:
    """Rows cannot be longer than the model's positions."""
    limit = ctx.model.max_positions if ctx.model else None
    if limit and ctx.spec.training.max_length and ctx.spec.training.max_length > limit:
        yield ctx.error(("training", "max_length"), f"longer than the model's {limit} positions "
                                                    f"(got {ctx.spec.training.max_length})")
