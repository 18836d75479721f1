"""Rules on training in several processes: batches divide across them, the strategy's
settings and devices agree, QLoRA under sharding, the layers FSDP wraps.
"""

from __future__ import annotations

from typing import Iterator

from ftspec.checks import facts
from ftspec.checks.derived import load_dtype
from ftspec.checks.facts import Context, decoder_layer, model_architectures
from ftspec.checks.registry import WHOLE_SPEC, rule
from ftspec.core.errors import Issue
from ftspec.spec import schema as S


@rule(reads=WHOLE_SPEC)
def check_batch_fits(ctx: Context) -> Iterator[Issue]:
    """One optimizer step should not need more rows than there are; with several
    processes, each needs a full batch, and a remainder is made up with repeated rows."""
    if ctx.spec.compute.backend == "bedrock":
        return  # Bedrock batches the rows itself (its batchSize: check_bedrock)
    rows = ctx.planned_rows()[0]["train"] if "train" in ctx.sources else None
    t = ctx.spec.training
    world = ctx.spec.compute.num_processes * ctx.spec.compute.num_nodes
    per_step = t.batch_size * t.gradient_accumulation * world
    if world > 1 and t.batching == "packed":
        # Packing turns rows into sequences of max_length: how many is known once the data is tokenized.
        ctx.not_checked.append("training.batch_size: whether the packed sequences divide across the processes "
                               "(their number is known when the data is prepared)")
        return
    if rows is None or rows <= 0:
        return
    if isinstance(ctx.spec.method, S.GRPOMethod):  # a GRPO batch counts completions: each row drawn group_size times
        rows *= ctx.spec.method.group_size
    per_round = t.batch_size * world  # one batch on each process
    if world > 1 and rows < per_round:
        yield ctx.error(("training", "batch_size"), f"{world} processes × batch {t.batch_size} take {per_round} rows "
                        f"at once but there are only {rows} training rows: each process needs a full batch",
                        f"lower training.batch_size to {max(rows // world, 1)} or fewer, or use fewer processes")
        return
    if rows < per_step:
        yield ctx.warning(("training", "batch_size"), f"one optimizer step takes {per_step} rows but "
                                                      f"there are only {rows}")
    if world > 1 and rows % per_round:
        repeated = per_round - rows % per_round
        yield ctx.warning(("training", "batch_size"), f"{rows} training rows do not divide into batches of "
                          f"{t.batch_size} on {world} processes ({per_round} rows at once): the last batch of each "
                          f"epoch is completed with {repeated} repeated row{'s' if repeated != 1 else ''} "
                          "(accelerate's even_batches)",
                          f"a batch size or process count that divides {rows} avoids it")


def _sharded(ctx: Context) -> str | None:
    """'fsdp' or 'ZeRO stage 3' where the strategy shards the parameters themselves."""
    c = ctx.spec.compute
    if c.strategy == "fsdp":
        return "fsdp"
    if c.strategy == "deepspeed" and (c.deepspeed.zero_stage if c.deepspeed else 2) == 3:
        return "DeepSpeed ZeRO stage 3"
    return None


@rule(reads=("compute", "training.gradient_checkpointing"))
def check_strategy(ctx: Context) -> Iterator[Issue]:
    """compute.fsdp / compute.deepspeed belong to their strategy, and each strategy to
    the devices its engine runs on."""
    c = ctx.spec.compute
    if c.fsdp is not None and c.strategy != "fsdp":
        yield ctx.error(("compute", "fsdp"), f"FSDP settings are given but compute.strategy is '{c.strategy}'",
                        "set compute.strategy: fsdp, or remove compute.fsdp")
    if c.deepspeed is not None and c.strategy != "deepspeed":
        yield ctx.error(("compute", "deepspeed"), "DeepSpeed settings are given "
                                                  f"but compute.strategy is '{c.strategy}'",
                        "set compute.strategy: deepspeed, or remove compute.deepspeed")
    if c.device == "mps" and (c.strategy != "none" or c.num_processes * c.num_nodes > 1):
        yield ctx.error(("compute", "device"), f"strategy {c.strategy} needs torch.distributed, "
                                               "which has no MPS backend",
                        "train in one process on mps (strategy: none), or use cpu with ddp, or cuda")
    elif c.strategy == "fsdp" and c.device == "cpu":
        # accelerate 1.15 sets DistributedType.MULTI_CPU there and wraps the model in
        # DistributedDataParallel: nothing would be sharded, and nothing would say so.
        yield ctx.error(("compute", "strategy"), "fsdp runs only on CUDA GPUs: on the CPU accelerate silently trains "
                        "plain DDP instead (nothing is sharded)", "use strategy: ddp on the CPU")
    elif c.strategy == "deepspeed" and c.device == "cpu":
        yield ctx.error(("compute", "strategy"), "deepspeed needs CUDA GPUs; it does not train on the CPU",
                        "use strategy: ddp on the CPU")
    if c.strategy == "deepspeed" and c.device != "cpu" and not facts.has_package("deepspeed"):
        yield ctx.warning(("compute", "strategy"), "the deepspeed package is not installed here; the run refuses to "
                          "start without it", "pip install deepspeed on the machines that train")
    if c.deepspeed is not None and c.deepspeed.offload_params and c.deepspeed.zero_stage < 3:
        yield ctx.error(("compute", "deepspeed", "offload_params"), "parameters are partitioned, and so offloaded, "
                        f"only at ZeRO stage 3 (zero_stage is {c.deepspeed.zero_stage})",
                        "set compute.deepspeed.zero_stage: 3, or offload_params: false")
    if c.strategy == "fsdp" and ctx.spec.training.gradient_checkpointing:
        yield ctx.error(("training", "gradient_checkpointing"), "under fsdp, transformers' gradient checkpointing adds "
                        "a redundant all-gather of each layer in the backward",
                        "set compute.fsdp.activation_checkpointing: true instead (FSDP's own)")


@rule(reads=("method", "compute", "model"))
def check_qlora_sharding(ctx: Context) -> Iterator[Issue]:
    """FSDP and ZeRO-3 shard QLoRA's quantised weights with the others: 4-bit only, stored
    in the dtype the base model loads in."""
    adapter = ctx.spec.method.adapter
    sharded = _sharded(ctx)
    if not isinstance(adapter, S.QLoraAdapter) or sharded is None:
        return
    if adapter.bits == 8:
        yield ctx.error(("method", "adapter", "bits"), f"8-bit weights cannot be sharded under {sharded}",
                        "use bits: 4, or strategy ddp")
    dtype = load_dtype(getattr(ctx.spec.model, "dtype", None))
    if adapter.quant_storage not in ("auto", dtype):
        yield ctx.error(("method", "adapter", "quant_storage"), f"under {sharded} the 4-bit weights are sharded with "
                        f"the other parameters and must be stored in the dtype the base loads in ({dtype}), not "
                        f"{adapter.quant_storage}", f"set quant_storage: auto (or {dtype})")


@rule(reads=("compute", "model"))
def check_fsdp_wrap(ctx: Context) -> Iterator[Issue]:
    """The classes FSDP is told to wrap should include the model's decoder layer."""
    c = ctx.spec.compute
    if c.strategy != "fsdp" or c.fsdp is None or c.fsdp.wrap == "auto":
        return
    layer = decoder_layer(ctx.model.model_type if ctx.model else None, model_architectures(ctx))
    if layer is None:
        ctx.not_checked.append("compute.fsdp.wrap: whether the classes exist in the model "
                               "(its decoder layer is not known offline)")
    elif layer not in c.fsdp.wrap:
        yield ctx.warning(("compute", "fsdp", "wrap"), f"does not name {layer}, the decoder layer of a "
                          f"{ctx.model.model_type} model: FSDP then shards in units other than the layers",
                          f"wrap: [{layer}], or auto; a class the model lacks stops the run")
