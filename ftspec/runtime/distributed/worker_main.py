"""One training process: ``python -m ftspec.runtime.distributed.worker_main JOB`` as started by
:mod:`ftspec.runtime.distributed.launcher` (torch's launcher sets RANK, WORLD_SIZE, MASTER_ADDR…).

Nothing heavy is imported at the top: the process ties itself to its launcher's life
first, and a failure to import is reported to the launcher like any other."""

from __future__ import annotations

import os
import pickle
import sys
import traceback
from pathlib import Path

from ftspec.runtime.quiet import quiet_libraries


def main(argv: list[str]) -> int:
    """Run the job; a failure leaves its traceback in a file beside the job (for the
    launcher's one-line message) instead of on the console, where every process would print its own."""
    job_file = Path(argv[0])
    _die_with_launcher()
    try:
        return _train(job_file)
    except Exception as exc:  # noqa: BLE001 - reported by the launcher, which names the cause
        rank = os.environ.get("RANK", "0")
        last = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
        # Deferred (torch): see the module's docstring.
        from ftspec.runtime.distributed.launcher import FAILURE

        (job_file.parent / FAILURE.format(rank=rank)).write_text(last + "\n\n" + traceback.format_exc(),
                                                                  encoding="utf-8")
        return 1


def _die_with_launcher() -> None:
    """A worker whose launcher is gone (killed, the machine's OOM killer) stops at once
    instead of training on, unwatched, into the step's checkpoints while the next
    `ftspec run` starts (Linux: the kernel sends SIGKILL when the parent dies)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    parent = os.getppid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # it died before the request took hold
        os._exit(1)


def _train(job_file: Path) -> int:
    # Deferred (torch, transformers, trl): see the module's docstring.
    import torch
    import torch.distributed as dist

    # Deferred, as torch above: see the module's docstring.
    from ftspec.runtime.distributed import launcher, ranks
    from ftspec.runtime.recipes import recipe
    from ftspec.runtime.training import builders

    job = pickle.loads(job_file.read_bytes())
    plan = job.plan
    quiet_libraries()
    builders.apply_threads(plan.compute)
    device = builders.resolve_device(plan.compute)
    if device == "cuda":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    # The process group is ftspec's (accelerate uses one that exists): the workers must
    # agree on where to resume before the trainer is built.
    dist.init_process_group(backend="nccl" if device == "cuda" else "gloo")
    try:
        ranks.agree_on_resume(job)
        stop = ranks.SharedStop(job_file.parent / launcher.STOP)
        job.interrupt = stop
        try:
            result = recipe(plan.method.objective)(job)
        except KeyboardInterrupt:
            if stop.requested:  # every worker saved the same checkpoint and stops: no failure
                return 0
            raise
        if dist.get_rank() == 0:
            ranks.write_result(job_file.parent / launcher.RESULT, result)
        dist.barrier()
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
