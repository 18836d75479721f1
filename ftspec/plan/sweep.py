"""A sweep, resolved: the spec's ``sweep:`` section and ``ftspec sweep``'s options made into
one definition — the fields, the trials (a grid's in a fixed order, random's from our own
seeded draw; TPE's only counted), the objective and its direction — every problem at its line.

A trial is the spec compiled with ``--set FIELD=VALUE`` for each of its values, plus
``eval.split=validation``: the sweep chooses on validation, and scores the winner once on the
spec's own evaluation split (test). Light: no optuna, no torch (docs/use-cases/sweeps.md).
"""

from __future__ import annotations

import itertools
import json
import math
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ftspec.catalog import metrics as metric_catalog
from ftspec.checks.derived import has_test, has_validation
from ftspec.core.errors import Issue, Pos, SpecError
from ftspec.plan.compile import Compiled, compile_plan, find_root
from ftspec.plan.model import Plan
from ftspec.plan.pruning import prune_problems
from ftspec.spec.load import LoadedSpec, display_path, parse_yaml, resolve_plain
from ftspec.spec.sweep import MAX_CHOICES, MAX_FIELDS, MAX_TRIALS, SweepRange, SweepSpec

SWEEP_VERSION = 1
VALIDATION = "eval.split=validation"
METHODS = ("grid", "random", "tpe")
# Fields a trial may not change: what names the run, the sweep itself, where results go, and
# the split the sweep itself sets (trials score validation, the winner the spec's own split).
FIXED = {
    "ftspec": "the spec's version", "name": "the spec's name (it names every trial's run directory)",
    "stages": "the list of stages", "sweep": "the sweep itself", "output": "where the runs go, not what is trained",
    "extends": "the base spec", "profiles": "the profiles (choose one with --profile)",
    "eval.split": "set by the sweep: trials score validation, the winner the spec's own split",
}
_SAFE = re.compile(r"[A-Za-z0-9_./-]+")


def set_text(value: Any) -> str:
    """A value as ``--set`` reads it back as the same value: bare when that is a plain string
    YAML keeps as one (``lora``), else JSON, which YAML reads as written (``0.001``, ``"1"``, ``[8, 16]``)."""
    if isinstance(value, str) and _SAFE.fullmatch(value):
        try:
            if resolve_plain(value) == value:
                return value
        except ValueError:
            pass
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


@dataclass(frozen=True)
class SweptField:
    """One field the sweep varies: a list of values, or a range (random and tpe only)."""

    path: str
    choices: tuple[Any, ...] | None
    range: SweepRange | None
    pos: Pos  # where the field is named
    value_pos: tuple[Pos, ...] = ()  # where each choice is written (or the range's bounds)

    def describe(self) -> dict:
        if self.choices is not None:
            return {"choices": list(self.choices)}
        assert self.range is not None
        return self.range.model_dump()


@dataclass(frozen=True)
class Trial:
    """A trial of a grid or random sweep: its place in the order and a value per field."""

    index: int
    values: tuple[tuple[str, Any], ...]

    def sets(self) -> list[str]:
        return [f"{path}={set_text(value)}" for path, value in self.values]

    def shown(self) -> str:
        return ", ".join(f"{path}={set_text(value)}" for path, value in self.values)


@dataclass(frozen=True)
class Objective:
    metric: str
    higher_is_better: bool
    split: str = "validation"

    @property
    def direction(self) -> str:
        return "maximize" if self.higher_is_better else "minimize"


@dataclass(frozen=True)
class Sweep:
    """A resolved sweep: what ``ftspec sweep`` runs, checked."""

    spec: Path
    profiles: tuple[str, ...]
    sets: tuple[str, ...]  # the user's --set, in every trial
    allow: tuple[Path, ...]
    method: str
    fields: tuple[SweptField, ...]
    trials: tuple[Trial, ...]  # grid and random: every trial, in order; tpe: none (chosen as results come)
    count: int  # trials in all
    seed: int
    objective: Objective
    prune: str
    workers: int
    plan: Plan  # the spec's own plan (its evaluation split), which the winner runs with
    root: Path
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def folder(self) -> Path:
        """``<run dir>.sweep``: the study's journal, sweep.json and the report."""
        return self.root / (self.plan.output.dir.rstrip("/") + ".sweep")

    @property
    def spec_shown(self) -> str:
        """The spec's path from the repository root: the same whichever folder the sweep is run from."""
        real = self.spec.resolve()
        return real.relative_to(self.root.resolve()).as_posix() if self.root.resolve() in real.parents else str(real)

    def trial_sets(self, values: Iterable[tuple[str, Any]], validation: bool = True) -> list[str]:
        """The --set list of a trial (``validation``) or of the winner's run on the spec's own split."""
        own = [f"{path}={set_text(value)}" for path, value in values]
        return [*self.sets, *own, *([VALIDATION] if validation else [])]

    def definition(self) -> dict:
        """What sweep.json holds: a resume with anything else is refused."""
        return {
            "sweep_version": SWEEP_VERSION,
            "spec": self.spec_shown,
            "profiles": list(self.profiles),
            "sets": list(self.sets),
            "plan": self.plan.id,
            "method": self.method,
            "fields": {f.path: f.describe() for f in self.fields},
            "trials": [dict(t.values) for t in self.trials] if self.method != "tpe" else None,
            "count": self.count,
            "seed": self.seed,
            "objective": {"metric": self.objective.metric, "split": self.objective.split,
                          "direction": self.objective.direction},
            "prune": self.prune,
        }


def describe_sweep(sweep: SweepSpec | None) -> str | None:
    """The one line ``ftspec plan`` shows for a spec with a ``sweep:`` section (None without one)."""
    if sweep is None:
        return None
    names = ", ".join(sweep.fields)
    if sweep.method == "grid":
        count = math.prod(len(v) if isinstance(v, list) else 0 for v in sweep.fields.values())
        trials = f"a grid of {count} trial{'s' if count != 1 else ''}"
    else:
        n = sweep.trials
        trials = f"{sweep.method}, {n if n is not None else '?'} trial{'s' if n != 1 else ''}"
    return (f"sweep: {trials} over {names}, chosen on validation (ftspec sweep runs it; "
            "the sweep is not part of this plan)")


# --------------------------------------------------------------------------- resolving


def _where(loaded: LoadedSpec, *path: Any) -> Pos:
    """Where a value of the section is written (the section's own line, or the spec's, when it is not)."""
    return loaded.origin(("sweep", *path)).pos


def _key_pos(loaded: LoadedSpec, *path: Any) -> Pos:
    origin = loaded.origin(("sweep", *path))
    return origin.key_pos or origin.pos


def parse_over(item: str) -> tuple[str, tuple[Any, ...], Pos]:
    """One ``--over FIELD=V1,V2,…``: the field and its values, each read as YAML."""
    shown = f"--over {item}" if len(item) <= 120 else f"--over {item[:60]}…"
    pos = Pos(shown)
    name, sep, text = item.partition("=")
    name = name.strip()
    if not sep or not re.fullmatch(r"[A-Za-z_][\w-]*(\.[\w-]+)*", name) or not text.strip():
        raise SpecError.one(pos, "", "expected FIELD=V1,V2,… with a dotted field, "
                                     "e.g. --over training.learning_rate=1.0e-4,3.0e-4")
    try:
        values, _, _, issues = parse_yaml(f"[{text}]", shown)
    except SpecError as exc:
        raise SpecError([Issue(pos, name, i.message, i.hint) for i in exc.issues]) from None
    if issues:
        raise SpecError([Issue(pos, name, i.message, i.hint) for i in issues])
    if not isinstance(values, list) or not values:
        raise SpecError.one(pos, name, "give at least one value")
    if len(values) > MAX_CHOICES:
        raise SpecError.one(pos, name, f"more than {MAX_CHOICES} values ({len(values)})")
    return name, tuple(values), pos


def _fields(section: SweepSpec | None, loaded: LoadedSpec, over: Iterable[str]) -> list[SweptField]:
    """The section's fields, each replaced (or joined) by the --over of the same name."""
    fields: dict[str, SweptField] = {}
    if section is not None:
        for name, values in section.fields.items():
            if isinstance(values, list):
                where = tuple(loaded.origin(("sweep", "fields", name, i)).pos for i in range(len(values)))
                fields[name] = SweptField(name, tuple(values), None, _key_pos(loaded, "fields", name), where)
            else:
                where = tuple(loaded.origin(("sweep", "fields", name, b)).pos for b in ("low", "high"))
                fields[name] = SweptField(name, None, values, _key_pos(loaded, "fields", name), where)
    problems: list[Issue] = []
    for item in over:
        try:
            name, values, pos = parse_over(item)
        except SpecError as exc:
            problems.extend(exc.issues)
            continue
        fields[name] = SweptField(name, values, None, pos, (pos,) * len(values))
    if problems:
        raise SpecError(problems)
    return list(fields.values())


def _field_problems(fields: list[SweptField], method: str) -> list[Issue]:
    problems = []
    if len(fields) > MAX_FIELDS:
        problems.append(Issue(fields[MAX_FIELDS].pos, fields[MAX_FIELDS].path,
                              f"more than {MAX_FIELDS} fields to sweep ({len(fields)})"))
    for f in fields:
        parts = f.path.split(".")
        fixed = next((p for p in (f.path, parts[0], ".".join(parts[:2])) if p in FIXED), None)
        if fixed is not None:
            problems.append(Issue(f.pos, f.path, f"'{f.path}' cannot be swept: it is {FIXED[fixed]}"))
            continue
        inside = next((g for g in fields if g is not f and f.path.startswith(g.path + ".")), None)
        if inside is not None:
            problems.append(Issue(f.pos, f.path, f"'{f.path}' is inside '{inside.path}', which is swept too; "
                                                 "sweep one or the other"))
        if f.range is not None and method == "grid":
            problems.append(Issue(f.pos, f.path, "a grid takes a list of values; a range is drawn from by "
                                                 "method random or tpe", "list the values, e.g. [1.0e-4, 3.0e-4]"))
        if f.choices is not None:
            seen: list[str] = []
            for value, pos in zip(f.choices, f.value_pos):
                text = set_text(value)
                if text in seen:
                    problems.append(Issue(pos, f.path, f"{text} is listed twice: it would run the same trial again"))
                seen.append(text)
    return problems


# What only draws a training mixture's rows (or is counted from the data): not what validation is.
_PART_DRAW = ("take", "amount", "drawn", "available", "sample_chars")
_MIXTURE_DRAW = ("total", "seed", "rows")


def scored_on(plan: Plan) -> dict[str, Any]:
    """What a trial's validation score is computed on: where the validation rows come from and
    how they are made and cut (the data's settings, less what only chooses the training rows),
    and which metrics score how many of them. Trials that differ here are not compared on one
    footing, and the winner would be chosen by the easiest validation set, not the best model."""
    data = plan.data.model_dump(mode="json")
    sources = data["sources"]
    held = {k: data[k] for k in ("rename", "derive", "filter", "on_bad_row")}
    held["limit"] = (data.get("limit") or {}).get("validation")
    if "validation" in sources:  # its own file: the training data does not make it
        held["source"] = sources["validation"]
    else:  # carved out of the training data by data.split
        train = dict(sources["train"])
        if train.get("kind") == "mixture":
            train = {k: v for k, v in train.items() if k not in _MIXTURE_DRAW}
            train["parts"] = [{k: v for k, v in part.items() if k not in _PART_DRAW} for part in train["parts"]]
        held["source"], held["split"] = train, data.get("split")
    e = plan.eval
    return {"validation rows": held, "eval.limit": e.limit, "eval.enabled": e.enabled,
            "eval.metrics": [m.model_dump(mode="json") for m in e.metrics]}


def _scored_problem(own: dict[str, Any], plan: Plan) -> str | None:
    differ = [k for k, v in scored_on(plan).items() if own.get(k) != v]
    if not differ:
        return None
    return (f"changes what each trial is scored on ({', '.join(differ)}): trials are compared on the same validation "
            "rows with the same metrics, or the winner is the one with the easiest validation set")


def _value_problems(spec: Path, profiles: tuple[str, ...], sets: tuple[str, ...], allow: tuple[Path, ...],
                    fields: list[SweptField], own: Plan) -> list[Issue]:
    """Compile the spec with each value alone as a --set: what it refuses is said at the value's line,
    and so is a value that changes what the trials are scored on (:func:`scored_on`)."""
    problems: list[Issue] = []
    reference = scored_on(own)
    for f in fields:
        if f.choices is not None:
            tried = list(zip(f.choices, f.value_pos))
        else:
            assert f.range is not None
            tried = list(zip((f.range.low, f.range.high), f.value_pos))
        found: list[list[Issue]] = []
        computes: dict[tuple[str, ...], Any] = {}  # the steps a value's trial computes, and the value
        for value, pos in tried:
            item = f"{f.path}={set_text(value)}"
            mine = []
            try:
                plan = compile_plan(spec, profiles, [*sets, item], False, allow).plan
            except SpecError as exc:
                for issue in exc.issues:
                    if issue.pos.file == f"--set {item}":
                        mine.append(replace(issue, pos=pos, key=issue.key or f.path))
                    else:  # found elsewhere in the spec, once this value is in it
                        problems.append(replace(issue, message=f"{issue.message} (with {item})"))
            else:
                why = _scored_problem(reference, plan)
                if why is not None:
                    mine.append(Issue(pos, f.path, why, "sweep what trains the model; give what every trial "
                                                        "shares once, with --set"))
                # Two values that make the same steps (1 and 1.0) would be one trial run twice.
                same = computes.setdefault(tuple(step.key for step in plan.steps), value)
                if f.choices is not None and same is not value:
                    mine.append(Issue(pos, f.path, f"{set_text(value)} makes the same plan as {set_text(same)}: "
                                                   "the two trials would be one", "give each value once"))
            found.append(mine)
        # What every value gets alike (a field that does not exist) is the field's, said once at its name.
        common = {(i.key, i.message) for i in found[0]} if found else set()
        for mine in found[1:]:
            common &= {(i.key, i.message) for i in mine}
        said = set()
        for mine in found:
            for issue in mine:
                if (issue.key, issue.message) in common and len(found) > 1:
                    if (issue.key, issue.message) not in said:
                        said.add((issue.key, issue.message))
                        problems.append(replace(issue, pos=f.pos))
                else:
                    problems.append(issue)
    return problems


def _objective(plan: Plan, metric: str | None, pos: Pos) -> tuple[Objective | None, list[Issue]]:
    computed = [m.name for m in plan.eval.metrics] if plan.eval.enabled else []
    if not computed:
        return None, [Issue(pos, "sweep.objective.metric", "the plan evaluates nothing, so no trial has a "
                                                           "score to choose by", "set eval.metrics")]
    name = metric or computed[0]
    if name not in computed:
        return None, [Issue(pos, "sweep.objective.metric", f"'{name}' is not computed by the evaluation "
                                                           f"(eval.metrics: {', '.join(computed)})")]
    try:
        row = metric_catalog.get(name)
    except KeyError:
        return None, [Issue(pos, "sweep.objective.metric", f"'{name}' has no direction in the metric table")]
    return Objective(name, row.higher_is_better), []


def _split_problems(compiled: Compiled) -> list[Issue]:
    ctx = compiled.checked.ctx
    spec, loaded = ctx.spec, ctx.loaded
    data_pos = loaded.origin(("data", "split")).pos
    problems = []
    if not has_validation(spec):
        problems.append(Issue(data_pos, "data", "a sweep chooses its winner on the validation split, and the data "
                                                "has none", "set data.split.validation, or data.validation"))
    if not has_test(spec):
        problems.append(Issue(data_pos, "data", "a sweep scores its winner once on the test split, and the data "
                                                "has none", "set data.split.test, or data.test"))
    elif compiled.plan.eval.split == "validation":
        problems.append(Issue(loaded.origin(("eval", "split")).pos, "eval.split",
                              "a sweep chooses on validation and scores the winner on the spec's own split: "
                              "validation would score it where it was chosen", "use eval.split: test (or auto)"))
    return problems


def _draw(fields: list[SweptField], count: int, seed: int) -> tuple[list[Trial], list[str]]:
    """Random's trials: our own seeded draw (the same seed, the same trials, on any machine)."""
    rng = random.Random(seed)
    seen: set[str] = set()
    trials: list[Trial] = []
    for _ in range(count):
        for _attempt in range(100):
            values = tuple((f.path, _one(f, rng)) for f in fields)
            key = json.dumps(values, sort_keys=True, default=str)
            if key not in seen:
                break
        else:
            return trials, [f"random: only {len(trials)} distinct trials found in 100 draws each; "
                            f"running those, not {count}"]
        seen.add(key)
        trials.append(Trial(len(trials), values))
    return trials, []


def _one(f: SweptField, rng: random.Random) -> Any:
    if f.choices is not None:
        return f.choices[rng.randrange(len(f.choices))]
    r = f.range
    assert r is not None
    if r.step is not None:
        k = rng.randint(0, int(math.floor((r.high - r.low) / r.step + 1e-9)))
        value = r.low + k * r.step
        return value if r.integers else float(f"{value:.10g}")
    u = rng.random()
    if r.log:
        x = math.exp(math.log(r.low) + u * (math.log(r.high) - math.log(r.low)))
    else:
        x = r.low + u * (r.high - r.low)
    if r.integers:
        return int(min(max(round(x), r.low), r.high))
    return float(min(max(float(f"{x:.4g}"), r.low), r.high))


def resolve(spec: Path, profiles: Iterable[str] = (), sets: Iterable[str] = (), *, over: Iterable[str] = (),
            method: str | None = None, trials: int | None = None, objective: str | None = None,
            seed: int | None = None, prune: str | None = None, workers: int | None = None,
            allow: Iterable[str | Path] = (), strict: bool = False) -> Sweep:
    """The sweep of ``spec`` (its ``sweep:`` section, the options over it). Raises SpecError
    with every problem, each at its line (a spec, --over or option problem)."""
    profiles, sets, allow_t = tuple(profiles), tuple(sets), tuple(Path(a) for a in allow)
    for item in sets:
        if item.split("=", 1)[0].strip() == "eval.split":
            raise SpecError.one(Pos(f"--set {item}"), "eval.split", "a sweep sets eval.split itself: trials score "
                                                                    "validation, the winner the spec's own split")
    compiled = compile_plan(spec, profiles, sets, strict, allow_t)
    ctx = compiled.checked.ctx
    loaded, section = ctx.loaded, ctx.spec.sweep
    fields = _fields(section, loaded, over)
    if not fields:
        raise SpecError.one(Pos(display_path(Path(spec))), "sweep", "nothing to sweep: give --over FIELD=V1,V2,… "
                                                                    "or a sweep: section")
    if method is not None:
        method_pos = Pos("--method")
    else:
        method = section.method if section else "grid"
        method_pos = _where(loaded, "method")
    count = trials if trials is not None else (section.trials if section else None)
    trials_pos = Pos("--trials") if trials is not None else _where(loaded, "trials")
    problems = _field_problems(fields, method)
    if method == "grid":
        if count is not None:
            problems.append(Issue(trials_pos, "sweep.trials", "a grid runs every combination of the values; "
                                                              "trials is for method random or tpe"))
        count = math.prod(len(f.choices) for f in fields if f.choices is not None)
        if count > MAX_TRIALS:
            problems.append(Issue(_key_pos(loaded, "fields") if section else fields[0].pos, "sweep.fields",
                                  f"a grid of {count} trials; a sweep runs at most {MAX_TRIALS}"))
    elif count is None:
        problems.append(Issue(method_pos, "sweep.method", f"{method} needs the number of trials: sweep.trials, "
                                                          "or --trials N"))
    metric = objective if objective is not None else (section.objective.metric if section else None)
    metric_pos = Pos("--objective") if objective is not None else _where(loaded, "objective", "metric")
    goal, found = _objective(compiled.plan, metric, metric_pos)
    problems += found + _split_problems(compiled)
    # sweep.prune's needs (helper S2: ftspec.plan.pruning): eval_every set, one process, one training.
    problems += prune_problems(compiled, prune or (section.prune if section else "none"),
                               Pos("--prune") if prune is not None else _where(loaded, "prune"))
    flagged = {i.key for i in problems}
    problems += _value_problems(Path(spec), profiles, sets, allow_t, [f for f in fields if f.path not in flagged],
                                compiled.plan)
    if problems:
        raise SpecError(problems)
    assert goal is not None and count is not None
    seed = seed if seed is not None else (section.seed if section else 0)
    notes: list[str] = []
    if method == "grid":
        combos = itertools.product(*[[(f.path, v) for v in (f.choices or ())] for f in fields])
        planned = [Trial(i, tuple(c)) for i, c in enumerate(combos)]
    elif method == "random":
        planned, notes = _draw(fields, count, seed)
        count = len(planned)
    else:
        planned = []
    return Sweep(spec=Path(spec), profiles=profiles, sets=sets, allow=allow_t, method=method, fields=tuple(fields),
                 trials=tuple(planned), count=count, seed=seed, objective=goal,
                 prune=prune or (section.prune if section else "none"),
                 workers=workers or (section.workers if section else 1), plan=compiled.plan,
                 root=find_root(Path(spec)), notes=tuple(notes))


__all__ = ["FIXED", "METHODS", "Objective", "SWEEP_VERSION", "SweptField", "Sweep", "Trial", "VALIDATION",
           "describe_sweep", "parse_over", "resolve", "scored_on", "set_text"]
