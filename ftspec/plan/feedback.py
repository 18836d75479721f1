"""What unpaired feedback adds to a plan: a feedback format's loss and a KTO method's settings."""

from __future__ import annotations

from typing import Any

from ftspec.spec import schema as S


def text_loss(f: Any) -> str:
    """The plan's ``format.loss`` of a text format: the spec's, or where the objective puts it."""
    if isinstance(f, S.FeedbackFormat):
        return "completion"  # KTO's loss is on each row's completion
    return getattr(f, "loss", "preference")


def kto(m: S.KTOMethod) -> dict:
    """The plan's ``method.kto``."""
    return {"beta": m.beta, "desirable_weight": m.desirable_weight, "undesirable_weight": m.undesirable_weight,
            "loss_type": m.loss_type}
