"""The spec's compute section as the plan's launch: processes, backend, rendezvous, and
the FSDP / DeepSpeed configuration handed to transformers' TrainingArguments; and the
rules by which `precision: auto` and `threads: auto` become a value on the machine that
runs the plan (the plan holds the rule, so it is the same wherever it is compiled; the
run applies it and records what it became in manifest.json).

Pure Python and light (``ftspec plan`` and ``ftspec diff`` build it): nothing here
imports torch or transformers. Which decoder-layer class FSDP wraps is a fact the checks
know (ftspec.checks.facts.decoder_layer: the architecture catalog, else the text of the
installed transformers' modeling file, never imported).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ftspec.checks.derived import load_dtype
from ftspec.checks.facts import decoder_layer
from ftspec.core.errors import Pos, SpecError

# The CPU flags (Linux /proc/cpuinfo names) of a bf16 matrix multiply in hardware: AVX512-BF16
# (dot products of bf16 pairs) and AMX (bf16 tiles). Without them torch computes bf16 by
# converting to fp32 and back, slower than fp32 itself.
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
CPUINFO = Path("/proc/cpuinfo")

# How far the training losses of the same plan may move between runs that resolve `auto`
# differently (measured on the tiny model by tests/runtime/training/test_precision.py and
# test_threads.py; the step keys hash the rule `auto`, not what it became, so a step stored
# by one machine is reused on another within these bounds).
BF16_LOSS_RTOL = 1e-3  # bf16 autocast against fp32, relative, each of 6 steps (measured: 2e-5)
THREADS_LOSS_RTOL = 1e-5  # 1 thread against 2, relative, each of 6 steps (measured: 9e-8 in fp32, 0 in bf16)


def cpu_bf16_flags(cpuinfo: Path | None = None) -> tuple[str, ...]:
    """The CPU_BF16_FLAGS this machine's CPU has (read from /proc/cpuinfo; none where
    there is no such file, as on macOS and Windows). No torch: `ftspec plan` calls it."""
    try:
        with open(cpuinfo or CPUINFO, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    have = set(line.partition(":")[2].split())
                    return tuple(flag for flag in CPU_BF16_FLAGS if flag in have)
                if len(line) > 1 << 16:  # not a cpuinfo: a flags line is a few kilobytes
                    break
    except OSError:
        pass
    return ()


def precision_rule(precision: str, device: str) -> str:
    """compute.precision as the plan states it: `auto` is fp32 on mps (autocast there is
    not bf16's); on the CPU, on CUDA and on an `auto` device it stays `auto`, a rule the run
    applies to the machine it runs on (:func:`auto_precision`)."""
    if precision == "auto" and device == "mps":
        return "fp32"
    return precision


def auto_precision(device: str, cuda_bf16: bool = False, cpuinfo: Path | None = None) -> tuple[str, str]:
    """What `precision: auto` is on this machine for a resolved device, and why: bf16 on a
    CPU with AVX512-BF16 or AMX and on a GPU that supports it (``cuda_bf16``, which only
    torch can tell), else fp32. bf16 is autocast: the weights that train stay fp32."""
    if device == "cpu":
        flags = cpu_bf16_flags(cpuinfo)
        if flags:
            return "bf16", f"this CPU has {' and '.join(f.upper().replace('_', '-') for f in flags)}"
        return "fp32", "this CPU has no bf16 matrix unit (AVX512-BF16 or AMX)"
    if device == "cuda":
        return ("bf16", "this GPU supports bf16") if cuda_bf16 else ("fp32", "this GPU does not support bf16")
    return "fp32", f"bf16 autocast is not used on {device}"


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, as taskset, cgroups' cpusets and
    SLURM set it), else the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def auto_threads(processes_per_node: int = 1) -> tuple[int, str]:
    """What `threads: auto` is in this process, and why: the usable CPUs shared out among
    the training processes of this node, or OMP_NUM_THREADS where it is set (the override
    for a shared machine or CI: the plan stays the same)."""
    env = os.environ.get("OMP_NUM_THREADS")
    if env is not None and env.strip():
        if not env.strip().isdigit() or int(env) < 1:
            raise SpecError.one(Pos("compute.threads"), "compute.threads",
                                f"OMP_NUM_THREADS={env[:40]!r} is not a whole number of threads "
                                "(it sets `threads: auto`)",
                                hint="unset it, or set it to a number such as 1")
        return int(env), "OMP_NUM_THREADS"
    usable = usable_cpus()
    per = max(1, usable // max(1, processes_per_node))
    if processes_per_node > 1:
        return per, f"{usable} usable CPUs over {processes_per_node} processes"
    return per, "the CPUs this process may use"


def describe_auto(compute: Any) -> list[str]:
    """The plan text's lines on what each `auto` becomes on the machine the plan is shown on."""
    notes = []
    if compute.precision == "auto":
        if compute.device == "cpu":
            value, why = auto_precision("cpu")
            master = "; autocast, fp32 master weights" if value == "bf16" else ""
            notes.append(f"precision auto is {value} here ({why}{master})")
        else:
            notes.append("precision auto is decided when the run starts (bf16 where the device supports it, "
                         "else fp32)")
    if compute.threads == "auto":
        launch = getattr(compute, "launch", None)
        try:
            n, why = auto_threads(launch.processes_per_node if launch is not None else 1)
            notes.append(f"threads auto is {n} here ({why})")
        except SpecError as exc:
            notes.append(f"threads auto: {exc.issues[0].message}")
    return notes


def resolve_fsdp(settings: Any, model_type: str | None, architectures: list[str] | None = None) -> dict:
    """compute.fsdp (or None: the defaults) as the plan's FSDP section."""
    wrap_setting = getattr(settings, "wrap", "auto")
    if wrap_setting != "auto":
        wrap, wrap_from = tuple(wrap_setting), "spec"
    else:
        layer = decoder_layer(model_type, architectures)
        # Empty: the architecture is not known offline; accelerate then wraps the classes
        # the loaded model lists in transformers' `_no_split_modules` (its decoder layer).
        wrap, wrap_from = ((layer,) if layer else ()), "architecture"
    return {
        "wrap": list(wrap),
        "wrap_from": wrap_from,
        "reshard_after_forward": getattr(settings, "reshard_after_forward", True),
        "cpu_offload": getattr(settings, "cpu_offload", False),
        "activation_checkpointing": getattr(settings, "activation_checkpointing", False),
        "state_dict": getattr(settings, "state_dict", "full"),
    }


def resolve_deepspeed(settings: Any) -> dict:
    """compute.deepspeed (or None: the defaults) as the plan's DeepSpeed section."""
    return {
        "zero_stage": getattr(settings, "zero_stage", 2),
        "offload_optimizer": getattr(settings, "offload_optimizer", False),
        "offload_params": getattr(settings, "offload_params", False),
    }


def fsdp_trainer(fsdp: dict) -> dict:
    """The TrainingArguments keywords of FSDP2. `fsdp` is True, not a legacy string such
    as "full_shard": transformers 5.x translates those into fsdp_config entries, and a
    sharding-strategy string would sit beside reshard_after_forward as a second source
    of the same setting. Everything is in fsdp_config (TrainingArguments._process_fsdp_args)."""
    config: dict[str, Any] = {"version": 2, "auto_wrap_policy": "TRANSFORMER_BASED_WRAP"}
    if fsdp["wrap"]:
        config["transformer_layer_cls_to_wrap"] = list(fsdp["wrap"])
    # (without it, accelerate's FSDP2 auto-wrap wraps the model's _no_split_modules)
    config.update({
        "reshard_after_forward": fsdp["reshard_after_forward"],
        "cpu_offload": fsdp["cpu_offload"],
        "activation_checkpointing": fsdp["activation_checkpointing"],
        "state_dict_type": "FULL_STATE_DICT" if fsdp["state_dict"] == "full" else "SHARDED_STATE_DICT",
    })
    return {"fsdp": True, "fsdp_config": config}


def deepspeed_trainer(ds: dict) -> dict:
    """The TrainingArguments keyword of DeepSpeed: its config as a dict. Each "auto" is
    filled by transformers (HfTrainerDeepSpeedConfig.trainer_config_process) from the
    same TrainingArguments the run builds from the plan's training section (batch size,
    accumulation, gradient clipping, bf16/fp16), so the two cannot disagree."""
    zero: dict[str, Any] = {"stage": ds["zero_stage"]}
    if ds["offload_optimizer"]:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if ds["offload_params"]:
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    if ds["zero_stage"] == 3:
        # Gather the partitioned weights into one whole 16-bit state dict when saving.
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    return {"deepspeed": {
        "zero_optimization": zero,
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "bf16": {"enabled": "auto"},
        "fp16": {"enabled": "auto"},
    }}


def backend_for(device: str) -> str:
    """torch.distributed's backend: gloo on the CPU, nccl on CUDA; auto decides at run time."""
    return {"cpu": "gloo", "cuda": "nccl"}.get(device, "auto")


def resolve_launch(compute: Any, fsdp: dict | None, deepspeed: dict | None) -> dict | None:
    """The plan's Launch: None for strategy none (training runs in the `ftspec run`
    process itself), else the processes, backend, rendezvous and trainer keywords."""
    if compute.strategy == "none":
        return None
    if compute.strategy == "ddp":
        # Every parameter that trains takes part in each step's loss; finding unused ones
        # costs a traversal of the graph every step.
        trainer: dict[str, Any] = {"ddp_find_unused_parameters": False}
    elif compute.strategy == "fsdp":
        trainer = fsdp_trainer(fsdp or resolve_fsdp(None, None))
    else:
        trainer = deepspeed_trainer(deepspeed or resolve_deepspeed(None))
    return {
        "world_size": compute.num_processes * compute.num_nodes,
        "processes_per_node": compute.num_processes,
        "nodes": compute.num_nodes,
        "backend": backend_for(compute.device),
        "rendezvous": "environment" if compute.num_nodes > 1 else "local",
        "trainer": trainer,
    }


def shards_parameters(compute: Any) -> bool:
    """Whether the strategy shards the parameters themselves (FSDP, ZeRO-3)."""
    if compute.strategy == "fsdp":
        return True
    if compute.strategy == "deepspeed":
        return getattr(compute.deepspeed, "zero_stage", 2) == 3
    return False


def resolve_quant_storage(wanted: str, compute: Any, model_dtype: str | None) -> str:
    """qlora's quant_storage: `auto` is the load dtype where the parameters are sharded
    (FSDP and ZeRO-3 flatten the quantised weights with the others, so they must share
    one dtype), else uint8, bitsandbytes' default."""
    if wanted != "auto":
        return wanted
    return load_dtype(model_dtype) if shards_parameters(compute) else "uint8"


def describe_launch(compute: Any) -> str:
    """The compute line's launch part: '2 processes × 1 node, ddp over gloo (rendezvous: local)'."""
    launch = getattr(compute, "launch", None)
    if launch is None:
        return "1 process, no strategy"
    procs = f"{launch.processes_per_node} process{'es' if launch.processes_per_node != 1 else ''}"
    nodes = f"{launch.nodes} node{'s' if launch.nodes != 1 else ''}"
    backend = "the device's backend (auto)" if launch.backend == "auto" else launch.backend
    return f"{procs} × {nodes}, {compute.strategy} over {backend} (rendezvous: {launch.rendezvous})"


def describe_strategy(compute: Any) -> str | None:
    """FSDP or DeepSpeed settings in one line, or None."""
    f = getattr(compute, "fsdp", None)
    if f is not None:
        wrap = (", ".join(f.wrap) + f" (from the {f.wrap_from})") if f.wrap else "the model's _no_split_modules"
        return (f"fsdp2: wrap {wrap}, reshard_after_forward {str(f.reshard_after_forward).lower()}, "
                f"cpu_offload {str(f.cpu_offload).lower()}, activation_checkpointing "
                f"{str(f.activation_checkpointing).lower()}, {f.state_dict} state dict in checkpoints")
    d = getattr(compute, "deepspeed", None)
    if d is not None:
        offload = [name for name, on in (("optimizer", d.offload_optimizer), ("parameters", d.offload_params)) if on]
        return (f"deepspeed: ZeRO stage {d.zero_stage}, offload "
                + (" and ".join(offload) + " to the CPU" if offload else "nothing"))
    return None
