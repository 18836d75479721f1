"""The spec's compute section as the plan's launch: processes, backend, rendezvous, and
the FSDP / DeepSpeed configuration handed to transformers' TrainingArguments.

Pure Python and light (``ftspec plan`` and ``ftspec diff`` build it): nothing here
imports torch or transformers. Which decoder-layer class FSDP wraps is a fact the checks
know (ftspec.checks.facts.decoder_layer: the architecture catalog, else the text of the
installed transformers' modeling file, never imported).
"""

from __future__ import annotations

from typing import Any

from ftspec.checks.derived import load_dtype
from ftspec.checks.facts import decoder_layer


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
