"""training.eval_rows: the training-time validation loss is computed on the first N rows
of the validation split, the same rows at every evaluation, as the plan states."""

from __future__ import annotations

import pytest

pytest.importorskip("trl")

from helpers import BASE_BODY, run_job, write_job  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from ftspec.data import prepared  # noqa: E402
from ftspec.plan.compile import compile_spec  # noqa: E402


class Evaluated(TrainerCallback):
    """The rows of every evaluation's dataset, as the trainer hands them to its callbacks."""

    def __init__(self):
        self.rows: list[list[list[int]]] = []

    def on_evaluate(self, args, state, control, eval_dataloader=None, **kwargs):
        self.rows.append([list(r) for r in eval_dataloader.dataset["input_ids"]])


@pytest.mark.parametrize("setting, expected", [("eval_rows: 3, ", 3), ("", 12)])
def test_the_validation_loss_is_computed_on_the_plans_rows(tmp_path, setting, expected):
    body = BASE_BODY.replace("training: {", "training: {" + setting) + "method: {kind: sft, adapter: full}\n"
    spec = write_job(tmp_path, body)
    plan, _ = compile_spec(spec)
    assert plan.training.eval_rows == expected  # 12 validation rows: all of them, below the default cap
    seen = Evaluated()
    ctx, _ = run_job(spec, callbacks=[seen])
    assert len(seen.rows) == 2  # eval_every 2 of 4 steps
    first = seen.rows[0]
    assert len(first) == expected and all(rows == first for rows in seen.rows)
    from ftspec.runtime.training.data import load_tokens

    kept = [list(r) for r in load_tokens(ctx.run_dir / "data" / "validation-tokens")["input_ids"]]
    assert first == kept[:expected]
    assert sum(1 for _ in prepared.iter_records(ctx.run_dir / "data", "validation")) == 12


def test_the_plan_caps_the_default_and_says_so(tmp_path):
    from ftspec.plan.build import EVAL_ROWS
    from ftspec.plan.describe import render_plan

    spec = write_job(tmp_path, BASE_BODY + "method: {kind: sft, adapter: full}\n")
    plan, _ = compile_spec(spec)
    assert plan.training.eval_rows == 12 < EVAL_ROWS
    assert "eval every 2 on 12 validation rows" in render_plan(plan)
    plan, _ = compile_spec(spec, sets=("training.eval_every=null", "data.split.validation=0"))
    assert plan.training.eval_rows is None
