"""A plan diff shown to a reviewer: plain text for the terminal, Markdown for a
pull-request comment, JSON for tools."""

from __future__ import annotations

import json
import re
from typing import Any, Mapping

from ftspec.core.text import printable
from ftspec.plan.diff import (
    ARROW,
    MISSING,
    NEWLINE,
    SHA_PREFIX,
    TEXT_WIDTH,
    VALUE_WIDTH,
    Change,
    Condition,
    PlanDiff,
    SourceRows,
    is_text,
    number,
)
from ftspec.plan.diff_results import (
    DiffResults,
    SideResults,
    md_code,
    md_text,
    render_results_markdown,
    render_results_text,
)
from ftspec.plan.origins import DERIVED

# --------------------------------------------------------------------------- where a value came from


def _origin_words(c: Change) -> str:
    if c.origin == DERIVED:
        return f"derived from {c.derived_from}" if c.derived_from else "derived by ftspec"
    if c.origin == "default":
        return "a default"
    return f"from {c.origin}"


# --------------------------------------------------------------------------- showing values

_PLAIN_STR = re.compile(r"[\w./@+:=-]+")
_LOOKS_LIKE_SCALAR = re.compile(r"(?i)null|true|false|~|yes|no|on|off"
                                r"|[-+]?(\d[\d_]*)?\.?\d+(e[-+]?\d+)?|[-+]?\.?(inf|nan)")


def _one_line(text: str) -> str:
    # Escapes and controls from a spec never reach the reviewer's terminal (or the Markdown).
    return printable(text.replace("\r\n", "\n").replace("\n", NEWLINE).replace("\t", "\\t"))


def _quote(text: str) -> str:
    """A string as shown: bare when it reads as itself (a name, a path, a model id), quoted otherwise."""
    if text and _PLAIN_STR.fullmatch(text) and not _LOOKS_LIKE_SCALAR.fullmatch(text):
        return text
    return f'"{text}"'


def _window(text: str, start: int, width: int) -> str:
    body = text[start:start + width]
    if start > 0:
        body = "…" + body
    if start + width < len(text):
        body = body + "…"
    return body


def _fmt_str(text: str, width: int = TEXT_WIDTH, start: int = 0) -> str:
    return _quote(_window(_one_line(text), start, width))


def _fmt(value: Any, width: int = VALUE_WIDTH) -> str:
    """A value on one line, as YAML-like flow text."""
    if value is MISSING:
        return ""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return number(value)
    if isinstance(value, Condition):
        return _one_line(value)
    if isinstance(value, str):
        return _fmt_str(value, min(width, TEXT_WIDTH))
    if is_text(value):
        return _fmt_str(value["text"])
    if isinstance(value, Mapping):
        inner = ", ".join(f"{k}: {_fmt_inner(k, v)}" for k, v in sorted(value.items(), key=lambda kv: str(kv[0])))
        text = "{" + inner + "}"
    elif isinstance(value, (list, tuple)):
        text = "[" + ", ".join(_fmt(v) for v in value) + "]"
    else:
        text = str(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _is_sha(path_or_key: str, value: Any) -> bool:
    return (str(path_or_key).rsplit(".", 1)[-1] == "sha256" and isinstance(value, str)
            and re.fullmatch(r"[0-9a-f]{64}", value) is not None)


def _fmt_inner(key: Any, value: Any) -> str:
    if _is_sha(str(key), value):
        return value[:SHA_PREFIX] + "…"
    return _fmt(value)


def _fmt_pair(change: Change) -> tuple[str, str]:
    """Old and new as shown; two long texts are shown from just before where they differ."""
    old, new = change.old, change.new
    if isinstance(old, str) and isinstance(new, str) and not isinstance(old, Condition):
        if _is_sha(change.path, old) and _is_sha(change.path, new):
            return old[:SHA_PREFIX] + "…", new[:SHA_PREFIX] + "…"
        a, b = _one_line(old), _one_line(new)
        common = 0
        for x, y in zip(a, b):
            if x != y:
                break
            common += 1
        context = 20
        start = common - context if common > TEXT_WIDTH - context else 0
        if start:
            # Start at a word (or line) rather than in the middle of one.
            cut = min((i for i in (a.find(" ", start, common - 8), a.find(NEWLINE, start, common - 8)) if i >= 0),
                      default=-1)
            start = cut + 1 if cut >= 0 else start
        return _fmt_str(old, start=start), _fmt_str(new, start=start)
    shown = _fmt_inner(change.path, old), _fmt_inner(change.path, new)
    if shown[0] == shown[1] and old is not MISSING:
        # Values that differ but read the same (3 and 3.0 in a field that takes both): shown exactly.
        return json.dumps(old, ensure_ascii=False), json.dumps(new, ensure_ascii=False)
    return shown


def _steps_line(d: PlanDiff, names=lambda xs: ", ".join(xs)) -> str:
    if d.is_empty():
        return "no change to the plan"
    head = f"steps to re-run: {names(d.rerun)}" if d.rerun else "steps to re-run: none"
    extra = [f"reused: {names(d.reused)}" if d.reused else "nothing reused"]
    if d.dropped:
        extra.append(f"no longer run: {names(d.dropped)}")
    return f"{head} ({'; '.join(extra)})"


def _stage_title(d: PlanDiff, name: str | None) -> str:
    at = next((i for i, st in enumerate(d.stages, 1) if st.name == name), None)
    return f"stage {name}" + (f" ({at}/{len(d.stages)})" if at is not None else "")


def _stage_steps_lines(d: PlanDiff, names=lambda xs: ", ".join(xs)) -> list[str]:
    """Plans with stages: what re-runs, stage by stage in the order they run."""
    if d.is_empty():
        return ["no change to the plan"]
    lines = ["steps to re-run:"]
    for st in d.stages:
        if st.removed:
            lines.append(f"stage {st.name}: removed (no longer run: {names(st.dropped)})")
            continue
        head = names(st.rerun) if st.rerun else "none"
        if st.added:
            extra = ["a new stage"] + ([f"reused: {names(st.reused)}"] if st.reused else [])
        elif not st.rerun:
            extra = [f"all {len(st.reused)} steps reused"]
        else:
            extra = [f"reused: {names(st.reused)}" if st.reused else "nothing reused"]
        if st.dropped and not st.added:
            extra.append(f"no longer run: {names(st.dropped)}")
        lines.append(f"stage {st.name}: {head} ({'; '.join(extra)})")
    return lines


_TRUST_ON = ("trust_remote_code turned on: the model repository's Python code will run on the machine "
             "that runs this spec")
_TRUST = "trust_remote_code: true: the model repository's Python code runs on the machine that runs this spec"
_TRUST_ON_MD = ("`trust_remote_code` turned on: the model repository's Python code will run on the machine "
                "that runs this spec.")
_TRUST_MD = "`trust_remote_code: true`: the model repository's Python code runs on the machine that runs this spec."


# --------------------------------------------------------------------------- a mixture's draw

MIXTURE_HEAD = "the mixture's draw (rows per source, before data.limit):"


def _count(value: Any, estimated: bool) -> str:
    if value is MISSING:
        return "—"
    if value is None:
        return "?"
    return f"~{value}" if estimated and isinstance(value, int) else _fmt(value)


def _source_rows(r: SourceRows, name=lambda n: _one_line(n)) -> str:
    """``rows from a: 700 → 800`` (a source added or removed shows — on the side without it)."""
    what = "rows of the mixture" if r.source is None else f"rows from {name(r.source)}"
    note = (" (a new source)" if r.old is MISSING and r.source is not None
            else " (source removed)" if r.new is MISSING and r.source is not None else "")
    return f"{what}: {_count(r.old, r.estimated)} {ARROW} {_count(r.new, r.estimated)}{note}"


def _mixture_lines(d: PlanDiff, stage: str | None, indent: str) -> list[str]:
    rows = [r for r in d.mixture if r.stage == stage]
    if not rows:
        return []
    return [f"{indent}{MIXTURE_HEAD}"] + [f"{indent}  {_source_rows(r)}" for r in rows]


# --------------------------------------------------------------------------- text


def _style(text: str, color: bool, **kw: Any) -> str:
    if not color:
        return text
    import click

    return click.style(text, **kw)


def render_text(d: PlanDiff, color: bool = False, results: DiffResults | None = None) -> str:
    """The diff for a terminal; with ``results`` (``--results``), each side's results after it."""
    text = _render_text(d, color)
    if results is None:
        return text
    return text + "\n" + "\n".join(render_results_text(results)) + "\n"


def _render_text(d: PlanDiff, color: bool) -> str:
    lines: list[str] = []
    if d.trust_remote_code_turned_on:
        lines.append(_style(f"!! {_TRUST_ON}", color, fg="red", bold=True))
    name = f" {d.name}" if d.name else ""
    ids = (f"plan {d.old_id[:12]} (unchanged)" if d.old_id == d.new_id
           else f"plan {d.old_id[:12]} {ARROW} {d.new_id[:12]}")
    lines.append(f"{_style('ftspec diff' + name, color, bold=True)}: {ids}")
    if d.trust_remote_code and not d.trust_remote_code_turned_on:
        lines.append(_style(f"!! {_TRUST}", color, fg="red", bold=True))
    for code in d.reward_code:
        said = "new or changed Python reward code will run" if code in d.reward_code_new else "Python reward code runs"
        lines.append(_style(f"!! {said} in training: {code}", color, fg="red", bold=True))
    if d.stages:
        return _render_text_staged(d, lines, color)
    for section, changes in d.sections():
        lines.append("")
        lines.append(_style(section, color, bold=True))
        lines += _change_lines(changes, color, "  ")
        if section == "data":
            lines += _mixture_lines(d, None, "  ")
    lines.append("")
    lines.append(_steps_line(d))
    return "\n".join(lines) + "\n"


def _render_text_staged(d: PlanDiff, lines: list[str], color: bool) -> str:
    """Each stage's changes under its name, section by section; then each stage's steps."""
    for stage, sections in d.stage_sections():
        lines.append("")
        lines.append(_style(_stage_title(d, stage), color, bold=True))
        for section, changes in sections:
            lines.append(f"  {_style(section, color, bold=True)}")
            lines += _change_lines(changes, color, "    ")
            if section == "data":
                lines += _mixture_lines(d, stage, "    ")
    lines.append("")
    steps = _stage_steps_lines(d)
    lines.append(steps[0])
    lines += [f"  {x}" for x in steps[1:]]
    return "\n".join(lines) + "\n"


def _change_lines(changes: list[Change], color: bool, indent: str) -> list[str]:
    lines = []
    for c in changes:
        old, new = _fmt_pair(c)
        origin = _style(f"  ({_origin_words(c)})", color, dim=True) if c.origin else ""
        if c.added:
            lines.append(f"{indent}+ {c.label}: {_style(new, color, fg='green')}{origin}")
        elif c.removed:
            lines.append(f"{indent}- {c.label}: {_style(old, color, fg='red')}{origin}")
        else:
            lines.append(f"{indent}{c.label}: {_style(old, color, fg='red')} {ARROW} "
                         f"{_style(new, color, fg='green')}{origin}")
    return lines


# --------------------------------------------------------------------------- markdown


# A value, a key or a file's name from the change under review reaches the comment only as a
# code span no backtick inside can close, or as text whose markup is escaped.
_code, _cell = md_code, md_text


def _md_head(d: PlanDiff) -> list[str]:
    ids = f"`{d.old_id[:12]}`, unchanged" if d.old_id == d.new_id else f"`{d.old_id[:12]}` {ARROW} `{d.new_id[:12]}`"
    lines = [f"### ftspec diff: {d.name or '(unnamed)'} ({ids})", ""]
    if d.trust_remote_code_turned_on:
        lines += [f"> ⚠️ **{_TRUST_ON_MD}**", ""]
    elif d.trust_remote_code:
        lines += [f"> ⚠️ **{_TRUST_MD}**", ""]
    for code in d.reward_code:
        said = "New or changed Python reward code will run" if code in d.reward_code_new else "Python reward code runs"
        lines += [f"> ⚠️ **{said} in training:** `{code}`", ""]
    return lines


def _md_tables(d: PlanDiff) -> list[str]:
    """Each section's changes as a table: key, old, new and where the new value came from."""
    lines: list[str] = []
    grouped = (d.stage_sections() if d.stages else [(None, d.sections())])
    for stage, section, changes in ((st, f"{_stage_title(d, st)}: {sec}" if d.stages else sec, ch)
                                    for st, sections in grouped for sec, ch in sections):
        sourced = any(c.origin for c in changes)
        lines += [f"**{section}**", "", "| key | old | new |" + (" from |" if sourced else ""),
                  "| --- | --- | --- |" + (" --- |" if sourced else "")]
        for c in changes:
            old, new = _fmt_pair(c)
            lines.append(f"| {_code(c.label)} | {'—' if c.added else _code(old)} | {'—' if c.removed else _code(new)} |"
                         + (f" {_cell(_origin_words(c))} |" if sourced else ""))
        lines.append("")
        if changes[0].section == "data":
            lines += _md_mixture(d, stage)
    return lines


def _md_mixture(d: PlanDiff, stage: str | None) -> list[str]:
    """The mixture's draw as a list under the data table: what a weight change does."""
    rows = [r for r in d.mixture if r.stage == stage]
    if not rows:
        return []
    return ([f"*{_cell(MIXTURE_HEAD)}*", ""] + [f"- {_source_rows(r, _code)}" for r in rows] + [""])


def _md_steps(d: PlanDiff) -> list[str]:
    if d.is_empty():
        return ["No change to the plan."]
    if d.stages:
        steps = _stage_steps_lines(d, lambda xs: ", ".join(f"`{x}`" for x in xs))
        return [f"**{steps[0]}**", ""] + [f"- {x}" for x in steps[1:]]
    return ["**" + _steps_line(d, lambda xs: ", ".join(f"`{x}`" for x in xs)).replace(":", ":**", 1)]


def render_markdown(d: PlanDiff, results: DiffResults | None = None) -> str:
    """The diff as Markdown. With ``results`` (``--results``), the pull-request comment:
    what re-runs and each side's results in view, the changed values collapsed."""
    if results is not None:
        return _render_comment(d, results)
    lines = _md_head(d) + _md_tables(d) + _md_steps(d)
    return "\n".join(lines) + "\n"


def _render_comment(d: PlanDiff, results: DiffResults) -> str:
    lines = _md_head(d)
    if not d.changes:
        lines.append("**Changed:** nothing in the plan.")
    elif len(d.changes) <= 3 and not d.stages:
        lines.append("**Changed:** " + "; ".join(_md_change(c) for c in d.changes))
    else:
        sections = list(dict.fromkeys(c.section for c in d.changes))
        lines.append(f"**Changed:** {len(d.changes)} values ({', '.join(sections)}), listed below.")
    lines.append("")
    for stage in dict.fromkeys(r.stage for r in d.mixture):  # what a weight change does, in view
        lines += _md_mixture(d, stage)
    if d.rerun:
        lines += _md_steps(d)
    else:
        reused = len(d.reused)
        lines.append(f"**Nothing re-runs:** all {reused} step{'s' if reused != 1 else ''} of the new plan are reused "
                     "from the old one's" + (f"; no longer run: {', '.join(f'`{x}`' for x in d.dropped)}"
                                             if d.dropped else "") + ".")
    lines.append("")
    lines += render_results_markdown(results)
    if d.changes:
        lines += [f"<details><summary>Changed values ({len(d.changes)})</summary>", ""] + _md_tables(d)
        lines += ["</details>", ""]
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"


def _md_change(c: Change) -> str:
    old, new = _fmt_pair(c)
    value = f"{_code(new)} (added)" if c.added else f"{_code(old)} (removed)" if c.removed else \
        f"{_code(old)} {ARROW} {_code(new)}"
    return f"{_code(c.label)} {value}" + (f" ({_cell(_origin_words(c))})" if c.origin else "")


# --------------------------------------------------------------------------- json


def _json_value(value: Any) -> Any:
    return None if value is MISSING else value


def _json_side(side: SideResults) -> dict:
    m = side.metrics
    return {"note": side.note,
            "metrics": None if m is None else m.model_dump(mode="json", exclude={"details"})}


def render_json(d: PlanDiff, results: DiffResults | None = None) -> str:
    doc: dict[str, Any] = {
        "name": d.name,
        "old_id": d.old_id,
        "new_id": d.new_id,
        "empty": d.is_empty(),
        "changes": [
            {"section": c.section, "path": c.path, "old": _json_value(c.old), "new": _json_value(c.new),
             "added": c.added, "removed": c.removed, "origin": c.origin} | ({"stage": c.stage} if d.stages else {})
            for c in d.changes
        ],
        "rerun": list(d.rerun),
        "reused": list(d.reused),
        "dropped": list(d.dropped),
        "trust_remote_code": {"enabled": d.trust_remote_code, "turned_on": d.trust_remote_code_turned_on},
    }
    if d.mixture:
        doc["mixture"] = [{"source": r.source, "old": _json_value(r.old), "new": _json_value(r.new),
                           "estimated": r.estimated} | ({"stage": r.stage} if d.stages else {}) for r in d.mixture]
    if d.stages:
        doc["stages"] = [{"name": st.name, "rerun": st.rerun, "reused": st.reused, "dropped": st.dropped,
                          "added": st.added, "removed": st.removed} for st in d.stages]
    if results is not None:
        doc["results"] = {"same": results.same, "old": _json_side(results.old), "new": _json_side(results.new)}
    return json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False) + "\n"
