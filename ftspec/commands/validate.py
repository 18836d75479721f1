"""`ftspec validate`: load, validate and check one spec, every problem at once."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ftspec.core.errors import Issue
from ftspec.plan.compile import check_spec


def validate(spec: Path, profiles: Iterable[str] = (), sets: Iterable[str] = (), strict: bool = False,
             allow: Iterable[str | Path] = ()) -> list[Issue]:
    """The spec's warnings when it is valid. Raises SpecError with every error (and, when
    ``strict``, every warning too), each at its FILE:LINE:COL."""
    return check_spec(spec, profiles, sets, strict, allow).warnings
