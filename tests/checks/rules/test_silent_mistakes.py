"""Checks that catch quiet mistakes (issue 12, item 4): each a warning at the line of
the template or key concerned (an error with --strict), whose message says the fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ftspec.cli import main

ROWS = 40
ONLY = "warning: only"  # the small-data warning every spec here draws


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def tickets(n: int = ROWS, start: int = 0) -> list[dict]:
    return [{"text": f"ticket {i}", "queue": ["billing", "account", "returns"][i % 3]} for i in range(start, start + n)]


SPEC = """\
ftspec: 1
name: demo
model: {kind: tiny}
data:
  train: train.jsonl
  split: {validation: 0.2, test: 0.2}
format:
  kind: prompt_completion
  prompt: "Request: {{ text }}"
  completion: " {{ queue }}"
"""


def validate(tmp_path: Path, monkeypatch, spec: str, files: dict, *args: str) -> tuple[int, list[str]]:
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    (tmp_path / "spec.yaml").write_text(spec, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["validate", *args, "spec.yaml"])
    assert "Traceback" not in result.output
    return result.exit_code, [line for line in result.stderr.splitlines() if ONLY not in line]


def test_the_plain_spec_draws_none_of_these_warnings(tmp_path, monkeypatch):
    code, lines = validate(tmp_path, monkeypatch, SPEC, {"train.jsonl": _jsonl(tickets())})
    assert (code, lines) == (0, [])


# --------------------------------------------------------------------------- 1. one answer for every row


def test_a_completion_that_is_the_same_for_every_row(tmp_path, monkeypatch):
    spec = SPEC.replace('" {{ queue }}"', "\" {{ 'yes' if queue == 1 else 'no' }}\"")
    code, lines = validate(tmp_path, monkeypatch, spec, {"train.jsonl": _jsonl(tickets())})
    assert code == 0 and lines == [
        "spec.yaml:10:15: format.completion: warning: renders to the same text, ' no', for all 40 sampled training "
        "rows: the model would learn one answer for everything; make it depend on the row (a condition that is never "
        "true? a CSV value is text: compare label == \"1\", not label == 1)"]
    code, lines = validate(tmp_path, monkeypatch, spec, {}, "--strict")
    assert code == 2 and any(line.startswith("spec.yaml:10:15: format.completion: warning: renders") for line in lines)


def test_an_assistant_turn_and_a_rejected_answer_that_never_change(tmp_path, monkeypatch):
    chat = SPEC.replace('  kind: prompt_completion\n  prompt: "Request: {{ text }}"\n  completion: " {{ queue }}"\n',
                        '  kind: chat\n  chat_template: {builtin: chatml}\n  messages:\n'
                        '    - {role: user, content: "{{ text }}"}\n'
                        '    - {role: assistant, content: "ok"}\n')
    _, lines = validate(tmp_path, monkeypatch, chat, {"train.jsonl": _jsonl(tickets())})
    assert [line[:60] for line in lines] == ["spec.yaml:12:34: format.messages.1.content: warning: renders"]
    pref = SPEC.replace('  kind: prompt_completion\n  prompt: "Request: {{ text }}"\n  completion: " {{ queue }}"\n',
                        '  kind: preference\n  prompt: "{{ text }}"\n  chosen: "{{ queue }}"\n  rejected: "none"\n'
                        ) + "method: {kind: dpo}\n"
    _, lines = validate(tmp_path, monkeypatch, pref, {})
    assert [line[:50] for line in lines] == ["spec.yaml:11:13: format.rejected: warning: renders"]


# --------------------------------------------------------------------------- 2. labels of a classification metric


def test_a_classification_metric_on_a_test_split_of_one_class(tmp_path, monkeypatch):
    spec = SPEC.replace("  split: {validation: 0.2, test: 0.2}\n", "  test: test.jsonl\n  split: {validation: 0.2}\n")
    spec += "eval:\n  metrics: [exact_match, f1_macro]\n"
    test = [{"text": f"other {i}", "queue": "billing"} for i in range(10)]
    _, lines = validate(tmp_path, monkeypatch, spec, {"train.jsonl": _jsonl(tickets()), "test.jsonl": _jsonl(test)})
    assert lines == [
        "spec.yaml:13:26: eval.metrics.1: warning: f1_macro is scored on the test split, but all 10 sampled test "
        "references are 'billing': one class, so a model that always answers it scores perfectly; evaluate on rows "
        "of every label (e.g. data.split: {test: 0.1, stratify: COLUMN}) or choose a metric for text"]


def test_a_classification_metric_whose_labels_are_not_in_training(tmp_path, monkeypatch):
    spec = SPEC.replace("  split: {validation: 0.2, test: 0.2}\n", "  test: test.jsonl\n  split: {validation: 0.2}\n")
    spec += "eval:\n  metrics: [accuracy]\n"
    test = [{"text": f"other {i}", "queue": ["Billing", "account", "shipping"][i % 3]} for i in range(9)]
    _, lines = validate(tmp_path, monkeypatch, spec, {"train.jsonl": _jsonl(tickets()), "test.jsonl": _jsonl(test)})
    assert lines == [
        "spec.yaml:13:13: eval.metrics.0: warning: 6 of 9 sampled test references have labels that no sampled "
        "training row has ('Billing', 'shipping'; e.g. test.jsonl row 1): the model is never taught them; check how "
        "the labels are spelled in each file, or split one file with data.split (stratify: COLUMN keeps every label "
        "in every split)"]


# --------------------------------------------------------------------------- 3. text compared with a number


def test_a_csv_column_compared_with_a_number(tmp_path, monkeypatch):
    spec = SPEC.replace("train: train.jsonl", "train: train.csv").replace(
        '" {{ queue }}"', "\" {{ 'urgent' if priority == 1 else 'later' }} {{ queue }}\"")
    csv = "text,queue,priority\n" + "".join(f"ticket {i},{['billing', 'account'][i % 2]},{i % 2}\n"
                                            for i in range(ROWS))
    _, lines = validate(tmp_path, monkeypatch, spec, {"train.csv": csv})
    assert lines == [
        "spec.yaml:10:15: format.completion: warning: compares 'priority' with the number 1, but 'priority' is read "
        "from train.csv, a CSV file, as text ('1' is not 1): 'priority == 1' is never true; write priority == \"1\" "
        "or priority | int == 1"]


def test_a_derived_column_compared_with_a_number_and_an_order(tmp_path, monkeypatch):
    spec = SPEC.replace("  split:",
                        "  derive:\n    n: \"{{ text | length }}\"\n"
                        "    long: \"{{ 'y' if n > 5 else 'n' }}\"\n  split:")
    _, lines = validate(tmp_path, monkeypatch, spec, {"train.jsonl": _jsonl(tickets())})
    assert lines[0].startswith("spec.yaml:8:11: data.derive.long: compares 'n' with the number 5, but 'n' is a "
                               "derived column: a template's output is text ('5' is not 5): "
                               "'n > 5' fails on every row; "
                               "write n > \"5\" or n | int > 5"), lines


def test_a_json_number_compared_with_a_number_is_fine(tmp_path, monkeypatch):
    rows = [dict(r, priority=i % 2) for i, r in enumerate(tickets())]
    spec = SPEC.replace('" {{ queue }}"', "\" {{ 'urgent' if priority == 1 else 'later' }} {{ queue }}\"")
    assert validate(tmp_path, monkeypatch, spec, {"train.jsonl": _jsonl(rows)}) == (0, [])


# --------------------------------------------------------------------------- 4. held-out rows that are training rows


def test_a_test_file_that_is_a_copy_of_the_training_file(tmp_path, monkeypatch):
    spec = SPEC.replace("  split: {validation: 0.2, test: 0.2}\n", "  test: test.jsonl\n  split: {validation: 0.2}\n")
    rows = _jsonl(tickets())
    _, lines = validate(tmp_path, monkeypatch, spec, {"train.jsonl": rows, "test.jsonl": rows})
    assert lines == [
        "spec.yaml:6:9: data.test: warning: 40 of the 40 sampled rows of test.jsonl are also rows of train.jsonl (e.g. "
        "row 1): the model is tested on rows it trained on; remove data.test and add test: 0.1 to data.split"]


def test_a_test_split_read_from_the_training_file_says_how_to_split(tmp_path, monkeypatch):
    spec = SPEC.replace("  split: {validation: 0.2, test: 0.2}\n", "  validation: train.jsonl\n  test: ./train.jsonl\n")
    _, lines = validate(tmp_path, monkeypatch, spec, {"train.jsonl": _jsonl(tickets())})
    assert lines == [
        "spec.yaml:6:15: data.validation: warning: reads the same data as data.train: the model is validated on rows "
        "it trained on; remove data.validation and hold rows out of data.train with data.split: {validation: 0.1}",
        "spec.yaml:7:9: data.test: warning: reads the same data as data.train: the model is tested on rows it trained "
        "on; remove data.test and hold rows out of data.train with data.split: {test: 0.1}",
        "spec.yaml:7:9: data.test: warning: reads the same data as data.validation; the test split should be rows that "
        "nothing was tuned on"]


def test_a_test_file_that_shares_some_training_rows(tmp_path, monkeypatch):
    spec = SPEC.replace("  split: {validation: 0.2, test: 0.2}\n", "  test: test.jsonl\n  split: {validation: 0.2}\n")
    test = tickets(8, start=1000) + tickets(2, start=7)
    _, lines = validate(tmp_path, monkeypatch, spec, {"train.jsonl": _jsonl(tickets()), "test.jsonl": _jsonl(test)})
    assert lines == [
        "spec.yaml:6:9: data.test: warning: 2 of the 10 sampled rows of test.jsonl are also rows of train.jsonl (e.g. "
        "row 9): the model is tested on rows it trained on; remove the training rows from test.jsonl"]


# --------------------------------------------------------------------------- 5. rows cut at max_length


def test_rows_longer_than_max_length_with_a_byte_tokenizer(tmp_path, monkeypatch):
    spec = SPEC + "training: {max_length: 32}\n"
    rows = [dict(r, text=r["text"] + " please" * (3 if i % 4 else 0)) for i, r in enumerate(tickets())]
    _, lines = validate(tmp_path, monkeypatch, spec, {"train.jsonl": _jsonl(rows)})
    assert lines == [
        "spec.yaml:11:24: training.max_length: warning: 30 of 40 sampled training rows (75%) are longer than "
        "max_length 32 tokens (one a byte, so this is exact); their ends are cut off, answers included (the longest "
        "is 48); raise training.max_length to 48 or more, or shorten the prompt"]


def test_a_few_long_rows_are_not_worth_a_warning(tmp_path, monkeypatch):
    spec = SPEC + "training: {max_length: 32}\n"
    rows = [dict(r, text=r["text"] + " please" * (3 if i == 0 else 0)) for i, r in enumerate(tickets())]
    assert validate(tmp_path, monkeypatch, spec, {"train.jsonl": _jsonl(rows)}) == (0, [])


def test_rows_longer_than_max_length_of_a_pretrained_model_are_estimated(tmp_path, monkeypatch):
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "llama", "max_position_embeddings": 4096}')
    (model / "model.safetensors").write_bytes(b"")
    spec = SPEC.replace("model: {kind: tiny}", "model: {base: ./m}") + "training: {max_length: 16}\n"
    rows = [dict(r, text=r["text"] + " please" * 20) for r in tickets()]
    _, lines = validate(tmp_path, monkeypatch, spec, {"train.jsonl": _jsonl(rows)})
    assert len(lines) == 1 and "estimated at 4 characters a token" in lines[0] and lines[0].startswith(
        "spec.yaml:11:24: training.max_length: warning: 40 of 40 sampled training rows (100%)"), lines


# --------------------------------------------------------------------------- 6. extraction that finds nothing


def test_an_extract_regex_that_finds_nothing_in_some_references(tmp_path, monkeypatch):
    spec = SPEC.replace("  split: {validation: 0.2, test: 0.2}\n", "  test: test.jsonl\n  split: {validation: 0.2}\n")
    spec += "eval:\n  metrics:\n    - name: exact_match\n      extract: {regex: '#### (\\d+)'}\n"
    train = [{"text": f"q{i}", "queue": f"so {i} #### {i}"} for i in range(ROWS)]
    test = [{"text": f"q{i}", "queue": f"so {i} #### {i}" if i % 4 else f"{i}"} for i in range(100, 112)]
    _, lines = validate(tmp_path, monkeypatch, spec, {"train.jsonl": _jsonl(train), "test.jsonl": _jsonl(test)})
    assert lines == [
        "spec.yaml:15:16: eval.metrics.0.extract: warning: the extract regex finds no answer in 3 of 12 sampled test "
        "references, e.g. test.jsonl row 1: '100'; make the regex match how the references write their answers"]


def test_an_extract_template_that_finds_nothing_in_drawn_references(tmp_path, monkeypatch):
    spec = SPEC + ("eval:\n  metrics:\n    - name: exact_match\n"
                   "      extract: {template: \"{{ text.split('####')[1] if '####' in text else '' }}\"}\n")
    train = [{"text": f"q{i}", "queue": f"so {i} #### {i}" if i % 2 else "no answer"} for i in range(ROWS)]
    _, lines = validate(tmp_path, monkeypatch, spec, {"train.jsonl": _jsonl(train)})
    assert lines == [
        "spec.yaml:14:16: eval.metrics.0.extract: warning: the extract template finds no answer in 20 of 40 sampled "
        "training references (the test rows are drawn from them), e.g. train.jsonl row 1: 'no answer'; make the "
        "template match how the references write their answers"]


@pytest.mark.parametrize("spec_name", ["quickstart", "routing-lora", "chat-sft", "dpo-preference", "routing-prod"])
def test_shipped_specs_draw_none_of_these_warnings(spec_name, in_root):
    from ftspec.plan.compile import check_spec

    checked = check_spec(in_root / "specs" / f"{spec_name}.yaml")
    words = ("renders to the same text", "scored on the", "compares '", "also rows of", "longer than max_length",
             "finds no answer")
    assert not [w.format() for w in checked.warnings if any(x in w.message for x in words)]


# --------------------------------------------------------------------------- f1's positive label


def test_an_f1_positive_label_that_no_reference_has(tmp_path, monkeypatch):
    rows = [{"text": f"ticket {i}", "queue": ["yes", "no"][i % 2]} for i in range(ROWS)]
    spec = SPEC + "eval:\n  metrics:\n    - {name: f1, positive: 'yess'}\n"
    code, lines = validate(tmp_path, monkeypatch, spec, {"train.jsonl": _jsonl(rows)})
    assert code == 0 and len(lines) == 1, lines
    assert lines[0].startswith("spec.yaml:13:28: eval.metrics.0.positive: warning: 'yess' is not a label of any of "
                               "40 sampled training references (the test rows are drawn from them) ('no', 'yes')")
    assert "its F1 would be 0 whatever the model answers; did you mean 'yes'?" in lines[0]
    # Labels are compared as the scoring compares them (case-insensitively): 'Yes' is the label 'yes'.
    code, lines = validate(tmp_path, monkeypatch, spec.replace("'yess'", "'  Yes'"), {"train.jsonl": _jsonl(rows)})
    assert code == 0 and lines == [], lines
    fixed = spec.replace("positive: 'yess'", "positive: 'yes'")
    assert validate(tmp_path, monkeypatch, fixed, {"train.jsonl": _jsonl(rows)}) == (0, [])
