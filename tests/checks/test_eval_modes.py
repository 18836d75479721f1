"""eval.mode auto: the compiler scores by `choices` when the answers form a small
closed set of labels, and generates otherwise, and the plan says which and why;
label-like answers stop generation at a newline; scoring is its own step, so a
metrics-only change re-keys only the scoring steps and the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import ROOT
from helpers import Spy, successor_model

from ftspec.plan.compile import compile_spec
from ftspec.plan.describe import render_plan

TICKETS = (ROOT / "specs/data/support-tickets.jsonl").read_text(encoding="utf-8").splitlines()

TINY = """
model: {kind: tiny, hidden_size: 32, num_layers: 1, num_heads: 4, max_position_embeddings: 256, init_seed: 1}
compute: {device: cpu}
method: {kind: sft, adapter: full}
training: {max_steps: 1, batch_size: 4, learning_rate: 1.0e-3, max_length: 128}
"""


def _spec(folder: Path, body: str, rows: list[dict] | None = None, name: str = "job") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".git").mkdir(exist_ok=True)
    lines = [json.dumps(r) for r in rows] if rows is not None else TICKETS[:120]
    (folder / "tickets.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    path = folder / f"{name}.yaml"
    path.write_text(f"ftspec: 1\nname: {name}\n" + TINY + body, encoding="utf-8")
    return path


def _plan(folder: Path, body: str, *sets: str, rows: list[dict] | None = None):
    return compile_spec(_spec(folder, body, rows), sets=sets)[0]


LABELS = """
data: {train: tickets.jsonl, split: {validation: 0.1, test: 0.1, seed: 1}}
format: {kind: prompt_completion, prompt: "Request: {{ text }}\\nQueue:", completion: " {{ queue }}"}
"""


def test_auto_scores_a_closed_set_of_labels_by_choices_and_says_why(tmp_path):
    plan = _plan(tmp_path, LABELS)
    e = plan.eval
    assert e.mode == "choices"
    assert "closed set of 5 labels" in e.mode_reason and "'billing'" in e.mode_reason
    assert [m.name for m in e.metrics] == ["accuracy"], "choices mode's default metric"
    assert e.outputs == ("answers",)
    shown = render_plan(plan)
    assert "test split (12 rows), choices" in shown
    assert "choices because the answers form a closed set of 5 labels" in shown


def test_auto_generates_free_text_and_says_why(tmp_path):
    body = LABELS.replace('completion: " {{ queue }}"', 'completion: " {{ text }}"')
    plan = _plan(tmp_path, body)
    assert plan.eval.mode == "generate"
    assert "distinct answers" in plan.eval.mode_reason
    assert plan.eval.stop == ("\n",), "each answer is one short line"
    assert "generation stops at a newline" in plan.eval.mode_reason
    assert [m.name for m in plan.eval.metrics] == ["exact_match"]
    assert "generate because " in render_plan(plan) and "answers end at '\\n'" in render_plan(plan)


def test_a_held_out_answer_unseen_in_training_means_generate(tmp_path):
    rows = [{"text": f"t{i}", "queue": ["a", "b"][i % 2]} for i in range(40)]
    test = [{"text": "x", "queue": "c"}, {"text": "y", "queue": "a"}]
    folder = tmp_path / "a"
    spec = _spec(folder, """
data: {train: tickets.jsonl, test: test.jsonl}
format: {kind: prompt_completion, prompt: "{{ text }}:", completion: " {{ queue }}"}
""", rows)
    (folder / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test), encoding="utf-8")
    plan = compile_spec(spec)[0]
    assert plan.eval.mode == "generate"
    assert "held-out answer 'c' is not among the training answers" in plan.eval.mode_reason


def test_answers_that_do_not_repeat_are_not_labels(tmp_path):
    rows = [{"text": f"t{i}", "queue": f"q{i % 10}"} for i in range(12)]
    plan = _plan(tmp_path, """
data: {train: tickets.jsonl, split: {test: 0.25, seed: 1}}
format: {kind: prompt_completion, prompt: "{{ text }}:", completion: " {{ queue }}"}
""", rows=rows)
    assert plan.eval.mode == "generate" and "do not repeat enough" in plan.eval.mode_reason


def test_an_explicit_mode_and_stop_stay_as_written(tmp_path):
    plan = _plan(tmp_path / "a", LABELS, "eval.mode=generate")
    assert plan.eval.mode == "generate" and plan.eval.mode_reason.startswith("the spec says so")
    assert plan.eval.stop == ("\n",), "label-like answers stop at a newline"
    plan = _plan(tmp_path / "b", LABELS, "eval.mode=generate", "eval.stop=[]")
    assert plan.eval.stop == () and "newline" not in plan.eval.mode_reason
    plan = _plan(tmp_path / "c", LABELS, "eval.mode=generate", 'eval.stop=["###"]')
    assert plan.eval.stop == ("###",)
    plan = _plan(tmp_path / "d", LABELS, "eval.choices=[billing, account, technical, shipping, returns]")
    assert plan.eval.mode == "choices" and "eval.choices lists the 5 allowed labels" in plan.eval.mode_reason
    free_text = LABELS.replace('completion: " {{ queue }}"', 'completion: " {{ text }}"')
    plan = _plan(tmp_path / "e", free_text, "eval.mode=choices")
    assert plan.eval.mode == "choices" and plan.eval.stop == () and plan.eval.mode_reason == "the spec says so"


def test_a_metrics_only_change_rekeys_only_the_scoring_steps_and_the_report(tmp_path):
    before = {s.name: s.key for s in _plan(tmp_path / "a", LABELS).steps}
    after = {s.name: s.key for s in _plan(tmp_path / "b", LABELS, "eval.metrics=[accuracy, f1_macro]").steps}
    assert list(before) == ["prepare_data", "generate_base", "eval_base", "train", "generate_tuned", "eval_tuned",
                            "report"]
    assert {n for n in before if before[n] != after[n]} == {"eval_base", "eval_tuned", "report"}
    # Perplexity needs the evaluated model: the generation steps compute it, so they re-key.
    ppl = {s.name: s.key for s in _plan(tmp_path / "c", LABELS, "eval.metrics=[accuracy, perplexity]").steps}
    assert {n for n in before if before[n] != ppl[n]} == {
        "generate_base", "eval_base", "generate_tuned", "eval_tuned", "report"}


def test_diff_lists_only_the_scoring_steps_for_a_metrics_change(tmp_path):
    from ftspec.plan.diff import diff_plans

    old = _plan(tmp_path / "a", LABELS)
    new = _plan(tmp_path / "b", LABELS, "eval.metrics=[accuracy, f1_macro]")
    d = diff_plans(old, new)
    assert d.rerun == ["eval_base", "eval_tuned", "report"]
    assert d.reused == ["prepare_data", "generate_base", "train", "generate_tuned"]


def test_a_preference_spec_is_evaluated_on_its_held_out_pairs(tmp_path):
    body = """
data:
  train: tickets.jsonl
  split: {test: 0.1, seed: 1}
  derive: {wrong: "{{ 'billing' if queue != 'billing' else 'account' }}"}
format: {kind: preference, prompt: "Request: {{ text }}\\nQueue:", chosen: " {{ queue }}", rejected: " {{ wrong }}"}
"""
    plan = _plan(tmp_path, body.replace("method: {kind: sft, adapter: full}", ""), "method.kind=dpo")
    e = plan.eval
    assert e.enabled and e.split == "test"
    assert [m.name for m in e.metrics] == ["preference_accuracy", "logprob_margin", "reward_accuracy", "reward_margin"]
    assert e.outputs == ("pair_logprobs",), "nothing is generated unless a metric asks for answers"
    assert [s.name for s in plan.steps] == ["prepare_data", "generate_base", "eval_base", "train", "generate_tuned",
                                            "eval_tuned", "report"]
    without = _plan(tmp_path / "b", body, "method.kind=dpo", "eval.baseline=false")
    assert [m.name for m in without.eval.metrics] == ["preference_accuracy", "logprob_margin"]


def test_preference_metrics_are_refused_where_they_cannot_be_computed(tmp_path):
    from ftspec.core.errors import SpecError

    with pytest.raises(SpecError, match="preference_accuracy scores preference pairs"):
        _plan(tmp_path / "a", LABELS, "eval.metrics=[preference_accuracy]")
    with pytest.raises(SpecError, match="there is no answer to extract"):
        _plan(tmp_path / "b", LABELS, "eval.metrics=[{name: reward_margin, extract: {regex: x}}]")


# ----------------------------------------------------------------------------- on a tiny model


def test_a_metrics_only_change_rescores_the_saved_answers_without_generating_again(tmp_path):
    pytest.importorskip("torch")
    from ftspec.backends.executor import execute
    from ftspec.plan.compile import find_root

    spec = _spec(tmp_path, LABELS + "eval: {limit: 6}\n")

    def run(*sets):
        plan = compile_spec(spec, sets=sets)[0]
        return execute(plan, find_root(spec), echo=lambda _: None)

    first = run()
    assert first.ran == [s.name for s in first.plan.steps]
    second = run("eval.metrics=[accuracy, f1_macro]")
    assert second.ran == ["eval_base", "eval_tuned", "report"]
    assert second.outcome("generate_base").state == "reused" and second.outcome("generate_tuned").state == "reused"
    answers = lambda result: [r["prediction"] for r in  # noqa: E731
                              map(json.loads, (result.step_dir("eval_tuned") / "predictions.jsonl").read_text()
                                  .splitlines())]
    assert answers(second) == answers(first), "the saved answers were scored again"
    assert set(second.report["tuned"]) >= {"accuracy", "f1_macro"}


def test_label_like_answers_stop_generation_at_a_newline(tmp_path, monkeypatch):
    """A model that writes " shop\\nxyz" and then dots: with the plan's resolved stop it
    writes " shop\\n" and stops, instead of running to max_new_tokens."""
    pytest.importorskip("torch")

    from ftspec.runtime.evaluation import evaluate as E
    from ftspec.runtime.models import byte_tokenizer
    from ftspec.runtime.training.splits import build_splits

    plan = _plan(tmp_path, LABELS, "eval.mode=generate", "eval.max_new_tokens=40", "eval.limit=3")
    assert plan.eval.stop == ("\n",)
    splits, _ = build_splits(plan.data, plan.format, tmp_path)
    data = tmp_path / "data"
    data.mkdir()
    for name, records in splits.items():
        (data / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    tok = byte_tokenizer()
    model = successor_model(tok, end=None)
    spy = Spy(model, monkeypatch)
    summary, rows = E.generate_outputs(model, tok, plan.eval, plan.format.kind, plan.training.max_length, data,
                                       baseline=False)
    assert {r["prediction"] for r in rows} == {" shop"}
    assert spy.generated and max(spy.generated) <= len(" shop\n"), "generation stopped at the newline"


# The documented bounds of "a small closed set of short labels" (ftspec/checks/evalmode.py), by
# number: a change to one is a change to what specs mean, made here on purpose.
def _rows(labels: list[str], each: int) -> list[dict]:
    return [{"text": f"t{i}-{j}", "queue": label} for i, label in enumerate(labels) for j in range(each)]


def _resolved(answers: list[str]):
    from ftspec.checks.evalmode import resolve

    return resolve("auto", None, None, "prompt_completion", answers, answers)


def test_the_label_bounds_are_the_documented_numbers():
    from ftspec.checks import evalmode

    assert (evalmode.MAX_LABELS, evalmode.MAX_LABEL_CHARS, evalmode.MIN_ROWS_PER_LABEL) == (20, 40, 3)


def test_twenty_distinct_labels_are_labels_and_twenty_one_are_not(tmp_path):
    twenty = [f"queue{i:02d}" for i in range(20)]
    plan = _plan(tmp_path / "a", """
data: {train: tickets.jsonl, split: {test: 0.1, seed: 1}}
format: {kind: prompt_completion, prompt: "{{ text }}:", completion: " {{ queue }}"}
""", rows=_rows(twenty, 3))
    assert plan.eval.mode == "choices", plan.eval.mode_reason
    assert "closed set of 20 labels" in plan.eval.mode_reason
    assert "choices because the answers form a closed set of 20 labels" in render_plan(plan)
    plan = _plan(tmp_path / "b", """
data: {train: tickets.jsonl, split: {test: 0.1, seed: 1}}
format: {kind: prompt_completion, prompt: "{{ text }}:", completion: " {{ queue }}"}
""", rows=_rows(twenty + ["queue20"], 3))
    assert plan.eval.mode == "generate"
    assert plan.eval.mode_reason.startswith("21 distinct answers in 63 sampled training rows "
                                            "(at most 20 make a set of labels)"), plan.eval.mode_reason
    assert "generate because 21 distinct answers" in render_plan(plan)


def test_a_label_of_forty_characters_is_short_and_one_of_forty_one_is_not():
    forty, forty_one = "b" * 40, "c" * 41
    assert _resolved(["a"] * 3 + [forty] * 3).mode == "choices"
    over = _resolved(["a"] * 3 + [forty_one] * 3)
    assert over.mode == "generate"
    assert over.reason.startswith(f"the answer {forty_one!r} is not a short label "
                                  "(one line of at most 40 characters)"), over.reason
    # Counted in characters, not bytes: forty accented letters are forty characters.
    assert _resolved(["a"] * 3 + ["é" * 40] * 3).mode == "choices"
    # One line: a newline makes an answer free text whatever its length.
    assert _resolved(["a"] * 3 + ["x\ny"] * 3).mode == "generate"


def test_labels_repeat_three_times_on_average_or_are_not_labels():
    labels = ["a", "b", "c", "d"]
    assert _resolved(labels * 3).mode == "choices"  # 12 rows for 4 answers: 3 each
    under = _resolved(labels * 3 + ["e"] * 2)  # 14 rows for 5 answers: under 3 each
    assert under.mode == "generate"
    assert under.reason.startswith("5 distinct answers in 14 sampled training rows: they do not repeat enough"), \
        under.reason
    assert _resolved(labels * 3 + ["e"] * 3).mode == "choices"  # 15 rows for 5: exactly 3 each
