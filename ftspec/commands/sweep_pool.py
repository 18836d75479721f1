"""`ftspec sweep --workers N [--gpus 0,1,…]`: a sweep's trials N at a time on this machine.

The parent starts N worker processes, each ``python -m ftspec sweep SPEC … --worker`` with the
same profiles, overrides and sweep options, and waits for all of them; each worker takes the next
trial the sweep's Optuna journal has waiting until none is left, so the workers never run one trial
twice, and the step store's per-key locks make the steps trials share (prepare_data, the base
model's evaluation) computed by one worker while the others wait and reuse them. The parent then
selects the winner and scores it (ftspec.commands.sweep), as a sweep in one process does.

- ``--gpus``: the GPUs shared among the workers, as CUDA_VISIBLE_DEVICES names them (indices, or
  ``GPU-…``/``MIG-…`` UUIDs). With at least as many GPUs as workers each worker gets its own
  (a contiguous share: 4 GPUs for 2 workers is ``0,1`` and ``2,3``); with fewer, the workers take
  them in turn (worker k the GPU k mod G: several small trials on one GPU). Without ``--gpus``
  the workers inherit this process's CUDA_VISIBLE_DEVICES.
- Each worker's output (standard output and error together) is shown line by line, prefixed
  ``[worker k]`` (k from 1).
- A worker that exits with a failure is reported with its exit status (or the signal that killed
  it); the others go on.
- Ctrl-C: each worker is asked to stop as the terminal would ask it (SIGINT to its process group:
  its training saves a checkpoint after the current step and stops); a second Ctrl-C kills them.
  SIGTERM (a scheduler's cancel) is passed on to them the same way. Either way the parent waits
  for every worker before it exits, so none is left behind.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from ftspec.commands.sweep import SweepResult, sweep
from ftspec.core.errors import Issue, Pos, RunFailed, SpecError
from ftspec.core.text import printable
from ftspec.plan.sweep import resolve

__all__ = ["WorkerExit", "parse_gpus", "gpu_shares", "worker_command", "run_workers", "MAX_WORKERS", "pool_size",
           "sweep_with_workers"]

MAX_WORKERS = 64
# A GPU as CUDA_VISIBLE_DEVICES names one: an index, or a GPU or MIG instance UUID.
GPU = re.compile(r"^(\d{1,4}|(GPU|MIG)-[A-Za-z0-9][A-Za-z0-9/-]{0,127})$")
# How often the parent looks at its workers, and how long it waits after asking them to stop
# before it kills them (a checkpoint of a large model takes a while to write).
POLL_S = 0.2
STOP_GRACE_S = 600.0


@dataclass(frozen=True)
class WorkerExit:
    index: int  # 1-based, as the output's prefix names it
    status: int  # the exit status; negative: killed by that signal
    gpus: str | None  # its CUDA_VISIBLE_DEVICES, when --gpus set it

    @property
    def ok(self) -> bool:
        return self.status == 0

    def describe(self) -> str:
        if self.status < 0:
            try:
                how = f"was killed by {signal.Signals(-self.status).name}"
            except ValueError:
                how = f"was killed by signal {-self.status}"
        else:
            how = f"exited with status {self.status}"
        where = f" (GPUs {self.gpus})" if self.gpus is not None else ""
        return f"worker {self.index}{where} {how}"


def parse_gpus(text: str | None, option: str = "--gpus") -> tuple[str, ...]:
    """``0,1,3`` as a tuple of GPU names; a SpecError at ``option`` for an empty, malformed or
    repeated one. None or empty: no GPUs named."""
    if text is None or text.strip() == "":
        return ()
    names = [part.strip() for part in text.split(",")]
    for name in names:
        if not GPU.match(name):
            raise SpecError.one(Pos(f"<{option}>"), option, f"{printable(name)!r} is not a GPU: give indices as "
                                "CUDA_VISIBLE_DEVICES takes them, comma-separated (0,1,2) or GPU-/MIG- UUIDs")
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise SpecError.one(Pos(f"<{option}>"), option, f"GPU {name} is named twice")
        seen.add(name)
    return tuple(names)


def check_workers(workers: int, option: str = "--workers") -> None:
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= MAX_WORKERS:
        raise SpecError.one(Pos(f"<{option}>"), option, f"expected a number of workers from 1 to {MAX_WORKERS}, "
                            f"got {printable(str(workers))}")


def gpu_shares(gpus: Sequence[str], workers: int) -> list[str | None]:
    """Each worker's CUDA_VISIBLE_DEVICES (None for all when no GPUs are named)."""
    if not gpus:
        return [None] * workers
    g = len(gpus)
    if workers >= g:
        return [gpus[k % g] for k in range(workers)]
    return [",".join(gpus[k * g // workers:(k + 1) * g // workers]) for k in range(workers)]


def worker_command(spec: str | Path, profiles: Sequence[str] = (), sets: Sequence[str] = (),
                   allow: Sequence[str | Path] = (), options: Mapping[str, object] | None = None,
                   python: str | None = None) -> list[str]:
    """``python -m ftspec sweep SPEC … --worker``: the same sweep as the parent's. ``options``: the
    sweep's own command-line options by name (``over`` -> ``--over``), None or False left out, True
    a flag, a list or tuple repeated (``--over`` per field)."""
    words = [python or sys.executable, "-m", "ftspec", "sweep", str(spec)]
    for p in profiles:
        words += ["--profile", p]
    for s in sets:
        words += ["--set", s]
    for a in allow:
        words += ["--allow-path", str(a)]
    for name, value in (options or {}).items():
        flag = "--" + name.replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            words.append(flag)
        elif isinstance(value, (list, tuple)):
            for v in value:
                words += [flag, str(v)]
        else:
            words += [flag, str(value)]
    return words + ["--worker"]


def pool_size(spec: Path, profiles: Sequence[str], sets: Sequence[str], workers: int | None, gpus: Sequence[str],
              options: Mapping[str, object]) -> int:
    """How many worker processes ``ftspec sweep`` starts: --workers, else the spec's
    ``sweep.workers``; 0 when the sweep runs in this process (one worker and no --gpus)."""
    if workers is not None:
        check_workers(workers)
    n = workers if workers is not None else resolve(Path(spec), profiles, sets, **{
        k: v for k, v in options.items() if k in ("over", "method", "trials", "objective", "seed", "prune", "allow",
                                                   "strict")}).workers
    return n if n > 1 or gpus else 0


def sweep_with_workers(spec: Path, profiles: Sequence[str], sets: Sequence[str], *, workers: int,
                       gpus: Sequence[str] = (), options: Mapping[str, object], max_trials: int | None = None,
                       store: str | None = None, echo: Callable[[str], None] = print,
                       warn: Callable[[Issue], None] | None = None) -> SweepResult:
    """The sweep in ``workers`` processes (``options``: :func:`ftspec.commands.sweep.sweep`'s
    over/method/trials/objective/seed/prune/allow/strict), then, in this one, the winner chosen
    and scored once every trial is done. The sweep folder and its queue of trials are made here
    first, so that the workers start on one study. A worker that failed makes this a RunFailed
    (exit 1) once the others are done, and the winner is scored only if no trial was left."""
    # The folder and the queue, no trial run: its lines (no winner yet, results in …) would only
    # say what the workers say again.
    ready = sweep(spec, profiles, sets, worker=True, max_trials=0, store=store, echo=lambda line: None, warn=warn,
                  **options)
    exits: list[WorkerExit] = []
    if ready.left:  # every trial done already (a resume, or after a job array): only the winner is left
        flags = {k: options.get(k) for k in ("over", "method", "trials", "objective", "seed", "prune", "strict")}
        command = worker_command(spec, profiles, sets, tuple(options.get("allow") or ()),
                                 {**flags, "max_trials": max_trials, "store": store})
        shown = f" on GPUs {', '.join(s for s in gpu_shares(tuple(gpus), workers) if s)}" if gpus else ""
        echo(f"sweep: starting {workers} worker process{'es' if workers != 1 else ''}{shown}")
        exits = run_workers(command, workers, gpus, echo=echo)
    result = sweep(spec, profiles, sets, max_trials=0, store=store, echo=echo, **options)
    failed = [e for e in exits if not e.ok]
    if failed:
        raise RunFailed(f"sweep: {'; '.join(e.describe() for e in failed)}; run the same command again to go on")
    return result


class _Terminated(Exception):
    """SIGTERM reached the parent: passed on to the workers."""


def run_workers(command: Sequence[str], workers: int, gpus: Sequence[str] = (),
                echo: Callable[[str], None] | None = None, env: Mapping[str, str] | None = None,
                cwd: str | Path | None = None) -> list[WorkerExit]:
    """Run ``workers`` copies of ``command`` at once and wait for all of them; their exits, in
    order. A failed worker is reported (``echo``) as it ends; the others go on. Ctrl-C and
    SIGTERM are passed on to every worker, waited for, then raised again (KeyboardInterrupt;
    SystemExit 143 for SIGTERM)."""
    check_workers(workers)
    say = echo or _print
    lock = threading.Lock()

    def line(text: str) -> None:
        with lock:
            say(text)

    shares = gpu_shares(tuple(gpus), workers)
    base = dict(os.environ if env is None else env)
    procs: list[subprocess.Popen] = []
    relays: list[threading.Thread] = []
    exits: dict[int, WorkerExit] = {}
    previous_term = _on_sigterm()
    try:
        for k in range(workers):
            child_env = dict(base, FTSPEC_SWEEP_WORKER=str(k + 1))
            if shares[k] is not None:
                child_env["CUDA_VISIBLE_DEVICES"] = shares[k]
            # Its own process group: Ctrl-C at the terminal reaches the parent only, which passes it
            # on once to each worker's whole group (a second SIGINT would stop a training at once).
            proc = subprocess.Popen(list(command), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, env=child_env, cwd=cwd, start_new_session=True)
            procs.append(proc)
            relay = threading.Thread(target=_relay, args=(proc.stdout, f"[worker {k + 1}] ", line), daemon=True)
            relay.start()
            relays.append(relay)
        _wait(procs, shares, exits, line)
    except KeyboardInterrupt:
        line("ftspec sweep: Ctrl-C: each worker stops after its current step and saves a checkpoint "
             "(Ctrl-C again stops them at once); the same command resumes the sweep")
        _stop(procs, shares, exits, line, signal.SIGINT)
        raise
    except _Terminated:
        _stop(procs, shares, exits, line, signal.SIGTERM)
        raise SystemExit(128 + signal.SIGTERM) from None
    except BaseException:
        _kill(procs)  # a bug here: no worker is left running without its parent
        raise
    finally:
        _restore_sigterm(previous_term)
        for relay in relays:
            relay.join(timeout=5)
    return [exits[k] for k in range(len(procs))]


def _print(text: str) -> None:
    print(text, flush=True)


def _relay(stream: IO[bytes], prefix: str, line: Callable[[str], None]) -> None:
    """A worker's output, line by line, prefixed; a progress bar's carriage returns show its last state."""
    for raw in iter(stream.readline, b""):
        text = raw.decode("utf-8", errors="replace").rstrip("\r\n").rsplit("\r", 1)[-1]
        line(prefix + printable(text))
    stream.close()


def _wait(procs: list[subprocess.Popen], shares: list[str | None], exits: dict[int, WorkerExit],
          line: Callable[[str], None]) -> None:
    """Until every worker has exited, reporting each failure as it happens."""
    while len(exits) < len(procs):
        for k, proc in enumerate(procs):
            if k not in exits and proc.poll() is not None:
                exits[k] = WorkerExit(k + 1, proc.returncode, shares[k])
                if proc.returncode != 0:
                    line(f"ftspec sweep: {exits[k].describe()}; the other workers go on")
        if len(exits) < len(procs):
            time.sleep(POLL_S)


def _signal(procs: list[subprocess.Popen], sig: int) -> None:
    for proc in procs:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, sig)  # the worker and what it started (several training processes)
            except ProcessLookupError:
                pass


def _stop(procs: list[subprocess.Popen], shares: list[str | None], exits: dict[int, WorkerExit],
          line: Callable[[str], None], sig: int) -> None:
    """Ask every worker to stop with ``sig`` and wait for them: a second Ctrl-C, or the grace
    period running out, kills them."""
    _signal(procs, sig)
    deadline = time.monotonic() + STOP_GRACE_S
    try:
        while any(p.poll() is None for p in procs):
            if time.monotonic() > deadline:
                line(f"ftspec sweep: workers still running {round(STOP_GRACE_S)}s after being asked to stop: killed")
                _kill(procs)
                break
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        _kill(procs)
    for k, proc in enumerate(procs):
        proc.wait()
        exits.setdefault(k, WorkerExit(k + 1, proc.returncode, shares[k]))


def _kill(procs: list[subprocess.Popen]) -> None:
    _signal(procs, signal.SIGKILL)
    for proc in procs:
        proc.wait()


def _on_sigterm():
    """SIGTERM as :class:`_Terminated`, and SIGINT as KeyboardInterrupt, while the workers run
    (main thread only: Python sets handlers there). SIGINT too because a process started in the
    background by a shell without job control inherits it ignored, and a Ctrl-C (or `kill -INT`)
    must still reach every worker, as training's own handler makes it reach a run. The handlers
    it replaces, or None."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        raise _Terminated()

    return signal.signal(signal.SIGTERM, handler), signal.signal(signal.SIGINT, signal.default_int_handler)


def _restore_sigterm(previous) -> None:
    if previous is not None:
        signal.signal(signal.SIGTERM, previous[0])
        signal.signal(signal.SIGINT, previous[1])
