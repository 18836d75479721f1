"""ftspec.checks.rules.templates: names the templates read, sample rows that render,
chat templates, extraction templates and rubrics tried on sample values, chat data
without a chat template."""

from __future__ import annotations

import json

from checks.conftest import BASE, at, tickets


def test_a_template_name_that_is_not_a_column(issues):
    found = issues(BASE.replace("{{ queue }}", "{{ label }}"))
    messages = at(found, "format.completion")
    assert len(messages) == 1 and "'label'" in messages[0]
    assert [i.pos.line for i in found if i.key == "format.completion"] == [10]
    assert not at(issues(BASE), "format.completion")


def test_a_sample_row_that_does_not_render_is_reported_at_its_line(issues):
    rows = tickets(700).splitlines()
    rows[2] = json.dumps({"text": "ticket 2", "queue": None})
    found = [i for i in issues(BASE, {"train.jsonl": "\n".join(rows) + "\n"}) if i.pos.file.endswith("train.jsonl")]
    assert [(i.pos.line, i.key) for i in found] == [(3, "format.completion")], [i.format() for i in found]


def test_an_extraction_template_that_reads_a_name_it_is_not_given(issues):
    spec = BASE + "eval:\n  metrics:\n    - {name: exact_match, extract: {template: \"{{ answer }}\"}}\n"
    assert at(issues(spec), "eval.metrics.0.extract.template") == ["template uses 'answer'; it can use only text"]
    fine = BASE + "eval:\n  metrics:\n    - {name: exact_match, extract: {template: \"{{ text | trim }}\"}}\n"
    assert not at(issues(fine), "eval.metrics.0.extract.template")


CHAT = """\
ftspec: 1
name: demo
model: {kind: tiny}
data:
  train: train.jsonl
  split: {validation: 0.1, test: 0.1}
format:
  kind: chat
  messages:
    - {role: user, content: "{{ text }}"}
    - {role: assistant, content: "{{ queue }}"}
compute: {device: cpu}
"""


def test_chat_data_needs_a_chat_template(issues):
    found = [i for i in issues(CHAT) if i.key == "format.kind"]
    assert [(i.message, i.hint) for i in found] == [
        ("a tiny model's tokenizer has no chat template; set format.chat_template",
         "e.g. chat_template: {builtin: chatml}")]
    assert not at(issues(CHAT.replace("  kind: chat\n", "  kind: chat\n  chat_template: {builtin: chatml}\n")),
                  "format.kind")
