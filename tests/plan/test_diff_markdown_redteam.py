"""The pull-request comment (ftspec/plan/diff_render.py, ftspec/plan/diff_results.py) shows text
from the change under review — a prompt, a key, a file's name — and from the step store — a
metric's or a gate's name, a reason: none of it may close the code span it is shown in, nor be
read as Markdown or HTML (``</details>``, **bold**, a link) that tells the reviewer something
ftspec did not say."""

from __future__ import annotations

import re

from helpers import BASE_BODY, write_job

from ftspec.plan.artifacts import GateResult, ReportMetrics
from ftspec.plan.compile import compile_spec
from ftspec.plan.diff import Change, PlanDiff, diff_plans
from ftspec.plan.diff_render import render_markdown
from ftspec.plan.diff_results import DiffResults, SideResults

PAYLOAD = "`` </details> **APPROVED** [ok](https://evil.example) ``"
MARKUP = re.compile(r"</details>|\*\*APPROVED|\]\(https://")


def outside_code(line: str) -> str:
    """The text of a Markdown line outside its code spans, as CommonMark reads them: a run of N
    backticks (not escaped) opens a span that the next run of exactly N backticks closes; with
    no such run the backticks are text. A backslash-escaped character is shown as ``·``."""
    out, i = [], 0
    while i < len(line):
        if line[i] == "\\" and i + 1 < len(line):
            out.append("·")  # an escaped character is text, not markup
            i += 2
            continue
        if line[i] == "`":
            run = re.match(r"`+", line[i:]).group()
            closer = next((m for m in re.finditer(r"`+", line[i + len(run):]) if len(m.group()) == len(run)), None)
            if closer is not None:
                i += len(run) + closer.end()
                continue
            out.append(run)
            i += len(run)
            continue
        out.append(line[i])
        i += 1
    return "".join(out)


def unescaped_markup(markdown: str) -> list[str]:
    """Lines whose text outside code spans still holds the payload's markup, unescaped (but for
    the line that closes ftspec's own collapsed section)."""
    return [line for line in markdown.splitlines() if line != "</details>" and MARKUP.search(outside_code(line))]


def test_a_prompt_holding_backticks_cannot_close_its_code_span(tmp_path):
    old = write_job(tmp_path, BASE_BODY, "old")
    new = write_job(tmp_path, BASE_BODY.replace("Queue:", "Queue: " + PAYLOAD.replace('"', "'")), "new")
    diff = diff_plans(compile_spec(old)[0], compile_spec(new)[0])
    assert any(c.path == "format.templates.prompt" for c in diff.changes)
    empty = DiffResults(SideResults(note="not run yet"), SideResults(note="not run yet"))
    for markdown in (render_markdown(diff), render_markdown(diff, empty)):
        assert "</details>" in markdown and unescaped_markup(markdown) == []


def test_a_key_or_a_file_name_with_markup_is_shown_as_text():
    changes = [Change("data", f'data.sources.train.rename["{PAYLOAD}"]', "a", "b", origin=f"spec {PAYLOAD}.yaml:3"),
               Change("format", "format.system", "a", PAYLOAD, origin="profile x <b>|</b> (s.yaml:1)")]
    diff = PlanDiff("a" * 64, "b" * 64, changes, ["train"], [], name="job")
    empty = DiffResults(SideResults(note="not run yet"), SideResults(note="not run yet"))
    for markdown in (render_markdown(diff), render_markdown(diff, empty)):
        assert unescaped_markup(markdown) == []
        assert "<b>" not in "".join(outside_code(line) for line in markdown.splitlines())
        # Each table row keeps its columns: a `|` in the origin does not start a new one.
        rows = [line for line in markdown.splitlines() if line.startswith("| `")]
        assert rows and all(outside_code(r).count("|") == 5 for r in rows)


def test_names_and_reasons_from_the_store_are_shown_as_text():
    name = f"acc {PAYLOAD}"
    gate = GateResult(gate=f"g {PAYLOAD}", metric=name, improvement=False, op=">=", threshold=0.5, value=None,
                      passed=False, reason=f"no rows {PAYLOAD} &lt;b&gt; ~~struck~~")
    m = ReportMetrics(split=PAYLOAD, rows=3, base={name: 0.1}, tuned={name: 0.4}, delta={name: 0.3},
                      gates_passed=False, gates=[gate])
    diff = PlanDiff("a" * 64, "b" * 64, [], [], ["report"], name="job")
    markdown = render_markdown(diff, DiffResults(SideResults(m), SideResults(m)))
    assert unescaped_markup(markdown) == []
    shown = "".join(outside_code(line) for line in markdown.splitlines())
    assert "&lt;" not in shown and "~~" not in shown  # an entity or a strike-through is shown as written
