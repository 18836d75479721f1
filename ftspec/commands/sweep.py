"""`ftspec sweep`: run a spec's trials, choose the winner on validation, score it once on test.

Each trial is a variant run of the spec (``--set FIELD=VALUE`` for its values, plus
``eval.split=validation``) through :func:`ftspec.commands.run.run`, in this process: trials
share every step whose key they share (prepare_data, the base model's evaluation). The study
lives in an Optuna journal in the sweep folder (``<run dir>.sweep/``), so a killed sweep
resumes: a trial left running by a dead process (its lock free) is failed and queued again.
Grid and random trials are queued up front in a fixed order; TPE asks Optuna for each.
Optuna (the ``sweep`` extra) is imported only inside the functions that run trials:
``--dry-run`` imports neither it nor torch, and writes nothing (docs/use-cases/sweeps.md).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftspec.commands import sweep_prune
from ftspec.commands.run import run
from ftspec.commands.sweep_report import Row, Winner, choose, headline, write_report
from ftspec.core.errors import Issue, Pos, RunFailed, SpecError
from ftspec.core.folders import link_on_way
from ftspec.core.io import BadFileError, make_folder, read_json, write_json
from ftspec.core.locks import FileLock, held
from ftspec.core.paths import target_problem
from ftspec.plan.compile import compile_plan
from ftspec.plan.sweep import Sweep, Trial, resolve, set_text
from ftspec.store.protect import protected, tracked_problem
from ftspec.store.rundir import run_dir_of, store_of

STUDY = "sweep"
JOURNAL = "journal.log"
DEFINITION = "sweep.json"


@dataclass
class SweepResult:
    """What a sweep did: its trials as rows, the winner (None: none completed, or not scored yet)
    and whether the winner was scored on test (a --worker never scores it)."""

    sweep: Sweep
    rows: list[Row]
    winner: Winner | None
    scored: bool
    left: int  # trials still to start or running elsewhere


def sweep(spec: Path, profiles: Iterable[str] = (), sets: Iterable[str] = (), *, over: Iterable[str] = (),
          method: str | None = None, trials: int | None = None, objective: str | None = None,
          seed: int | None = None, prune: str | None = None, allow: Iterable[str | Path] = (),
          strict: bool = False, worker: bool = False, max_trials: int | None = None, store: str | None = None,
          echo: Callable[[str], None] = print, warn: Callable[[Issue], None] | None = None) -> SweepResult:
    """Run the sweep's trials that are not done, then (unless ``worker``, or trials are left)
    choose the winner on validation and run it once with the spec's own evaluation split.
    Raises SpecError (the spec, the sweep, a sweep folder of another definition), RunFailed
    (the winner's run) and KeyboardInterrupt (the running trial is queued again first)."""
    sw = resolve(Path(spec), profiles, sets, over=over, method=method, trials=trials, objective=objective, seed=seed,
                 prune=prune, allow=allow, strict=strict)
    if warn is not None:
        for issue in compile_plan(sw.spec, sw.profiles, sw.sets, False, sw.allow).warnings:
            warn(issue)
    for note in sw.notes:
        echo(f"sweep: {note}")
    try:
        import optuna  # the optional `sweep` extra: only a sweep that runs trials needs it
    except ImportError:
        raise RunFailed("sweep needs Optuna, the `sweep` extra: pip install 'ftspec[sweep]'") from None
    folder = _prepare(sw)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study, storage = _open_study(sw, folder)
    ran = 0
    while max_trials is None or ran < max_trials:
        trial = _next_trial(sw, study, folder)
        if trial is None:
            break
        _run_trial(sw, study, storage, trial, folder, store, echo)
        ran += 1
    rows = _rows(sw, study)
    left = sum(1 for r in rows if r.state in ("waiting", "running")) + _tpe_left(sw, study)
    winner = choose(sw, rows)
    scored = False
    if worker or left:
        if left and not worker:
            echo(f"sweep: {left} trial(s) not finished (still to run, or running elsewhere); run the same command "
                 "again to go on, and to score the winner once they are done")
    elif winner is not None:
        _score_winner(sw, winner, store, echo)
        scored = True
    write_report(folder, sw, rows, winner if scored else None, pending=not scored)
    for line in headline(sw, winner if scored else None, pending=not scored):
        echo(f"sweep: {line}")
    echo(f"sweep: results in {_shown(sw, folder)} (sweep.md, sweep.html, results.csv)")
    if not worker and not left and winner is None:
        raise RunFailed(f"sweep: no trial completed; see {_shown(sw, folder / 'sweep.md')}")
    return SweepResult(sw, rows, winner, scored, left)


# --------------------------------------------------------------------------- the folder and the study


def _shown(sw: Sweep, path: Path) -> str:
    try:
        return path.relative_to(sw.root).as_posix()
    except ValueError:
        return str(path)


def _prepare(sw: Sweep) -> Path:
    """The sweep folder, checked (written only by ftspec, never through a link, never one git
    tracks: a committed journal could name any trial the winner), and its definition: a new
    folder gets sweep.json, an existing one must hold this very definition."""
    folder = sw.folder
    where = Pos(_shown(sw, folder))
    problem = target_problem(folder, protected(sw.plan, sw.root), folder=True)
    link = link_on_way(folder, sw.root) if sw.root in folder.parents else None
    if problem is None and (link is not None or folder.is_symlink()):
        problem = "is reached through a symbolic link; ftspec makes none there"
    problem = problem or tracked_problem(folder, sw.root)
    if problem:
        raise SpecError.one(where, "output.dir", f"the sweep folder {problem}")
    definition = sw.definition()
    if not (folder.exists() or folder.is_symlink()):
        _create(folder, definition)
    if not folder.is_dir():
        raise SpecError.one(where, "output.dir", "the sweep folder is a file, not a folder; ftspec did not make it",
                            "move it away")
    path = folder / DEFINITION
    if path.exists() or path.is_symlink():
        try:
            held_def = read_json(path, dict)
        except BadFileError as exc:
            raise SpecError(exc.issues) from None
        if held_def != definition:
            differ = sorted(k for k in set(held_def) | set(definition) if held_def.get(k) != definition.get(k))
            raise SpecError.one(Pos(_shown(sw, path)), "", f"holds another sweep (it differs in {', '.join(differ)}): "
                                "a sweep resumes only with the definition it started with",
                                "run it as it was, or move the folder away to start a new sweep")
    else:
        # Not a sweep ftspec started (no sweep.json): what is in it is someone else's, never written over.
        found = sorted(p.name for p in folder.iterdir())
        if found:
            shown = ", ".join(found[:3]) + (", …" if len(found) > 3 else "")
            raise SpecError.one(where, "output.dir", f"the sweep folder holds files ftspec did not write ({shown}) "
                                f"and no {DEFINITION}", "move the folder away to start a new sweep")
        write_json(path, definition)
    (folder / "trials").mkdir(exist_ok=True)
    return folder


def _create(folder: Path, definition: dict) -> None:
    """A new sweep folder, made whole before it appears (ftspec.core.io.make_folder): a sweep
    started at the same moment elsewhere finds either no folder or one with its sweep.json,
    never a half-made one (the other's folder is kept when it made it first)."""
    def fill(temporary: Path) -> None:
        write_json(temporary / DEFINITION, definition)
        (temporary / "trials").mkdir()

    make_folder(folder, fill)


def _check_journal(sw: Sweep, folder: Path, lock) -> None:
    """Every line of the journal whole and JSON (read under the lock Optuna writes it with): a
    journal cut off (a disk filled, a copy stopped) is said in one line, not appended to."""
    journal = folder / JOURNAL
    if journal.is_symlink() or (journal.exists() and not journal.is_file()):
        raise SpecError.one(Pos(_shown(sw, journal)), "", "the sweep's journal is not a regular file",
                            "move the folder away to start the sweep again")
    if not journal.exists():
        return
    lock.acquire()
    try:
        with open(journal, "rb") as fh:
            for number, line in enumerate(fh, 1):
                try:
                    whole = line.endswith(b"\n") and isinstance(json.loads(line), dict)
                except ValueError:
                    whole = False
                if not whole:
                    raise SpecError.one(Pos(_shown(sw, journal), number), "",
                                        "the sweep's journal is cut off or damaged here (not a whole JSON line)",
                                        "move the folder away to start the sweep again (the trials' steps stay in "
                                        "the store and are reused)")
    finally:
        lock.release()


def _setup_lock(folder: Path) -> FileLock:
    return FileLock(folder / "trials" / "queue.lock")


def _trial_lock(folder: Path, number: int) -> Path:
    return folder / "trials" / f"{number}.lock"


def _params(sw: Sweep, values: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """A trial's values as Optuna's params: a choice as its --set text, a range's number as it is."""
    ranged = {f.path for f in sw.fields if f.range is not None}
    return {p: (v if p in ranged else set_text(v)) for p, v in values}


def _open_study(sw: Sweep, folder: Path):
    import optuna  # the optional `sweep` extra
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock  # the same extra

    lock = JournalFileOpenLock(str(folder / "journal.lock"))
    _check_journal(sw, folder, lock)
    backend = JournalFileBackend(str(folder / JOURNAL), lock_obj=lock)
    storage = optuna.storages.JournalStorage(backend)
    sampler = (optuna.samplers.TPESampler(seed=sw.seed) if sw.method == "tpe"
               else optuna.samplers.RandomSampler(seed=sw.seed))  # every grid and random trial is queued: unused
    with _setup_lock(folder):
        study = optuna.create_study(study_name=STUDY, storage=storage, direction=sw.objective.direction,
                                    sampler=sampler, pruner=sweep_prune.make_pruner(sw.prune), load_if_exists=True)
        if not study.get_trials(deepcopy=False):
            for t in sw.trials:
                study.enqueue_trial(_params(sw, t.values), user_attrs={"index": t.index})
        _requeue_abandoned(sw, study, storage, folder)
    return study, storage


def _requeue_abandoned(sw: Sweep, study, storage, folder: Path) -> None:
    """A trial left running by a process that is gone (its lock free): failed, and queued again."""
    from optuna.trial import TrialState  # the optional `sweep` extra

    study_id = storage.get_study_id_from_name(STUDY)
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if held(_trial_lock(folder, t.number)):
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
        storage.set_trial_user_attr(trial_id, "interrupted", True)
        study.tell(t.number, state=TrialState.FAIL)
        _requeue(sw, study, t.params, t.user_attrs)


def _requeue(sw: Sweep, study, params: dict, user_attrs: dict) -> None:
    index = user_attrs.get("index")
    if isinstance(index, int) and 0 <= index < len(sw.trials):
        study.enqueue_trial(_params(sw, sw.trials[index].values), user_attrs={"index": index})
    elif sw.method == "tpe" and set(params) == {f.path for f in sw.fields}:
        study.enqueue_trial(params, user_attrs={"requeued": True})


def _counts(sw: Sweep, study) -> int:
    """TPE trials started or done (not one that was interrupted and queued again)."""
    from optuna.trial import TrialState  # the optional `sweep` extra

    return sum(1 for t in study.get_trials(deepcopy=False)
               if not (t.state == TrialState.FAIL and t.user_attrs.get("interrupted")))


def _tpe_left(sw: Sweep, study) -> int:
    return max(0, sw.count - _counts(sw, study)) if sw.method == "tpe" else 0


def _next_trial(sw: Sweep, study, folder: Path):
    """The next trial to run (Optuna's ask, under the queue's lock so that workers each take
    another), with its lock held; None when none is left to start."""
    from optuna.trial import TrialState  # the optional `sweep` extra

    with _setup_lock(folder):
        if sw.method == "tpe":
            if _counts(sw, study) >= sw.count:
                return None
        elif not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            return None
        trial = study.ask()
        lock = FileLock(_trial_lock(folder, trial.number))
        lock.acquire()
    return trial, lock


def _values(sw: Sweep, trial) -> tuple[tuple[str, Any], ...]:
    """Each field's value for this trial: asked of Optuna (queued trials answer with their own)."""
    out = []
    for f in sw.fields:
        if f.choices is not None:
            by_text = {set_text(v): v for v in f.choices}
            out.append((f.path, by_text[trial.suggest_categorical(f.path, list(by_text))]))
        else:
            r = f.range
            assert r is not None
            if r.integers:
                out.append((f.path, trial.suggest_int(f.path, r.low, r.high, log=r.log, step=int(r.step or 1))))
            else:
                out.append((f.path, trial.suggest_float(f.path, r.low, r.high, log=r.log, step=r.step)))
    return tuple(out)


def _base_of(sw: Sweep, report: dict | None) -> tuple[float | None, list[float] | None]:
    """The base model's objective and its 95% interval in a run's report (None without a baseline)."""
    if not isinstance(report, dict):
        return None, None
    value = (report.get("base") or {}).get(sw.objective.metric)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        return None, None
    interval = ((report.get("intervals") or {}).get("base") or {}).get(sw.objective.metric)
    ok = (isinstance(interval, list) and len(interval) == 2
          and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in interval))
    return float(value), ([float(x) for x in interval] if ok else None)


def _objective_of(sw: Sweep, report: dict | None, split: str) -> tuple[float | None, list[float] | None, str | None]:
    """The objective and its 95% interval from a run's report (metrics.json), or why there is none."""
    metric = sw.objective.metric
    if not isinstance(report, dict):
        return None, None, "the run wrote no report"
    if report.get("split") != split:
        return None, None, f"the report scored {report.get('split')!r}, not {split}"
    value = (report.get("tuned") or {}).get(metric)
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None, None, f"the report has no {metric} of the tuned model"
    if not math.isfinite(value):
        return None, None, f"the tuned model's {metric} is {value} (not a number to compare)"
    interval = ((report.get("intervals") or {}).get("tuned") or {}).get(metric)
    ok = isinstance(interval, list) and len(interval) == 2 and all(isinstance(x, (int, float)) for x in interval)
    return float(value), ([float(x) for x in interval] if ok else None), None


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, SpecError) and exc.issues:
        return exc.issues[0].format() + (f" (+{len(exc.issues) - 1} more)" if len(exc.issues) > 1 else "")
    return " ".join(str(exc).split()) or type(exc).__name__


def _run_trial(sw: Sweep, study, storage, taken, folder: Path, store: str | None, echo) -> None:
    import optuna  # the optional `sweep` extra

    trial, lock = taken
    try:
        values = _values(sw, trial)
        index = trial.user_attrs.get("index", trial.number)
        shown = ", ".join(f"{p}={set_text(v)}" for p, v in values)
        echo(f"sweep: trial {index} ({shown})")
        try:
            with sweep_prune.reporting_to(trial, sw.objective.higher_is_better, sw.prune):
                result = run(sw.spec, sw.profiles, sw.trial_sets(values), False, allow=sw.allow, echo=echo,
                             store=store)
        except optuna.TrialPruned as exc:
            trial.set_user_attr("reason", " ".join(str(exc).split()) or "pruned")
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            echo(f"sweep: trial {index} pruned")
            return
        except (RunFailed, SpecError) as exc:
            reason = _one_line(exc)
            trial.set_user_attr("reason", reason)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            echo(f"sweep: trial {index} failed: {reason}")
            return
        trial.set_user_attr("run_dir", _shown(sw, result.run_dir))
        value, interval, why = _objective_of(sw, result.report, "validation")
        if value is None:
            trial.set_user_attr("reason", why)
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            echo(f"sweep: trial {index} failed: {why}")
            return
        trial.set_user_attr("interval", interval)
        base, base_interval = _base_of(sw, result.report)
        if base is not None:
            trial.set_user_attr("base", base)
            trial.set_user_attr("base_interval", base_interval)
        study.tell(trial, value)
        echo(f"sweep: trial {index}: validation {sw.objective.metric} {value:.4g}")
    except KeyboardInterrupt:
        trial.set_user_attr("interrupted", True)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        _requeue(sw, study, trial.params, trial.user_attrs)
        raise
    finally:
        lock.release()


def _rows(sw: Sweep, study) -> list[Row]:
    """The trials as the report shows them: a grid's or random's by their place in the order (the
    latest attempt of each), TPE's in the order they were asked; interrupted attempts left out."""
    from optuna.trial import TrialState  # the optional `sweep` extra

    states = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed",
              TrialState.RUNNING: "running", TrialState.WAITING: "waiting"}
    by_index: dict[int, Row] = {}
    for t in study.get_trials(deepcopy=False):
        if t.state == TrialState.FAIL and t.user_attrs.get("interrupted"):
            continue
        index = t.user_attrs.get("index", t.number)
        if sw.method != "tpe" and isinstance(index, int) and 0 <= index < len(sw.trials):
            values = sw.trials[index].values
        else:
            values = tuple(_decode(sw, t.params))
        interval = t.user_attrs.get("interval")
        by_index[index] = Row(index, values, states.get(t.state, "failed"),
                              t.value if t.state == TrialState.COMPLETE else None,
                              interval if isinstance(interval, list) else None,
                              t.user_attrs.get("run_dir"), t.user_attrs.get("reason"),
                              *_base_attrs(t.user_attrs))
    return [by_index[i] for i in sorted(by_index)]


def _base_attrs(attrs: dict) -> tuple[float | None, list[float] | None]:
    base, interval = attrs.get("base"), attrs.get("base_interval")
    ok = isinstance(base, (int, float)) and not isinstance(base, bool) and math.isfinite(base)
    return (float(base) if ok else None), (interval if ok and isinstance(interval, list) else None)


def _decode(sw: Sweep, params: dict) -> Iterable[tuple[str, Any]]:
    for f in sw.fields:
        if f.path not in params:
            continue
        raw = params[f.path]
        if f.choices is not None:
            by_text = {set_text(v): v for v in f.choices}
            yield f.path, by_text.get(raw, raw)
        else:
            yield f.path, raw


def _score_winner(sw: Sweep, winner: Winner, store: str | None, echo) -> None:
    """The winner once more with the spec's own evaluation split: its training is reused from the store."""
    w = winner.row
    echo(f"sweep: scoring the winner (trial {w.index}) once on the spec's evaluation split")
    result = run(sw.spec, sw.profiles, sw.trial_sets(w.values, validation=False), False, allow=sw.allow, echo=echo,
                 store=store)
    split = result.plan.eval.split or "test"
    value, interval, why = _objective_of(sw, result.report, split)
    if value is None:
        raise RunFailed(f"sweep: the winner's run on {split}: {why}")
    winner.test_value, winner.test_interval = value, interval
    winner.test_base, winner.test_base_interval = _base_of(sw, result.report)
    winner.test_run_dir = _shown(sw, result.run_dir)
    winner.gates_failed = [str(g.get("gate")) for g in result.failed_gates]


# --------------------------------------------------------------------------- --dry-run


def dry_run(spec: Path, profiles: Iterable[str] = (), sets: Iterable[str] = (), *, over: Iterable[str] = (),
            method: str | None = None, trials: int | None = None, objective: str | None = None,
            seed: int | None = None, prune: str | None = None, allow: Iterable[str | Path] = (),
            strict: bool = False) -> list[str]:
    """What the sweep would run, as lines: every trial (grid and random exactly; TPE: how many) with
    the steps it runs and those it reuses, from the store or from an earlier trial. Writes nothing,
    imports neither Optuna nor torch. Raises SpecError as :func:`sweep` does."""
    sw = resolve(Path(spec), profiles, sets, over=over, method=method, trials=trials, objective=objective, seed=seed,
                 prune=prune, allow=allow, strict=strict)
    o = sw.objective
    lines = [f"sweep of {_shown(sw, sw.spec.resolve())}: {sw.method}, {sw.count} trial(s) over "
             f"{', '.join(f.path for f in sw.fields)}; chosen on validation {o.metric} "
             f"({'higher' if o.higher_is_better else 'lower'} is better), the winner then scored once on the "
             f"spec's own split ({sw.plan.eval.split})",
             f"sweep folder: {_shown(sw, sw.folder)} (--dry-run writes nothing)", *[f"note: {n}" for n in sw.notes]]
    if sw.method == "tpe":
        lines.append(f"tpe chooses each of the {sw.count} trials from the results before it: what a trial reuses is "
                     "known once it is chosen")
        return lines
    first: dict[tuple[str, str], int] = {}
    store = store_of(run_dir_of(sw.plan, sw.root))
    for t in sw.trials:
        lines += _trial_lines(sw, t, first, store)
    lines.append("then the winner runs once more on the spec's own split: its training is reused, only that split's "
                 "generation and scoring run")
    return lines


def _trial_lines(sw: Sweep, t: Trial, first: dict[tuple[str, str], int], store) -> list[str]:
    try:
        plan = compile_plan(sw.spec, sw.profiles, sw.trial_sets(t.values), False, sw.allow).plan
    except SpecError as exc:
        return [f"trial {t.index} ({t.shown()}): refused: {_one_line(exc)}"]
    runs, reused = [], []
    for s in plan.steps:
        done = store.complete(s.name, s.key)
        earlier = first.get((s.name, s.key))
        if done:
            reused.append(f"{s.name} (in the store)")
        elif earlier is not None:
            reused.append(f"{s.name} (from trial {earlier})")
        else:
            runs.append(s.name)
            first[(s.name, s.key)] = t.index
    out = [f"trial {t.index} ({t.shown()}) -> {_shown(sw, run_dir_of(plan, sw.root))}",
           f"  runs: {', '.join(runs) or 'nothing'}"]
    if reused:
        out.append(f"  reuses: {', '.join(reused)}")
    return out


__all__ = ["SweepResult", "dry_run", "sweep"]
