"""The sweep, resolved (ftspec.plan.sweep): its trials in a fixed order, random's seeded draw,
the objective's direction, and the sweep section kept out of the plan."""

from __future__ import annotations

import pytest
from conftest import ROOT

from ftspec.core.errors import SpecError
from ftspec.plan.compile import compile_plan
from ftspec.plan.sweep import describe_sweep, resolve, set_text
from ftspec.spec.load import parse_set

TICKETS = ROOT / "specs" / "data" / "support-tickets.jsonl"

HEAD = """\
ftspec: 1
name: job
model: {kind: tiny, hidden_size: 32, num_layers: 1, num_heads: 2, max_position_embeddings: 256, init_seed: 1}
data:
  train: data/tickets.jsonl
  split: {validation: 0.1, test: 0.1, seed: 1}
format:
  kind: prompt_completion
  prompt: "Request: {{ text }}\\nQueue:"
  completion: " {{ queue }}"
method: {kind: sft, adapter: full}
training: {max_steps: 2, batch_size: 4, max_length: 128, learning_rate: 1.0e-3}
eval: {metrics: [accuracy], max_new_tokens: 4, limit: 8}
compute: {device: cpu}
"""

GRID = """\
sweep:
  fields:
    training.learning_rate: [1.0e-3, 3.0e-3]
    training.max_steps: [2, 3]
"""


def write(tmp_path, body: str = GRID, head: str = HEAD):
    (tmp_path / ".git").mkdir(exist_ok=True)
    (tmp_path / "data").mkdir(exist_ok=True)
    lines = TICKETS.read_text(encoding="utf-8").splitlines()[:120]
    (tmp_path / "data" / "tickets.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    spec = tmp_path / "job.yaml"
    spec.write_text(head + body, encoding="utf-8")
    return spec


def test_a_grid_is_every_combination_in_a_fixed_order_with_the_objective_from_eval_metrics(tmp_path):
    sw = resolve(write(tmp_path))
    assert [t.sets() for t in sw.trials] == [
        ["training.learning_rate=0.001", "training.max_steps=2"],
        ["training.learning_rate=0.001", "training.max_steps=3"],
        ["training.learning_rate=0.003", "training.max_steps=2"],
        ["training.learning_rate=0.003", "training.max_steps=3"]]
    assert sw.count == 4 and sw.method == "grid"
    assert (sw.objective.metric, sw.objective.higher_is_better, sw.objective.split) == ("accuracy", True, "validation")
    assert sw.trial_sets(sw.trials[0].values)[-1] == "eval.split=validation"
    assert "eval.split=validation" not in sw.trial_sets(sw.trials[0].values, validation=False)
    assert sw.folder == tmp_path / "runs" / "job.sweep"


def test_the_sweep_section_is_not_part_of_the_plan_and_plan_says_it_in_one_line(tmp_path):
    with_sweep = compile_plan(write(tmp_path))
    without = compile_plan(write(tmp_path, body=""))
    assert with_sweep.plan.id == without.plan.id
    assert "sweep" not in with_sweep.plan.to_json()
    line = describe_sweep(with_sweep.checked.ctx.spec.sweep)
    assert line.startswith("sweep: a grid of 4 trials over training.learning_rate, training.max_steps")
    assert describe_sweep(without.checked.ctx.spec.sweep) is None


def test_ftspec_plan_prints_the_sweep_line_after_the_plan_and_not_in_its_json(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from ftspec.cli import main

    spec = write(tmp_path)
    monkeypatch.chdir(tmp_path)
    shown = CliRunner().invoke(main, ["plan", str(spec)])
    assert shown.exit_code == 0, shown.output
    assert shown.output.rstrip().splitlines()[-1].startswith("sweep: a grid of 4 trials over training.learning_rate")
    as_json = CliRunner().invoke(main, ["plan", str(spec), "--json"])
    assert as_json.exit_code == 0 and "sweep" not in as_json.output
    plain = CliRunner().invoke(main, ["plan", str(write(tmp_path, body=""))])
    assert plain.exit_code == 0 and "sweep:" not in plain.output


def test_validate_checks_the_sweep_section_as_sweep_would(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from ftspec.cli import main

    monkeypatch.chdir(tmp_path)
    good = CliRunner().invoke(main, ["validate", str(write(tmp_path))])
    assert good.exit_code == 0, good.output
    bad = write(tmp_path, body=GRID.replace("training.learning_rate", "training.learning_rat"))
    shown = CliRunner().invoke(main, ["validate", str(bad)])
    line = HEAD.count("\n") + 3
    assert shown.exit_code == 2
    assert f"job.yaml:{line}:5: training.learning_rat: unknown key; did you mean 'learning_rate'?" in shown.output


def test_a_profile_sets_the_sweep_and_over_replaces_a_field_of_it(tmp_path):
    spec = write(tmp_path, body="profiles:\n  s:\n    sweep: {fields: {training.max_steps: [2, 3, 4]}}\n")
    assert resolve(spec, ["s"]).count == 3
    sw = resolve(spec, ["s"], over=["training.max_steps=5,6", "method.adapter=full"])
    assert [t.shown() for t in sw.trials] == ["training.max_steps=5, method.adapter=full",
                                              "training.max_steps=6, method.adapter=full"]


def test_random_draws_the_same_trials_for_a_seed_and_others_for_another(tmp_path):
    spec = write(tmp_path, body="sweep:\n  method: random\n  trials: 5\n  fields:\n"
                                "    training.learning_rate: {low: 1.0e-4, high: 1.0e-2, log: true}\n"
                                "    training.max_steps: {low: 2, high: 9}\n")
    first, again, other = resolve(spec), resolve(spec), resolve(spec, seed=7)
    assert [t.values for t in first.trials] == [t.values for t in again.trials]
    assert [t.values for t in first.trials] != [t.values for t in other.trials]
    for t in first.trials:
        lr, steps = dict(t.values)["training.learning_rate"], dict(t.values)["training.max_steps"]
        assert 1e-4 <= lr <= 1e-2 and isinstance(steps, int) and 2 <= steps <= 9
    tpe = resolve(spec, method="tpe")
    assert tpe.trials == () and tpe.count == 5


@pytest.mark.parametrize("value", [0.001, 3, "lora", "1", True, None, [8, 16], {"r": 4}, "a b"])
def test_a_value_is_written_so_that_set_reads_back_the_same_value(value):
    _, doc = parse_set(f"x.y={set_text(value)}")
    assert doc.data == {"x": {"y": value}}


def test_a_metric_lower_is_better_is_minimised(tmp_path):
    spec = write(tmp_path, head=HEAD.replace("metrics: [accuracy]", "metrics: [accuracy, perplexity]"),
                 body=GRID + "  objective: {metric: perplexity}\n")
    assert resolve(spec).objective.direction == "minimize"


def test_a_misnamed_field_is_said_once_at_its_name(tmp_path):
    spec = write(tmp_path, body=GRID.replace("training.max_steps", "training.max_stepz"))
    with pytest.raises(SpecError) as exc:
        resolve(spec)
    [issue] = exc.value.issues
    assert (issue.pos.line, issue.key) == (18, "training.max_stepz") and "max_steps" in issue.hint


def test_a_stepped_range_draws_only_its_steps(tmp_path):
    spec = write(tmp_path, body="sweep:\n  method: random\n  trials: 6\n  fields:\n"
                                "    training.warmup_ratio: {low: 0.0, high: 0.2, step: 0.05}\n"
                                "    training.max_steps: {low: 2, high: 10, step: 4}\n")
    sw = resolve(spec)
    for t in sw.trials:
        values = dict(t.values)
        assert values["training.warmup_ratio"] in (0.0, 0.05, 0.1, 0.15, 0.2)
        assert values["training.max_steps"] in (2, 6, 10)
