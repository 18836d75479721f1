"""Group relative policy optimisation, top to bottom.

1. device and precision     4. trainer configuration (from the plan, via builders)
2. tokenizer and model      5. train, resuming from the last checkpoint of this step
3. the prompts and their    6. save the model (or adapter) with its tokenizer, and the
   answers, the rewards        sampled completions beside it
"""

from __future__ import annotations

import os
import shutil

from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

from ftspec.core.errors import Pos, SpecError
from ftspec.data import prepared
from ftspec.plan.model import chat_template_text
from ftspec.runtime.distributed import ranks
from ftspec.runtime.evaluation.evaluate import build_examples
from ftspec.runtime.models import load_model, load_tokenizer
from ftspec.runtime.training import builders
from ftspec.runtime.training.callbacks import use_quiet_progress
from ftspec.runtime.training.job import LOOK, TrainJob, TrainResult
from ftspec.runtime.training.resume import Interrupt, checkpoint_step, last_checkpoint
from ftspec.runtime.training.rewards import Samples, build_rewards, reward_names

COMPLETIONS = "completions.jsonl"
ESTIMATORS = {"group": (GRPOConfig, GRPOTrainer), "leave_one_out": (RLOOConfig, RLOOTrainer)}


def train_grpo(job: TrainJob) -> TrainResult:
    plan = job.plan
    training, adapter, grpo = plan.training, plan.method.adapter, plan.method.grpo

    # 1. Device and precision.
    device = builders.resolve_device(plan.compute)
    precision = builders.resolve_precision(plan.compute, device)
    dtype = builders.model_dtype(plan.model, precision)

    # 2. Tokenizer and the policy, which is also the reference (kl > 0): TRL keeps a frozen copy,
    #    or with an adapter switches it off.
    tokenizer = load_tokenizer(plan.model, job.root, job.data_dir, chat_template_text(plan.format))
    model = load_model(plan.model, job.root, job.data_dir, dtype, device,
                       quantization_config=builders.quantization_config(adapter), attention=plan.compute.attention)

    # 3. Each training row's prompt, as evaluation renders it, and its answer, which the rewards
    #    compare completions with. A prompt that leaves no room for a completion within
    #    training.max_length is left out (said in the run's log).
    examples = build_examples(list(prepared.iter_records(job.data_dir, "train")), plan.format.kind, tokenizer)
    room = training.max_length - grpo.max_completion_tokens
    rows = [{"prompt": ex.prompt, "reference": ex.reference} for ex in examples
            if room > 0 and len(tokenizer(ex.prompt, add_special_tokens=False)["input_ids"]) <= room]
    if not rows:
        raise SpecError.one(Pos("training.max_length"), "training.max_length",
                            f"no training prompt fits in {training.max_length} tokens with room for a completion of "
                            f"{grpo.max_completion_tokens} (method.max_completion_tokens)",
                            "raise training.max_length, or shorten the prompts or the completions")
    if len(rows) < len(examples):
        print(f"  {len(examples) - len(rows)} of {len(examples)} training prompts are longer than "
              f"training.max_length leaves room for ({room} tokens) and are not trained on", flush=True)
    train = Dataset.from_list(rows)

    last = last_checkpoint(job.checkpoints) if job.resume_from == LOOK else job.resume_from
    samples = Samples(job.checkpoints / COMPLETIONS, grpo.sample_every, reward_names(grpo.rewards),
                      resume_step=checkpoint_step(last), main=int(os.environ.get("RANK", "0")) == 0)
    rewards, weights = build_rewards(grpo, job.root, samples, job.checkpoints, device, training.max_length)

    # 4. Configuration: shared arguments from the plan, and what GRPO adds to them.
    args = builders.training_arguments(training, plan.tracking, device, precision, str(job.checkpoints), False,
                                       run_name=job.run_name, launch=plan.compute.launch)
    del args["max_length"]  # prompts past it are left out above; completions stop at max_completion_tokens
    args.update(num_generations=grpo.group_size, max_completion_length=grpo.max_completion_tokens,
                temperature=grpo.temperature, beta=grpo.kl, reward_weights=weights, log_completions=False)
    # The advantage estimator picks the trainer: GRPO's group-normalised one, or RLOO's leave-one-out.
    config_class, trainer_class = ESTIMATORS[grpo.estimator]
    if grpo.estimator == "group":
        args["loss_type"] = grpo.loss_type
    config = config_class(**args)

    # 5. Train, resuming from the last complete checkpoint an earlier run of this very
    #    step left; Ctrl-C saves one before stopping.
    interrupt = job.interrupt or Interrupt()
    trainer = trainer_class(
        model=model,
        reward_funcs=rewards,
        args=config,
        train_dataset=train,
        processing_class=tokenizer,
        peft_config=builders.lora_config(adapter),
        callbacks=builders.trainer_callbacks(job, last, interrupt, False),
    )
    use_quiet_progress(trainer)
    ranks.check_engine(trainer, plan.compute)
    with interrupt.installed():
        trainer.train(resume_from_checkpoint=last)
    if interrupt.requested:  # a checkpoint was saved; the model is not finished
        raise KeyboardInterrupt("stopped by Ctrl-C after saving a checkpoint")

    # 6. The finished model (or adapter) and its tokenizer, as safetensors, and the completions
    #    sampled as it trained (they are the run's: the checkpoints folder goes once the step is done).
    ranks.save_whole(trainer, tokenizer, job)
    if samples.main and samples.path.exists():
        shutil.copyfile(samples.path, job.out_dir / COMPLETIONS)
    return TrainResult.from_trainer(trainer, last)
