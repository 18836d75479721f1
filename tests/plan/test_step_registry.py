"""The step registry is the contract between the plan and the runtime.

1. Keys: for every shipped spec (and its profiles), change each leaf of the plan in
   turn; exactly the steps that declare that field (and the steps that need them)
   change key. Nothing else does.
2. Views: a step reads its plan through a view of the fields it declares; reading
   any other field raises. Every shipped spec's steps are run on their views here
   (with a tiny model standing in for a hub model, and a handful of rows), so a step
   that reads a field it does not declare fails this test.
"""

from __future__ import annotations

import copy

import pytest
from conftest import ROOT, SPECS

from ftspec.backends import BACKENDS
from ftspec.catalog import steps
from ftspec.catalog.steps import STEPS
from ftspec.plan import keys
from ftspec.plan.compile import compile_spec
from ftspec.plan.keys import PlanView, UndeclaredRead, plan_steps
from ftspec.plan.model import Plan

NOT_STEP_INPUTS = {"id", "steps", "plan_version"}  # the id and the keys follow from the rest


def _variants():
    import yaml

    for spec in SPECS:
        doc = yaml.safe_load(spec.read_text(encoding="utf-8"))
        yield spec.name, ()
        for profile in (doc.get("profiles") or {}):
            yield spec.name, (profile,)


VARIANTS = list(_variants())


def _leaves(value, path=()):
    """(path, value) of every leaf; an empty list or mapping counts as a leaf."""
    if isinstance(value, dict) and value:
        for k, v in value.items():
            yield from _leaves(v, path + (k,))
    elif isinstance(value, list) and value:
        for i, v in enumerate(value):
            yield from _leaves(v, path + (i,))
    else:
        yield path, value


def _mutated(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 1.5 + 0.125
    if isinstance(value, str):
        return value + "~"
    if value is None:
        return "~"
    return ["~"] if isinstance(value, list) else {"~": "~"}


def _set(doc, path, value):
    node = doc
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value


def _declares(step_def, path) -> bool:
    dotted = ".".join(str(p) for p in path)
    return any(dotted == r or dotted.startswith(r + ".") for r in step_def.reads)


def _part_changed(s, need, body, changed_body, before, after) -> bool:
    """Whether the part of a need that step ``s`` reads changed (steps.held_out_part)."""
    if need not in before or need not in after:
        return (need in before) != (need in after)
    return s.partial[need](body, before) != s.partial[need](changed_body, after)


def _keys(body) -> dict[str, str]:
    return {s["name"]: s["key"] for s in plan_steps(body)}


@pytest.mark.parametrize("name,profiles", VARIANTS, ids=lambda v: v if isinstance(v, str) else "+".join(v) or "-")
def test_each_leaf_changes_exactly_the_steps_that_declare_it(name, profiles, in_root):
    plan = compile_spec(f"specs/{name}", profiles)[0]
    body = plan.to_dict()
    before = _keys(body)
    assert before == {s.name: s.key for s in plan.steps}, "the plan's keys are the registry's keys"
    checked = 0
    for path, value in _leaves(body):
        if path[0] in NOT_STEP_INPUTS:
            continue
        changed_body = copy.deepcopy(body)
        _set(changed_body, path, _mutated(value))
        after = _keys(changed_body)
        expected: set[str] = set()
        for s in STEPS:  # in order: a step's needs come before it
            if s.name not in after or s.name not in before:
                continue
            needs_changed = any(_part_changed(s, n, body, changed_body, before, after) if n in s.partial
                                else n in expected or ((n in before) != (n in after)) for n in s.needs)
            if _declares(s, path) or needs_changed:
                expected.add(s.name)
        actual = {n for n in after if n in before and after[n] != before[n]}
        assert actual == expected, (f"{'.'.join(map(str, path))}: re-keyed {sorted(actual)}, "
                                    f"declared by {sorted(expected)}")
        checked += 1
    assert checked > 50


def test_a_view_refuses_what_its_step_does_not_declare(in_root):
    plan = compile_spec("specs/quickstart.yaml")[0]
    view = keys.view(plan, steps.GENERATE_BASE)
    assert view.eval.split == "test" and view.model.kind == "tiny"
    with pytest.raises(UndeclaredRead, match="generate_base reads plan field 'eval.gates'"):
        _ = view.eval.gates
    with pytest.raises(UndeclaredRead, match="generate_base reads plan field 'eval.metrics'"):
        _ = view.eval.metrics  # the metrics are the scoring step's: a metrics change generates nothing again
    scoring = keys.view(plan, steps.EVAL_BASE)
    assert [m.name for m in scoring.eval.metrics] == ["accuracy", "f1_macro"]
    with pytest.raises(UndeclaredRead, match="eval_base reads plan field 'model'"):
        _ = scoring.model
    with pytest.raises(UndeclaredRead, match="'training.learning_rate'"):
        _ = view.training.learning_rate
    with pytest.raises(UndeclaredRead):
        _ = view.id
    with pytest.raises(AttributeError):
        view.eval = None
    report = keys.view(plan, steps.REPORT)
    assert [g.gate for g in report.eval.gates] == ["accuracy", "improvement.accuracy"]
    with pytest.raises(UndeclaredRead):
        _ = report.training


def test_every_step_is_declared_once_with_a_runnable_function():
    names = [s.name for s in STEPS]
    folders = [s.folder for s in STEPS]
    assert len(set(names)) == len(names) and len(set(folders)) == len(folders)
    for s in STEPS:
        assert set(s.needs) <= set(names[: names.index(s.name)]), f"{s.name} needs a later step"
        for backend in BACKENDS.values():  # each backend's table runs every step
            assert callable(backend.steps.get(s.name)), f"backend {backend.name} has no {s.name}"
        for read in s.reads:  # a misspelt field would hash as null forever, and never re-key
            assert _plan_field_exists(read), f"{s.name} declares '{read}', which no plan has"


def _plan_field_exists(dotted: str) -> bool:
    """Whether a dotted path names a field of the plan models (in any variant of a union)."""
    import typing

    from pydantic import BaseModel

    def models(annotation):
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return [annotation]
        return [m for arg in typing.get_args(annotation) for m in models(arg)]

    level = [Plan]
    for part in dotted.split("."):
        fields = [m.model_fields[part] for m in level if part in m.model_fields]
        if not fields:
            return False
        level = [m for f in fields for m in models(f.annotation)]
    return True


def test_a_misspelt_declaration_is_caught():
    assert _plan_field_exists("format.chat_template") and _plan_field_exists("eval.few_shot_seed")
    assert not _plan_field_exists("eval.few_shot_sed") and not _plan_field_exists("training.seed.value")


def test_step_names_are_spelled_only_in_the_registry():
    """Other modules name a step through ftspec.catalog.steps, so a renamed step cannot be missed."""
    import re

    literal = re.compile(r"""["'](prepare_data|eval_base|eval_tuned|eval-base|eval-tuned|"""
                         r"""generate_base|generate_tuned|generate-base|generate-tuned)["']""")
    offenders = []
    for path in (ROOT / "ftspec").rglob("*.py"):
        if path.name == "steps.py":
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if literal.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


# ----------------------------------------------------------------------------- running every step on its view

TINY = {"kind": "tiny", "architecture": "llama", "hidden_size": 32, "num_layers": 1, "num_heads": 2, "num_kv_heads": 2,
        "intermediate_size": 64, "max_position_embeddings": 512, "tokenizer": {"kind": "byte", "vocab_size": None},
        "init_seed": 0, "trust_remote_code": False}


def _runnable(plan: Plan) -> Plan:
    """The same plan, small enough to run here: a tiny model for a hub one, few rows, one
    step; a plan with stages, each stage so, each later one chained to the earlier small ones."""
    earlier: dict[str, Plan] = {}
    for stage in plan.stages:
        earlier[stage.stage] = _small(stage.to_dict(), earlier, keep_dir=True)
    return _small(plan.to_dict(), earlier, keep_dir=bool(plan.stages), stages=list(earlier.values()))


def _small(body: dict, earlier: dict, keep_dir: bool = False, stages: list = ()) -> Plan:
    from ftspec.plan.stages import stage_model

    body.pop("id")
    if stages:
        body["stages"] = [p.to_dict() for p in stages]
    distill = body["method"].get("distill")
    if distill and distill["teacher"]["kind"] == "stage":
        distill["teacher"] = stage_model(earlier[distill["teacher"]["stage"]])
    if body["model"]["kind"] == "stage":
        body["model"] = stage_model(earlier[body["model"]["stage"]])
    elif body["model"]["kind"] != "tiny":
        body["model"] = dict(TINY)
        if body["format"]["kind"] == "chat" and body["format"]["chat_template"] == "model":
            from ftspec.data.templates import builtin_dir

            text = (builtin_dir() / "chatml.jinja").read_text(encoding="utf-8")
            body["format"]["chat_template"] = {"source": "builtin", "ref": "chatml.jinja", "text": text, "sha256": "0"}
    from ftspec.plan import model as plan_models

    cut = 12
    body["data"]["limit"] = {"train": cut, "validation": cut, "test": cut} if hasattr(plan_models, "Limit") else cut
    body["training"].update(max_steps=1, total_steps=1, eval_every=1, save_every=1, max_length=512, batch_size=4)
    body["eval"].update(limit=3, max_new_tokens=2)
    body["eval"]["metrics"] = [m for m in body["eval"]["metrics"] if m["name"] != "judge"]
    if not keep_dir:
        body["output"]["dir"] = "runs/" + body["name"]
    body["steps"] = plan_steps({**body, "steps": []})
    return Plan.build(body)


@pytest.mark.parametrize("spec", [p.name for p in SPECS])
def test_every_shipped_spec_runs_each_step_on_its_view(spec, tmp_path, monkeypatch):
    pytest.importorskip("torch")
    import shutil

    from ftspec.backends import executor as R

    shutil.copytree(ROOT / "specs", tmp_path / "specs")
    shutil.copytree(ROOT / "templates", tmp_path / "templates")
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".git").mkdir()  # the repository root for the spec's paths
    plan = _runnable(compile_spec(f"specs/{spec}")[0])
    if plan.compute.backend == "bedrock":
        pytest.skip("runs on Amazon Bedrock: tests/backends/bedrock/test_bedrock_run.py runs it against moto")
    reads: dict[str, set[str]] = {}
    real_getattr = PlanView.__getattr__

    def recording(self, name):
        value = real_getattr(self, name)
        reads.setdefault(self._step, set()).add(f"{self._path}.{name}" if self._path else name)
        return value

    monkeypatch.setattr(PlanView, "__getattr__", recording)
    result = R.execute(plan, tmp_path, echo=lambda _: None)
    assert result.ran == [s.name for s in plan.steps]
    for stage, ran in zip(plan.stages, result.stages):
        assert ran.ran == [s.name for s in stage.steps]
    for s in plan.steps:  # each step read its plan, through its view only
        assert reads.get(s.name), f"{s.name} read nothing through its view"


@pytest.mark.parametrize("sets,base_rekeyed", [
    (["data.limit={train: 50}"], False),  # the training split's cut: not the held-out rows
    (["data.limit=50"], True),  # every split's, the test split's with it
    (["eval.few_shot=2", "data.limit={train: 50}"], True),  # the examples come from the training split
])
def test_the_base_evaluation_is_re_keyed_only_by_what_it_reads_of_the_data(sets, base_rekeyed, in_root):
    before = {s.name: s.key for s in compile_spec("specs/quickstart.yaml", (), sets[:-1])[0].steps}
    after = {s.name: s.key for s in compile_spec("specs/quickstart.yaml", (), sets)[0].steps}
    assert before["prepare_data"] != after["prepare_data"] and before["train"] != after["train"]
    assert (before["generate_base"] != after["generate_base"]) is base_rekeyed
    assert (before["eval_base"] != after["eval_base"]) is base_rekeyed
