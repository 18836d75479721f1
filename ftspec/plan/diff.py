"""What a change to a spec does to its plan: two compiled plans compared leaf by leaf.

A value that changed through a default, an ``extends`` base or a profile shows up as what
it now is, and the step keys say which steps of the run must run again. Shown to a
reviewer by ftspec.plan.diff_render; run by ``ftspec diff`` (ftspec.commands.diff).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from ftspec.plan.model import Plan, thaw
from ftspec.plan.origins import DERIVED, Origin, StagedOrigin
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
    # For a value ftspec derived: what from, in words ("warmup_ratio × total_steps"), where known.
    derived_from: str | None = None

    @property
    def label(self) -> str:
        """What a reviewer reads the change as: a gate by its name (``gate accuracy``), else its path."""
        name = gate_name(self.path)
        return f"gate {name}" if name is not None else self.path

    @property
    def added(self) -> bool:
        return self.old is MISSING

    @property
    def removed(self) -> bool:
        return self.new is MISSING


@dataclass(frozen=True)
class SourceRows:
    """What a change does to a training mixture (``data.train`` as a list): the rows it draws
    from one source (``source``), or from all of them (``source`` None: the mixture's rows
    before ``data.limit.train``), in the old and the new plan. A count is shown as the plan
    has it: an int, None where unknown until the data is read; MISSING where that plan has no
    such source (or no mixture)."""

    source: str | None
    old: Any
    new: Any
    estimated: bool = False  # a count rests on validate's sample (data.filter), not on every row
    stage: str | None = None


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
    # The Python reward functions the new plan runs (``FILE:FUNCTION (sha256 …)``), and those
    # of them the old plan did not run (new files, or files whose content changed).
    reward_code: list[str] = field(default_factory=list)
    reward_code_new: list[str] = field(default_factory=list)
    # Plans with stages: each stage's steps, in the order the stages run (``rerun``,
    # ``reused`` and ``dropped`` then name steps as STAGE/STEP, every stage's).
    stages: list[StageSteps] = field(default_factory=list)
    # A training mixture whose draw changed: rows per source, then the mixture's (source None).
    mixture: list[SourceRows] = field(default_factory=list)

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


class Condition(str):
    """A gate as a reviewer reads it, ``>= 0.8``: shown bare, never quoted."""

    __slots__ = ()


def number(value: float | int) -> str:
    """A number as a reviewer reads it: a whole float as the integer it is (a spec's
    ``epochs: 3`` is the plan's float 3.0, shown 3), any other as its shortest repr."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value) if isinstance(value, float) else str(value)


def _gates(gates: Any) -> Any:
    """A plan's gates keyed by name, each as its condition: a gate added or removed names
    itself, and no other gate shifts (the plan's list is in the spec's order)."""
    if not isinstance(gates, list) or not all(isinstance(g, Mapping) and "gate" in g for g in gates):
        return gates
    return {str(g["gate"]): Condition(f"{g['op']} {number(g['threshold'])}") for g in gates}


def _comparable(plan: dict) -> dict:
    body = {k: v for k, v in plan.items() if k not in IGNORED}
    if isinstance(body.get("eval"), Mapping) and "gates" in body["eval"]:
        body["eval"] = {**body["eval"], "gates": _gates(body["eval"]["gates"])}
    spec = plan.get("spec")
    if isinstance(spec, Mapping):
        shown = {k: spec[k] for k in SPEC_SHOWN if k in spec}
        if shown:
            body["spec"] = shown
    return body


def _same(a: Any, b: Any) -> bool:
    # Strict: 3 and 3.0, or 1 and true, are different values in a plan.
    return json.dumps(a, sort_keys=True, ensure_ascii=False) == json.dumps(b, sort_keys=True, ensure_ascii=False)


def is_text(value: Any) -> bool:
    """A template (source, ref, text, sha256) or another text with its hash, such as a JSON schema."""
    return isinstance(value, Mapping) and "text" in value and "sha256" in value and isinstance(value["text"], str)


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _shown(value: Any) -> Any:
    """The value a change carries: a template stands for its text."""
    return value["text"] if is_text(value) else value


_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def _key_path(path: str, key: Any) -> str:
    key = str(key)
    if _PLAIN_KEY.fullmatch(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key, ensure_ascii=False)}]"


def _walk(old: Any, new: Any, path: str, out: list[tuple[str, Any, Any]]) -> None:
    if _same(old, new):
        return
    if is_text(old) and is_text(new):
        if old["text"] != new["text"]:
            out.append((path, old["text"], new["text"]))
            return
        # Same text from somewhere else (an inline template moved to a file, a renamed file).
        rest_old = {k: v for k, v in old.items() if k not in ("text", "sha256")}
        rest_new = {k: v for k, v in new.items() if k not in ("text", "sha256")}
        _walk(rest_old, rest_new, path, out)
        return
    if isinstance(old, Mapping) and isinstance(new, Mapping) and not is_text(old) and not is_text(new):
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
    if isinstance(value, Mapping) and value and not is_text(value):
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


_GATE_PATH = re.compile(r'eval\.gates(?:\.([A-Za-z_][A-Za-z0-9_-]*)|\[("(?:[^"\\]|\\.)*")\])')


def gate_name(path: str) -> str | None:
    """The gate a change's path names (``eval.gates.accuracy``), or None."""
    found = _GATE_PATH.fullmatch(path)
    if found is None:
        return None
    return found.group(1) if found.group(1) is not None else json.loads(found.group(2))


def _plan_path(plan: Plan, path: str) -> str:
    """The plan's own path of a change's: a gate named in the diff is an item of the plan's list."""
    name = gate_name(path)
    if name is None:
        return path
    # A gate the plan does not have: one past its last, which its origin reads as the whole `eval.gates`.
    at = next((i for i, g in enumerate(plan.eval.gates) if g.gate == name), len(plan.eval.gates))
    return f"eval.gates[{at}]"


# What ftspec derives a value from, in words (ftspec.plan.build computes them), by the
# value's path (a data source's name as ``*``).
DERIVED_FROM = {
    "training.total_steps": "epochs × steps_per_epoch, or max_steps",
    "training.steps_per_epoch": "the training rows ÷ the effective batch size",
    "training.effective_batch_size": "batch_size × gradient_accumulation × processes",
    "training.warmup_steps": "warmup_ratio × total_steps",
    "training.eval_every": "total_steps ÷ 10",
    "training.save_every": "eval_every, else total_steps ÷ 10",
    "training.eval_rows": "the validation rows",
    "training.learning_rate": "the method and the adapter",
    "training.max_length": "the model's context length",
    "data.sources.*.rows": "the data file",
    "data.sources.*.sha256": "the data file's bytes",
    # a training mixture (data.train as a list; docs/use-cases/mixtures.md)
    "mixture.rows": "the rows drawn from every source",
    "data.sources.*.parts[*].drawn": "the source's rows and its weight, rows or epochs",
    "data.sources.*.parts[*].available": "the source's rows after data.filter and the held-out split",
    "data.sources.*.parts[*].sample_chars": "the training texts of validate's sample of the source's rows",
    "data.sources.*.parts[*].source.rows": "the data file",
    "data.sources.*.parts[*].source.sha256": "the data file's bytes",
}


def _derived_from(path: str, plan: Plan | None = None) -> str | None:
    shape = re.sub(r"^data\.sources\.[^.]+\.", "data.sources.*.", path)
    if shape == "data.sources.*.rows" and plan is not None and any(
            getattr(s, "kind", None) == "mixture" for s in plan.data.sources.values()):
        shape = "mixture.rows"  # a mixture's rows are drawn, not counted in a file
    return DERIVED_FROM.get(re.sub(r"^(data\.sources\.\*\.parts)\[\d+\]", r"\1[*]", shape))


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
    code_new, code_old = reward_code(new), reward_code(old)
    return PlanDiff(
        old_id=old.id, new_id=new.id, changes=changes, rerun=rerun, reused=reused,
        dropped=dropped, name=new.name or old.name,
        trust_remote_code=trust_new, trust_remote_code_turned_on=trust_new and not trust_old,
        reward_code=code_new, reward_code_new=[c for c in code_new if c not in code_old],
        mixture=mixture_rows(old, new),
    )


def _drawn(plan: Plan) -> tuple[dict[str | None, int | None], bool] | None:
    """A plan's rows drawn per source of its training mixture, and the mixture's rows (key
    None); whether they are estimates. None: the plan's training data is not a mixture."""
    train = plan.data.sources.get("train")
    if getattr(train, "kind", None) != "mixture":
        return None
    rows: dict[str | None, int | None] = {part.name: part.drawn for part in train.parts}
    rows[None] = train.rows
    return rows, "train" in plan.data.rows_estimated


def mixture_rows(old: Plan, new: Plan, stage: str | None = None) -> list[SourceRows]:
    """The rows each source of a training mixture puts in it, old and new, where the draw changed
    (a part's weight, rows or epochs, ``data.mix.total``, a source added, its rows): every
    source, then the mixture's total. Nothing when neither plan draws a mixture or no count moved."""
    before, after = _drawn(old), _drawn(new)
    if before is None and after is None:
        return []
    (old_rows, old_est), (new_rows, new_est) = before or ({}, False), after or ({}, False)
    if old_rows == new_rows:
        return []
    names = [n for n in new_rows if n is not None] + [n for n in old_rows if n is not None and n not in new_rows]
    return [SourceRows(n, old_rows.get(n, MISSING), new_rows.get(n, MISSING), old_est or new_est, stage)
            for n in (*names, None)]


def reward_code(plan: Plan) -> list[str]:
    """The Python reward functions a plan (and its stages) runs: ``FILE:FUNCTION (sha256 …)``."""
    found = []
    for p in (*plan.stages, plan):
        grpo = p.method.grpo
        for r in grpo.rewards if grpo is not None else ():
            if r.kind == "python":
                found.append(f"{r.path}:{r.function} (sha256 {r.sha256[:12]})")
    return list(dict.fromkeys(found))


def _changes(old: Plan, new: Plan, old_origin: Origin | None, new_origin: Origin | None,
             stage: str | None = None) -> list[Change]:
    """Every changed field of two plans (of one stage), in the order a reviewer reads them."""
    found: list[tuple[str, Any, Any]] = []
    # Leaf by leaf over the plans' JSON: every field is compared, whatever its depth.
    _walk(_comparable(old.to_dict()), _comparable(new.to_dict()), "", found)
    changes = []
    for p, o, n in found:
        old_words = old_origin(_plan_path(old, p)) if old_origin else None
        where = new_origin(_plan_path(new, p)) if new_origin else None
        if n is MISSING and where in (None, DERIVED, "default"):
            # A removed value: named by what removed it where the new spec says (a profile's
            # `gates: {}`), else by where the old one had it.
            where = old_words
        elif where == "default" and old_words == "default" and o is not MISSING:
            # The schema's default is one value on both sides: a default that changed is a value
            # ftspec computed from others (eval_every from total_steps), not the default itself.
            where = DERIVED
        derived = _derived_from(p, new) if where == DERIVED else None
        changes.append(Change(re.split(r"[.\[]", p, maxsplit=1)[0], p, o, n, where, stage, derived))
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
    mixture: list[SourceRows] = []
    for name, o, n, last in pairs:
        if o is not None and n is not None:
            changes += _changes(o, n, _stage_origin(old_origin, o.stage, last),
                                _stage_origin(new_origin, n.stage, last), name)
            mixture += mixture_rows(o, n, name)
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
    code_new, code_old = reward_code(new), reward_code(old)
    return PlanDiff(
        old_id=old.id, new_id=new.id, changes=changes, rerun=every("rerun"), reused=every("reused"),
        dropped=every("dropped"), name=new.name or old.name,
        trust_remote_code=trust_new, trust_remote_code_turned_on=trust_new and not trust_old, stages=stages,
        reward_code=code_new, reward_code_new=[c for c in code_new if c not in code_old], mixture=mixture,
    )
