"""The plan: canonical, content-addressed, with step keys that follow exactly
what each step depends on."""

import json
import shutil

import pytest
import yaml
from conftest import ROOT, run_cli
from pydantic import ValidationError

from ftspec.plan.compile import compile_spec
from ftspec.plan.model import PLAN_VERSION, Plan, PlanVersionError


def _copy_quickstart(tmp_path, edit=None, reorder=False):
    (tmp_path / "data").mkdir()
    shutil.copy(ROOT / "specs/data/support-tickets.jsonl", tmp_path / "data/support-tickets.jsonl")
    doc = yaml.safe_load((ROOT / "specs/quickstart.yaml").read_text())
    if edit:
        edit(doc)
    if reorder:
        doc = _reverse(doc)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _reverse(value):
    if isinstance(value, dict):
        return {k: _reverse(value[k]) for k in reversed(list(value))}
    return value


def test_plan_id_ignores_key_order(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = _copy_quickstart(tmp_path / "a")
    b = _copy_quickstart(tmp_path / "b", reorder=True)
    assert a.read_text() != b.read_text()
    assert compile_spec(a)[0].id == compile_spec(b)[0].id


def test_plan_id_is_the_same_in_fresh_processes_and_hash_seeds():
    ids = set()
    for seed in ("0", "1", "12345", "random"):
        out = run_cli(["plan", "specs/quickstart.yaml", "--json"], env={"PYTHONHASHSEED": seed})
        assert out.returncode == 0, out.stderr
        ids.add(json.loads(out.stdout)["id"])
    assert len(ids) == 1


def test_plan_id_changes_with_content(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = _copy_quickstart(tmp_path / "a")
    b = _copy_quickstart(tmp_path / "b", edit=lambda d: d["training"].update(epochs=4))
    assert compile_spec(a)[0].id != compile_spec(b)[0].id


def test_plan_round_trips_and_is_frozen(in_root):
    plan, _ = compile_spec("specs/quickstart.yaml")
    again = Plan.from_json(plan.to_json())
    assert again.id == plan.id
    assert again.to_dict() == plan.to_dict()
    with pytest.raises(ValidationError):
        plan.training.epochs = 99  # type: ignore[misc]
    with pytest.raises(TypeError):
        plan.data.rename["x"] = "y"  # type: ignore[index]
    with pytest.raises(AttributeError):
        plan.steps.append(None)  # type: ignore[attr-defined]
    data = plan.to_dict()
    data["training"]["epochs"] = 99
    with pytest.raises(ValueError, match="does not match its content"):
        Plan.from_json(json.dumps(data))


def test_plan_version_is_checked(in_root):
    data = compile_spec("specs/quickstart.yaml")[0].to_dict()
    data["plan_version"] = PLAN_VERSION + 1
    with pytest.raises(PlanVersionError, match="plan_version 2 is not supported"):
        Plan.from_dict(data)


def test_canonical_json_is_sorted_and_compact(in_root):
    plan, _ = compile_spec("specs/quickstart.yaml")
    text = plan.to_json(pretty=False)
    assert "\n" not in text and ": " not in text.split('"text"')[0]
    keys = list(json.loads(text))
    assert keys == sorted(keys)


def _keys(path):
    return {s.name: s.key for s in compile_spec(path)[0].steps}


@pytest.mark.parametrize("edit,changed", [
    (lambda d: d["eval"].update(max_new_tokens=8),
     {"generate_base", "eval_base", "generate_tuned", "eval_tuned", "report"}),
    (lambda d: d["training"].update(learning_rate=5e-4), {"train", "generate_tuned", "eval_tuned", "report"}),
    (lambda d: d["data"]["split"].update(seed=1),
     set(["prepare_data", "generate_base", "eval_base", "train", "generate_tuned", "eval_tuned", "report"])),
    (lambda d: d["format"].update(completion=" {{ queue | upper }}"),
     set(["prepare_data", "generate_base", "eval_base", "train", "generate_tuned", "eval_tuned", "report"])),
    (lambda d: d.update(description="same job, new words"), set()),
    # Gates are scored by the report: a gate-only change re-runs only the report.
    (lambda d: d["eval"]["gates"].update(accuracy=">= 0.7"), {"report"}),
    # A zero-shot baseline does not depend on the training seed.
    (lambda d: d["training"].update(seed=7), {"train", "generate_tuned", "eval_tuned", "report"}),
])
def test_step_keys_follow_their_inputs(tmp_path, edit, changed):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    before = _keys(_copy_quickstart(tmp_path / "a"))
    after = _keys(_copy_quickstart(tmp_path / "b", edit=edit))
    assert {name for name in before if before[name] != after[name]} == changed


def test_few_shot_baseline_follows_the_seed_that_draws_its_examples(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    before = _keys(_copy_quickstart(tmp_path / "a", edit=lambda d: d["eval"].update(few_shot=3)))
    after = _keys(_copy_quickstart(tmp_path / "b", edit=lambda d: (d["eval"].update(few_shot=3),
                                                                   d["training"].update(seed=7))))
    assert {name for name in before if before[name] != after[name]} == {
        "generate_base", "eval_base", "train", "generate_tuned", "eval_tuned", "report"}


def test_every_default_is_explicit(in_root):
    plan, _ = compile_spec("specs/quickstart.yaml")
    t = plan.training
    assert t.steps_per_epoch == 75  # ceil(1200 / 16)
    assert t.total_steps == 225
    assert t.warmup_steps == 12  # ceil(225 * 0.05)
    assert t.effective_batch_size == 16
    assert plan.model.intermediate_size == 512
    assert plan.data.rows.model_dump() == {"train": 1200, "validation": 150, "test": 150}
    assert plan.data.sources["train"].sha256 and len(plan.data.sources["train"].sha256) == 64
    assert plan.format.templates["prompt"].text.startswith("Route this support request")
    assert [s.name for s in plan.steps] == ["prepare_data", "generate_base", "eval_base", "train", "generate_tuned",
                                            "eval_tuned", "report"]


def test_the_plan_says_how_each_metric_compares_answers(in_root):
    """Each metric's normalisation is in the plan (its catalog row's, which the scoring
    applies) and in its text, so 'Positive' scoring 0 on one metric and 1 on another cannot surprise."""
    from ftspec.catalog.metrics import NORMALIZATIONS
    from ftspec.plan.describe import render_plan

    plan, _ = compile_spec("specs/quickstart.yaml", sets=["eval.metrics=[accuracy, exact_match, bleu]"])
    assert [(m.name, m.normalization) for m in plan.eval.metrics] == [
        ("accuracy", "label"), ("exact_match", "squad"), ("bleu", "as_written")]
    text = render_plan(plan)
    assert f"accuracy: answers compared {NORMALIZATIONS['label'].what}" in text
    assert f"exact_match: answers compared {NORMALIZATIONS['squad'].what}" in text


@pytest.mark.parametrize("key", ["../../../outside", "a" * 64 + "\n", "A" * 64, "b" * 63])
def test_a_plan_file_whose_step_key_is_not_a_sha256_is_refused(key):
    # The store names folders after step keys: a plan read back may hold nothing else there.
    plan, _ = compile_spec(ROOT / "specs" / "quickstart.yaml")
    data = json.loads(plan.to_json())
    data["steps"][0]["key"] = key
    with pytest.raises(ValueError, match=r"steps\.0\.key"):
        Plan.from_json(json.dumps(data))
