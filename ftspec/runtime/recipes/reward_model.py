"""A reward model, top to bottom.

1. device and precision     4. trainer configuration (from the plan, via builders)
2. tokenizer, and the base  5. train, resuming from the last checkpoint of this step
   model with a score head  6. save the model (or adapter, with the score head) and its tokenizer
3. the prepared pairs
"""

from __future__ import annotations

from dataclasses import replace

from datasets import Dataset
from transformers import set_seed
from trl import RewardConfig, RewardTrainer

from ftspec.core.io import read_jsonl
from ftspec.data import prepared
from ftspec.runtime.distributed import ranks
from ftspec.runtime.models import load_scorer, load_tokenizer
from ftspec.runtime.training import builders
from ftspec.runtime.training.callbacks import use_quiet_progress
from ftspec.runtime.training.job import LOOK, TrainJob, TrainResult
from ftspec.runtime.training.resume import Interrupt, last_checkpoint

COLUMNS = ("prompt", "chosen", "rejected")  # TRL's preference columns: it scores prompt + answer


def train_reward_model(job: TrainJob) -> TrainResult:
    plan = job.plan
    training, adapter, settings = plan.training, plan.method.adapter, plan.method.reward_model

    # 1. Device and precision.
    device = builders.resolve_device(plan.compute)
    precision = builders.resolve_precision(plan.compute, device)
    dtype = builders.model_dtype(plan.model, precision)

    # 2. Tokenizer (a pad token set: the score is read at the last token before the padding) and the
    #    base model with a new one-output score head (the same seed, the same head).
    tokenizer = load_tokenizer(plan.model, job.root, job.data_dir)
    set_seed(training.seed)
    model = load_scorer(plan.model, job.root, job.data_dir, dtype, device, tokenizer,
                        attention=plan.compute.attention)

    # 3. The prepared pairs: prompt, chosen, rejected.
    def pairs(records):
        return Dataset.from_list([{c: r[c] for c in COLUMNS} for r in records])

    train = pairs(read_jsonl(job.data_dir / "train.jsonl"))
    # The validation loss is computed on the plan's first eval_rows pairs, the same every time.
    validation = (pairs(prepared.read_records(job.data_dir, "validation", training.eval_rows))
                  if training.eval_every is not None and prepared.has_split(job.data_dir, "validation") else None)

    # 4. Configuration: shared arguments from the plan, and what a reward model adds to them. A
    #    LoRA adapter trains the score head whole beside it (peft's sequence-classification task).
    args = builders.training_arguments(training, plan.tracking, device, precision, str(job.checkpoints),
                                       validation is not None, run_name=job.run_name, launch=plan.compute.launch)
    args.update(gradient_checkpointing=training.gradient_checkpointing,
                center_rewards_coefficient=settings.center_rewards_coefficient or None)
    config = RewardConfig(**args)
    lora = builders.lora_config(adapter)
    if lora is not None:
        lora = replace(lora, task_type="SEQ_CLS")

    # 5. Train, resuming from the last complete checkpoint an earlier run of this very
    #    step left; Ctrl-C saves one before stopping.
    last = last_checkpoint(job.checkpoints) if job.resume_from == LOOK else job.resume_from
    interrupt = job.interrupt or Interrupt()
    trainer = RewardTrainer(
        model=model,
        args=config,
        train_dataset=train,
        eval_dataset=validation,
        processing_class=tokenizer,
        peft_config=lora,
        callbacks=builders.trainer_callbacks(job, last, interrupt, validation is not None),
    )
    use_quiet_progress(trainer)
    ranks.check_engine(trainer, plan.compute)
    with interrupt.installed():
        trainer.train(resume_from_checkpoint=last)
    if interrupt.requested:  # a checkpoint was saved; the model is not finished
        raise KeyboardInterrupt("stopped by Ctrl-C after saving a checkpoint")

    # 6. The finished model (or adapter and score head) and its tokenizer, as safetensors.
    ranks.save_whole(trainer, tokenizer, job)
    return TrainResult.from_trainer(trainer, last)
