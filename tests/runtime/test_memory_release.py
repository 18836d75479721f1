"""What training held is given back before the tuned model is loaded: the steps share the
`ftspec run` process, and the trainer's model and optimizer state sit in reference cycles
that Python's collector may not reach for a long time (a SmolLM2 run's tuned evaluation
started 0.5 GB above training's peak before this)."""

from __future__ import annotations

import gc
import weakref

import pytest

pytest.importorskip("torch")
pytest.importorskip("trl")

from helpers import BASE_BODY, run_job, write_job  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from ftspec.backends.local import steps as local_steps  # noqa: E402
from ftspec.catalog import steps  # noqa: E402


class Watch(TrainerCallback):
    """Keeps a weak reference to the model and optimizer the trainer trained."""

    def __init__(self):
        self.refs: list[weakref.ref] = []

    def on_train_end(self, args, state, control, model=None, optimizer=None, **kwargs):
        self.refs = [weakref.ref(o) for o in (model, optimizer) if o is not None]


def test_the_trained_model_is_freed_before_the_tuned_model_is_scored(tmp_path, monkeypatch):
    watch = Watch()
    alive_then: list[list[bool]] = []
    real = local_steps.STEPS[steps.GENERATE_TUNED.name]

    def generate_tuned(plan, ctx, out):
        alive_then.append([r() is not None for r in watch.refs])
        return real(plan, ctx, out)

    monkeypatch.setitem(local_steps.STEPS, steps.GENERATE_TUNED.name, generate_tuned)
    gc.disable()  # no collection by chance between the steps: only the one the run makes
    try:
        run_job(write_job(tmp_path, BASE_BODY + "method: {kind: sft, adapter: full}\n"), callbacks=[watch])
    finally:
        gc.enable()
    assert len(watch.refs) == 2
    assert alive_then == [[False, False]]
