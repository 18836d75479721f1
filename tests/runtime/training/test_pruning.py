"""A sweep's pruning: the process-wide validation hook (ftspec.runtime.training.pruning) stops a
training at the evaluation it answers True on, and the executor lets ftspec's Pruned through
with the train step left incomplete; through Optuna (ftspec.commands.sweep_prune) a trial with a
bad validation curve is recorded as pruned."""

from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("torch")
pytest.importorskip("trl")
optuna = pytest.importorskip("optuna")

from helpers import BASE_BODY, run_job, write_job  # noqa: E402

from ftspec.commands.sweep_prune import intermediate_value, make_pruner, reporting_to  # noqa: E402
from ftspec.core.errors import Pruned, RunFailed  # noqa: E402
from ftspec.plan.compile import compile_plan, compile_spec, find_root  # noqa: E402
from ftspec.plan.pruning import prune_problem, prune_problems  # noqa: E402
from ftspec.runtime.training import pruning  # noqa: E402
from ftspec.store.rundir import run_dir_of, store_of  # noqa: E402

# Four steps, the validation loss at steps 2 and 4, a checkpoint at step 2.
BODY = BASE_BODY + "method: {kind: sft, adapter: full}\n"


@pytest.fixture(autouse=True)
def no_hook_left():
    yield
    assert pruning.validation_hook() is None, "a test left a validation hook set"


def train_state(spec):
    """The plan's train step: complete in the store?, its key, and its checkpoints' metrics."""
    plan, _ = compile_spec(spec)
    store = store_of(run_dir_of(plan, find_root(spec)))
    key = next(s.key for s in plan.steps if s.name == "train")
    metrics = store.scratch("train", key, "checkpoints") / "metrics.jsonl"
    lines = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.exists() else []
    return store.complete("train", key), lines, run_dir_of(plan, find_root(spec))


def test_the_hook_stops_the_training_at_once_and_the_train_step_stays_incomplete(tmp_path):
    spec = write_job(tmp_path, BODY)
    asked: list[tuple[int, float]] = []

    def hook(step: int, loss: float) -> bool:
        asked.append((step, loss))
        return True

    assert pruning.set_validation_hook(hook) is None
    try:
        with pytest.raises(Pruned) as caught:  # through the recipe and the executor, as itself
            run_job(spec)
    finally:
        pruning.set_validation_hook(None)
    assert [s for s, _ in asked] == [2]  # asked once, at the first evaluation, and nothing trained after it
    assert math.isfinite(asked[0][1]) and caught.value.step == 2 and caught.value.validation_loss == asked[0][1]
    assert isinstance(caught.value, RunFailed) and "\n" not in str(caught.value)  # elsewhere: one line, status 1
    complete, metrics, run_dir = train_state(spec)
    assert not complete  # never stored as complete: no model under the train key
    assert max(m["step"] for m in metrics) == 2 and any("eval_loss" in m for m in metrics)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "train" not in {s["name"] for s in manifest["steps"]}


def test_a_trial_with_a_bad_validation_curve_is_recorded_as_pruned(tmp_path):
    """Two trials with a far better curve complete; the third trains for real, reports its
    validation loss negated (the objective, accuracy, is maximised), and the median pruner stops
    it at its first evaluation: Optuna records it PRUNED, and its train step is not complete."""
    spec = write_job(tmp_path, BODY)
    study = optuna.create_study(direction="maximize", pruner=make_pruner("median"))
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def objective(trial):
        with reporting_to(trial, maximize=True, kind="median"):
            if trial.number < 2:
                hook = pruning.validation_hook()
                assert hook(2, 0.01) is False and hook(4, 0.01) is False
                return 0.9
            run_job(spec)
            return 0.0

    study.optimize(objective, n_trials=3, catch=())
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE] * 2 + [optuna.trial.TrialState.PRUNED]
    steps = study.trials[2].intermediate_values
    assert list(steps) == [2] and steps[2] < -0.01  # the loss, negated: worse than the others' -0.01
    assert not train_state(spec)[0]


def test_pruned_survives_pickling():
    import pickle

    back = pickle.loads(pickle.dumps(Pruned(4, 2.5, "train: stopped at step 4")))
    assert (type(back), back.step, back.validation_loss, str(back)) == (Pruned, 4, 2.5, "train: stopped at step 4")


def test_intermediate_values_are_in_the_study_direction():
    assert intermediate_value(2.5, maximize=True) == -2.5
    assert intermediate_value(2.5, maximize=False) == 2.5


class FakeTrial:
    def __init__(self, prune: bool):
        self.reported: list[tuple[float, int]] = []
        self.prune = prune

    def report(self, value, step):
        self.reported.append((value, step))

    def should_prune(self):
        return self.prune


def test_the_hook_reports_minimised_losses_as_they_are_and_prunes_a_diverged_training():
    trial = FakeTrial(prune=False)
    with reporting_to(trial, maximize=False, kind="halving"):
        hook = pruning.validation_hook()
        assert hook(3, 1.5) is False
        assert hook(6, float("nan")) is True  # diverged: stopped, nothing reported
    assert trial.reported == [(1.5, 3)]
    assert pruning.validation_hook() is None  # the hook before the block is back


def test_a_pruned_training_leaves_the_block_as_optunas_trial_pruned_and_none_means_no_hook():
    with pytest.raises(optuna.TrialPruned, match="step 4"):
        with reporting_to(FakeTrial(prune=True), maximize=True, kind="median"):
            raise Pruned(4, 3.0, "train: stopped at step 4 by the sweep's pruner")
    with reporting_to(FakeTrial(prune=True), maximize=True, kind="none"):
        assert pruning.validation_hook() is None and pruning.pruning_callbacks() == []


def test_pruners_and_the_settings_pruning_refuses():
    assert isinstance(make_pruner("median"), optuna.pruners.MedianPruner)
    assert isinstance(make_pruner("halving"), optuna.pruners.SuccessiveHalvingPruner)
    assert isinstance(make_pruner("none"), optuna.pruners.NopPruner)
    assert prune_problem("none", eval_every_set=False, num_processes=4) is None
    assert prune_problem("median", eval_every_set=True, num_processes=1) is None
    assert "training.eval_every" in prune_problem("median", eval_every_set=False, num_processes=1)
    assert "compute.num_processes is 2" in prune_problem("halving", eval_every_set=True, num_processes=2)
    assert "validation loss" in prune_problem("median", eval_every_set=True, num_processes=1,
                                              validation_in_training=False)
    assert "compute.backend bedrock" in prune_problem("median", eval_every_set=True, num_processes=1,
                                                      backend="bedrock")
    assert "trains 2 stages" in prune_problem("median", eval_every_set=True, num_processes=1, stages=1)
    with pytest.raises(TypeError):
        pruning.set_validation_hook("not a function")


def test_a_compiled_spec_is_checked_at_the_line_given(tmp_path):
    from ftspec.core.errors import Pos

    spec = write_job(tmp_path, BODY)
    at = Pos("job.yaml", 30)
    assert prune_problems(compile_plan(spec), "median", at) == []
    no_cadence = compile_plan(write_job(tmp_path, BODY.replace("eval_every: 2, ", ""), name="nocad"))
    assert no_cadence.plan.training.eval_every is not None  # the plan's default cadence does not count
    [issue] = prune_problems(no_cadence, "halving", at)
    assert issue.format().startswith("job.yaml:30: sweep.prune: pruning (halving) judges each trial")
    assert prune_problems(no_cadence, "none", at) == []


def test_a_sweep_shows_a_pruned_trial_as_pruned_not_failed(tmp_path):
    """`ftspec sweep` with sweep.prune: median: two trials with a sane learning rate complete; the
    third (a learning rate of 0.9, its validation loss far above theirs after 2 steps) is stopped
    there, its train step left incomplete, and the sweep's table says pruned."""
    from ftspec.commands.sweep import sweep

    (tmp_path / ".git").mkdir()
    spec = write_job(tmp_path, BODY + """sweep:
  fields:
    training.learning_rate: [1.0e-3, 2.0e-3, 0.9]
  prune: median
""")
    result = sweep(spec, echo=lambda line: None)
    assert [(r.index, r.state) for r in result.rows] == [(0, "complete"), (1, "complete"), (2, "pruned")]
    assert result.winner is not None and result.winner.row.index in (0, 1)
    csv = (tmp_path / "runs" / "job.sweep" / "results.csv").read_text(encoding="utf-8").splitlines()
    assert csv[3].startswith("2,0.9,pruned,"), csv
    pruned, _ = compile_spec(spec, sets=["training.learning_rate=0.9", "eval.split=validation"])
    store = store_of(run_dir_of(pruned, find_root(spec)))
    assert not store.complete("train", next(s.key for s in pruned.steps if s.name == "train"))
