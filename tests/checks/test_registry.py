"""The rule table: every rule is registered with what it reads, a rule without reads is
refused, the rules run in their fixed order, and a spec the schema took only in part is
checked by exactly the rules that read none of what was set aside."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import ftspec.checks.rules as rules_package
from checks.conftest import BASE
from ftspec.checks.registry import RULES, WHOLE_SPEC, Registry, Rule, overlaps, rule
from ftspec.core.errors import Issue, Pos

# Today's order (the order the checks ran in before they were a table); see ftspec.checks.rules.
EXPECTED_ORDER = [
    "check_mixture", "check_rename", "check_template_names", "check_mixture_columns", "check_sample_rows",
    "check_filter", "check_mixture_rows", "check_other_templates",
    "check_method_format", "check_rewards", "check_feedback", "check_reward_model", "check_qlora_device",
    "check_precision",
    "check_attention", "check_batching", "check_lora_targets", "check_chat_template", "check_splits", "check_limit",
    "check_data_size",
    "check_model_revision", "check_max_length", "check_early_stopping", "check_eval", "check_json_schemas",
    "check_paths", "check_same_data",
    "check_choices", "check_batch_fits", "check_strategy", "check_qlora_sharding", "check_fsdp_wrap", "check_bedrock",
    "check_constant_answer", "check_classification_labels", "check_text_compared_with_number", "check_headerless",
    "check_held_out_overlap", "check_truncation", "check_extract_finds_nothing", "check_positive_label",
]


def test_every_rule_is_registered_with_what_it_reads():
    assert [r.name for r in RULES.rules] == EXPECTED_ORDER
    for r in RULES.rules:
        assert r.reads and all(isinstance(k, str) and k for k in r.reads), r


def test_every_check_function_of_the_rule_modules_is_registered():
    """A rule cannot exist outside the table: each module's check_* functions are decorated with @rule."""
    registered = {r.check for r in RULES.rules}
    found = []
    for info in pkgutil.iter_modules(rules_package.__path__):
        module = importlib.import_module(f"ftspec.checks.rules.{info.name}")
        tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("check_") and info.name != "stages":
                found.append(node.name)
                assert getattr(module, node.name) in registered, f"{info.name}.{node.name} is not registered"
    assert sorted(found) == sorted(EXPECTED_ORDER)


def test_a_rule_without_reads_is_refused():
    table = Registry()
    with pytest.raises(TypeError):
        table.rule()  # type: ignore[call-arg]
    for reads in ((), "data", ["data"], None):
        with pytest.raises(TypeError):
            table.rule(reads=reads)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        table.rule(reads=("data.",))


def test_a_rule_is_registered_once_and_never_after_the_order_is_fixed():
    table = Registry()

    @table.rule(reads=("data",))
    def check_a(ctx):
        return []

    with pytest.raises(ValueError, match="two rules"):
        table.rule(reads=("data",))(check_a)
    with pytest.raises(RuntimeError, match="not fixed"):
        _ = table.rules
    with pytest.raises(ValueError, match="leaves out"):
        table.seal([])
    with pytest.raises(ValueError, match="unregistered"):
        table.seal(["check_a", "check_b"])
    table.seal(["check_a"])

    def check_late(ctx):
        return []

    with pytest.raises(RuntimeError, match="after the rules' order"):
        table.rule(reads=("data",))(check_late)


def test_the_module_decorator_is_the_table_of_ftspec():
    assert rule.__self__ is RULES  # type: ignore[attr-defined]


class _Ctx:
    """As much of a Context as the registry uses."""

    def __init__(self):
        self.issues = [Issue(Pos("spec.yaml", 1), "format.prompt", "from inspect")]
        self.ran: list[str] = []


def _table() -> Registry:
    table = Registry()
    for name, reads, key in (("check_b", ("data.train",), "data.train"), ("check_a", ("format",), "eval.metrics"),
                             ("check_whole", WHOLE_SPEC, "model"), ("check_c", ("data", "eval.split"), "data")):
        def check(ctx, name=name, key=key):
            ctx.ran.append(name)
            yield Issue(Pos("spec.yaml", 2), key, name)
        check.__name__ = name
        table.rule(reads=reads)(check)
    table.seal(["check_whole", "check_a", "check_b", "check_c"])
    return table


def test_the_rules_run_in_the_order_fixed_not_the_order_registered():
    ctx = _Ctx()
    found = _table().run(ctx)
    assert ctx.ran == ["check_whole", "check_a", "check_b", "check_c"]
    assert [i.message for i in found] == ["from inspect", "check_whole", "check_a", "check_b", "check_c"]


@pytest.mark.parametrize("aside, ran, kept", [
    # a key below what a rule reads, and a key above it, both stop it; the rule reading the whole spec never runs
    (("data.train.path",), ["check_a"], ["from inspect", "check_a"]),
    (("data",), ["check_a"], ["from inspect", "check_a"]),
    (("eval",), ["check_a", "check_b"], ["from inspect", "check_b"]),  # check_a's issue at eval.metrics is dropped
    (("eval.metrics",), ["check_a", "check_b", "check_c"], ["from inspect", "check_b", "check_c"]),
    (("format.prompt",), ["check_b", "check_c"], ["check_b", "check_c"]),  # inspect's own issue at format.prompt too
    (("training",), ["check_a", "check_b", "check_c"], ["from inspect", "check_a", "check_b", "check_c"]),
])
def test_a_salvaged_spec_runs_exactly_the_rules_whose_reads_miss_what_was_set_aside(aside, ran, kept):
    ctx = _Ctx()
    found = _table().run(ctx, aside)
    assert ctx.ran == ran
    assert [i.message for i in found] == kept


def test_overlaps_is_prefix_by_dotted_key():
    assert overlaps("data", ["data.train"]) and overlaps("data.train", ["data"]) and overlaps("data", ["data"])
    assert not overlaps("data", ["dataset"]) and not overlaps("data.train", ["data.test"])
    assert not overlaps("", ["data"])  # an issue with no key stays


def test_which_rules_run_beside_a_refused_key(tmp_path):
    """The real table: a refused eval section stops the rules that read eval, and those that read the whole spec."""
    beside = {r.name for r in RULES.rules if r.runs_beside(("eval",))}
    assert "check_rename" in beside and "check_precision" in beside and "check_constant_answer" in beside
    assert not beside & {"check_eval", "check_json_schemas", "check_bedrock", "check_paths", "check_positive_label",
                         "check_other_templates", "check_batch_fits"}
    assert all(r.runs_beside(()) for r in RULES.rules)
    whole = Rule("x", WHOLE_SPEC, lambda ctx: [])
    assert whole.runs_beside(()) and not whole.runs_beside(("a",))


def test_a_spec_the_schema_refused_in_part_is_still_checked_where_it_can_be(tmp_path):
    from checks.conftest import write
    from ftspec.checks import inspect, run_checks
    from ftspec.spec.load import load
    from ftspec.spec.validate import salvage

    # format.completion names no column (check_template_names), and the schema refuses eval.split (eval is set aside).
    spec = BASE.replace("{{ queue }}", "{{ label }}") + "eval: {split: nowhere}\n"
    loaded = load(write(tmp_path, spec))
    valid, aside = salvage(loaded)
    assert valid is not None and aside == ("eval",)
    found = run_checks(inspect(loaded, valid), aside)
    assert [i.key for i in found] == ["format.completion"] and "label" in found[0].message
