"""The trainer every recipe that trains on prepared tokens uses (SFT, and distillation on
top of it): TRL's SFT trainer with ftspec's row order for length-grouped batching, and the LM
head run only where the loss has a label (:mod:`ftspec.runtime.training.supervised`)."""

from __future__ import annotations

import logging

import torch
from trl import SFTTrainer

from ftspec.runtime.training import supervised
from ftspec.runtime.training.data import token_lengths
from ftspec.runtime.training.sampling import LengthBuckets

log = logging.getLogger(__name__)


class TokensTrainer(SFTTrainer):
    """TRL's trainer, with ftspec's row order for length-grouped batching
    (:mod:`ftspec.runtime.training.sampling`: less padding than transformers' on small data), and
    with ``loss_positions="supervised"`` (the default) the LM head only at the supervised positions.
    ``loss_positions="all"`` is TRL's own loss, on every position."""

    def __init__(self, *args, loss_positions: str = "supervised", **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_positions = "all"
        if loss_positions == "supervised":
            why = self._supervised_unsupported() or supervised.install(self.model)
            if why is None:
                self.loss_positions = "supervised"
            else:
                log.warning("the LM head runs at every position: %s", why)

    def _supervised_unsupported(self) -> str | None:
        """Settings under which TRL's loss is more than the label's negative log-likelihood, or
        its head is sharded: then TRL computes it."""
        args = self.args
        if self.compute_loss_func is not None or self.label_smoother is not None:
            return "a custom loss or label smoothing needs the full logits"
        if getattr(args, "loss_type", "nll") != "nll":
            return f"loss_type {args.loss_type}"
        if getattr(self, "aux_loss_enabled", False):
            return "the model's auxiliary (router) loss"
        if self.is_fsdp_enabled or self.is_deepspeed_enabled:
            return "the head is sharded (FSDP or DeepSpeed); TRL's fused head gathers it"
        return None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.loss_positions != "supervised" or return_outputs or "shift_labels" in inputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        mode = "train" if self.model.training else "eval"
        out = model(**inputs, use_cache=False, supervised_head=True)
        count = out.label_mask.sum()
        loss = supervised.supervised_loss(out.log_probs, count, num_items_in_batch)
        # As TRL's loss: num_items_in_batch counts every process's tokens, and DDP averages the gradients.
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())
        self._log_supervised(mode, out, count, inputs)
        return loss

    def _log_supervised(self, mode: str, out, count, inputs) -> None:
        """The metrics TRL's trainer logs, from the supervised rows."""
        gather = self.accelerator.gather_for_metrics
        valid = gather(count).sum()
        entropy = gather(out.entropy.detach().sum()).sum()
        right = gather(out.is_top1.sum()).sum()
        self._metrics[mode]["entropy"].append((entropy / valid).item() if valid > 0 else 0.0)
        self._metrics[mode]["mean_token_accuracy"].append((right / valid).item() if valid > 0 else 0.0)
        if mode == "train":
            if "attention_mask" in inputs:
                local = inputs["attention_mask"].sum()
            else:  # padding-free: one row of real tokens
                local = torch.tensor(inputs["input_ids"].numel(), device=inputs["input_ids"].device)
            self._total_train_tokens += gather(local).sum().item() // getattr(self, "_tp_size", 1)
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]

    def _get_train_sampler(self, train_dataset=None):
        dataset = self.train_dataset if train_dataset is None else train_dataset
        if self.args.train_sampling_strategy != "group_by_length" or dataset is None:
            return super()._get_train_sampler(train_dataset)
        lengths = token_lengths(dataset)  # already cut to max_length
        # Grouped by the global batch: accelerate deals each process its slice of it, so
        # several processes see the batches one process with their total batch would.
        return LengthBuckets(lengths, self.args.train_batch_size * self.args.world_size, self.args.data_seed)
