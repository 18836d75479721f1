"""What ``sweep.prune`` needs of the spec, checked before any trial starts (docs/use-cases/sweeps.md).

A pruner judges each trial on its validation loss during training, reported after every
evaluation of the validation split (ftspec.runtime.training.pruning, ftspec.commands.sweep_prune).
That needs: ``training.eval_every`` set in the spec (its default is a tenth of each trial's steps,
so trials of different lengths would be measured at different steps); one training process per
trial (the hook runs in the main process of one); one training per trial (a spec with stages
trains several, each counting its steps from 0); training in this process (not on Bedrock); and
a validation loss computed while training (GRPO computes none).
"""

from __future__ import annotations

from ftspec.core.errors import Issue, Pos

__all__ = ["PRUNE_CHOICES", "prune_problem", "prune_problems"]

PRUNE_CHOICES = ("none", "median", "halving")


def prune_problem(kind: str, *, eval_every_set: bool, num_processes: int, validation_in_training: bool = True,
                  stages: int = 0, backend: str = "local") -> str | None:
    """Why a trial cannot be pruned as asked (one line), or None. ``num_processes``: the trial's
    training processes on all its nodes."""
    if kind == "none":
        return None
    if kind not in PRUNE_CHOICES:
        return f"unknown pruner {kind!r}; expected one of {', '.join(PRUNE_CHOICES)}"
    if backend != "local":
        return (f"pruning ({kind}) watches training in this process, and compute.backend {backend} trains "
                "elsewhere; set sweep.prune: none")
    if not eval_every_set:
        return (f"pruning ({kind}) judges each trial on its validation loss during training; set "
                "training.eval_every (every N steps) so that every trial is measured at the same steps")
    if num_processes > 1:
        return (f"pruning ({kind}) needs each trial to train in one process (compute.num_processes is "
                f"{num_processes}); set sweep.prune: none, or compute.num_processes: 1")
    if stages:
        return (f"pruning ({kind}) judges one training per trial, and this spec trains {stages + 1} stages; "
                "set sweep.prune: none")
    if not validation_in_training:
        return (f"pruning ({kind}) needs a validation loss during training, and this method computes none; "
                "set sweep.prune: none")
    return None


def prune_problems(compiled, kind: str, pos: Pos) -> list[Issue]:
    """:func:`prune_problem` for a compiled spec (ftspec.plan.compile.Compiled), at ``pos`` (the
    line of ``sweep.prune``, or ``--prune``)."""
    spec, plan = compiled.checked.ctx.spec, compiled.plan
    compute = plan.compute
    why = prune_problem(kind, eval_every_set=getattr(spec.training, "eval_every", None) is not None,
                        num_processes=compute.num_processes * compute.num_nodes,
                        validation_in_training=getattr(plan.training, "eval_every", None) is not None,
                        stages=len(plan.stages), backend=compute.backend)
    return [Issue(pos, "sweep.prune", why)] if why else []
