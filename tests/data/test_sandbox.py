"""The sandbox counts the work a rendering does in steps (ftspec.data.sandbox.MAX_STEPS):
loops, calls, lookups and filters, weighed by the items they go through. What stops a
template that would never end is that count, the same on every machine and in every
thread; a wall clock is a backstop only, and no test here asserts on one."""

from __future__ import annotations

import threading

import pytest

from ftspec.data import sandbox
from ftspec.data import templates as tpl

HANG = 60.0  # a hang detector for the thread below, not a speed claim

STEPS = f"rendering took more than {sandbox.MAX_STEPS} steps (a huge loop?)"


def _steps(source: str, row: dict | None = None, env=None) -> int:
    """The steps one rendering of ``source`` takes."""
    template = (env or tpl.environment()).from_string(source)
    with sandbox.metered() as meter:
        template.render(row or {})
    return meter.steps


def _refusal(source: str, **kwargs) -> str:
    with pytest.raises(sandbox.TemplateLimit) as info:
        tpl.render(tpl.environment().from_string(source), {}, **kwargs)
    return str(info.value)


@pytest.mark.parametrize("source", [
    "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}",
    "{% for i in range(10000) %}{% for j in range(10000) if j < 0 %}{{ j }}{% endfor %}{% endfor %}",
    "{% for i in range(10000) %}{% for j in range(10000) %}{{ loop.index }}{% endfor %}{% endfor %}",
    "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}",
    "{% for x in [range(10000)] * 10000 recursive %}{% if x is iterable %}{{ loop(x) }}{% endif %}{% endfor %}",
    "{% for i in range(10000) %}{{ range(10000) | map('string') | map('upper') | list | length }}{% endfor %}",
    "{% set s = 'x' * 900000 %}{% for i in range(10000) %}{% for j in range(10000) %}{{ s.count('y') }}"
    "{% endfor %}{% endfor %}",
    "{% set s = 'x' * 900000 %}{% for i in range(10000) %}{% for j in range(10000) %}{{ 'y' in s }}"
    "{% endfor %}{% endfor %}",
    "{% for i in range(10000) %}{{ lipsum(1000) | length }}{% endfor %}",
], ids=["nested-loops", "loop-if-skips", "loop-variable", "macro-fan-out", "recursive-loop", "lazy-filters",
        "str-method-on-long-text", "comparison-on-long-text", "lipsum"])
def test_endless_work_is_stopped_by_the_step_count_alone(source):
    """With the wall-clock backstop off (seconds=0), the count alone stops each."""
    assert _refusal(source, seconds=0) == STEPS


def test_a_rendering_off_the_main_thread_is_bounded():
    """No signal reaches a worker thread: the step count stops its rendering too."""
    errors: list[BaseException] = []

    def work():
        try:
            tpl.render(tpl.environment().from_string(
                "{% for i in range(10000) %}{% for j in range(10000) %}{% endfor %}{% endfor %}"), {})
        except BaseException as exc:  # noqa: BLE001 (handed back to the test)
            errors.append(exc)

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    worker.join(HANG)
    assert not worker.is_alive(), "the rendering did not end"
    assert [str(e) for e in errors] == [STEPS]


def test_steps_count_what_the_template_does():
    assert _steps("{% for i in range(1000) %}{% endfor %}") < 1010
    # A loop's `if` skips items, but drawing them is still work.
    assert _steps("{% for i in range(1000) if i < 0 %}{% endfor %}") >= 1000
    # A method that reads a long text costs a step per STEP_CHARS of it.
    assert _steps("{{ text.count('y') }}", {"text": "x" * 100 * sandbox.STEP_CHARS}) >= 100
    # A macro call costs MACRO_STEPS.
    assert _steps("{% macro f() %}{% endmacro %}{% for i in range(100) %}{{ f() }}{% endfor %}") >= 100 * (
        sandbox.MACRO_STEPS + 1)


def test_ordinary_chat_templates_take_few_steps():
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": "hello there " * 200} for i in range(40)]
    for name in ("chatml", "plain-chat"):
        text = next(e.read_text() for e in tpl.builtin_dir().iterdir() if e.name.startswith(name + "."))
        steps = _steps(text, {"messages": messages, "add_generation_prompt": True, "bos_token": "",
                              "eos_token": "</s>"}, env=tpl.chat_environment())
        assert 0 < steps < sandbox.MAX_STEPS // 100, (name, steps)


def test_the_renderings_of_a_command_share_one_step_budget():
    budget = tpl.RenderBudget(seconds=3600, steps=25_000)  # the seconds: a backstop, far off
    template = tpl.environment().from_string("{% for i in range(10000) %}{% endfor %}")
    tpl.render(template, {}, seconds=0, budget=budget)
    tpl.render(template, {}, seconds=0, budget=budget)
    assert 20_000 <= budget.steps_spent <= 20_100
    with pytest.raises(sandbox.TemplateLimit) as info:
        tpl.render(template, {}, seconds=0, budget=budget)
    assert str(info.value) == "rendering the sample rows took more than 25000 steps in all (a slow template?)"
    with pytest.raises(sandbox.TemplateLimit) as info:  # and nothing more runs once it is spent
        tpl.render(tpl.environment().from_string("{{ 1 }}"), {}, seconds=0, budget=budget)
    assert "took more than 25000 steps in all" in str(info.value)


def test_counting_changes_nothing_a_template_renders():
    source = ("{% for x in items if x != 2 %}{{ loop.index }}/{{ loop.length }}:{{ x }}{{ ',' if not loop.last }}"
              "{% else %}none{% endfor %}|{% for k, v in pairs | dictsort %}{{ k }}={{ v }}{% endfor %}|"
              "{% for x in [[1, [2]], [3]] recursive %}[{% if x is iterable %}{{ loop(x) }}{% else %}{{ x }}"
              "{% endif %}]{% endfor %}|{{ items | map('string') | join('-') }}|{{ items | select('odd') | list }}"
              "|{% for c in '' %}{% else %}empty{% endfor %}|{{ 1 < 2 < 3 }}{{ 'a' in 'abc' }}{{ 3 not in items }}")
    out = tpl.render(tpl.chat_environment().from_string(source), {"items": [1, 2, 3], "pairs": {"b": 2, "a": 1}})
    assert out == "1/2:1,2/2:3|a=1b=2|[[1][[2]]][[3]]|1-2-3|[1, 3]|empty|TrueTrueFalse"
