"""The sample rows rendered as a run renders them: renames, derived columns,
data.filter and the format's templates, within validate's rendering budget, each row
rendered once however many rules ask for it.
"""

from __future__ import annotations

from typing import Any

import jinja2

from ftspec.checks.derived import answered_by_teacher
from ftspec.checks.facts import Context, template_refs
from ftspec.data.formatting import FormatError, RowFormatter
from ftspec.data.splitting import filter_verdict, verdict_problem
from ftspec.spec import schema as S


class Dropped(FormatError):
    """A sample row that data.filter leaves out (``problem``: why the filter could not
    decide, when it rendered neither true nor false)."""

    def __init__(self, problem: str | None = None):
        super().__init__("data.filter", problem or "left out by data.filter")
        self.problem = problem


class SampleFormatter:
    """A RowFormatter for the sample rows, within the run's rendering budget, that
    remembers each row's result: the checks and the compiler ask for the same rows
    more than once, and a template is rendered once per row. With ``row_filter``
    (data.filter), a row the filter leaves out raises :class:`Dropped`, as the
    runtime leaves it out before formatting."""

    def __init__(self, formatter: RowFormatter, row_filter: jinja2.Template | None = None,
                 answerless: set[int] = frozenset()):
        self.formatter = formatter
        self.row_filter = row_filter
        self.done: dict[int, tuple[dict, Any]] = {}  # id(values) -> (values, record or FormatError)
        # Sample rows of the sources a distillation's teacher answers (id of their values):
        # formatted without their answers, as the run formats them.
        self.answerless = answerless

    def __getattr__(self, name):
        return getattr(self.formatter, name)

    def _format(self, values: dict) -> dict:
        answer = id(values) not in self.answerless
        if self.row_filter is None:
            return self.formatter(values, answer)
        mapped = self.formatter.columns(values)
        text = self.formatter._render(self.row_filter, mapped, "data.filter", self.formatter.budget)
        verdict = filter_verdict(text)
        if not verdict:
            raise Dropped(None if verdict is False else verdict_problem(text))
        return self.formatter.render(mapped, answer)

    def __call__(self, values: dict) -> dict:
        hit = self.done.get(id(values))
        if hit is None or hit[0] is not values:
            try:
                result: Any = self._format(values)
            except FormatError as exc:
                result = exc
            hit = self.done[id(values)] = (values, result)
        if isinstance(hit[1], FormatError):
            raise hit[1]
        return hit[1]


def sample_formatter(ctx: Context) -> SampleFormatter | None:
    """A formatter from the parsed templates, or None when a template did not parse."""
    f = ctx.spec.format
    needed = [k for k in ctx.parsed if k.startswith(("format.", "data.derive.")) or k == "data.filter"]
    wanted = [".".join(map(str, p)) for p, _ in template_refs(ctx.spec) if p[0] in ("format", "data")]
    if set(wanted) - set(needed):
        return None
    derive = [(name, ctx.parsed[f"data.derive.{name}"][0]) for name in ctx.spec.data.derive]
    fields = {k.split(".", 1)[1]: t for k, (t, _) in ctx.parsed.items()
              if k.startswith("format.") and k.count(".") == 1 and k != "format.chat_template"}
    turns = []
    if isinstance(f, S.ChatFormat) and f.messages:
        turns = [(t.role, ctx.parsed[f"format.messages.{i}.content"][0]) for i, t in enumerate(f.messages)]
    row_filter = ctx.parsed["data.filter"][0] if "data.filter" in ctx.parsed else None
    answerless = {id(row.values) for split in answered_by_teacher(ctx.spec) if (info := ctx.sources.get(split))
                  for row in info.sample}
    return SampleFormatter(RowFormatter(f.kind, dict(ctx.spec.data.rename), derive, fields, turns,
                                        getattr(f, "messages_column", None), budget=ctx.render_budget), row_filter,
                           answerless)
