"""Stages in one spec: how a stage's spec is put together, what is checked across
stages, and how the stages' step keys chain (light: no torch)."""

import json
from pathlib import Path

import pytest
from helpers import SFT_DPO, STAGES_HEAD, TICKETS, write_stages

from ftspec.core.errors import SpecError
from ftspec.plan.compile import compile_spec


@pytest.fixture
def repo(tmp_path):
    (tmp_path / ".git").mkdir()
    (tmp_path / "data").mkdir()
    lines = TICKETS.read_text(encoding="utf-8").splitlines()[:200]
    (tmp_path / "data" / "tickets.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return tmp_path


def keys(plan) -> dict[str, str]:
    return {s.name: s.key for s in plan.steps}


DISTILL = """\
  - name: teacher
  - name: student
    model: {kind: tiny, hidden_size: 16, num_layers: 1, num_heads: 2, max_position_embeddings: 256}
    method: {kind: distill, adapter: full, teacher: {stage: teacher}}
"""


# ----------------------------------------------------------------------------- the plan of stages


def test_the_last_stage_is_the_specs_plan_and_holds_the_earlier_ones(repo):
    plan = compile_spec(write_stages(repo, SFT_DPO))[0]
    assert plan.stage == "dpo" and [p.stage for p in plan.stages] == ["sft"]
    sft = plan.stages[0]
    assert sft.output.dir == "runs/staged.stage-sft" and plan.output.dir == "runs/staged"
    assert sft.method.objective == "sft" and plan.method.objective == "dpo"
    assert plan.format.kind == "preference" and sft.format.kind == "prompt_completion"
    # The DPO stage starts from the SFT stage's model, named by that stage's keys.
    assert plan.model.kind == "stage" and plan.model.stage == "sft" and plan.model.adapter == "full"
    assert plan.model.train == sft.step("train").key and plan.model.data == sft.step("prepare_data").key
    assert plan.model.base == sft.model
    # The plan reads back as it was written, stages and all.
    from ftspec.plan.model import Plan

    assert Plan.from_json(plan.to_json()) == plan


def test_a_plan_without_stages_has_neither_stage_field(repo):
    path = repo / "one.yaml"
    path.write_text(STAGES_HEAD, encoding="utf-8")
    body = compile_spec(path)[0].to_dict()
    assert "stage" not in body and "stages" not in body
    assert "distill" not in body["method"]
    assert [s["name"] for s in body["steps"]] == ["prepare_data", "generate_base", "eval_base", "train",
                                                  "generate_tuned", "eval_tuned", "report"]


def test_changing_a_stage_re_runs_it_and_the_stages_after_it_only(repo):
    base = compile_spec(write_stages(repo, SFT_DPO))[0]
    # Stage 2 changes: stage 1's plan is the same; stage 2's training and what follows re-run,
    # its data (which does not read the method) does not.
    second = compile_spec(write_stages(repo, SFT_DPO.replace("r: 4}}\n",
                                                             "r: 4}}\n    training: {learning_rate: 3.0e-4}\n")))[0]
    assert second.stages[0] == base.stages[0]
    before, after = keys(base), keys(second)
    assert before["prepare_data"] == after["prepare_data"] and before["generate_base"] == after["generate_base"]
    assert before["train"] != after["train"] and before["report"] != after["report"]
    # Stage 1 changes: every step of both stages has a new key.
    first = compile_spec(write_stages(repo, SFT_DPO.replace(
        "  - name: sft\n", "  - name: sft\n    training: {learning_rate: 2.0e-3}\n")))[0]
    assert keys(first.stages[0])["train"] != keys(base.stages[0])["train"]
    assert keys(first.stages[0])["prepare_data"] == keys(base.stages[0])["prepare_data"]
    changed = {n for n in keys(base) if keys(base)[n] != keys(first)[n]}
    assert changed == set(keys(base)), "every step of stage 2 follows stage 1's model"


def test_profiles_and_set_reach_every_stage_after_its_own_keys(repo):
    path = write_stages(repo, SFT_DPO.replace("  - name: sft\n", "  - name: sft\n    training: {max_steps: 7}\n"))
    plan = compile_spec(path, sets=["training.max_steps=3"])[0]
    assert plan.training.max_steps == 3 and plan.stages[0].training.max_steps == 3
    assert plan.output.dir == "runs/staged@training.max_steps=3"
    assert plan.stages[0].output.dir == "runs/staged@training.max_steps=3.stage-sft"


def test_a_stages_model_data_format_and_method_replace_the_specs_and_the_rest_merges(repo):
    stage = ("r: 4}}\n    training: {learning_rate: 3.0e-4}\n    eval: {limit: 5}\n    compute: {threads: 2}\n"
             "    tracking: {kind: tensorboard}\n    description: pairs on the SFT model\n")
    plan = compile_spec(write_stages(repo, SFT_DPO.replace("r: 4}}\n", stage)))[0]
    sft = plan.stages[0]
    # Replaced: the preference data has no `split.stratify` or templates of the SFT data.
    assert [d.name for d in plan.data.derive] == ["wrong"] and sft.data.derive == ()
    # Merged: the stage's learning rate with the spec's batch size and length, and so on.
    assert plan.training.learning_rate == 3.0e-4 and plan.training.batch_size == 4 and plan.training.max_length == 256
    assert sft.training.learning_rate == 1.0e-3
    assert plan.eval.limit == 5 and plan.eval.max_new_tokens == 4 and sft.eval.limit is None
    assert plan.compute.threads == 2 and plan.compute.device == "cpu" and sft.compute.threads == "auto"
    assert plan.tracking.kind == "tensorboard" and sft.tracking.kind == "none"
    assert plan.description == "pairs on the SFT model" and sft.description is None


def test_the_distillation_settings_reach_the_plan(repo):
    spec = DISTILL.replace("teacher: {stage: teacher}}", "teacher: {stage: teacher}, max_new_tokens: 7, stop: ['.'], "
                           "batch_size: 3, filter: {extract: {regex: '(\\w+)', which: first}, max_tokens: 5, "
                           "train_on: extracted}, logits: {alpha: 0.25, temperature: 3}}")
    d = compile_spec(write_stages(repo, spec))[0].method.distill
    assert (d.max_new_tokens, d.stop, d.batch_size) == (7, (".",), 3)
    assert (d.filter.extract.regex, d.filter.extract.which, d.filter.max_tokens, d.filter.train_on) == (
        "(\\w+)", "first", 5, "extracted")
    assert (d.logits.alpha, d.logits.temperature) == (0.25, 3.0)
    template = spec.replace("{regex: '(\\w+)', which: first}", "{template: '{{ text | trim }}'}")
    d = compile_spec(write_stages(repo, template))[0].method.distill
    assert d.filter.extract.template.text == "{{ text | trim }}" and d.filter.extract.regex is None


def test_a_stage_that_sets_its_model_or_from_base_starts_fresh(repo):
    plan = compile_spec(write_stages(repo, DISTILL))[0]
    assert plan.model.kind == "tiny" and plan.model.hidden_size == 16
    teacher = plan.method.distill.teacher
    assert teacher.kind == "stage" and teacher.stage == "teacher" and teacher.train == plan.stages[0].step("train").key
    fresh = compile_spec(write_stages(repo, SFT_DPO.replace("  - name: dpo\n", "  - name: dpo\n    from: base\n")))[0]
    assert fresh.model.kind == "tiny"


def test_distillation_steps_and_keys(repo):
    plan = compile_spec(write_stages(repo, DISTILL))[0]
    names = [s.name for s in plan.steps]
    assert names == ["teach", "prepare_data", "generate_base", "eval_base", "train", "generate_tuned", "eval_tuned",
                     "generate_teacher", "eval_teacher", "compare_stages", "report"]
    d = plan.method.distill
    # The teacher answers as the models are evaluated unless told otherwise: here it picks
    # the likeliest label, with the space the format's answers start with.
    assert d.max_new_tokens == plan.eval.max_new_tokens and d.stop == plan.eval.stop and d.logits is None
    assert plan.eval.mode == "choices" and d.mode == "choices" and d.choices == plan.eval.choices and d.prefix == " "
    generating = compile_spec(write_stages(repo, DISTILL.replace("teacher: {stage: teacher}}",
                                                                 "teacher: {stage: teacher}, mode: generate}")))[0]
    assert generating.method.distill.mode == "generate" and generating.method.distill.choices is None
    assert "choices" not in generating.to_dict()["method"]["distill"]
    found = errors(write_stages(repo, DISTILL.replace("teacher: {stage: teacher}}",
                                                      "teacher: {stage: teacher}, mode: choices}")))
    assert len(found) == 1 and "method.mode" in found[0] and "picks among eval.choices" in found[0]
    # A change to the teacher stage re-keys the teacher's answers and so everything after them.
    changed = compile_spec(write_stages(repo, DISTILL.replace(
        "  - name: teacher\n", "  - name: teacher\n    training: {learning_rate: 2.0e-3}\n")))[0]
    assert all(keys(plan)[n] != keys(changed)[n] for n in ("teach", "prepare_data", "train", "eval_teacher"))
    # A student-only change (its filter) leaves the teacher stage alone.
    filtered = compile_spec(write_stages(repo, DISTILL.replace(
        "teacher: {stage: teacher}}", "teacher: {stage: teacher}, filter: {max_tokens: 8}}")))[0]
    assert filtered.stages[0] == plan.stages[0] and keys(filtered)["teach"] != keys(plan)["teach"]


# ----------------------------------------------------------------------------- mistakes, each at its line


def errors(path, **kw) -> list[str]:
    with pytest.raises(SpecError) as exc:
        compile_spec(path, **kw)
    return [i.format().replace(f"{Path(path).parent}/", "") for i in exc.value.issues]


def test_mistakes_in_the_stage_list_are_reported_together_at_their_lines(repo):
    path = write_stages(repo, """\
      - name: sft
        epochs: 3
      - name: sft
      - name: dpo
        from: later
      - name: x
        from: sft
        model: {kind: tiny}
      - {description: no name}
    """)
    found = errors(path)
    text = "\n".join(found)
    assert len(found) == 5, text
    assert "spec.yaml:17:3: stages.0.epochs: a stage cannot set 'epochs'" in text
    assert "spec.yaml:18:9: stages.1.name: stage 'sft' is named twice (first as stage 1)" in text
    assert "spec.yaml:20:9: stages.2.from: 'later' is not an earlier stage" in text
    assert "spec.yaml:22:9: stages.3.from: a stage with its own model starts from that model" in text
    assert "stages.4.name: every stage needs a name" in text


def test_a_stage_that_is_not_a_list_or_is_empty(repo):
    for text in ("stages: {a: 1}\n", "stages: []\n"):
        (repo / "s.yaml").write_text(STAGES_HEAD + text, encoding="utf-8")
        assert errors(repo / "s.yaml") == ["s.yaml:15:9: stages: must be a list of stages, each a mapping with a name, "
                                           "e.g. stages: [{name: sft}, {name: dpo, method: {kind: dpo}, data: …, "
                                           "format: …}]"]


def test_a_mistake_in_a_stage_is_placed_in_the_stage_once(repo):
    found = errors(write_stages(repo, SFT_DPO.replace("{kind: dpo,", "{kind: dpo, beta: -1,")))
    assert len(found) == 1 and "stages.1.method.beta" in found[0] and found[0].startswith("spec.yaml:18:29:")
    # A mistake the stages share (in the spec's own keys) is said once, not once per stage.
    shared = errors(write_stages(repo, SFT_DPO, head=STAGES_HEAD.replace("max_steps: 2", "max_steps: -2")))
    assert len(shared) == 1 and "training.max_steps" in shared[0], shared


def test_a_teacher_stage_must_be_an_earlier_stage(repo):
    found = errors(write_stages(repo, DISTILL.replace("{stage: teacher}", "{stage: student}")))
    assert len(found) == 1 and "method.teacher.stage: 'student' is not an earlier stage" in found[0]
    single = repo / "single.yaml"
    single.write_text(STAGES_HEAD.replace("method: {kind: sft, adapter: full}",
                                          "method: {kind: distill, adapter: full, teacher: {stage: x}}"),
                      encoding="utf-8")
    assert "this spec has no stages, so no stage 'x'" in errors(single)[0]


def test_logit_distillation_needs_one_vocabulary(repo):
    bpe = DISTILL.replace("max_position_embeddings: 256}\n    method",
                          "max_position_embeddings: 256, tokenizer: {kind: bpe, vocab_size: 400}}\n    method")
    bpe = bpe.replace("teacher: {stage: teacher}}", "teacher: {stage: teacher}, logits: {alpha: 0.5}}")
    found = errors(write_stages(repo, bpe))
    assert len(found) == 1 and "method.logits: logit distillation needs one vocabulary" in found[0], found
    assert "the teacher has a byte tokenizer and the student the BPE tokenizer trained in stage student" in found[0]
    # The same byte tokenizer on both sides is one vocabulary.
    same = DISTILL.replace("teacher: {stage: teacher}}",
                           "teacher: {stage: teacher}, logits: {alpha: 0.5, temperature: 2}}")
    plan = compile_spec(write_stages(repo, same))[0]
    assert plan.method.distill.logits.alpha == 0.5 and plan.method.distill.logits.temperature == 2.0


def test_distillation_needs_prompts_and_a_pretrained_teacher_is_checked(repo):
    pref = STAGES_HEAD.replace("method: {kind: sft, adapter: full}",
                               "method: {kind: distill, adapter: full, teacher: {base: ./nowhere}}")
    pref = pref.replace('format:\n  kind: prompt_completion\n  prompt: "Request: {{ text }}\\nQueue:"\n'
                        '  completion: " {{ queue }}"\n',
                        'format: {kind: preference, prompt: "{{ text }}", chosen: " {{ queue }}", rejected: " x"}\n')
    (repo / "p.yaml").write_text(pref, encoding="utf-8")
    found = "\n".join(errors(repo / "p.yaml"))
    assert "distillation needs prompt_completion or chat data" in found
    assert "method.teacher.base: local model directory './nowhere' not found" in found


def test_stages_run_locally(repo):
    found = errors(write_stages(repo, SFT_DPO.replace("  - name: sft\n",
                                                      "  - name: sft\n    compute: {backend: bedrock}\n")))
    assert any("stages run on the local backend" in f for f in found), found


UNLABELED = """\
  - name: teacher
  - name: student
    data:
      train: data/unlabeled.jsonl
      test: data/test.jsonl
      split: {validation: 0.1, seed: 1}
    model: {kind: tiny, hidden_size: 16, num_layers: 1, num_heads: 2, max_position_embeddings: 256}
    method: {kind: distill, adapter: full, teacher: {stage: teacher}}
"""


def unlabeled(repo: Path) -> None:
    rows = [json.loads(line) for line in TICKETS.read_text(encoding="utf-8").splitlines()[200:330]]
    (repo / "data" / "unlabeled.jsonl").write_text("".join(json.dumps({"text": r["text"]}) + "\n" for r in rows[:100]))
    (repo / "data" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[100:]))


def test_a_distillation_trains_on_rows_without_answers(repo):
    unlabeled(repo)
    plan = compile_spec(write_stages(repo, UNLABELED))[0]
    assert plan.data.rows.train == 90 and plan.data.rows.test == 30
    # Which labels to choose among comes from the held-out rows, the only ones with answers.
    assert plan.eval.mode == "choices" and set(plan.eval.choices) <= {"account", "billing", "returns", "shipping",
                                                                      "technical"}
    # Without a teacher the same rows are a mistake, at the template that needs the answer.
    sft = UNLABELED.replace("method: {kind: distill, adapter: full, teacher: {stage: teacher}}",
                            "method: {kind: sft, adapter: full}")
    found = errors(write_stages(repo, sft))
    assert any("format.completion" in f and "queue" in f for f in found), found
    # A test split cut from the unlabeled rows would have no answers to score against.
    cut = UNLABELED.replace("      test: data/test.jsonl\n", "").replace("validation: 0.1, seed: 1",
                                                                         "validation: 0.1, test: 0.1, seed: 1")
    found = errors(write_stages(repo, cut))
    assert any("queue" in f for f in found), found


def test_set_can_replace_the_stage_list_and_reaches_every_stage_otherwise(repo):
    path = write_stages(repo, SFT_DPO)
    plan = compile_spec(path, sets=["stages=[{name: a}, {name: b, training: {learning_rate: 0.5}}]"])[0]
    assert [p.stage for p in plan.stages] + [plan.stage] == ["a", "b"] and plan.training.learning_rate == 0.5
    assert plan.method.objective == "sft", "the stages given on the command line, not the file's"
    found = errors(path, sets=["stages=[]"])
    assert len(found) == 1 and found[0].startswith("--set stages=[]: stages: must be a list of stages"), found


def test_a_stage_named_base_is_refused_at_its_name(repo):
    """`from: base` names the base model, so a stage called base could never be started from."""
    found = errors(write_stages(repo, "  - name: base\n  - name: dpo\n    from: base\n"))
    assert found == ["spec.yaml:16:9: stages.0.name: 'base' is reserved: `from: base` starts a stage from the base "
                     "model; name the stage otherwise, e.g. 'base-sft'"]


# ----------------------------------------------------------------------------- one budget per command


def test_the_stages_of_a_spec_share_one_validation_budget(repo, monkeypatch):
    """validate's budget is the command's, not each stage's: the rows parsed by all stages
    together stay within one spec's allowance (plus the sample rows each later file keeps),
    every stage's context holds the same budgets, and a template the stages share is compiled once."""
    from ftspec.checks import facts
    from ftspec.plan.compile import check_spec

    lines = TICKETS.read_text(encoding="utf-8").splitlines()[:1000]
    (repo / "data" / "tickets.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    monkeypatch.setattr(facts, "SCAN_ROWS", 1200)
    parsed = []
    reader = facts.read_rows

    def counting(*args, **kwargs):
        for row in reader(*args, **kwargs):
            parsed.append(row)
            yield row

    monkeypatch.setattr(facts, "read_rows", counting)
    compiles = []
    parse = facts.tpl.parse
    monkeypatch.setattr(facts.tpl, "parse", lambda *a, **k: compiles.append(a[0].text) or parse(*a, **k))
    stages = "  - name: one\n  - name: two\n  - name: three\n  - name: four\n"
    checked = check_spec(write_stages(repo, stages))
    # One stage alone parses all 1000 rows; four stages with a budget each would parse 4000.
    assert len(parsed) <= facts.SCAN_ROWS + 3 * facts.SAMPLE_ROWS
    assert len({id(ctx.budgets) for _, ctx, _ in checked.stages}) == 1
    assert sorted(compiles) == sorted(set(compiles))  # each template text once, not once per stage
    assert any("rows after the first" in n for n in checked.stages[-1][1].not_checked)
