"""Kahneman-Tversky optimisation on unpaired feedback, top to bottom.

1. device and precision     4. trainer configuration (from the plan, via builders)
2. tokenizer, policy and    5. train, resuming from the last checkpoint of this step
   reference model          6. save the model (or adapter) with its tokenizer
3. the prepared feedback rows
"""

from __future__ import annotations

from datasets import Dataset
from trl import KTOConfig, KTOTrainer

from ftspec.core.io import read_jsonl
from ftspec.data import prepared
from ftspec.runtime.distributed import ranks
from ftspec.runtime.models import load_model, load_tokenizer
from ftspec.runtime.training import builders
from ftspec.runtime.training.callbacks import use_quiet_progress
from ftspec.runtime.training.job import LOOK, TrainJob, TrainResult
from ftspec.runtime.training.resume import Interrupt, last_checkpoint

COLUMNS = ("prompt", "completion", "label")  # TRL's unpaired preference columns


def train_kto(job: TrainJob) -> TrainResult:
    plan = job.plan
    training, adapter, kto = plan.training, plan.method.adapter, plan.method.kto

    # 1. Device and precision.
    device = builders.resolve_device(plan.compute)
    precision = builders.resolve_precision(plan.compute, device)
    dtype = builders.model_dtype(plan.model, precision)

    # 2. Tokenizer, the policy, and the frozen reference it is pulled towards. With an
    #    adapter the reference is the base model with the adapter switched off, so no
    #    second copy is loaded; full fine-tuning needs one.
    tokenizer = load_tokenizer(plan.model, job.root, job.data_dir)
    attention = plan.compute.attention
    model = load_model(plan.model, job.root, job.data_dir, dtype, device,
                       quantization_config=builders.quantization_config(adapter), attention=attention)
    reference = (load_model(plan.model, job.root, job.data_dir, dtype, device, attention=attention)
                 if adapter.kind == "full" else None)

    # 3. The prepared feedback rows: prompt, completion, label (true: desirable).
    def rows(records):
        return Dataset.from_list([{c: r[c] for c in COLUMNS} for r in records])

    train = rows(read_jsonl(job.data_dir / "train.jsonl"))
    # The validation loss is computed on the plan's first eval_rows rows, the same every time.
    validation = (rows(prepared.read_records(job.data_dir, "validation", training.eval_rows))
                  if prepared.has_split(job.data_dir, "validation") else None)

    # 4. Configuration: shared arguments from the plan, and what KTO adds to them. The KL term
    #    pairs each row with its neighbour's completion in a batch, so rows are taken in their
    #    prepared (already shuffled) order, as TRL requires.
    args = builders.training_arguments(training, plan.tracking, device, precision, str(job.checkpoints),
                                       validation is not None, run_name=job.run_name, launch=plan.compute.launch)
    args.update(beta=kto.beta, desirable_weight=kto.desirable_weight, undesirable_weight=kto.undesirable_weight,
                loss_type=kto.loss_type, train_sampling_strategy="sequential")
    config = KTOConfig(**args)

    # 5. Train, resuming from the last complete checkpoint an earlier run of this very
    #    step left; Ctrl-C saves one before stopping.
    last = last_checkpoint(job.checkpoints) if job.resume_from == LOOK else job.resume_from
    interrupt = job.interrupt or Interrupt()
    trainer = KTOTrainer(
        model=model,
        ref_model=reference,
        args=config,
        train_dataset=train,
        eval_dataset=validation,
        processing_class=tokenizer,
        peft_config=builders.lora_config(adapter),
        callbacks=builders.trainer_callbacks(job, last, interrupt, validation is not None),
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
