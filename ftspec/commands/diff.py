"""`ftspec diff`: what a change to a spec does to training.

Two compiled plans are compared leaf by leaf, so a value that changed through a
default, an ``extends`` base or a profile shows up as what it now is, and the step
keys say which steps of the run must run again. The output is meant for a
reviewer: plain text for the terminal, Markdown for a pull-request comment, JSON
for tools.

This module is on the light command path: the standard library and ftspec's
compiler modules only (no torch, no transformers).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from ftspec.core.errors import Issue, Pos, SpecError
from ftspec.plan.model import Plan, thaw
from ftspec.plan.stages import root_model


class _Missing:
    """The value on the side of a change where the key does not exist."""

    _instance: "_Missing | None" = None

    def __new__(cls) -> "_Missing":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "MISSING"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()

# Derived or noisy top-level keys: the id and the step keys follow from the rest,
# the checks restate it, and the spec's own path is where it lives, not what it does.
IGNORED = frozenset({"id", "ftspec_version", "steps", "checks", "spec", "stages"})
# Of the ignored ``spec`` section, what explains where a change came from.
SPEC_SHOWN = ("profiles", "overrides")
# Sections in the order a reviewer reads them (the order of the plan itself, with
# ``spec`` first because it explains the rest); anything else follows by name.
SECTION_ORDER = ("spec", "plan_version", "name", "description", "model", "data", "format", "method",
                 "training", "eval", "compute", "output", "tracking")

TEXT_WIDTH = 60  # template and other long text, shown on one line
VALUE_WIDTH = 100  # a whole list or mapping shown as one value
SHA_PREFIX = 12
ARROW = "→"
NEWLINE = "⏎"


@dataclass(frozen=True)
class Change:
    """One difference between two plans. ``old`` is MISSING when the key was
    added, ``new`` is MISSING when it was removed. A template is one change whose
    values are its text."""

    section: str
    path: str
    old: Any
    new: Any
    # Where the value came from, in words: "profile smoke (specs/x.yaml:68)", "--set KEY=VALUE",
    # "default", "derived" (computed by ftspec from other values); None when not known
    # (a plan file compared, not a spec).
    origin: str | None = None
    # The stage whose plan the change is in (a spec with stages); the path is in that stage's plan.
    stage: str | None = None

    @property
    def added(self) -> bool:
        return self.old is MISSING

    @property
    def removed(self) -> bool:
        return self.new is MISSING


@dataclass
class StageSteps:
    """What runs again in one stage of a spec with stages (plain step names)."""

    name: str
    rerun: list[str]
    reused: list[str]
    dropped: list[str] = field(default_factory=list)
    added: bool = False  # a stage the old plan does not have
    removed: bool = False  # a stage the new plan no longer has


@dataclass
class PlanDiff:
    old_id: str
    new_id: str
    changes: list[Change]
    rerun: list[str]
    reused: list[str]
    # Steps of the old plan that the new plan no longer has (e.g. eval turned off).
    dropped: list[str] = field(default_factory=list)
    name: str = ""
    # The new plan lets the model repository's code run; and whether it did not before.
    trust_remote_code: bool = False
    trust_remote_code_turned_on: bool = False
    # Plans with stages: each stage's steps, in the order the stages run (``rerun``,
    # ``reused`` and ``dropped`` then name steps as STAGE/STEP, every stage's).
    stages: list[StageSteps] = field(default_factory=list)

    def is_empty(self) -> bool:
        return not self.changes and not self.rerun and not self.dropped

    def sections(self) -> list[tuple[str, list[Change]]]:
        groups: dict[str, list[Change]] = {}
        for c in self.changes:
            groups.setdefault(c.section, []).append(c)
        return list(groups.items())

    def stage_sections(self) -> list[tuple[str | None, list[tuple[str, list[Change]]]]]:
        """The sections of each stage's changes, stages in the order they run."""
        by_stage: dict[str | None, list[Change]] = {}
        for c in self.changes:
            by_stage.setdefault(c.stage, []).append(c)
        out = []
        for stage, changes in by_stage.items():
            groups: dict[str, list[Change]] = {}
            for c in changes:
                groups.setdefault(c.section, []).append(c)
            out.append((stage, list(groups.items())))
        return out


# --------------------------------------------------------------------------- comparing


def _as_plan(plan: Any) -> Plan:
    if isinstance(plan, Plan):
        return plan
    return Plan.from_dict(thaw(plan))


def _comparable(plan: dict) -> dict:
    body = {k: v for k, v in plan.items() if k not in IGNORED}
    spec = plan.get("spec")
    if isinstance(spec, Mapping):
        shown = {k: spec[k] for k in SPEC_SHOWN if k in spec}
        if shown:
            body["spec"] = shown
    return body


def _same(a: Any, b: Any) -> bool:
    # Strict: 3 and 3.0, or 1 and true, are different values in a plan.
    return json.dumps(a, sort_keys=True, ensure_ascii=False) == json.dumps(b, sort_keys=True, ensure_ascii=False)


def _is_text(value: Any) -> bool:
    """A template (source, ref, text, sha256) or another text with its hash, such as a JSON schema."""
    return isinstance(value, Mapping) and "text" in value and "sha256" in value and isinstance(value["text"], str)


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _shown(value: Any) -> Any:
    """The value a change carries: a template stands for its text."""
    return value["text"] if _is_text(value) else value


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def _key_path(path: str, key: Any) -> str:
    key = str(key)
    if _PLAIN_KEY.fullmatch(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key, ensure_ascii=False)}]"


def _walk(old: Any, new: Any, path: str, out: list[tuple[str, Any, Any]]) -> None:
    if _same(old, new):
        return
    if _is_text(old) and _is_text(new):
        if old["text"] != new["text"]:
            out.append((path, old["text"], new["text"]))
            return
        # Same text from somewhere else (an inline template moved to a file, a renamed file).
        rest_old = {k: v for k, v in old.items() if k not in ("text", "sha256")}
        rest_new = {k: v for k, v in new.items() if k not in ("text", "sha256")}
        _walk(rest_old, rest_new, path, out)
        return
    if isinstance(old, Mapping) and isinstance(new, Mapping) and not _is_text(old) and not _is_text(new):
        for key in sorted(set(old) | set(new), key=str):
            sub = _key_path(path, key)
            if key not in new:
                _one_side(old[key], sub, out, removed=True)
            elif key not in old:
                _one_side(new[key], sub, out, removed=False)
            else:
                _walk(old[key], new[key], sub, out)
        return
    if isinstance(old, list) and isinstance(new, list):
        if all(_is_scalar(v) for v in old) and all(_is_scalar(v) for v in new):
            out.append((path, old, new))
            return
        for i in range(max(len(old), len(new))):
            sub = f"{path}[{i}]"
            if i >= len(new):
                out.append((sub, _shown(old[i]), MISSING))
            elif i >= len(old):
                out.append((sub, MISSING, _shown(new[i])))
            else:
                _walk(old[i], new[i], sub, out)
        return
    out.append((path, _shown(old), _shown(new)))


def _one_side(value: Any, path: str, out: list[tuple[str, Any, Any]], removed: bool) -> None:
    """A key only one plan has: a mapping key by key, a list of mappings element by element."""
    if isinstance(value, Mapping) and value and not _is_text(value):
        for key in sorted(value, key=str):
            _one_side(value[key], _key_path(path, key), out, removed)
    elif isinstance(value, list) and value and not all(_is_scalar(v) for v in value):
        for i, item in enumerate(value):
            out.append((f"{path}[{i}]", _shown(item), MISSING) if removed else (f"{path}[{i}]", MISSING, _shown(item)))
    else:
        out.append((path, _shown(value), MISSING) if removed else (path, MISSING, _shown(value)))


_PART = re.compile(r'\[(\d+)\]|\["((?:[^"\\]|\\.)*)"\]|\.?([^.\[]+)')


def _path_key(path: str) -> tuple:
    parts = []
    for index, quoted, plain in _PART.findall(path):
        if index:
            parts.append((1, int(index), ""))
        else:
            parts.append((0, 0, quoted or plain))
    return tuple(parts)


def _section_rank(section: str) -> tuple[int, str]:
    if section in SECTION_ORDER:
        return (SECTION_ORDER.index(section), "")
    return (len(SECTION_ORDER), section)


def diff_plans(old: Any, new: Any, old_origin: Origin | None = None, new_origin: Origin | None = None) -> PlanDiff:
    """Compare two plans (Plans, or dicts as ``Plan.to_dict()`` gives). With
    ``new_origin`` (and ``old_origin``, for removed values), each change names where
    its value came from (see :func:`origins`)."""
    old, new = _as_plan(old), _as_plan(new)
    if old.stages or new.stages:
        return _diff_staged(old, new, old_origin, new_origin)
    changes = _changes(old, new, old_origin, new_origin)
    old_keys = {s.name: s.key for s in old.steps}
    new_names = {s.name for s in new.steps}
    rerun = [s.name for s in new.steps if old_keys.get(s.name) != s.key]
    reused = [s.name for s in new.steps if old_keys.get(s.name) == s.key]
    dropped = [s.name for s in old.steps if s.name not in new_names]

    # A Bedrock model (model.kind bedrock) runs no code here: it has no trust_remote_code.
    trust_new, trust_old = (getattr(p.model, "trust_remote_code", False) for p in (new, old))
    return PlanDiff(
        old_id=old.id, new_id=new.id, changes=changes, rerun=rerun, reused=reused,
        dropped=dropped, name=new.name or old.name,
        trust_remote_code=trust_new, trust_remote_code_turned_on=trust_new and not trust_old,
    )


def _changes(old: Plan, new: Plan, old_origin: Origin | None, new_origin: Origin | None,
             stage: str | None = None) -> list[Change]:
    """Every changed field of two plans (of one stage), in the order a reviewer reads them."""
    found: list[tuple[str, Any, Any]] = []
    # Leaf by leaf over the plans' JSON: every field is compared, whatever its depth.
    _walk(_comparable(old.to_dict()), _comparable(new.to_dict()), "", found)
    changes = []
    for p, o, n in found:
        where = new_origin(p) if new_origin else None
        if n is MISSING and where in (None, DERIVED, "default"):
            # A removed value: named by what removed it where the new spec says (a profile's
            # `gates: {}`), else by where the old one had it.
            where = old_origin(p) if old_origin else None
        changes.append(Change(re.split(r"[.\[]", p, maxsplit=1)[0], p, o, n, where, stage))
    changes.sort(key=lambda c: (_section_rank(c.section), _path_key(c.path)))
    return changes


def _stage_origin(origin: Origin | None, name: str | None, last: bool) -> Origin | None:
    """The origins of one stage's plan: a staged origin knows each stage's; a plain one is the last stage's."""
    if origin is None:
        return None
    if isinstance(origin, StagedOrigin):
        return origin.stage(name)
    return origin if last else None


def _diff_staged(old: Plan, new: Plan, old_origin: Origin | None, new_origin: Origin | None) -> PlanDiff:
    """Plans with stages, stage by stage: the earlier stages matched by name, the last
    stages (the spec's own plans, in the spec's run directory) with each other."""
    old_by = {p.stage: p for p in old.stages}
    new_by = {p.stage: p for p in new.stages}
    names = [p.stage for p in new.stages] + [p.stage for p in old.stages if p.stage not in new_by]
    pairs: list[tuple[str, Plan | None, Plan | None, bool]] = [(n, old_by.get(n), new_by.get(n), False) for n in names]
    pairs.append((new.stage or old.stage or new.name, old, new, True))
    # Every stage's run directory shares one step store: a step is reused when any stage
    # of the old plan computed it under the same key (a renamed stage, a stage moved).
    computed = {(s.name, s.key) for p in (*old.stages, old) for s in p.steps}
    changes: list[Change] = []
    stages: list[StageSteps] = []
    for name, o, n, last in pairs:
        if o is not None and n is not None:
            changes += _changes(o, n, _stage_origin(old_origin, o.stage, last), _stage_origin(new_origin, n.stage, last), name)
        new_steps = n.steps if n is not None else ()
        new_names = {s.name for s in new_steps}
        stages.append(StageSteps(
            name=name,
            rerun=[s.name for s in new_steps if (s.name, s.key) not in computed],
            reused=[s.name for s in new_steps if (s.name, s.key) in computed],
            dropped=[s.name for s in (o.steps if o is not None else ()) if s.name not in new_names],
            added=o is None, removed=n is None))

    def every(attr: str) -> list[str]:
        return [f"{st.name}/{x}" for st in stages for x in getattr(st, attr)]

    models = [root_model(p.model) for p in (new, *new.stages)], [root_model(p.model) for p in (old, *old.stages)]
    trust_new, trust_old = (any(getattr(m, "trust_remote_code", False) for m in ms) for ms in models)
    return PlanDiff(
        old_id=old.id, new_id=new.id, changes=changes, rerun=every("rerun"), reused=every("reused"),
        dropped=every("dropped"), name=new.name or old.name,
        trust_remote_code=trust_new, trust_remote_code_turned_on=trust_new and not trust_old, stages=stages,
    )


# --------------------------------------------------------------------------- where a value came from

Origin = Callable[[str], "str | None"]  # a change's path -> where its value came from, in words
DERIVED = "derived"

# A plan field and the spec key it is written as, where the two differ.
_SPEC_KEYS = (
    (re.compile(r"^method\.objective$"), "method.kind"),
    (re.compile(r"^method\.dpo\.(\w+)$"), r"method.\1"),
    (re.compile(r"^format\.templates\.(\w+)(\..*)?$"), r"format.\1"),
    (re.compile(r"^format\.chat_template(\..*)?$"), "format.chat_template"),
    (re.compile(r"^format\.messages\.(\d+)\.content(\..*)?$"), r"format.messages.\1.content"),
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
    for pattern, key in _SPEC_KEYS:
        if pattern.match(dotted):
            return None if key is None else pattern.sub(key, dotted)
    return dotted


def origins(plan: Plan, rows: Iterable[Any]) -> Origin:
    """Where each field of ``plan`` came from, given the rows of ``ftspec plan --explain``
    for the spec it was compiled from (:func:`ftspec.spec.provenance.explain`)."""
    from ftspec.spec.provenance import label as words

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
        return words(row) if row is not None else DERIVED

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


def _origin_words(c: Change) -> str:
    if c.origin == DERIVED:
        return "derived by ftspec"
    if c.origin == "default":
        return "a default"
    return f"from {c.origin}"


# --------------------------------------------------------------------------- showing values

_PLAIN_STR = re.compile(r"[\w./@+:=-]+")
_LOOKS_LIKE_SCALAR = re.compile(r"(?i)null|true|false|~|yes|no|on|off|[-+]?(\d[\d_]*)?\.?\d+(e[-+]?\d+)?|[-+]?\.?(inf|nan)")


def _one_line(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\n", NEWLINE).replace("\t", "\\t")


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
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _fmt_str(value, min(width, TEXT_WIDTH))
    if _is_text(value):
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
    if isinstance(old, str) and isinstance(new, str):
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
            cut = min((i for i in (a.find(" ", start, common - 8), a.find(NEWLINE, start, common - 8)) if i >= 0), default=-1)
            start = cut + 1 if cut >= 0 else start
        return _fmt_str(old, start=start), _fmt_str(new, start=start)
    return _fmt_inner(change.path, old), _fmt_inner(change.path, new)


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


_TRUST_ON = "trust_remote_code turned on: the model repository's Python code will run on the machine that runs this spec"
_TRUST = "trust_remote_code: true: the model repository's Python code runs on the machine that runs this spec"
_TRUST_ON_MD = "`trust_remote_code` turned on: the model repository's Python code will run on the machine that runs this spec."
_TRUST_MD = "`trust_remote_code: true`: the model repository's Python code runs on the machine that runs this spec."


# --------------------------------------------------------------------------- text


def _style(text: str, color: bool, **kw: Any) -> str:
    if not color:
        return text
    import click

    return click.style(text, **kw)


def render_text(d: PlanDiff, color: bool = False) -> str:
    lines: list[str] = []
    if d.trust_remote_code_turned_on:
        lines.append(_style(f"!! {_TRUST_ON}", color, fg="red", bold=True))
    name = f" {d.name}" if d.name else ""
    ids = f"plan {d.old_id[:12]} (unchanged)" if d.old_id == d.new_id else f"plan {d.old_id[:12]} {ARROW} {d.new_id[:12]}"
    lines.append(f"{_style('ftspec diff' + name, color, bold=True)}: {ids}")
    if d.trust_remote_code and not d.trust_remote_code_turned_on:
        lines.append(_style(f"!! {_TRUST}", color, fg="red", bold=True))
    if d.stages:
        return _render_text_staged(d, lines, color)
    for section, changes in d.sections():
        lines.append("")
        lines.append(_style(section, color, bold=True))
        lines += _change_lines(changes, color, "  ")
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
            lines.append(f"{indent}+ {c.path}: {_style(new, color, fg='green')}{origin}")
        elif c.removed:
            lines.append(f"{indent}- {c.path}: {_style(old, color, fg='red')}{origin}")
        else:
            lines.append(f"{indent}{c.path}: {_style(old, color, fg='red')} {ARROW} {_style(new, color, fg='green')}{origin}")
    return lines


# --------------------------------------------------------------------------- markdown


def _code(text: str) -> str:
    """A Markdown code span that survives a table cell."""
    text = text.replace("|", "\\|")
    if "`" in text:
        return f"`` {text} ``"
    return f"`{text}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(d: PlanDiff) -> str:
    ids = f"`{d.old_id[:12]}`, unchanged" if d.old_id == d.new_id else f"`{d.old_id[:12]}` {ARROW} `{d.new_id[:12]}`"
    lines = [f"### ftspec diff: {d.name or '(unnamed)'} ({ids})", ""]
    if d.trust_remote_code_turned_on:
        lines += [f"> ⚠️ **{_TRUST_ON_MD}**", ""]
    elif d.trust_remote_code:
        lines += [f"> ⚠️ **{_TRUST_MD}**", ""]
    grouped = (d.stage_sections() if d.stages else [(None, d.sections())])
    for section, changes in ((f"{_stage_title(d, st)}: {sec}" if d.stages else sec, ch)
                             for st, sections in grouped for sec, ch in sections):
        sourced = any(c.origin for c in changes)
        lines += [f"**{section}**", "", "| key | old | new |" + (" from |" if sourced else ""),
                  "| --- | --- | --- |" + (" --- |" if sourced else "")]
        for c in changes:
            old, new = _fmt_pair(c)
            lines.append(f"| {_code(c.path)} | {'—' if c.added else _code(old)} | {'—' if c.removed else _code(new)} |"
                         + (f" {_cell(_origin_words(c))} |" if sourced else ""))
        lines.append("")
    if d.is_empty():
        lines.append("No change to the plan.")
    elif d.stages:
        steps = _stage_steps_lines(d, lambda xs: ", ".join(f"`{x}`" for x in xs))
        lines += [f"**{steps[0]}**", ""] + [f"- {x}" for x in steps[1:]]
    else:
        lines.append("**" + _steps_line(d, lambda xs: ", ".join(f"`{x}`" for x in xs)).replace(":", ":**", 1))
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- json


def _json_value(value: Any) -> Any:
    return None if value is MISSING else value


def render_json(d: PlanDiff) -> str:
    doc = {
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
    if d.stages:
        doc["stages"] = [{"name": st.name, "rerun": st.rerun, "reused": st.reused, "dropped": st.dropped,
                          "added": st.added, "removed": st.removed} for st in d.stages]
    return json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


# --------------------------------------------------------------------------- git


def _git(root: Path, *args: str, **kw: Any) -> subprocess.CompletedProcess:
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0", LC_ALL="C")
    return subprocess.run(["git", "-C", str(root), *args], env=env, **kw)


def _remap(exc: SpecError, tmp: Path, rev: str) -> SpecError:
    """Name files of the old checkout as ``REV:path`` rather than by the temporary folder."""
    issues = []
    for issue in exc.issues:
        file = issue.pos.file
        try:
            inside = Path(file).resolve().relative_to(tmp.resolve()).as_posix()
        except (ValueError, OSError):
            inside = None
        pos = Pos(f"{rev}:{inside}", issue.pos.line, issue.pos.col) if inside is not None else issue.pos
        issues.append(Issue(pos, issue.key, issue.message, issue.hint, issue.severity))
    return SpecError(issues)


def _extract(root: Path, commit: str, dest: Path, where: Pos) -> None:
    proc = subprocess.Popen(["git", "-C", str(root), "archive", "--format=tar", commit],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, GIT_TERMINAL_PROMPT="0", LC_ALL="C"))
    assert proc.stdout is not None
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as archive:
            if hasattr(tarfile, "data_filter"):
                archive.extractall(dest, filter="data")
            else:  # pragma: no cover - Python without extraction filters
                archive.extractall(dest)
    except tarfile.TarError as exc:
        proc.kill()
        proc.wait()
        raise SpecError.one(where, "", f"cannot unpack revision {commit[:12]}: {exc}") from None
    finally:
        proc.stdout.close()
    err = proc.stderr.read().decode("utf-8", "replace").strip() if proc.stderr else ""
    if proc.wait() != 0:
        raise SpecError.one(where, "", f"git archive {commit[:12]} failed: {err.splitlines()[-1] if err else 'unknown error'}")


def diff_git(rev: str, spec_path: str | Path, profiles: Iterable[str] = (), sets: Iterable[str] = (),
             allow: Iterable[str | Path] = (), with_origins: bool = False) -> tuple:
    """(old plan, new plan): the spec compiled as it was at git revision ``rev`` and
    as it is in the working tree, with the same profiles and overrides. With
    ``with_origins``: (old plan, new plan, old origins, new origins)."""
    from ftspec.plan.build import compile_sourced, find_root

    spec_path = Path(spec_path)
    where = Pos(str(spec_path))
    profiles, sets = tuple(profiles), tuple(sets)
    if not spec_path.is_file():
        raise SpecError.one(where, "", "spec file not found")
    root = find_root(spec_path)
    if not (root / ".git").exists():
        raise SpecError.one(where, "", "not in a git repository (no .git folder above the spec), so there is no revision to compare with")
    if shutil.which("git") is None:
        raise SpecError.one(where, "", "git is not installed (needed to read the spec at another revision)")
    if not rev or rev.startswith("-"):
        raise SpecError.one(where, "", f"'{rev}' is not a git revision")
    found = _git(root, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", capture_output=True, text=True)
    if found.returncode != 0 or not found.stdout.strip():
        raise SpecError.one(where, "", f"unknown git revision '{rev}' in {root}")
    commit = found.stdout.strip()
    inside = spec_path.resolve().relative_to(root.resolve()).as_posix()
    if _git(root, "cat-file", "-e", f"{commit}:{inside}", capture_output=True).returncode != 0:
        raise SpecError.one(where, "", f"{inside} does not exist at revision '{rev}' ({commit[:12]})")

    new, new_origin = compile_sourced(spec_path, profiles, sets, allow=allow)
    with tempfile.TemporaryDirectory(prefix="ftspec-diff-") as tmp_name:
        tmp = Path(tmp_name)
        _extract(root, commit, tmp, where)
        # Make the checkout its own repository root, so the plan records the same
        # relative paths as it does in the working tree.
        (tmp / ".git").mkdir(exist_ok=True)
        try:
            old, old_origin = compile_sourced(tmp / inside, profiles, sets, allow=allow)
        except SpecError as exc:
            raise _remap(exc, tmp, rev) from None
    old_origin = _renamed_origin(old_origin, tmp, f"{rev}:")
    return (old, new, old_origin, new_origin) if with_origins else (old, new)


def _renamed_origin(origin: Origin, tmp: Path, prefix: str) -> Origin:
    """Origins in the old checkout, named ``REV:path`` rather than by the temporary folder."""
    if isinstance(origin, StagedOrigin):
        return StagedOrigin({name: _renamed_origin(o, tmp, prefix) for name, o in origin.by_stage.items()}, origin.last)
    folder = str(tmp.resolve()) + os.sep

    def renamed(path: str) -> str | None:
        words = origin(path)
        return words.replace(folder, prefix) if words else words

    return renamed


__all__ = ["MISSING", "Change", "PlanDiff", "StageSteps", "StagedOrigin", "diff_plans", "render_text", "render_markdown", "render_json", "diff_git"]
