"""Hostile templates cannot run code, hang, or exhaust memory: each payload is
refused with a one-line error and exit status 2, within a second."""

from __future__ import annotations

import time

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


def _write(tmp_path, prompt: str, extra: str = "", eval_: str = "") -> None:
    (tmp_path / "train.jsonl").write_text(ROWS)
    quoted = "'" + prompt.replace("'", "''") + "'"
    (tmp_path / "spec.yaml").write_text(SPEC.format(prompt=quoted, extra=extra, eval=eval_))


def _validate(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    t0 = time.perf_counter()
    result = CliRunner().invoke(main, ["validate", "spec.yaml"])
    return result, time.perf_counter() - t0


def _refusals(output: str) -> list[str]:
    return [l for l in output.splitlines() if "refused" in l]


@pytest.mark.parametrize("payload", [p for _, p in PAYLOADS], ids=[i for i, _ in PAYLOADS])
def test_prompt_template_payload_is_refused(tmp_path, monkeypatch, payload):
    _write(tmp_path, payload)
    result, seconds = _validate(tmp_path, monkeypatch)
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), "no traceback"
    lines = _refusals(result.output)
    assert len(lines) == 1, result.output
    assert lines[0].startswith("train.jsonl:1: format.prompt: template refused")
    assert seconds < 1.0, f"took {seconds:.2f} s"


def test_derived_column_payload_is_refused(tmp_path, monkeypatch):
    _write(tmp_path, "{{ text }}", extra="  derive: {x: \"{{ cycler.__init__.__globals__ }}\"}\n")
    result, seconds = _validate(tmp_path, monkeypatch)
    assert result.exit_code == 2, result.output
    assert "train.jsonl:1: data.derive.x: template refused by the sandbox" in result.output
    assert seconds < 1.0


def test_chat_template_payload_is_refused(tmp_path, monkeypatch):
    (tmp_path / "train.jsonl").write_text(ROWS)
    (tmp_path / "evil.jinja").write_text("{% for m in messages %}{{ m.__class__.__mro__ }}{% endfor %}")
    (tmp_path / "spec.yaml").write_text(
        "ftspec: 1\nname: hostile\nmodel: {kind: tiny, hidden_size: 32, num_heads: 4}\n"
        "data: {train: train.jsonl, split: {validation: 0.25}}\n"
        "format:\n  kind: chat\n  chat_template: {file: evil.jinja}\n"
        "  messages:\n    - {role: user, content: '{{ text }}'}\n    - {role: assistant, content: '{{ queue }}'}\n"
        "training: {max_length: 256}\n")
    result, seconds = _validate(tmp_path, monkeypatch)
    assert result.exit_code == 2
    assert "format.chat_template: template refused by the sandbox" in result.output
    assert seconds < 1.0


def test_extraction_and_rubric_payloads_are_refused(tmp_path, monkeypatch):
    eval_ = ("eval:\n  metrics:\n"
             "    - {name: exact_match, extract: {template: \"{% for i in range(10000) %}{% for j in range(10000) "
             "%}x{% endfor %}{% endfor %}\"}}\n"
             "    - {name: judge, model: org/judge, rubric: \"{{ prediction.__class__ }}\"}\n")
    _write(tmp_path, "{{ text }}", eval_=eval_)
    result, seconds = _validate(tmp_path, monkeypatch)
    assert result.exit_code == 2, result.output
    # Refused by time or, since it writes as it loops, by the size of its output first.
    assert ("eval.metrics.0.extract.template: template refused: rendering took longer than" in result.output
            or "eval.metrics.0.extract.template: template refused: rendered text longer than" in result.output)
    assert "eval.metrics.1.rubric: template refused by the sandbox" in result.output
    assert seconds < 2.0


def test_ordinary_templates_still_work(tmp_path, monkeypatch):
    _write(tmp_path, "{% for w in text.split() %}{{ w | upper }} {% endfor %}{{ '%s' | format(queue) }} "
                     "{{ 'ab' * 3 }} {{ range(5) | join(',') }}")
    result, _ = _validate(tmp_path, monkeypatch)
    assert result.exit_code == 0, result.output
    from ftspec.data.templates import environment, render

    assert render(environment().from_string("{{ 'ab' * 3 }} {{ 2 ** 10 }} {{ range(3) | join(',') }}"),
                  {}) == "ababab 1024 0,1,2"
