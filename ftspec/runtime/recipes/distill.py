"""Distillation, the training side.

The teacher's answers are already in the prepared tokens (prepare_data put them in place
of the data's), so sequence-level distillation is the SFT recipe as it is. With
``method.logits`` the student also matches the teacher's token distributions:

1. the teacher loads as the teach step prepared it (``job.teach_dir``), or from its hub id,
   frozen, in eval mode, and is no part of the student: never in the optimizer, a
   checkpoint or the saved model;
2. its tokenizer vocabulary must be the student's, token for token, before any step;
3. :class:`DistillTrainer` runs it on each batch the student sees and trains on
   :func:`kd_loss`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ftspec.core.errors import Pos, SpecError
from ftspec.runtime import models
from ftspec.runtime.recipes.sft import train_sft
from ftspec.runtime.training import supervised
from ftspec.runtime.training.job import TrainJob, TrainResult
from ftspec.runtime.training.trainer import TokensTrainer

IGNORE = -100
KEY = "method.logits"


# --------------------------------------------------------------------------- the loss


def kd_terms(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, temperature: float,
             num_items: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The two parts of :func:`kd_loss`: cross-entropy of the student on the labels, and
    KL(softmax(teacher/T) ‖ softmax(student/T)) summed over the vocabulary; each averaged
    over the answer tokens (or divided by ``num_items``, the trainer's count of them across
    a gradient-accumulation step, as the SFT loss is)."""
    # Causal shift, as transformers does: the logits at position t predict the label at t + 1.
    student = student_logits[..., :-1, :]
    teacher = teacher_logits[..., :-1, :]
    target = labels[..., 1:]
    mask = target != IGNORE
    return kd_row_terms(student[mask], teacher[mask], target[mask], temperature, num_items)


def kd_row_terms(student: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor, temperature: float,
                 num_items: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`kd_terms` on the answer tokens' logits alone, (tokens, vocab) each, and their labels."""
    # In float32 for stable softmaxes; the teacher only shows the way: no gradient.
    student, teacher = student.float(), teacher.detach().float()
    count = torch.as_tensor(target.numel() if num_items is None else num_items, device=student.device).clamp(min=1)
    ce = F.cross_entropy(student, target, reduction="sum") / count
    t = float(temperature)
    log_p_student = F.log_softmax(student / t, dim=-1)
    log_p_teacher = F.log_softmax(teacher / t, dim=-1)
    kl = F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="sum") / count
    return ce, kl


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, alpha: float,
            temperature: float, num_items: Any = None) -> torch.Tensor:
    """(1 − alpha)·CE(student, labels) + alpha·T²·KL(softmax(teacher/T) ‖ softmax(student/T)),
    on the tokens whose (shifted) label is not -100; logits are (batch, length, vocab)."""
    ce, kl = kd_terms(student_logits, teacher_logits, labels, temperature, num_items)
    # T²: the gradient of the KL term with respect to the logits shrinks as 1/T² (softening
    # divides the logits by T, and the softened probabilities differ by about 1/T), so
    # scaling by T² keeps its weight against the cross-entropy the same whatever the
    # temperature (Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural Network").
    return (1.0 - alpha) * ce + alpha * temperature**2 * kl


# --------------------------------------------------------------------------- the trainer


class DistillTrainer(TokensTrainer):
    """The trainer SFT uses, with the teacher's logits in the loss. The teacher is kept outside
    the trained model (a plain attribute the trainer never prepares, wraps or saves)."""

    def __init__(self, *args, teacher, alpha: float, temperature: float, vocab_size: int, **kwargs):
        super().__init__(*args, **kwargs)
        # Not an nn.Module attribute of the student: only the trainer holds it.
        self.teacher = teacher
        self.alpha = float(alpha)
        self.temperature = float(temperature)
        self.vocab_size = int(vocab_size)
        # The teacher's head, too, runs at the answer tokens only where it can.
        self.teacher_rows = self.loss_positions == "supervised" and supervised.install(teacher) is None

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        inputs["use_cache"] = False
        labels = inputs["labels"]
        # The teacher gets exactly what the student gets: padded batches their attention
        # mask, packed (padding-free) batches their position ids and sequence bounds, so
        # both see the same documents kept apart in the same way.
        forward = {k: v for k, v in inputs.items() if k != "labels"}
        outputs, student, teacher, target = self._answer_logits(model, forward, labels, return_outputs)
        # Models often pad their embedding matrix past the tokenizer (to a multiple of 64 or
        # 128); those rows are no token, and teacher and student may pad differently. Both
        # distributions are taken over the tokenizer's tokens only (which are the same
        # tokens, checked before training).
        n = min(self.vocab_size, student.size(-1), teacher.size(-1))
        ce, kl = kd_row_terms(student[:, :n], teacher[:, :n], target, self.temperature, num_items_in_batch)
        loss = (1.0 - self.alpha) * ce + self.alpha * self.temperature**2 * kl
        # As the SFT loss: with the token count of every process, DDP's averaging is undone.
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())

        with torch.no_grad():  # the parts, and the SFT trainer's token accuracy, for the logs
            scale = 1.0
            if num_items_in_batch is not None:  # per answer token of this batch, whatever the normaliser
                local = torch.as_tensor(target.numel(), device=student.device).clamp(min=1)
                scale = (torch.as_tensor(num_items_in_batch, device=local.device) / local).item()
            self._metrics[mode]["ce"].append(ce.item() * scale)
            self._metrics[mode]["kl"].append(kl.item() * scale)
            predicted = student[:, :n].argmax(-1)
            total = self.accelerator.gather_for_metrics(torch.as_tensor(target.numel(), device=student.device)).sum()
            right = self.accelerator.gather_for_metrics(predicted.eq(target).sum()).sum()
            self._metrics[mode]["mean_token_accuracy"].append((right / total).item() if total > 0 else 0.0)
        return (loss, outputs) if return_outputs else loss

    def _answer_logits(self, model, forward: dict, labels: torch.Tensor, full: bool):
        """The student's and the teacher's logits at the answer tokens ((tokens, vocab) each), their
        labels, and the student's outputs. With the supervised head (the default) neither model
        runs its head anywhere else; else (or when the outputs are asked for) both give full logits."""
        if self.loss_positions == "supervised" and not full:
            outputs = model(**forward, labels=labels, supervised_head="logits")
            with torch.no_grad():
                if self.teacher_rows:
                    teacher = self.teacher(**forward, labels=labels, supervised_head="logits").logits
                else:
                    teacher = self.teacher(**forward).logits[:, :-1][outputs.label_mask]
            target = labels[:, 1:][outputs.label_mask]
            return outputs, outputs.logits, teacher, target
        outputs = model(**forward)  # the unfused forward: full logits
        with torch.no_grad():
            teacher_logits = self.teacher(**forward).logits
        mask = labels[..., 1:] != IGNORE
        return (outputs, outputs.logits[..., :-1, :][mask], teacher_logits[..., :-1, :][mask],
                labels[..., 1:][mask])


# --------------------------------------------------------------------------- the teacher


def vocabulary_difference(student: dict[str, int], teacher: dict[str, int]) -> str | None:
    """None when the two token → id mappings are the same; else one line saying how they differ."""
    if student == teacher:
        return None
    sizes = f"the teacher's tokenizer has {len(teacher)} tokens, the student's {len(student)}"
    only_teacher = sorted((t for t in teacher if t not in student), key=teacher.get)
    only_student = sorted((t for t in student if t not in teacher), key=student.get)
    moved = sorted((t for t in teacher if t in student and teacher[t] != student[t]), key=teacher.get)
    if only_teacher:
        example = f"{only_teacher[0]!r} (teacher id {teacher[only_teacher[0]]}) is not in the student's"
        if len(only_teacher) > 1:
            example += f", nor {len(only_teacher) - 1} more"
    elif only_student:
        example = f"{only_student[0]!r} (student id {student[only_student[0]]}) is not in the teacher's"
        if len(only_student) > 1:
            example += f", nor {len(only_student) - 1} more"
    else:
        t = moved[0]
        example = (f"{t!r} is id {teacher[t]} in the teacher's and {student[t]} in the student's "
                   f"({len(moved)} tokens numbered differently)")
    return f"{sizes}; {example}"


def check_vocabulary(student_tokenizer, teacher_tokenizer) -> None:
    """Logit distillation compares the two models' distributions token by token: the same
    token must have the same id in both. A difference is an error at ``method.logits``."""
    difference = vocabulary_difference(student_tokenizer.get_vocab(), teacher_tokenizer.get_vocab())
    if difference is not None:
        raise SpecError.one(Pos(KEY), KEY, f"needs one tokenizer vocabulary for teacher and student, but {difference}",
                            "give the student a model with the teacher's tokenizer, or leave out method.logits "
                            "(distillation from the teacher's answers needs none)")


def load_teacher(job: TrainJob, dtype: torch.dtype, device: str):
    """The frozen teacher, in the student's dtype and on its device."""
    return models.load_teacher(job.plan.method.distill.teacher, job.root, job.teach_dir, dtype, device,
                               getattr(job.plan.compute, "attention", "auto"))[0]


# --------------------------------------------------------------------------- the recipe


def train_distill(job: TrainJob) -> TrainResult:
    """The recipe of ``method.objective: distill``: SFT on the teacher's answers, and with
    ``method.distill.logits`` the KD loss against the teacher the teach step prepared."""
    logits = job.plan.method.distill.logits
    if logits is None:
        return train_sft(job)
    if job.teach_dir is None:
        raise ValueError("logit distillation needs the teach step's folder in TrainJob.teach_dir")

    def setup(tokenizer, device: str, dtype: torch.dtype) -> dict:
        # Before the student or the teacher loads and before any step: a vocabulary
        # mismatch is the spec's mistake.
        check_vocabulary(tokenizer, models.teacher_tokenizer(job.plan.method.distill.teacher, job.root, job.teach_dir))
        return {"teacher": load_teacher(job, dtype, device), "alpha": logits.alpha,
                "temperature": logits.temperature, "vocab_size": len(tokenizer)}

    return train_sft(job, trainer_class=DistillTrainer, setup=setup)
