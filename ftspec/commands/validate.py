"""`ftspec validate`: load, validate and check one spec, every problem at once."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ftspec.core.errors import Issue
from ftspec.plan.compile import check_spec
from ftspec.plan.sweep import resolve


def validate(spec: Path, profiles: Iterable[str] = (), sets: Iterable[str] = (), strict: bool = False,
             allow: Iterable[str | Path] = ()) -> list[Issue]:
    """The spec's warnings when it is valid. Raises SpecError with every error (and, when
    ``strict``, every warning too), each at its FILE:LINE:COL. A spec with a ``sweep:``
    section has it checked too, as ``ftspec sweep`` would before its first trial (every
    field and value at its line: each value is compiled into the spec)."""
    profiles, sets, allow = tuple(profiles), tuple(sets), tuple(allow)
    checked = check_spec(spec, profiles, sets, strict, allow)
    if checked.ctx.spec.sweep is not None:
        resolve(spec, profiles, sets, allow=allow)
    return checked.warnings
