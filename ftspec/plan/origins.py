"""Where each field of a plan came from, for ``ftspec diff``: a default, the spec, a base
spec, a profile, ``--set``, or derived by ftspec.

The spec side is :func:`ftspec.spec.provenance.explain` (where each effective spec value
was written); this module maps a plan field back to the spec key it is written as.
"""

from __future__ import annotations

import re
from typing import Callable, Iterable

from ftspec.plan.model import Plan
from ftspec.spec.provenance import Row, label

Origin = Callable[[str], "str | None"]  # a change's path -> where its value came from, in words
DERIVED = "derived"

# A plan field and the spec key it is written as, where the two differ.
_SPEC_KEYS = (
    (re.compile(r"^method\.objective$"), "method.kind"),
    (re.compile(r"^method\.dpo\.(\w+)$"), r"method.\1"),
    (re.compile(r"^format\.templates\.(\w+)(\..*)?$"), r"format.\1"),
    (re.compile(r"^format\.chat_template(\..*)?$"), "format.chat_template"),
    (re.compile(r"^format\.messages\.(\d+)\.content(\..*)?$"), r"format.messages.\1.content"),
    # A training mixture's parts are written as the items of data.train's list, its total and seed under data.mix.
    (re.compile(r"^data\.sources\.train\.parts\.(\d+)\.(drawn|available|sample_chars|take)$"), None),
    (re.compile(r"^data\.sources\.train\.parts\.(\d+)\.source\.(sha256|rows|kind)$"), None),
    (re.compile(r"^data\.sources\.train\.parts\.(\d+)\.source\.(.*)$"), r"data.train.\1.\2"),
    (re.compile(r"^data\.sources\.train\.parts\.(\d+)\.(.*)$"), r"data.train.\1.\2"),
    (re.compile(r"^data\.sources\.train\.(total|seed)$"), r"data.mix.\1"),
    (re.compile(r"^data\.sources\.train\.(rows|kind)$"), None),
    (re.compile(r"^data\.sources\.(\w+)\.(sha256|rows|kind)$"), None),  # read from the file
    (re.compile(r"^data\.sources\.(\w+)\.(.*)$"), r"data.\1.\2"),
    (re.compile(r"^eval\.metrics\.(\d+)\.(rubric|schema|model)(\..*)?$"), r"eval.metrics.\1.\2"),
    (re.compile(r"^eval\.metrics\.(\d+)\.extract\.template(\..*)?$"), r"eval.metrics.\1.extract.template"),
)


def spec_key(plan: Plan, path: str) -> str | None:
    """The spec key a changed plan field is written as (``format.templates.prompt.text``
    is ``format.prompt``), or None for a value ftspec computes (a row count, a hash)."""
    dotted = re.sub(r"\[(\d+)\]", r".\1", path)
    gate = re.match(r"^eval\.gates\.(\d+)", dotted)
    if gate:  # a gate is written under its name
        i = int(gate.group(1))
        return f"eval.gates.{plan.eval.gates[i].gate}" if i < len(plan.eval.gates) else "eval.gates"
    derived = re.match(r"^data\.derive\.(\d+)", dotted)
    if derived:
        i = int(derived.group(1))
        return f"data.derive.{plan.data.derive[i].name}" if i < len(plan.data.derive) else "data.derive"
    amount = re.match(r"^data\.sources\.train\.parts\.(\d+)\.amount$", dotted)
    train = plan.data.sources.get("train")
    if amount and getattr(train, "kind", None) == "mixture":  # the weight, rows or epochs the spec wrote
        i = int(amount.group(1))
        return f"data.train.{i}.{train.parts[i].take}" if i < len(train.parts) else "data.train"
    for pattern, key in _SPEC_KEYS:
        if pattern.match(dotted):
            return None if key is None else pattern.sub(key, dotted)
    return dotted


def origins(plan: Plan, rows: Iterable[Row]) -> Origin:
    """Where each field of ``plan`` came from, given the rows of ``ftspec plan --explain``
    for the spec it was compiled from (:func:`ftspec.spec.provenance.explain`)."""
    by_key = {row.key: row for row in rows}

    def origin(path: str) -> str | None:
        key = spec_key(plan, path)
        if key is None:
            return DERIVED
        # The field itself, or the first value written under it (a template given as {builtin: …}).
        row = by_key.get(key) or next((r for k, r in by_key.items() if k.startswith(key + ".")), None)
        while row is None and "." in key:  # an item of a list the spec writes whole
            key = key.rpartition(".")[0]
            row = by_key.get(key)
        return label(row) if row is not None else DERIVED

    return origin


class StagedOrigin:
    """Where each field came from, for a spec with stages: called with a path, the last
    stage's (the spec's plan); ``stage(NAME)`` gives another stage's."""

    def __init__(self, by_stage: dict[str, Origin], last: str):
        self.by_stage = by_stage
        self.last = last

    def __call__(self, path: str) -> str | None:
        return self.by_stage[self.last](path)

    def stage(self, name: str | None) -> Origin | None:
        return self.by_stage.get(name) if name is not None else None
