"""Training in several processes, inside each training process: what the recipes call so
that the processes agree (where to resume, when to stop on Ctrl-C) and save one whole
model, and what a worker reports back to the launcher (ftspec.runtime.distributed.launcher).
With one process these are no-ops or plain saves."""

from __future__ import annotations

import hashlib
import signal
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from transformers import TrainerCallback

from ftspec.core.errors import RunFailed
from ftspec.core.io import write_json
from ftspec.runtime.training.job import TrainJob, TrainResult
from ftspec.runtime.training.resume import on_sigint


def save_whole(trainer, tokenizer, job: TrainJob) -> None:
    """Save the finished model (or adapter) and its tokenizer as one whole, loadable set of
    safetensors, whatever the strategy: FSDP gathers the shards into a full state dict for
    the save (its checkpoints may stay sharded), ZeRO-3 gathers its 16-bit weights. Only
    the main process writes."""
    if getattr(trainer, "is_fsdp_enabled", False):
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    trainer.save_model(str(job.out_dir))
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(str(job.out_dir))
    if job.expected is not None:
        record_expected(trainer, job.expected)


def record_expected(trainer, path: Path) -> None:
    """Write the fingerprint of the trained weights, gathered whole from every process, for
    the launcher to check the saved files against. Every worker must call it (gathering an
    FSDP or ZeRO-3 model is a collective)."""
    model = trainer.model
    if getattr(trainer, "is_fsdp_enabled", False):
        # Deferred: torch's distributed checkpointing, for FSDP only.
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    elif getattr(trainer, "is_deepspeed_enabled", False):
        state = trainer.accelerator.get_state_dict(trainer.deepspeed)
    else:
        state = trainer.accelerator.unwrap_model(model).state_dict()
    if not trainer.is_world_process_zero():
        return
    unwrapped = trainer.accelerator.unwrap_model(model)
    kind = "full"
    try:  # peft is there whenever an adapter was trained
        from peft import PeftModel, get_peft_model_state_dict

        if isinstance(unwrapped, PeftModel):
            state = get_peft_model_state_dict(unwrapped, state_dict=state)
            kind = "adapter"
    except ImportError:
        pass
    write_json(path, {"kind": kind, "tensors": fingerprint(state)})


def check_engine(trainer, compute: Any) -> None:
    """Fail, before the first step, when the libraries are not about to train the way the
    plan says (accelerate turns FSDP on the CPU into plain DDP without a word)."""
    if compute.launch is None:
        return
    wanted = compute.strategy
    fsdp = bool(getattr(trainer, "is_fsdp_enabled", False))
    deepspeed = bool(getattr(trainer, "is_deepspeed_enabled", False))
    got = "fsdp" if fsdp else "deepspeed" if deepspeed else "ddp"
    if got != wanted:
        kind = trainer.accelerator.distributed_type
        raise RunFailed(f"train: the plan asks for {wanted} but accelerate set up {got} ({kind}); "
                        "stopped before training")


class SharedStop(TrainerCallback):
    """Ctrl-C in a worker: the launcher's stop file, looked for after each step and agreed
    by all (an all-reduce), so that every process saves the same checkpoint and stops at
    the same step. The workers ignore SIGINT itself: a terminal sends it to every process
    at once, mid-step."""

    def __init__(self, path: Path):
        self.path = path
        self.requested = False

    @contextmanager
    def installed(self):
        with on_sigint(signal.SIG_IGN):
            yield self

    def on_step_end(self, args, state, control, **kwargs):
        flag = torch.tensor([1.0 if self.path.exists() else 0.0], device=args.device)
        if dist.is_initialized():
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item() > 0:
            self.requested = True
            control.should_save = True
            control.should_training_stop = True
        return control


def write_result(path: Path, result: TrainResult) -> None:
    write_json(path, {
        "steps": result.steps, "train_loss": result.train_loss, "eval_loss": result.eval_loss,
        "resumed_from": result.resumed_from, "stopped_early": result.stopped_early})


def agree_on_resume(job: TrainJob) -> None:
    """Every worker resumes from the main worker's choice of checkpoint, and can read it."""
    choice = [job.resume_from]
    dist.broadcast_object_list(choice, src=0)
    job.resume_from = choice[0]
    ok = job.resume_from is None or Path(job.resume_from).is_dir()
    everyone = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, ok)
    if not all(everyone):
        blind = [str(r) for r, seen in enumerate(everyone) if not seen]
        raise RunFailed(f"train: worker rank {', '.join(blind)} cannot read the checkpoint to resume from "
                        f"({job.resume_from}); several machines resume only with the run's store on a "
                        "filesystem they share")


def fingerprint(state: dict) -> dict[str, list]:
    """Each tensor's shape and :func:`digest`: equal for equal weights, and different for a
    shard, an empty tensor, a freshly initialised one, and one whose values are the right
    ones in the wrong places (permuted, transposed)."""
    return {name: [list(t.shape), digest(t)] for name, t in state.items()}


def digest(t: torch.Tensor) -> str:
    """A hash of the tensor's shape and of its values in order (row-major). 16- and 32-bit
    floats are hashed as float32, which holds each of them exactly: an adapter saved in
    bfloat16 and loaded into a float32 model digests as it was trained."""
    with torch.no_grad():
        t = t.detach()
        if t.is_floating_point() and t.element_size() <= 4:
            t = t.to(torch.float32)
        flat = t.to("cpu").contiguous().reshape(-1)
        h = hashlib.blake2b(digest_size=16)
        h.update(repr((str(flat.dtype), tuple(t.shape))).encode())
        h.update(flat.view(torch.uint8).numpy())
        return h.hexdigest()
