"""The one table of rules: each rule is registered with ``@rule(reads=...)``, which
records its name, the parts of the spec it reads and its function; :func:`run_checks`
runs the table in its fixed order.

A rule is a function of a :class:`~ftspec.checks.facts.Context` that yields issues.
What it reads (dotted spec keys; a key covers everything below it) decides whether it
runs when the schema refused part of a spec: the rest is still checked
(ftspec.spec.validate.salvage), a rule runs only when nothing it reads was set aside,
and what any rule says about a key set aside is dropped. A rule that reads the spec as
a whole says ``reads=WHOLE_SPEC`` and runs only on a spec the schema took entire.

Rules run in the order :mod:`ftspec.checks.rules` fixes (:meth:`Registry.seal`): some
leave facts on the context that later ones read (which sample rows format, what
data.filter keeps), and all share one rendering budget.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterable

from ftspec.checks.facts import Context
from ftspec.core.errors import Issue

Check = Callable[[Context], Iterable[Issue]]

WHOLE_SPEC: tuple[str, ...] = ("*",)  # reads: the whole spec
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$")


def overlaps(key: str, aside: Iterable[str]) -> bool:
    """Whether a dotted spec key is one of ``aside``, lies below one, or holds one."""
    return any(key == a or key.startswith(a + ".") or a.startswith(key + ".") for a in aside)


@dataclass(frozen=True)
class Rule:
    name: str
    reads: tuple[str, ...]  # dotted spec keys, or WHOLE_SPEC
    check: Check

    def runs_beside(self, aside: Iterable[str]) -> bool:
        """Whether the rule runs when the schema set the keys ``aside`` aside."""
        aside = tuple(aside)
        if not aside:
            return True
        return self.reads != WHOLE_SPEC and not any(overlaps(k, aside) for k in self.reads)


class Registry:
    """Rules by name, in the order they run once :meth:`seal` has fixed it."""

    def __init__(self) -> None:
        self._rules: dict[str, Rule] = {}
        self._order: tuple[str, ...] | None = None

    def rule(self, *, reads: tuple[str, ...]) -> Callable[[Check], Check]:
        """The decorator that registers a rule; ``reads``: what of the spec it reads."""
        if isinstance(reads, str) or not isinstance(reads, tuple) or not reads:
            raise TypeError(f"a rule says what of the spec it reads as a tuple of dotted keys (or WHOLE_SPEC), "
                            f"not {reads!r}")
        if reads != WHOLE_SPEC:
            bad = [k for k in reads if not isinstance(k, str) or not _KEY.match(k)]
            if bad:
                raise ValueError(f"not dotted spec keys: {bad}")

        def register(check: Check) -> Check:
            name = check.__name__
            if self._order is not None:
                raise RuntimeError(f"rule {name} is registered after the rules' order was fixed")
            if name in self._rules:
                raise ValueError(f"two rules are named {name}")
            self._rules[name] = Rule(name, reads, check)
            return check

        return register

    def seal(self, order: Iterable[str]) -> None:
        """Fix the order the rules run in: every registered rule, each once."""
        order = tuple(order)
        missing = sorted(set(self._rules) - set(order))
        unknown = sorted(set(order) - set(self._rules))
        twice = sorted({n for n in order if order.count(n) > 1})
        if missing or unknown or twice:
            raise ValueError(f"the rules' order leaves out {missing}, names unregistered {unknown}, "
                             f"lists twice {twice}")
        self._order = order

    @property
    def rules(self) -> tuple[Rule, ...]:
        """Every rule, in the order they run."""
        if self._order is None:
            raise RuntimeError("the rules' order is not fixed yet (ftspec.checks.rules fixes it)")
        return tuple(self._rules[name] for name in self._order)

    def run(self, ctx: Context, aside: tuple[str, ...] = ()) -> list[Issue]:
        """The context's own issues, then every rule's that runs beside ``aside``; what
        any of them says about a key set aside is dropped."""
        issues = list(ctx.issues)
        for r in self.rules:
            if r.runs_beside(aside):
                issues.extend(r.check(ctx))
        if aside:
            issues = [i for i in issues if not overlaps(i.key, aside)]
        return issues


RULES = Registry()
rule = RULES.rule


def run_checks(ctx: Context, aside: tuple[str, ...] = ()) -> list[Issue]:
    """Every rule's issues. ``aside``: spec keys the schema refused and that were set
    aside (see validate.salvage); what reads them is not checked, nor reported."""
    return RULES.run(ctx, aside)
