"""The trainer every recipe that trains on prepared tokens uses (SFT, and distillation on
top of it): TRL's SFT trainer with ftspec's row order for length-grouped batching."""

from __future__ import annotations

from trl import SFTTrainer

from ftspec.runtime.training.sampling import LengthBuckets


class TokensTrainer(SFTTrainer):
    """TRL's trainer, with ftspec's row order for length-grouped batching
    (:mod:`ftspec.runtime.training.sampling`: less padding than transformers' on small data)."""

    def _get_train_sampler(self, train_dataset=None):
        dataset = self.train_dataset if train_dataset is None else train_dataset
        if self.args.train_sampling_strategy != "group_by_length" or dataset is None:
            return super()._get_train_sampler(train_dataset)
        lengths = [len(ids) for ids in dataset["input_ids"]]  # already cut to max_length
        # Grouped by the global batch: accelerate deals each process its slice of it, so
        # several processes see the batches one process with their total batch would.
        return LengthBuckets(lengths, self.args.train_batch_size * self.args.world_size, self.args.data_seed)
