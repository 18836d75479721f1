"""Execute a plan: its steps in order, each computed once per key into the step
store beside the run directory, and shown in the run directory by a link. The
steps are the implementations of the backend the plan names (ftspec.backends.BACKENDS).

    runs/
      .ftspec-store/<step>/<key>/    each step's output (see ftspec/store/rundir.py)
      <name>[@variant]/
        plan.json  manifest.json  metrics.jsonl  metrics.json  predictions.jsonl  report.md  report.html
        data -> …           prepare_data: the splits in TRL's columns, train-/validation-tokens/ (tokenized, for SFT),
                            stats.json (+ base-model/ for tiny models)
        generate-base -> …  generate_base: what the base model answered (and the log-probs the metrics need)
        eval-base -> …      eval_base: those answers scored: metrics.json, predictions.jsonl
        model -> …          train: the model or adapter (safetensors) with its tokenizer, train.json
        generate-tuned -> … generate_tuned: what the tuned model answered
        eval-tuned -> …     eval_tuned: metrics.json, predictions.jsonl
        report -> …         report: metrics.json, predictions.jsonl, report.md, report.html (copied to the top)

A step writes into ``<key>.partial`` in the store, holding the key's lock, and its
completion marker is the last file written there; only then does the folder take
its final name. The trainer's checkpoints stay in the store (``<key>.checkpoints``)
until the train step is complete, so that a run cut off resumes, from any run
directory whose plan has the same train key. A step whose key is complete in the
store is reused, not run again, whichever variant computed it.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Callable

from ftspec.backends import BACKENDS
from ftspec.backends.backend import Backend
from ftspec.backends.manifest import (
    git_state,
    machine,
    manifest_steps,
    plan_inputs,
    publish,
    read_manifest,
    spec_files,
    write_manifest,
)
from ftspec.backends.shared import Shared
from ftspec.catalog import steps
from ftspec.core.errors import Pos, SpecError
from ftspec.core.folders import remove_own
from ftspec.core.io import read_json, write_json
from ftspec.core.versions import versions
from ftspec.plan import keys
from ftspec.plan.artifacts import MANIFEST_VERSION
from ftspec.plan.compute import describe_launch
from ftspec.plan.describe import describe_adapter, describe_model
from ftspec.plan.model import Plan
from ftspec.runtime.context import StepContext
from ftspec.runtime.distributed.rendezvous import Rendezvous, spec_rendezvous
from ftspec.runtime.report.console import shown_path, summary
from ftspec.runtime.result import RunResult, StepOutcome
from ftspec.runtime.training.job import TrainJob
from ftspec.store.lock import RunLock
from ftspec.store.protect import refuse_tracked
from ftspec.store.remote import RemoteStore
from ftspec.store.rundir import Store, adopt_legacy, finish_step, link_step, now, run_dir_of, store_of

__all__ = ["RunResult", "StepOutcome", "execute", "header"]

# The libraries whose versions a run's manifest records (with Python's).
LIBRARIES = ("torch", "transformers", "peft", "trl", "datasets", "accelerate", "tokenizers")


def backend_of(plan: Plan) -> Backend:
    return BACKENDS[plan.compute.backend]


def execute(plan: Plan, root: Path, echo: Callable[[str], None] = print, callbacks: list | None = None,
            force: set[str] = frozenset(), only: set[str] | None = None, lock: dict | None = None,
            remote: RemoteStore | None = None) -> RunResult:
    """Run every step of the plan that is not already complete under its key, holding
    the run directory's lock (a second run of the same spec is refused, naming the first).
    With a shared store (``remote``), a step is fetched from it rather than computed when
    it is there, and what is computed is uploaded (ftspec.backends.shared).
    A plan with stages runs each stage's plan in order, each in its own run directory; a
    stage whose gates fail stops the run before the stages that would build on it."""
    shared = Shared(remote, echo)
    if plan.stages:
        return _execute_stages(plan, root, echo, callbacks, force, only, lock, shared)
    return _execute_one(plan, root, echo, callbacks, force, only, lock, shared)


def _execute_stages(plan: Plan, root: Path, echo: Callable[[str], None], callbacks: list | None,
                    force: set[str], only: set[str] | None, lock: dict | None, shared: Shared) -> RunResult:
    started = time.time()
    done: list[RunResult] = []
    total = len(plan.stages) + 1
    # --force and --only name steps of every stage (`ftspec report` reports each again).
    for i, stage_plan in enumerate(plan.stages, 1):
        echo(f"stage {i}/{total}: {stage_plan.stage}")
        result = _execute_one(stage_plan, root, echo, callbacks, force, only, lock, shared)
        done.append(result)
        if result.failed_gates:
            names = ", ".join(str(g.get("gate")) for g in result.failed_gates)
            echo(f"stage {stage_plan.stage} did not meet its gates ({names}); the stages after it are not run")
            return RunResult(plan, run_dir_of(plan, root), [], None, time.time() - started, done)
    echo(f"stage {total}/{total}: {plan.stage}")
    result = _execute_one(plan, root, echo, callbacks, force, only, lock, shared)
    result.stages, result.seconds = done, time.time() - started
    return result


def _execute_one(plan: Plan, root: Path, echo: Callable[[str], None], callbacks: list | None,
                 force: set[str], only: set[str] | None, lock: dict | None, shared: Shared) -> RunResult:
    launch = plan.compute.launch
    if launch is not None and launch.nodes > 1:
        rdzv = spec_rendezvous(launch.nodes)
        if rdzv.node_rank != 0:
            return _other_node(plan, root, echo, callbacks, rdzv)
    with RunLock(run_dir_of(plan, root)):
        return _execute(plan, root, echo, callbacks, force, only, lock, shared)


def _other_node(plan: Plan, root: Path, echo: Callable[[str], None], callbacks: list | None,
                rdzv: Rendezvous) -> RunResult:
    """Every node but the first: prepare the data (once, when the store is shared: the step's
    lock makes one node compute it), start this node's training processes, and leave the
    rest to node 0, which holds the run directory, saves the model, evaluates and reports."""
    # Deferred: the launcher imports torch's elastic launcher and transformers.
    from ftspec.runtime.distributed import launcher

    backend = backend_of(plan)
    started = time.time()
    run_dir = run_dir_of(plan, root)
    store = store_of(run_dir)
    step_keys = {s.name: s.key for s in plan.steps}
    store.check(step_keys)  # nothing written or removed through a link planted in the store
    refuse_tracked(run_dir, store.root, root)  # nor a finished step or checkpoint a commit carried in
    backend.setup(plan)
    echo(f"ftspec run {plan.name}  (plan {plan.short_id}): node {rdzv.node_rank} of {rdzv.nodes}, "
         f"rendezvous {rdzv.addr}:{rdzv.port} ({rdzv.source})")
    prepare = steps.PREPARE_DATA.name
    with _step_lock(store, prepare, step_keys[prepare], echo):
        if not store.complete(prepare, step_keys[prepare]):
            echo(f"{prepare}: running (key {step_keys[prepare][:8]})")
            _compute(plan, backend, steps.step(prepare), store,
                     StepContext(root, run_dir, step_keys[prepare], echo, [], step_keys, store, prepare))
    train = steps.TRAIN.name
    ctx = StepContext(root, run_dir, step_keys[train], echo, list(callbacks or []), step_keys, store, train)
    checkpoints = ctx.checkpoints()
    checkpoints.mkdir(parents=True, exist_ok=True)
    echo(f"{train}: running (key {step_keys[train][:8]}) with node 0")
    job = TrainJob(keys.view(plan, steps.TRAIN), root, ctx.data_dir, checkpoints,
                   checkpoints / f"node-{rdzv.node_rank}", checkpoints / "metrics.jsonl", list(callbacks or []),
                   run_name=run_dir.name)
    launcher.train(job, echo)
    echo(f"node {rdzv.node_rank}: training finished in {round(time.time() - started)}s; node 0 saves the model, "
         "evaluates and writes the report")
    return RunResult(plan, run_dir, [], None, time.time() - started)


def _execute(plan: Plan, root: Path, echo: Callable[[str], None], callbacks: list | None,
             force: set[str], only: set[str] | None, lock: dict | None, shared: Shared) -> RunResult:
    """Run every step of the plan that is not already complete under its key.

    ``force`` runs the named steps again even when they are complete; ``only`` runs
    just the named steps, and needs every other step complete already. When every
    step is complete nothing heavy is imported: an unchanged spec returns at once.
    """
    backend = backend_of(plan)
    run_dir = run_dir_of(plan, root)
    store = store_of(run_dir)
    names = [s.name for s in plan.steps]
    step_keys = {s.name: s.key for s in plan.steps}
    store.check(step_keys)  # nothing written or removed through a link planted in the store
    refuse_tracked(run_dir, store.root, root)  # nor a finished step or checkpoint a commit carried in
    adopt_legacy(run_dir, store)
    done = {n for n in names if store.complete(n, step_keys[n])}
    selected = set(names) if only is None else set(only) & set(names)
    fetched: set[str] = set()
    for n in [n for n in names if n not in selected and n not in done] if shared.on else []:
        with _step_lock(store, n, step_keys[n], echo):  # --only: what it needs may be in the shared store
            if store.complete(n, step_keys[n]) or shared.fetch(n, step_keys[n], store):
                done.add(n)
                fetched.add(n)
    missing = [n for n in names if n not in selected and n not in done]
    if missing:
        raise SpecError.one(Pos(str(plan.spec.path)), "", f"step {missing[0]} has not run for this plan "
                            f"(key {step_keys[missing[0]][:8]}); run `ftspec run {plan.spec.path}` first")
    todo = [n for n in names if n in selected and (n in force or n not in done)]

    started = time.time()
    run_dir.mkdir(parents=True, exist_ok=True)
    # Steps the shared store holds are fetched, not computed: when that is all of them, nothing
    # heavy is imported (as when every step is here already). A fetch refused later sets up then.
    computed = [n for n in todo if n in force or not shared.has(n, step_keys[n])]
    threads = backend.setup(plan) if computed else None
    echo(header(plan, run_dir, root, threads, shared.remote.url if shared.on else None))
    write_json(run_dir / "plan.json", plan.to_dict())
    previous = {e["name"]: e for e in manifest_steps(read_manifest(run_dir))}
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "plan_id": plan.id,
        "name": plan.name,
        "spec": plan.spec.model_dump(mode="json"),
        "spec_files": spec_files(plan, root),
        "lock": lock,
        "status": "running",
        "pid": os.getpid(),
        "started_at": now(),
        "finished_at": None,
        "versions": {"python": platform.python_version(), **versions(LIBRARIES)},
        "git": git_state(root, plan_inputs(plan)),
        "machine": machine(plan, threads),  # what `auto` became here: only when a step runs (no torch otherwise)
        "store": shared.remote.url if shared.on else None,
        "data": data_files(plan),
        "steps": [],
        "artifacts": {name: steps.folder(name) for name in names},
    }
    write_manifest(run_dir, manifest)
    outcomes: list[StepOutcome] = []
    try:
        for step in plan.steps:
            step_def = steps.step(step.name)
            name, key = step.name, step.key
            final = store.path(name, key)
            stored = os.path.relpath(final, run_dir)
            ran = False
            if name in todo:
                with _step_lock(store, name, key, echo):
                    if name in force or not store.complete(name, key):  # a run beside this one may have done it
                        if name not in force and shared.fetch(name, key, store):
                            fetched.add(name)
                        else:
                            if threads is None:  # every step was to be fetched, and this one was not
                                threads = backend.setup(plan)
                                echo(f"  device   {backend.where(plan, threads)}")
                            echo(f"{name}: running (key {key[:8]})")
                            t0 = time.time()
                            ctx = StepContext(root, run_dir, key, echo, list(callbacks or []), step_keys, store, name)
                            with shared.checkpoints(name, key, ctx.checkpoints()):
                                result = _compute(plan, backend, step_def, store, ctx)
                            seconds = round(time.time() - t0, 2)
                            ran = True
            elif name in selected:
                echo(f"{name}: up to date (key {key[:8]})")
            if name not in fetched:
                shared.share(name, key, final)  # computed here, now or before: uploaded unless it is there
            link_step(run_dir, step_def.folder, final)
            if name in fetched:
                entry = {"name": name, "key": key, "dir": step_def.folder, "stored": stored, "state": "fetched",
                         "finished_at": now()}
                outcomes.append(StepOutcome(name, key, run_dir / step_def.folder, "fetched"))
            elif ran:
                entry = {"name": name, "key": key, "dir": step_def.folder, "stored": stored, "state": "ran",
                         "seconds": seconds, "finished_at": now()}
                outcomes.append(StepOutcome(name, key, run_dir / step_def.folder, "ran", seconds, result))
            else:
                if name in todo:
                    echo(f"{name}: computed by a run beside this one (key {key[:8]})")
                entry = {"name": name, "key": key, "dir": step_def.folder, "stored": stored, "state": "reused"}
                prior = previous.get(name, {})
                if prior.get("key") == key:  # when it ran, as the earlier manifest says
                    entry.update({k: prior[k] for k in ("seconds", "finished_at")
                                  if isinstance(prior.get(k), (int, float, str))})
                outcomes.append(StepOutcome(name, key, run_dir / step_def.folder, "reused"))
            manifest["steps"].append(entry)
            write_manifest(run_dir, manifest)
        publish(run_dir)
        manifest.update(backend.manifest(run_dir))
        report = read_json(run_dir / steps.folder(steps.REPORT.name) / "metrics.json")
        report = report if isinstance(report, dict) else None
        if report:
            manifest["metrics"] = {"base": report.get("base"), "tuned": report.get("tuned"),
                                   "gates_passed": report.get("gates_passed")}
        manifest.update(status="finished", finished_at=now(), seconds=round(time.time() - started, 1))
    except BaseException:
        manifest.update(status="failed", finished_at=now())
        write_manifest(run_dir, manifest)
        raise
    write_manifest(run_dir, manifest)
    result = RunResult(plan, run_dir, outcomes, report, time.time() - started)
    echo(summary(result, root))
    return result


def _compute(plan: Plan, backend: Backend, step_def: steps.StepDef, store: Store, ctx: StepContext) -> dict:
    """Run one step, on its view of the plan (the fields it declares, nothing else), into its
    ``.partial`` folder in the store, and make it final."""
    partial = store.partial(step_def.name, ctx.key)
    remove_own(partial, store.root)
    partial.mkdir(parents=True)
    result = backend.step(step_def.name)(keys.view(plan, step_def), ctx, partial)
    finish_step(partial, store.path(step_def.name, ctx.key), step_def.name, ctx.key)
    # Kept only so that an unfinished step resumes.
    remove_own(ctx.checkpoints(), store.root)
    return result


def data_files(plan: Plan) -> dict[str, dict]:
    """Each data source the run reads, by split; a training mixture's sources as ``train.NAME``."""
    return {name: {"path": getattr(src, "path", None) or getattr(src, "hub", None),
                   "sha256": getattr(src, "sha256", None), "revision": getattr(src, "revision", None)}
            for name, src in plan.data.named_sources()}


class _step_lock:
    """The store's lock on one step key, so that two runs beside each other (two variants
    sharing a step) compute it once: the second waits, then finds it complete."""

    def __init__(self, store: Store, name: str, key: str, echo: Callable[[str], None]):
        self.lock = store.step_lock(name, key)
        self.name, self.key, self.echo = name, key, echo

    def __enter__(self):
        if not self.lock.acquire(blocking=False):
            self.echo(f"{self.name}: waiting for another run computing it (key {self.key[:8]})")
            self.lock.acquire()
        return self

    def __exit__(self, *exc):
        self.lock.release()


def header(plan: Plan, run_dir: Path, root: Path, threads: dict | None = None, store: str | None = None) -> str:
    """The run's first lines; ``threads``: what the backend's setup set (None: nothing runs,
    so no device is needed); ``store``: the shared step store's URL, when there is one."""
    backend = backend_of(plan)
    return "\n".join([
        f"ftspec run {plan.name}  (plan {plan.short_id})",
        f"  model    {describe_model(plan.model)}",
        f"  method   {plan.method.objective} + {describe_adapter(plan.method.adapter)}",
        f"  data     train {plan.data.rows_shown('train')} · validation {plan.data.rows_shown('validation')} · "
        f"test {plan.data.rows_shown('test')} rows; {backend.schedule(plan)}",
        f"  device   {backend.where(plan, threads)}; run directory {shown_path(run_dir, root)}",
    ] + ([f"  training {describe_launch(plan.compute)}; only the main process writes, evaluation runs in this one"]
         if plan.compute.launch is not None else [])
      + ([f"  store    {store} (shared: steps there are fetched, what runs here is uploaded)"] if store else []))
