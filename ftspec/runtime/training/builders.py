"""Builder functions: plan sections in, library keyword arguments out.

The trainers never see the plan; they see what these functions return. Each
function is small and pure so that tests can check the mapping directly.
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from ftspec.core.errors import Pos, SpecError
from ftspec.plan.compute import auto_precision, auto_threads, usable_cpus
from ftspec.plan.model import thaw
from ftspec.runtime.training.callbacks import MetricsLog
from ftspec.runtime.training.pruning import pruning_callbacks
from ftspec.runtime.training.resume import NoFinalCheckpoint, checkpoint_step
from ftspec.runtime.training.tracking import tracking_arguments


def resolve_device(compute: Any) -> str:
    wanted = compute.device
    if wanted == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if wanted == "cuda" and not torch.cuda.is_available():
        raise SpecError.one(Pos("compute.device"), "compute.device",
                            "cuda was asked for, but no CUDA device is available")
    if wanted == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        raise SpecError.one(Pos("compute.device"), "compute.device",
                            "mps was asked for, but this machine has no MPS device")
    return wanted


def _cpu_supports_bf16() -> bool:
    try:
        a = torch.ones(4, 4, dtype=torch.bfloat16)
        return bool(torch.isfinite((a @ a).float()).all())
    except RuntimeError:
        return False


def resolve_precision(compute: Any, device: str) -> str:
    """fp32, bf16 or fp16; ``auto`` by ftspec.plan.compute.auto_precision's rule (bf16 on a
    CPU with AVX512-BF16 or AMX and on a GPU that supports it, else fp32). bf16 and fp16
    are autocast over fp32 weights (:func:`model_dtype`; accelerate autocasts on the CPU
    too when TrainingArguments has ``bf16`` and ``use_cpu``)."""
    wanted = compute.precision
    if wanted == "auto":
        return auto_precision(device, device == "cuda" and torch.cuda.is_bf16_supported())[0]
    if wanted == "fp16" and device == "cpu":
        raise SpecError.one(Pos("compute.precision"), "compute.precision",
                            "fp16 training needs a GPU; on the CPU use bf16 or fp32")
    if wanted == "bf16":
        ok = torch.cuda.is_bf16_supported() if device == "cuda" else (_cpu_supports_bf16() if device == "cpu" else True)
        if not ok:
            raise SpecError.one(Pos("compute.precision"), "compute.precision",
                                f"bf16 is not supported on this {device}; use fp32")
    return wanted


def apply_threads(compute: Any) -> dict:
    """Set the CPU threads torch computes with to the plan's ``compute.threads``: intra-op
    threads (torch.set_num_threads) and inter-op threads (torch.set_num_interop_threads,
    which torch lets a process set once, before its first parallel work; a later call that
    asks for another number keeps the first one and says so). Process-wide: the runner
    calls this once before the steps run. ``auto`` is ftspec.plan.compute.auto_threads on
    this machine. Returns what is in effect, and the setting it came from."""
    setting = compute.threads
    launch = getattr(compute, "launch", None)
    n = auto_threads(launch.processes_per_node if launch is not None else 1)[0] if setting == "auto" else setting
    torch.set_num_threads(n)
    interop = torch.get_num_interop_threads()
    if interop != n:
        try:
            torch.set_num_interop_threads(n)
            interop = n
        except RuntimeError:  # already set, or parallel work has started: it stays as it is
            pass
    return {"threads": torch.get_num_threads(), "interop": interop, "setting": setting}


def describe_threads(got: Mapping) -> str:
    """The threads in effect (what :func:`apply_threads` returned), as the run header shows them."""
    n = got["threads"]
    text = f"{n} CPU thread{'s' if n != 1 else ''}" + (", auto" if got.get("setting") == "auto" else "")
    if got["interop"] != n:
        text += f" ({got['interop']} inter-op: set earlier in this process)"
    usable = usable_cpus()
    if n > usable:
        text += f", more than the {usable} CPUs this process may use"
    return text


def model_dtype(plan_model: Any, precision: str) -> torch.dtype:
    """Weights load in fp32 for mixed-precision training (autocast does the rest),
    unless the spec asks for a dtype."""
    while plan_model.kind == "stage":  # an earlier stage's model: as the model it began with
        plan_model = plan_model.base
    dtype = getattr(plan_model, "dtype", "auto")  # a tiny model has no dtype setting
    if dtype == "auto":
        return torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def _cadence(every: Any) -> tuple[str, int | None]:
    if every is None:
        return "no", None
    if every == "epoch":
        return "epoch", None
    return "steps", int(every)


def training_arguments(training: Any, tracking: Any, device: str, precision: str, output_dir: str, has_eval: bool,
                       run_name: str | None = None, launch: Any = None) -> dict:
    """Keyword arguments shared by SFTConfig and DPOConfig (the tracker and the run's name
    there from :func:`ftspec.runtime.training.tracking.tracking_arguments`).

    ``max_steps`` is always the plan's total: resuming with the same total keeps the
    learning-rate schedule, and so the final weights, identical to an uninterrupted run.
    """
    eval_strategy, eval_steps = _cadence(training.eval_every if has_eval else None)
    save_strategy, save_steps = _cadence(training.save_every)
    early = training.early_stopping
    kwargs: dict[str, Any] = {
        "output_dir": output_dir,
        # Unknown only when the row count is (a hub dataset, a file past validate's budget):
        # then the trainer counts the epochs itself.
        "max_steps": training.total_steps if training.total_steps is not None else -1,
        "num_train_epochs": training.epochs or 1.0,
        "per_device_train_batch_size": training.batch_size,
        "per_device_eval_batch_size": training.batch_size,
        "gradient_accumulation_steps": training.gradient_accumulation,
        "learning_rate": training.learning_rate,
        "lr_scheduler_type": training.lr_scheduler,
        "warmup_steps": training.warmup_steps or 0,
        "weight_decay": training.weight_decay,
        "max_grad_norm": training.max_grad_norm,
        "optim": training.optimizer,
        "seed": training.seed,
        "data_seed": training.seed,
        "logging_strategy": "steps",
        "logging_steps": training.logging_steps,
        "logging_first_step": True,
        "eval_strategy": eval_strategy,
        "save_strategy": save_strategy,
        "save_total_limit": training.save_total_limit,
        "activation_checkpointing": training.gradient_checkpointing,
        "max_length": training.max_length,
        "dataloader_num_workers": 0,
        "use_cpu": device == "cpu",
        "bf16": precision == "bf16",
        "fp16": precision == "fp16",
        "disable_tqdm": True,  # the recipes show their own progress bar
    }
    kwargs.update(tracking_arguments(tracking, run_name))
    kwargs.update(distributed_arguments(launch))
    if eval_steps:
        kwargs["eval_steps"] = eval_steps
    if save_steps:
        kwargs["save_steps"] = save_steps
    if early and has_eval:
        kwargs.update(load_best_model_at_end=True, metric_for_best_model="eval_loss", greater_is_better=False)
    return kwargs


def distributed_arguments(launch: Any) -> dict:
    """The plan's generated DDP/FSDP/DeepSpeed settings (``compute.launch.trainer``), as
    TrainingArguments takes them: the plan holds exactly these keyword arguments, so what
    a reviewer reads in ``ftspec plan`` is what the trainer is given. Nothing for one process."""
    if launch is None:
        return {}

    return thaw(launch.trainer)  # plain, mutable copies: the libraries fill in defaults


def batching_arguments(training: Any, train_stats: Mapping | None, objective: str) -> dict:
    """What the plan's batching mode means to the trainer.

    ``batch_size`` counts rows. Packed rows hold several rows each, so the packed
    batch is sized to carry about the same number of rows per step:
    ``batch_size × mean row length / max_length`` sequences of ``max_length``.
    """
    mode = training.batching.mode
    if mode == "packed" and objective == "sft":
        mean = (train_stats or {}).get("tokens", {}).get("mean") or training.max_length
        per_row = max(1, round(training.batch_size * min(mean, training.max_length) / training.max_length))
        return {"packing": True, "packing_strategy": "bfd", "padding_free": True,
                "per_device_train_batch_size": per_row, "per_device_eval_batch_size": per_row}
    if mode == "length_grouped":
        return {"train_sampling_strategy": "group_by_length"}
    return {}


def lora_config(adapter: Any):
    """A peft LoraConfig from the plan's adapter section (None for full fine-tuning)."""
    if adapter.kind == "full":
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=adapter.r,
        lora_alpha=adapter.alpha,
        lora_dropout=adapter.dropout,
        target_modules=(adapter.target_modules if isinstance(adapter.target_modules, str)
                        else list(adapter.target_modules)),
        bias=adapter.bias,
        task_type="CAUSAL_LM",
    )


def quantization_config(adapter: Any):
    if adapter.kind != "qlora":
        return None
    from transformers import BitsAndBytesConfig

    if adapter.bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=adapter.quant_type,
        bnb_4bit_use_double_quant=adapter.double_quant,
        bnb_4bit_compute_dtype=torch.bfloat16,
        # FSDP and ZeRO-3 shard the 4-bit weights with the others: stored in the dtype those load in.
        bnb_4bit_quant_storage=getattr(torch, getattr(adapter, "quant_storage", "uint8")),
    )


def early_stopping_callbacks(training: Any, has_eval: bool) -> list:
    early = training.early_stopping
    if not early or not has_eval:
        return []
    from transformers import EarlyStoppingCallback

    return [EarlyStoppingCallback(early_stopping_patience=early.patience, early_stopping_threshold=early.min_delta)]


def trainer_callbacks(job, last: str | None, interrupt, has_eval: bool) -> list:
    """The callbacks every recipe trains with, in the order they must run: the metrics
    log (continued from ``last``), no checkpoint at the last step, then Ctrl-C's
    checkpoint (which may ask for one there after all), early stopping, a sweep's pruner
    (after the metrics log has written the evaluation it stops on), the caller's."""
    return [MetricsLog(job.metrics, checkpoint_step(last)), NoFinalCheckpoint(), interrupt,
            *early_stopping_callbacks(job.plan.training, has_eval), *pruning_callbacks(), *job.callbacks]
