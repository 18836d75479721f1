"""Messages that say the fix (issue 12, item 6): YAML syntax errors in plain words at the
line that is wrong; schema errors that do not hide template and data errors; a
headerless CSV/TSV; `method: lora`; a missing data file's "did you mean"."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ftspec.cli import main
from ftspec.core.errors import SpecError
from ftspec.spec.load import parse_yaml

# --------------------------------------------------------------------------- YAML syntax, in words, at the right line

# (what is wrong, the YAML, the one line expected: LINE:COL: message)
YAML_CASES = [
    ("key indented less than the keys above it",
     "ftspec: 1\nmodel:\n    kind: tiny\n  hidden_size: 64\n",
     "4:3: this key is indented less than line 3 above it (2 spaces, not 4): indent it by 4 spaces to stay in that "
     "block, or by 0 to end that block"),
    ("key indented one space less than its neighbours",
     "model:\n  kind: tiny\n hidden_size: 64\ndata: 1\n",
     "3:2: this key is indented less than line 2 above it (1 space, not 2): indent it by 2 spaces to stay in that "
     "block, or by 0 to end that block"),
    ("key indented more than a key that has a value",
     "ftspec: 1\nmodel:\n  kind: tiny\n    hidden_size: 64\n",
     "4:5: this key is indented more than the key above it (line 3), which already has a value; indent it by 2 "
     "spaces, like the key above"),
    ("tab in the indentation",
     "model:\n\tkind: tiny\n",
     "2:1: tab character in indentation; YAML indents with spaces only"),
    ("tab after a colon",
     "model:\n  kind:\ttiny\n",
     "2:8: a tab character here; YAML separates values with spaces only (replace the tab with a space)"),
    ("no space after the colon (PyYAML notices on the next line)",
     "ftspec: 1\nname:demo\nmodel:\n  kind: tiny\n",
     "2:1: 'name:demo' needs a space after the colon: name: demo"),
    ("no space after the colon, nested (PyYAML notices on the next line)",
     "model:\n  kind:tiny\n  hidden_size: 64\n",
     "2:3: 'kind:tiny' needs a space after the colon: kind: tiny"),
    ("no colon at all (PyYAML notices on the next line)",
     "ftspec: 1\nname demo\nmodel:\n  kind: tiny\n",
     "2:1: 'name demo' is not 'key: value': a key needs a colon and a space after it, "
     "and a list item starts with '- '"),
    ("unclosed double quote",
     'ftspec: 1\nname: "demo\nmodel:\n  kind: tiny\n',
     '2:7: this " is never closed: end the value with "'),
    ("unclosed single quote",
     "ftspec: 1\nname: 'demo\nmodel:\n  kind: tiny\n",
     "2:7: this ' is never closed: end the value with '"),
    ("unclosed bracket (PyYAML notices on the next line)",
     "ftspec: 1\nmetrics: [a, b\nmodel:\n  kind: tiny\n",
     "2:10: this '[' is never closed: end the list with ']'"),
    ("unclosed brace at the end of the file",
     "ftspec: 1\nsplit: {validation: 0.2\n",
     "2:8: this '{' is never closed: end the mapping with '}'"),
    ("a key without a value, then its list less indented than the key",
     "eval:\n  metrics:\n- accuracy\n- f1\ntraining: 1\n",
     "3:1: this list item is indented less than 'metrics:' (line 2) whose value it is meant to be; indent it by at "
     "least 2 spaces"),
    ("a list item among the keys of a mapping",
     "model:\n  kind: tiny\n  - a\n",
     "3:3: a list item among the keys of a mapping (line 2); a list is the value of a key: put it under a key ending "
     "with ':'"),
    ("a list item indented less than the items above it",
     "eval:\n  metrics:\n    - accuracy\n   - f1\n",
     "4:4: this list item is indented less than line 3 above it (3 spaces, not 4): indent it by 4 spaces to stay in "
     "that block, or by 2 to end that block"),
    ("a key after list items at the same indentation",
     "a:\n  - b\n  c: 1\n",
     "3:3: this key follows list items at the same indentation (line 2); a block holds list items or keys, not both: "
     "indent it less to end the list"),
    ("a key under a list item, indented like its dash",
     "eval:\n  metrics:\n    - name: exact_match\n    extract: {regex: x}\n",
     "4:5: this key is indented less than line 3 above it (4 spaces, not 6): indent it by 6 spaces to stay in that "
     "block, or by 2 to end that block"),
    ("text after a closing quote",
     'name: "demo" extra\n',
     "1:14: text after the end of the value; put the whole value inside quotes"),
    ("a value holding ': ' unquoted",
     "prompt: Answer: {{ x }}\n",
     "1:15: a second ': ' on one line; a value that holds ': ' must be quoted (e.g. \"Answer: {{ x }}\")"),
    ("a block scalar's text not indented",
     "prompt: |\nfoo\n",
     "2:1: the text of the block started on line 1 must be indented more than its key (indent 'foo' by 2 spaces)"),
    ("a value starting with a reserved character",
     "name: @demo\n",
     "1:7: a plain value cannot start with '@'; put the value in quotes (\"@…\")"),
    ("an unknown escape in double quotes",
     'path: "C:\\data\\x"\n',
     "1:11: '\\d' is not an escape in double quotes; write '\\\\d', or put the value in single quotes (a Windows "
     "path: use '/')"),
]


@pytest.mark.parametrize("what,text,expected", YAML_CASES, ids=[c[0] for c in YAML_CASES])
def test_yaml_syntax_errors_in_words_at_the_wrong_line(what, text, expected):
    with pytest.raises(SpecError) as err:
        parse_yaml(text, "f.yaml")
    [issue] = err.value.issues
    assert issue.format() == f"f.yaml:{expected}"
    assert "<block" not in issue.message and "while parsing" not in issue.message


def test_an_unquoted_template_is_not_taken_for_a_mapping():
    _, _, _, issues = parse_yaml("format:\n  prompt: {{ text }}\n", "f.yaml")
    [issue] = issues
    assert issue.format() == ("f.yaml:2:11: format.prompt: an unquoted '{' starts a YAML mapping; a jinja template "
                              "must be quoted: \"{{ … }}\"")


# --------------------------------------------------------------------------- one run, every kind of problem

SPEC = """\
ftspec: 1
name: demo
model: {kind: tiny}
data:
  train: train.jsonl
  validation: vaild.jsonl
format:
  kind: prompt_completion
  prompt: "Request: {{ txt }}"
  completion: " {{ queue }}"
training:
  epochz: 3
"""


def _rows(n: int = 20) -> str:
    return "".join(json.dumps({"text": f"ticket {i}", "queue": "ab"[i % 2]}) + "\n" for i in range(n))


def _validate(tmp_path: Path, monkeypatch, spec: str, files: dict, *args: str) -> list[str]:
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    (tmp_path / "spec.yaml").write_text(spec, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["validate", *args, "spec.yaml"])
    assert "Traceback" not in result.output
    return result.stderr.splitlines()


def test_schema_errors_do_not_hide_template_and_data_errors(tmp_path, monkeypatch):
    lines = _validate(tmp_path, monkeypatch, SPEC, {"train.jsonl": _rows(), "valid.jsonl": _rows(4)})
    assert lines == [
        "spec.yaml:6:15: data.validation: data file 'vaild.jsonl' not found; did you mean 'valid.jsonl'?",
        "spec.yaml:9:11: format.prompt: template uses 'txt', which is not a column; did you mean 'text'?",
        "spec.yaml:12:3: training.epochz: unknown key; did you mean 'epochs'?",
        "ftspec: 3 errors",
    ]


@pytest.mark.parametrize("broken,expected", [
    ("eval:\n  mode: choise\n", "spec.yaml:11:9: eval.mode: must be one of"),
    ("method: lora\n", "spec.yaml:10:9: method: 'lora' is an adapter, not a method: write method.adapter: lora"),
    ("compute: {device: gpu}\n", "spec.yaml:10:19: compute.device: must be one of"),
])
def test_a_wrong_section_does_not_hide_the_template_error(tmp_path, monkeypatch, broken, expected):
    spec = SPEC.replace("  validation: vaild.jsonl\n", "").replace("training:\n  epochz: 3\n", "") + broken
    lines = _validate(tmp_path, monkeypatch, spec, {"train.jsonl": _rows()})
    assert lines[0] == "spec.yaml:8:11: format.prompt: template uses 'txt', which is not a column; did you mean 'text'?"
    assert lines[1].startswith(expected) and lines[2] == "ftspec: 2 errors", lines


def test_what_reads_a_wrong_section_is_not_checked_with_its_default(tmp_path, monkeypatch):
    """`method: {kind: dpoo}`: method is set aside, and the rule that SFT needs no
    preference data (which would read the default, sft) is not applied."""
    spec = SPEC.replace("  validation: vaild.jsonl\n", "").replace("training:\n  epochz: 3\n", "")
    spec = spec.replace("kind: prompt_completion", "kind: preference").replace(
        '  completion: " {{ queue }}"\n', '  chosen: "{{ queue }}"\n  rejected: "x"\n') + "method: {kind: dpoo}\n"
    lines = _validate(tmp_path, monkeypatch, spec, {"train.jsonl": _rows()})
    assert len(lines) == 3 and lines[-1] == "ftspec: 2 errors", lines
    assert "template uses 'txt'" in lines[0] and "method.kind: unknown kind 'dpoo'" in lines[1]


def test_a_wrong_data_section_still_stops_at_the_schema(tmp_path, monkeypatch):
    spec = SPEC.replace("  train: train.jsonl\n", "  train: 3\n")
    lines = _validate(tmp_path, monkeypatch, spec, {"train.jsonl": _rows()})
    assert not any("format.prompt" in line for line in lines)
    assert any("data.train" in line for line in lines)


# --------------------------------------------------------------------------- `method: lora`


@pytest.mark.parametrize("value,expected", [
    ("lora",
     "method: 'lora' is an adapter, not a method: write method.adapter: lora; e.g. method: {kind: sft, adapter: lora}"),
    ("qlora",
     "method: 'qlora' is an adapter, not a method: write method.adapter: qlora; "
     "e.g. method: {kind: sft, adapter: qlora}"),
    ("dpo", "method: 'dpo' is the method's kind: write method.kind: dpo; e.g. method: {kind: dpo}"),
    ("sft", "method: 'sft' is the method's kind: write method.kind: sft; e.g. method: {kind: sft}"),
])
def test_method_given_as_a_word_says_where_the_word_goes(tmp_path, monkeypatch, value, expected):
    spec = SPEC.replace("  validation: vaild.jsonl\n", "").replace("training:\n  epochz: 3\n", "").replace(
        "{{ txt }}", "{{ text }}")
    lines = _validate(tmp_path, monkeypatch, spec + f"method: {value}\n", {"train.jsonl": _rows()})
    assert lines == [f"spec.yaml:10:9: {expected}", "ftspec: 1 error"]


def test_a_key_indented_out_of_its_section_is_named_with_its_section(tmp_path, monkeypatch):
    spec = SPEC.replace("  validation: vaild.jsonl\n", "split: {validation: 0.2}\n").replace(
        "training:\n  epochz: 3\n", "").replace("{{ txt }}", "{{ text }}")
    lines = _validate(tmp_path, monkeypatch, spec, {"train.jsonl": _rows()})
    assert lines == ["spec.yaml:6:1: split: unknown key; 'split' is a key of 'data': indent it under 'data:'",
                     "ftspec: 1 error"]


# --------------------------------------------------------------------------- a missing data file: did you mean


@pytest.mark.parametrize("written,present,hint", [
    ("vaild.jsonl", "valid.jsonl", "did you mean 'valid.jsonl'?"),
    ("valid.json", "valid.jsonl", "did you mean 'valid.jsonl'?"),
    ("valid.jsonl", "valid.csv", "did you mean 'valid.csv'?"),
    ("sub/vaild.jsonl", "sub/valid.jsonl", "did you mean 'sub/valid.jsonl'?"),
    ("nowhere/valid.jsonl", "valid.jsonl", "there is no folder 'nowhere'"),
])
def test_a_missing_data_file_gets_a_did_you_mean(tmp_path, monkeypatch, written, present, hint):
    (tmp_path / "sub").mkdir()
    spec = SPEC.replace("vaild.jsonl", written).replace("training:\n  epochz: 3\n",
                                                        "").replace("{{ txt }}", "{{ text }}")
    lines = _validate(tmp_path, monkeypatch, spec, {"train.jsonl": _rows(), present: "{}\n"})
    assert lines == [f"spec.yaml:6:15: data.validation: data file '{written}' not found; {hint}", "ftspec: 1 error"]


# --------------------------------------------------------------------------- a headerless CSV/TSV


HEADERLESS = """\
ftspec: 1
name: sst
model: {kind: tiny}
data:
  train: reviews.tsv
  split: {validation: 0.1}
format:
  kind: prompt_completion
  prompt: "Review: {{ sentence }}\\nSentiment:"
  completion: " {{ label }}"
"""


def _tsv(header: bool) -> str:
    rows = [f"review number {i} was {'great' if i % 2 else 'bad'} overall\t{i % 2}\n" for i in range(30)]
    return ("sentence\tlabel\n" if header else "") + "".join(rows)


def test_a_headerless_tsv_suggests_columns(tmp_path, monkeypatch):
    lines = _validate(tmp_path, monkeypatch, HEADERLESS, {"reviews.tsv": _tsv(False)})
    assert lines[0] == (
        "spec.yaml:5:10: data.train: the first row of reviews.tsv was read as its column names, but it looks like "
        "data ('review number 0 was bad…', '0'), and the templates use 'label', 'sentence', which are not "
        "columns; if the file has no header row, name its 2 columns in the file's order: "
        "{path: reviews.tsv, columns: [NAME1, NAME2]} (column 1 holds 'review number 0 was bad…'; column 2 holds '0')")
    assert lines[-1] == "ftspec: 3 errors"
    fixed = HEADERLESS.replace("train: reviews.tsv", "train: {path: reviews.tsv, columns: [sentence, label]}")
    lines = _validate(tmp_path, monkeypatch, fixed, {"reviews.tsv": _tsv(False)})
    assert lines == ["spec.yaml:5:10: data.train: warning: only 27 training rows; "
                     "fine-tuning usually needs 500 or more "
                     "to pay off"]


def test_a_tsv_whose_header_is_names_gets_no_columns_suggestion(tmp_path, monkeypatch):
    spec = HEADERLESS.replace("{{ label }}", "{{ labels }}")
    lines = _validate(tmp_path, monkeypatch, spec, {"reviews.tsv": _tsv(True)})
    assert not any("header" in line for line in lines) and lines[-1] == "ftspec: 1 error", lines
