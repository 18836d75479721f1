"""Hostile templates cannot run code, hang, or exhaust memory: each payload is
refused with a one-line error and exit status 2, by a limit that counts work (steps,
items, characters), never by a clock: the same refusal on any machine, however loaded."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from ftspec.cli import main

ROWS = "".join(f'{{"text": "request {i}", "queue": "billing"}}\n' for i in range(8))

SPEC = """ftspec: 1
name: hostile
model: {{kind: tiny, hidden_size: 32, num_heads: 4}}
data:
  train: train.jsonl
  split: {{validation: 0.25}}
{extra}format:
  kind: prompt_completion
  prompt: {prompt}
  completion: " {{{{ queue }}}}"
training: {{max_length: 256}}
{eval}"""

# (id, template) — each would read Python internals, run a command, or never end.
PAYLOADS = [
    ("mro-subclasses", "{{ ''.__class__.__mro__[1].__subclasses__() }}"),
    ("text-class-walk", "{{ text.__class__.__base__.__subclasses__() }}"),
    ("cycler-globals", "{{ cycler.__init__.__globals__.os.popen('id').read() }}"),
    ("joiner-globals", "{{ joiner.__init__.__globals__ }}"),
    ("namespace-globals", "{{ namespace.__init__.__globals__ }}"),
    ("lipsum-globals", "{{ lipsum.__globals__['os'] }}"),
    ("self-context", "{{ self._TemplateReference__context }}"),
    ("format-attribute", "{{ '{0.__class__.__init__.__globals__}'.format(text) }}"),
    ("format-map-attribute", "{{ '{x.__class__}'.format_map({'x': text}) }}"),
    ("attr-filter", "{{ text | attr('__class__') }}"),
    ("huge-range", "{% for i in range(100000000) %}{% endfor %}"),
    ("nested-loops", "{% for i in range(10000) %}{% for j in range(10000) %}{{ i }}{% endfor %}{% endfor %}"),
    ("recursion", "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}"),
    ("string-times", "{{ 'x' * 1000000000 }}"),
    ("percent-width", "{{ '%1000000000s' % 'a' }}"),
    ("format-filter-width", "{{ '%*s' | format(1000000000, 'a') }}"),
    ("center-width", "{{ 'a' | center(1000000000) }}"),
    ("huge-power", "{{ 9 ** 99999999 }}"),
    ("list-times", "{{ ([1] * 100000) * 100000 }}"),
]

# What stops the payloads that would never end or fill the memory: a count, not a clock.
STOPPED_BY = {
    "huge-range": "range() of more than 10000 items",
    "nested-loops": "rendering took more than 100000 steps",
    "recursion": "recursion too deep",
    "string-times": "'*' would build a value longer than 1000000 characters",
    "huge-power": "'**' exponent larger than 10000",
    "list-times": "'*' would build a value longer than 1000000 characters",
}


def _write(tmp_path, prompt: str, extra: str = "", eval_: str = "") -> None:
    (tmp_path / "train.jsonl").write_text(ROWS)
    quoted = "'" + prompt.replace("'", "''") + "'"
    (tmp_path / "spec.yaml").write_text(SPEC.format(prompt=quoted, extra=extra, eval=eval_))


def _validate(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return CliRunner().invoke(main, ["validate", "spec.yaml"])


def _refusals(output: str) -> list[str]:
    return [l for l in output.splitlines() if "refused" in l]


@pytest.mark.parametrize("name, payload", PAYLOADS, ids=[i for i, _ in PAYLOADS])
def test_prompt_template_payload_is_refused(tmp_path, monkeypatch, name, payload):
    _write(tmp_path, payload)
    result = _validate(tmp_path, monkeypatch)
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), "no traceback"
    lines = _refusals(result.output)
    assert len(lines) == 1, result.output
    assert lines[0].startswith("train.jsonl:1: format.prompt: template refused"), lines[0]
    assert STOPPED_BY.get(name, "") in lines[0], lines[0]


def test_derived_column_payload_is_refused(tmp_path, monkeypatch):
    _write(tmp_path, "{{ text }}", extra="  derive: {x: \"{{ cycler.__init__.__globals__ }}\"}\n")
    result = _validate(tmp_path, monkeypatch)
    assert result.exit_code == 2, result.output
    assert "train.jsonl:1: data.derive.x: template refused by the sandbox" in result.output


def test_chat_template_payload_is_refused(tmp_path, monkeypatch):
    (tmp_path / "train.jsonl").write_text(ROWS)
    (tmp_path / "evil.jinja").write_text("{% for m in messages %}{{ m.__class__.__mro__ }}{% endfor %}")
    (tmp_path / "spec.yaml").write_text(
        "ftspec: 1\nname: hostile\nmodel: {kind: tiny, hidden_size: 32, num_heads: 4}\n"
        "data: {train: train.jsonl, split: {validation: 0.25}}\n"
        "format:\n  kind: chat\n  chat_template: {file: evil.jinja}\n"
        "  messages:\n    - {role: user, content: '{{ text }}'}\n    - {role: assistant, content: '{{ queue }}'}\n"
        "training: {max_length: 256}\n")
    result = _validate(tmp_path, monkeypatch)
    assert result.exit_code == 2
    assert "format.chat_template: template refused by the sandbox" in result.output


def test_extraction_and_rubric_payloads_are_refused(tmp_path, monkeypatch):
    eval_ = ("eval:\n  metrics:\n"
             "    - {name: exact_match, extract: {template: \"{% for i in range(10000) %}{% for j in range(10000) "
             "%}x{% endfor %}{% endfor %}\"}}\n"
             "    - {name: judge, model: org/judge, rubric: \"{{ prediction.__class__ }}\"}\n")
    _write(tmp_path, "{{ text }}", eval_=eval_)
    result = _validate(tmp_path, monkeypatch)
    assert result.exit_code == 2, result.output
    # 100 000 steps write 100 000 characters, within the limit on text: the steps stop it.
    assert ("eval.metrics.0.extract.template: template refused: rendering took more than 100000 steps (a huge loop?)"
            in result.output), result.output
    assert "eval.metrics.1.rubric: template refused by the sandbox" in result.output


def test_ordinary_templates_still_work(tmp_path, monkeypatch):
    _write(tmp_path, "{% for w in text.split() %}{{ w | upper }} {% endfor %}{{ '%s' | format(queue) }} "
                     "{{ 'ab' * 3 }} {{ range(5) | join(',') }}")
    result = _validate(tmp_path, monkeypatch)
    assert result.exit_code == 0, result.output
    from ftspec.data.templates import environment, render

    assert render(environment().from_string("{{ 'ab' * 3 }} {{ 2 ** 10 }} {{ range(3) | join(',') }}"),
                  {}) == "ababab 1024 0,1,2"
