"""Supervised fine-tuning, top to bottom.

1. device and precision     4. trainer configuration (from the plan, via builders)
2. tokenizer and model      5. train, resuming from the last checkpoint of this step
3. the tokenized splits     6. save the model (or adapter) with its tokenizer
"""

from __future__ import annotations

from collections.abc import Callable

from trl import SFTConfig

from ftspec.core.io import read_json
from ftspec.plan.model import chat_template_text
from ftspec.runtime.distributed import ranks
from ftspec.runtime.models import load_model, load_tokenizer
from ftspec.runtime.training import builders
from ftspec.runtime.training.callbacks import use_quiet_progress
from ftspec.runtime.training.data import load_tokens
from ftspec.runtime.training.job import LOOK, TrainJob, TrainResult
from ftspec.runtime.training.resume import Interrupt, last_checkpoint
from ftspec.runtime.training.trainer import TokensTrainer


def train_sft(job: TrainJob, trainer_class: type | None = None,
              setup: Callable[..., dict] | None = None) -> TrainResult:
    """The SFT recipe. Another recipe built on it (:mod:`ftspec.runtime.recipes.distill`) may give a
    subclass of :class:`~ftspec.runtime.training.trainer.TokensTrainer`, and
    ``setup(tokenizer, device, dtype)``: called once the tokenizer is loaded, before the model, it
    returns extra keyword arguments for that trainer (and may refuse to go on)."""
    plan = job.plan
    training, adapter = plan.training, plan.method.adapter

    # 1. Device and precision.
    device = builders.resolve_device(plan.compute)
    precision = builders.resolve_precision(plan.compute, device)

    # 2. Tokenizer (with the spec's chat template, if it names one) and the base model.
    tokenizer = load_tokenizer(plan.model, job.root, job.data_dir, chat_template_text(plan.format))
    dtype = builders.model_dtype(plan.model, precision)
    extra = setup(tokenizer, device, dtype) if setup is not None else {}
    model = load_model(plan.model, job.root, job.data_dir, dtype, device,
                       quantization_config=builders.quantization_config(adapter), attention=plan.compute.attention)

    # 3. The prepared splits, tokenized by prepare_data and memory-mapped: input ids, and
    #    labels that are -100 where the format's loss setting puts no loss, already cut to
    #    max_length with the rows left without loss dropped. TRL skips its own preparation,
    #    which would pass over every row before the first step; packing still needs it.
    train = load_tokens(job.data_dir / "train-tokens")
    validation_dir = job.data_dir / "validation-tokens"
    validation = load_tokens(validation_dir) if validation_dir.exists() else None
    if validation is not None and training.eval_rows is not None and len(validation) > training.eval_rows:
        validation = validation.select(range(training.eval_rows))  # the plan's rows, the same every time

    # 4. Configuration: shared arguments from the plan, and what SFT adds to them.
    args = builders.training_arguments(training, plan.tracking, device, precision, str(job.checkpoints),
                                       validation is not None, run_name=job.run_name, launch=plan.compute.launch)
    args["completion_only_loss"] = False  # the labels carry the loss mask already
    stats = read_json(job.data_dir / "stats.json", dict)["splits"]
    args.update(builders.batching_arguments(training, stats.get("train"), "sft"))
    if not args.get("packing"):
        args["dataset_kwargs"] = {"skip_prepare_dataset": True}
    config = SFTConfig(**args)
    # Packed rows are kept apart by their position ids only with the KV cache off.
    model.config.use_cache = False

    # 5. Train, resuming from the last complete checkpoint an earlier run of this very
    #    step left; Ctrl-C saves one before stopping.
    last = last_checkpoint(job.checkpoints) if job.resume_from == LOOK else job.resume_from
    interrupt = job.interrupt or Interrupt()
    trainer = (trainer_class or TokensTrainer)(
        model=model,
        args=config,
        train_dataset=train,
        eval_dataset=validation,
        processing_class=tokenizer,
        peft_config=builders.lora_config(adapter),
        callbacks=builders.trainer_callbacks(job, last, interrupt, validation is not None),
        # The LM head only where a token carries loss, as the plan says (its loss is unchanged).
        loss_positions=training.loss_positions.mode if training.loss_positions is not None else "all",
        **extra,
    )
    use_quiet_progress(trainer)
    ranks.check_engine(trainer, plan.compute)  # FSDP asked for is FSDP set up, not DDP
    with interrupt.installed():
        trainer.train(resume_from_checkpoint=last)
    if interrupt.requested:  # a checkpoint was saved; the model is not finished
        raise KeyboardInterrupt("stopped by Ctrl-C after saving a checkpoint")

    # 6. The finished model (or adapter) and its tokenizer, as safetensors: whole, whatever
    #    the strategy (with several processes the launcher checks it against the trained weights).
    ranks.save_whole(trainer, tokenizer, job)
    return TrainResult.from_trainer(trainer, last)

