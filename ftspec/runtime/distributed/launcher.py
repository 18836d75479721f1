"""Training in several processes, the launcher's side: `ftspec run` starts them, watches
them, and checks what they saved. (What runs inside each training process is in
ftspec.runtime.distributed.ranks; the entry point of one process is worker_main.)

The run's own process stays the launcher. It prepares everything the workers need before
they start (the data is tokenized by prepare_data, the checkpoint to resume from is chosen
here), starts them with torch's elastic launcher (static rendezvous: no restarts, one
failed worker stops all the others), and once they are done loads the saved model on its
own and compares it, tensor by tensor, with what the main worker gathered from the trained
model (each tensor's shape and a digest of its values in order). A save that is empty,
sharded, partial or scrambled fails the run with one line.

Only the main worker (global rank 0) writes metrics and the model; the others' output goes
to log files in the train step's scratch folder, named in any failure message.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import pickle
import signal
import socket
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel, get_peft_model_state_dict
from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, Std
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.launcher.api import LaunchConfig, elastic_launch
from transformers import AutoModelForCausalLM

from ftspec.core.errors import Pos, RunFailed, SpecError
from ftspec.core.folders import remove_own
from ftspec.core.io import read_json
from ftspec.plan.compute import auto_threads
from ftspec.runtime.distributed import ranks
from ftspec.runtime.distributed.rendezvous import spec_rendezvous
from ftspec.runtime.models import load_model
from ftspec.runtime.training.builders import resolve_device, resolve_precision
from ftspec.runtime.training.job import TrainJob, TrainResult
from ftspec.runtime.training.resume import last_checkpoint, on_sigint

# The launcher's files, in the train step's scratch folder (removed with it once the step is complete).
FOLDER = "workers"
STOP = "stop"  # present: Ctrl-C was pressed; the workers save a checkpoint and stop together
RESULT = "result.json"
EXPECTED = "expected.json"
FAILURE = "failure-rank{rank}.txt"  # a failed worker's error, first line then traceback


# --------------------------------------------------------------------------- in the launcher


def train(job: TrainJob, echo=print) -> TrainResult:
    """Run the job's recipe in the processes the plan's ``compute.launch`` asks for."""
    compute = job.plan.compute
    launch = compute.launch
    preflight(compute)
    rdzv = spec_rendezvous(launch.nodes)
    work = job.checkpoints / (FOLDER if rdzv.node_rank == 0 else f"{FOLDER}-node{rdzv.node_rank}")
    remove_own(work, job.checkpoints)  # never through a link planted in the store
    (work / "logs").mkdir(parents=True)
    # Chosen once, here: a checkpoint cut off by a crash is removed before any worker looks.
    # Other nodes take rank 0's choice (the workers agree on it before training).
    job.resume_from = last_checkpoint(job.checkpoints) if rdzv.node_rank == 0 else None
    job.expected = work / EXPECTED
    job.interrupt = None
    job_file = work / "job.pickle"
    try:
        job_file.write_bytes(pickle.dumps(job))
    except (pickle.PicklingError, AttributeError, TypeError) as exc:
        raise RunFailed(f"train: the job cannot be handed to the worker processes ({exc}); "
                        "extra trainer callbacks must be importable classes") from None

    port = rdzv.port or _free_port()
    where = "this machine" if launch.nodes == 1 else f"node {rdzv.node_rank} of {launch.nodes} ({rdzv.source})"
    echo(f"  starting {launch.processes_per_node} process{'es' if launch.processes_per_node != 1 else ''} on {where}, "
         f"{launch.world_size} in all; rendezvous {rdzv.addr}:{port}")
    config = _launch_config(launch, rdzv, port, work, job)
    stop = _StopOnCtrlC(work / STOP)
    try:
        with _signals_kept(), stop.installed(), _environment(compute):
            elastic_launch(config, sys.executable)("-m", "ftspec.runtime.distributed.worker_main", str(job_file))
    except ChildFailedError as exc:
        raise RunFailed(_failure_line(exc, work)) from None
    if (work / STOP).exists() and not (work / RESULT).exists():  # every worker saved a checkpoint and stopped
        raise KeyboardInterrupt("stopped by Ctrl-C after saving a checkpoint")
    if rdzv.node_rank != 0:
        return TrainResult(steps=0, train_loss=None, eval_loss=None, resumed_from=None, stopped_early=False)
    result = read_json(work / RESULT, dict)
    verify_saved(job)
    return TrainResult(**result)


def preflight(compute: Any) -> None:
    """What must hold on this machine before processes start: each a one-line error at its key."""
    device = resolve_device(compute)
    resolve_precision(compute, device)  # a precision this machine lacks: at its key here, not in each worker
    launch = compute.launch
    if device == "cuda" and launch.processes_per_node > torch.cuda.device_count():
        raise SpecError.one(Pos("compute.num_processes"), "compute.num_processes",
                            f"{launch.processes_per_node} processes per node need as many GPUs; this machine has "
                            f"{torch.cuda.device_count()}")
    if device == "mps":
        raise SpecError.one(Pos("compute.device"), "compute.device", "torch.distributed has no MPS backend; "
                            "several processes need CUDA GPUs or the CPU")
    if compute.strategy in ("fsdp", "deepspeed") and device != "cuda":
        what = "FSDP" if compute.strategy == "fsdp" else "DeepSpeed"
        raise SpecError.one(Pos("compute.strategy"), "compute.strategy",
                            f"{what} runs on CUDA GPUs only and this run is on the {device} (accelerate would "
                            "silently train plain DDP)", "use strategy: ddp here")
    if compute.strategy == "deepspeed":
        if importlib.util.find_spec("deepspeed") is None:
            raise SpecError.one(Pos("compute.strategy"), "compute.strategy",
                                "strategy deepspeed needs the deepspeed package", "pip install deepspeed")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch_config(launch: Any, rdzv: Any, port: int, work: Path, job: TrainJob):
    others = {r: Std.ALL for r in range(1, launch.processes_per_node)}
    if rdzv.node_rank != 0:  # only the main worker (node 0, local rank 0) talks on the console
        others[0] = Std.ALL
    return LaunchConfig(
        min_nodes=launch.nodes,
        max_nodes=launch.nodes,
        nproc_per_node=launch.processes_per_node,
        run_id=f"ftspec-{job.checkpoints.name[:16]}",
        rdzv_backend="static",
        rdzv_endpoint=f"{rdzv.addr}:{port}",
        rdzv_configs={"rank": rdzv.node_rank, "timeout": 900},
        max_restarts=0,  # a failed worker fails the run; the next `ftspec run` resumes from a checkpoint
        monitor_interval=0.2,
        start_method="spawn",
        logs_specs=DefaultLogsSpecs(log_dir=str(work / "logs"), redirects=others),
    )


@contextmanager
def _environment(compute: Any):
    """The workers' environment while they run: the plan's CPU threads (torch's default is a
    thread per core in every process), and Ctrl-C left to ftspec (torch's launcher would
    kill the workers at once, losing the work since the last checkpoint)."""
    threads = compute.threads
    if threads == "auto":  # the usable CPUs shared out among this node's workers (or OMP_NUM_THREADS as set)
        threads = auto_threads(compute.launch.processes_per_node)[0]
    wanted = {"OMP_NUM_THREADS": str(threads), "TORCHELASTIC_SIGNALS_TO_HANDLE": "SIGTERM,SIGHUP,SIGQUIT"}
    before = {k: os.environ.get(k) for k in wanted}
    os.environ.update(wanted)
    # The launcher logs each worker's failure and each closing signal it sends; ftspec says
    # it once, in one line, naming the cause.
    elastic = logging.getLogger("torch.distributed.elastic")
    level = elastic.level
    elastic.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        elastic.setLevel(level)
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextmanager
def _signals_kept():
    """The process's signal handlers as they were before the launch: torch's launcher sets its
    own for SIGTERM, SIGHUP and SIGQUIT (and SIGINT, unless told not to) and leaves them, so a
    program that ran ftspec (ftspec.api, a notebook) would find Ctrl-C or SIGTERM changed."""
    if threading.current_thread() is not threading.main_thread():  # neither torch nor ftspec can set one there
        yield
        return
    names = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT")
    kept = {sig: signal.getsignal(sig) for name in names if (sig := getattr(signal, name, None)) is not None}
    try:
        yield
    finally:
        for sig, handler in kept.items():
            if handler is not None:  # None: set outside Python, cannot be put back from here
                signal.signal(sig, handler)


class _StopOnCtrlC:
    """The first Ctrl-C asks the workers (through a file they look for after each step) to
    save a checkpoint and stop together; a second one stops everything at once."""

    def __init__(self, path: Path):
        self.path, self.requested = path, False

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self.path.touch()
        print("\nftspec: stopping every process after this step and saving a checkpoint (Ctrl-C again to stop at once)",
              file=sys.stderr, flush=True)

    @contextmanager
    def installed(self):
        with on_sigint(self._handler):
            yield self


# What a worker reports when another one died under it: a consequence, not the cause.
_PEER_LOST = ("Connection reset by peer", "Connection closed by peer", "Broken pipe", "communicator was aborted",
              "NCCL communicator", "Socket Timeout", "timed out")


def _failure_line(exc, work: Path) -> str:
    """One line naming the worker that failed first in cause: one killed by a signal other
    than the launcher's own SIGTERM, or one whose error is not a lost peer."""
    def cause(item) -> tuple:
        rank, failure = item
        text = _failure_text(work, rank)
        terminated = failure.exitcode == -signal.SIGTERM
        secondary = terminated or any(p in text for p in _PEER_LOST)
        return (secondary, not text and failure.exitcode >= 0, rank)

    rank, failure = min(exc.failures.items(), key=cause)
    if failure.exitcode < 0:
        try:
            how = f"was killed by {signal.Signals(-failure.exitcode).name}"
        except ValueError:
            how = f"was killed by signal {-failure.exitcode}"
    else:
        how = f"exited with status {failure.exitcode}"
    text = _failure_text(work, rank)
    detail = f": {text[:300]}" if text else ""
    report = work / FAILURE.format(rank=rank)
    where = f"; its traceback: {report}" if report.is_file() else ""
    logs = sorted((work / "logs").glob(f"**/{failure.local_rank}/stderr.log"))
    if not where and logs and logs[-1].stat().st_size:
        where = f"; its log: {logs[-1]}"
    return (f"train: worker rank {rank} {how}{detail}; every other worker was stopped{where}. "
            "Run the same command again to resume from the last checkpoint")


def _failure_text(work: Path, rank: int) -> str:
    try:
        return (work / FAILURE.format(rank=rank)).read_text(encoding="utf-8").splitlines()[0].strip()
    except (OSError, IndexError):
        return ""


def verify_saved(job: TrainJob) -> None:
    """Load the saved model on this one process and compare each tensor with what the main
    worker gathered from the trained model (:func:`ranks.record_expected`)."""
    expected = read_json(job.expected, dict)
    what = "LoRA adapter" if expected["kind"] == "adapter" else "model"
    want = expected["tensors"]
    if not want:
        raise RunFailed(f"train: the trained {what} has no weights to save (nothing was gathered); nothing was kept")
    try:
        got = ranks.fingerprint(_load_saved(job, expected["kind"]))
    except (OSError, RuntimeError, ValueError) as exc:  # a sharded or torn save does not load
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        if "mismatched_sizes" in first:  # transformers' words for tensors of another shape than the config's
            first = "tensors saved with another shape than the model's, as one process's shard would be"
        raise RunFailed(f"train: the saved {what} does not load on one process ({first}); nothing was kept") from None
    missing = sorted(set(want) - set(got))
    wrong_shape = sorted(n for n in set(want) & set(got) if want[n][0] != got[n][0])
    differ = sorted(n for n in set(want) & set(got) if n not in wrong_shape and want[n][1] != got[n][1])
    problems = []
    if missing:
        problems.append(f"{len(missing)} of {len(want)} tensors missing "
                        f"({', '.join(missing[:3])}{', …' if len(missing) > 3 else ''})")
    if wrong_shape:
        n = wrong_shape[0]
        problems.append(f"{len(wrong_shape)} saved with the wrong shape ({n}: {got[n][0]} instead of {want[n][0]})")
    if differ:
        problems.append(f"{len(differ)} differ from the trained weights "
                        f"({', '.join(differ[:3])}{', …' if len(differ) > 3 else ''})")
    if problems:
        raise RunFailed(f"train: the saved {what} is not whole: {'; '.join(problems)}; nothing was kept")


def _load_saved(job: TrainJob, kind: str) -> dict:
    plan = job.plan
    out = job.out_dir
    with torch.no_grad():
        if kind == "adapter":
            base = load_model(plan.model, job.root, job.data_dir, torch.float32, "cpu")
            model = PeftModel.from_pretrained(base, str(out))
            return get_peft_model_state_dict(model)
        return AutoModelForCausalLM.from_pretrained(str(out), dtype="auto").state_dict()
