"""The answer inside a model's output (or a reference), as a metric's ``extract`` finds it.

A spec's extraction is a regular expression or a sandboxed jinja template; both meet
text the model wrote, so both are bounded: a regex that backtracks without end gives
up after :data:`REGEX_SECONDS` and a template renders within the sandbox's limits.
The `regex` package (the train extra) is imported when a pattern is first compiled,
so importing this module stays cheap.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from ftspec.data.templates import environment, render

# What a prediction whose extraction found nothing is scored as: equal to no reference.
NO_ANSWER = "\x00(no answer)"

# A spec's regular expression meets text the model wrote: a pattern that backtracks
# without end on some output (``(a|aa)+$``) must not hang the evaluation. The `regex`
# package (re's syntax) can stop a match after a time; such a text counts as no match.
REGEX_SECONDS = 1.0


@lru_cache(maxsize=64)
def compile_bounded(pattern: str):
    import regex

    return regex.compile(pattern)


def bounded_matches(pattern, text: str, first_only: bool = False) -> list:
    """The matches of a compiled ``compile_bounded`` pattern in ``text``; none when
    matching takes longer than REGEX_SECONDS."""
    try:
        if first_only:
            m = pattern.search(text, timeout=REGEX_SECONDS)
            return [m] if m else []
        return list(pattern.finditer(text, timeout=REGEX_SECONDS))
    except TimeoutError:
        return []


@lru_cache(maxsize=64)
def _compiled_template(text: str):
    return environment().from_string(text)


def _template_text(template: Any) -> str:
    if isinstance(template, str):
        return template
    if isinstance(template, dict):
        return template["text"]
    return template.text


def extract(text: str, spec: dict | None) -> str:
    """The answer inside ``text`` as ``spec`` (an ``Extract`` as a dict) finds it.

    ``regex``: all matches, the first or last per ``which`` (default ``last``); group 1
    when the pattern has a group, else the whole match; no match gives "".
    ``template``: the sandboxed jinja text rendered with the variable ``text``; any
    error gives "". With no spec the text itself. The result is stripped.
    """
    text = "" if text is None else str(text)
    if not spec:
        return text.strip()
    regex = spec.get("regex")
    template = spec.get("template")
    if regex is not None:
        pattern = compile_bounded(regex)
        matches = bounded_matches(pattern, text)
        if not matches:
            return ""
        match = matches[0] if spec.get("which", "last") == "first" else matches[-1]
        answer = match.group(1) if pattern.groups >= 1 else match.group(0)
        return (answer or "").strip()
    if template is not None:
        try:
            rendered = render(_compiled_template(_template_text(template)), {"text": text})
        except Exception:  # syntax, undefined, sandbox and type errors alike
            return ""
        return str(rendered).strip()
    return text.strip()


def extraction_key(spec: dict | None) -> str:
    """One string per distinct extraction (a template as its text), so that metrics that
    extract alike share one extraction of the answers."""
    if not spec:
        return ""
    spec = dict(spec)
    if spec.get("template") is not None:
        spec["template"] = _template_text(spec["template"])
    return json.dumps(spec, sort_keys=True, default=str)
