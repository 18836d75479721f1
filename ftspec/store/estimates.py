"""How long each step that will run may take, from what an earlier run measured: `ftspec plan`
shows it beside the plan, for display only (the plan, its JSON and its id never hold it: the
figures depend on the machine).

Where a measurement comes from: the run directories beside the plan's step store
(``runs/*/``), each a manifest.json naming the steps of its plan.json, and the finished
entry of each of those steps in the store (``.ftspec-store/<step>/<key>/``):

- prepare_data: ``stats.json``'s ``preparation.rows_per_second`` (rows of every split);
- generate_base, generate_tuned, generate_teacher: ``outputs.json``'s ``speed``, the rows per
  second of each part (``choices`` or ``generate``, ``perplexity``, ``pair_logprobs``);
- train: the manifest's wall time of the step over ``train.json``'s ``steps`` times the
  plan's rows per step (a training resumed from a checkpoint measured only a part: not used).

The rule, for each step of the plan not complete under its key: the measurement of the same
step, whose plan had the same model (its `model` section; a teacher's step: the teacher's)
on the same backend, and the most recent of those (by the time its entry finished). Nothing
is estimated where there is none: no figure is ever made up, nor borrowed from another model.

The store and the run directories may come from anyone (a pull request): they are only read,
through :func:`ftspec.core.io.read_json` (regular files, size and depth caps) and the
manifest's and the marker's schemas; a link, a file of another shape, a number that is not a
positive rate — any of it makes that one measurement absent, never an error. Nothing here
imports a heavy library: `ftspec plan` stays light.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftspec.catalog import steps
from ftspec.core.io import BadFileError, read_json
from ftspec.core.text import printable
from ftspec.plan.artifacts import Manifest
from ftspec.plan.model import Plan
from ftspec.store.rundir import Store, key_name, read_marker, run_dir_of, step_states, store_of

# Run directories read at most, by name: a store beside thousands of them is not scanned whole.
MAX_RUNS = 500
GENERATE_STEPS = (steps.GENERATE_BASE.name, steps.GENERATE_TUNED.name, steps.GENERATE_TEACHER.name)
MEASURED = (steps.PREPARE_DATA.name, steps.TRAIN.name, *GENERATE_STEPS)


@dataclass(frozen=True)
class Measurement:
    """One finished step of an earlier run, and how fast it went."""

    step: str
    key: str
    run: Path  # the run directory whose manifest names it
    finished_at: str
    model: str  # fingerprint of the model (and backend) it ran with
    rates: dict[str, float]  # rows per second: of each part (generate steps), else under the step's name


@dataclass(frozen=True)
class Estimate:
    step: str
    seconds: float
    work: str  # what the figure is made of, in words
    source: Measurement


def _rate(value: Any) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    return float(value) if ok else None


def _get(data: Any, *path: str) -> Any:
    for name in path:
        data = data.get(name) if isinstance(data, dict) else None
    return data


def fingerprint(plan: dict, step: str) -> str | None:
    """The model a step of a plan (as plan.json holds it) runs, with the backend it runs on."""
    model = _get(plan, "method", "distill", "teacher") if step in (steps.GENERATE_TEACHER.name,) else plan.get("model")
    backend = _get(plan, "compute", "backend")
    if not isinstance(model, dict) or not isinstance(backend, str):
        return None
    text = json.dumps({"backend": backend, "model": model}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _read(path: Path, expect: type = dict, schema: Any = None) -> Any:
    """A file of an earlier run, or None: absent, a link, or not what ftspec writes there."""
    if path.is_symlink():
        return None
    try:
        return read_json(path, expect, lenient=True, schema=schema)
    except (BadFileError, OSError):
        return None


def _rates(step: str, entry: Path, seconds: Any, plan: dict) -> dict[str, float]:
    """How fast a finished step went, from its own files (and, for train, the manifest's seconds)."""
    if step == steps.PREPARE_DATA.name:
        rate = _rate(_get(_read(entry / "stats.json"), "preparation", "rows_per_second"))
        return {step: rate} if rate else {}
    if step in GENERATE_STEPS:
        speed = _get(_read(entry / "outputs.json"), "speed")
        if not isinstance(speed, dict):
            return {}
        found = {part: _rate(_get(speed, part, "rows_per_second")) for part in speed}
        return {str(part)[:40]: rate for part, rate in found.items() if rate}
    train = _read(entry / "train.json") or {}
    done, per_step, seconds = train.get("steps"), _get(plan, "training", "effective_batch_size"), _rate(seconds)
    if train.get("resumed_from") is not None or not (_rate(done) and _rate(per_step) and seconds):
        return {}
    return {step: done * per_step / seconds}


def measurements(store: Store) -> list[Measurement]:
    """Every finished step of MEASURED that a run directory beside ``store`` names, with its rates."""
    found: dict[tuple[str, str], Measurement] = {}
    try:
        runs = sorted(p for p in store.root.parent.iterdir() if p.name != store.root.name)[:MAX_RUNS]
    except OSError:
        return []
    for run in runs:
        if run.is_symlink() or not run.is_dir():
            continue
        manifest = _read(run / "manifest.json", schema=Manifest)
        plan = _read(run / "plan.json")
        if manifest is None or plan is None or plan.get("id") != manifest.plan_id:
            continue  # a plan.json that is not the plan this manifest ran
        for entry in manifest.steps:
            measured = _measure(store, run, entry, plan)
            if measured is not None and (entry.name, entry.key) not in found:
                found[(entry.name, entry.key)] = measured
    return list(found.values())


def _measure(store: Store, run: Path, entry: Any, plan: dict) -> Measurement | None:
    if entry.name not in MEASURED:
        return None
    try:
        folder = store.path(entry.name, entry.key)
        key_name(entry.key)
    except (LookupError, ValueError):  # a step or key no ftspec writes
        return None
    if folder.is_symlink() or folder.parent.is_symlink() or store.root.is_symlink():
        return None
    try:
        marker = read_marker(folder)
    except (BadFileError, OSError):
        return None
    model = fingerprint(plan, entry.name)
    if marker is None or marker.key != entry.key or model is None:
        return None  # not finished, or finished for another key
    rates = _rates(entry.name, folder, entry.seconds, plan)
    return Measurement(entry.name, entry.key, run, marker.finished_at or "", model, rates) if rates else None


def _parts(plan: Plan) -> list[str]:
    """The parts of a generate step, as outputs.json's `speed` names them."""
    names = {"answers": "choices" if plan.eval.mode == "choices" else "generate"}
    return [names.get(o, o) for o in plan.eval.outputs]


def _estimate(plan: Plan, step: str, source: Measurement) -> Estimate | None:
    if step == steps.PREPARE_DATA.name:
        rows = [getattr(plan.data.rows, split) for split in ("train", "validation", "test")]
        if any(n is None for n in rows):
            return None
        rate = source.rates[step]
        return Estimate(step, sum(rows) / rate, f"{sum(rows)} rows at {_per_second(rate)}", source)
    if step == steps.TRAIN.name:
        total, per_step = plan.training.total_steps, plan.training.effective_batch_size
        if not total:
            return None
        rate, of = source.rates[step], "step" if total == 1 else "steps"
        work = f"{total} {of} of {per_step} rows at {_per_second(rate)}"
        return Estimate(step, total * per_step / rate, work, source)
    rows, parts = plan.eval.rows, _parts(plan)
    if not rows or not parts or any(p not in source.rates for p in parts):
        return None  # a part never measured: no figure for the step
    seconds = sum(rows / source.rates[p] for p in parts)
    work = f"{rows} rows: " + ", ".join(f"{p} at {_per_second(source.rates[p])}" for p in parts)
    return Estimate(step, seconds, work, source)


def estimates(plan: Plan, root: Path) -> tuple[list[Estimate], list[str]]:
    """For each step of ``plan`` that will run (not complete under its key), its estimate; and
    the steps that will run without one."""
    run_dir = run_dir_of(plan, root)
    try:
        states = step_states(plan, run_dir)
    except (OSError, BadFileError):
        return [], []
    todo = [s for s in plan.steps if states.get(s.name) != "done"]
    if not todo:
        return [], []
    found = measurements(store_of(run_dir))
    mine = plan.to_dict()
    made, without = [], []
    for step in todo:
        model = fingerprint(mine, step.name)
        same = [m for m in found if m.step == step.name and m.model == model and m.key != step.key]
        # The most recent: ISO 8601 times of one writer sort as text; the run's name breaks a tie.
        best = max(same, key=lambda m: (m.finished_at, m.run.name), default=None)
        estimate = _estimate(plan, step.name, best) if best is not None else None
        if estimate is None:
            without.append(step.name)
        else:
            made.append(estimate)
    return made, without


def _per_second(rate: float) -> str:
    return f"{rate:.1f} rows/s" if rate >= 1 else f"{rate:.2g} rows/s"


def duration(seconds: float) -> str:
    if seconds < 0.5:
        return "<1s"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def estimate_lines(plan: Plan, root: Path, label: str = "") -> list[str]:
    """The plan text's `estimate` lines: one per step that will run and was measured before
    (none at all when no step was); ``label`` names the stage."""
    made, without = estimates(plan, root)
    if not made:
        return []
    width = max(len(e.step) for e in made)
    lines = [f"  estimate  {label}about {duration(sum(e.seconds for e in made))} for {len(made)} of the "
             f"{len(made) + len(without)} steps to run, from earlier runs' measurements "
             "(on the machine that made them)"]
    for e in made:
        source = printable(_shown(e.source.run, root))
        when = f", finished {printable(e.source.finished_at[:40])}" if e.source.finished_at else ""
        took = duration(e.seconds)
        lines.append(f"            {e.step.ljust(width)}  {'' if took.startswith('<') else '~'}{took}: {e.work}  "
                     f"(measured by {source}: {e.step} {e.source.key[:8]}{when})")
    if without:
        lines.append(f"            not estimated (no earlier measurement): {', '.join(without)}")
    return lines


def _shown(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path(root).resolve()))
    except (ValueError, OSError):
        return str(path)
