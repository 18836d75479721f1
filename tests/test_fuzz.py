"""Property-based: random YAML documents and random mutations of the shipped specs
either compile to a plan or raise a SpecError whose issues all have a place —
never another exception, never a hang."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
import yaml

hypothesis = pytest.importorskip("hypothesis")
from conftest import ROOT, SPECS  # noqa: E402
from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from ftspec.core.errors import SpecError  # noqa: E402
from ftspec.plan.compile import compile_spec  # noqa: E402

WORKDIR = Path(tempfile.mkdtemp(prefix="ftspec-fuzz-"))
(WORKDIR / ".git").mkdir()
shutil.copytree(ROOT / "specs", WORKDIR / "specs")
SPEC_FILE = WORKDIR / "specs" / "fuzz.yaml"

VOCABULARY = ["ftspec", "name", "model", "data", "format", "method", "training", "eval", "compute", "output",
              "tracking", "extends", "profiles", "kind", "base", "tiny", "train", "validation", "test", "split",
              "path", "hub", "prompt", "completion", "messages", "role", "content", "adapter", "lora", "r",
              "epochs", "max_steps", "learning_rate", "metrics", "gates", "accuracy", "derive", "rename", "limit",
              "hidden_size", "num_heads", "tokenizer", "chat_template", "file", "builtin", "schema", "choices"]

scalars = (st.none() | st.booleans() | st.integers(min_value=-10**6, max_value=10**6)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=24)
           | st.sampled_from(["{{ text }}", "{{ queue", "data/support-tickets.jsonl", "sft", "dpo", "tiny", "lora",
                              ">= 0.5", "prompt_completion", "chat", "preference", "../../etc/passwd",
                              "{{ x.__class__ }}"]))
keys = st.sampled_from(VOCABULARY) | st.text(max_size=10)
documents = st.recursive(scalars,
                         lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=6),
                         max_leaves=40)

FUZZ = settings(max_examples=int(__import__("os").environ.get("FTSPEC_FUZZ_EXAMPLES", "120")), deadline=3000,
                suppress_health_check=[HealthCheck.too_slow], derandomize=True)


def _check(text: str | bytes) -> None:
    SPEC_FILE.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    try:
        plan, _ = compile_spec(SPEC_FILE)
    except SpecError as exc:
        assert exc.issues, "a SpecError carries its issues"
        for issue in exc.issues:
            assert issue.pos.file, issue
            assert issue.message and "\n" not in issue.format(), issue
        return
    assert plan.id and plan.plan_version == 1


@FUZZ
@given(documents)
@example({"\n": None})  # found by this test: a key with a newline made a two-line error
def test_random_yaml_documents(doc):
    _check(yaml.safe_dump(doc, allow_unicode=True))


@FUZZ
@given(st.dictionaries(st.sampled_from(VOCABULARY), documents, max_size=8))
def test_random_top_level_mappings(doc):
    doc.setdefault("ftspec", 1)
    _check(yaml.safe_dump(doc, allow_unicode=True))


SHIPPED = {p.name: yaml.safe_load(p.read_text()) for p in SPECS if "extends:" not in p.read_text()}


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, prefix + (i,))


@st.composite
def mutated_specs(draw):
    import copy

    name = draw(st.sampled_from(sorted(SHIPPED)))
    doc = copy.deepcopy(SHIPPED[name])
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        paths = [p for p in _paths(doc) if p]
        path = draw(st.sampled_from(paths))
        parent = doc
        for p in path[:-1]:
            parent = parent[p]
        action = draw(st.sampled_from(["delete", "replace", "add"]))
        if action == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif action == "add" and isinstance(parent, dict):
            parent[draw(keys)] = draw(documents)
        else:
            parent[path[-1]] = draw(documents)
    return doc


@FUZZ
@given(mutated_specs())
def test_mutated_shipped_specs(doc):
    _check(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False))


@FUZZ
@given(st.sampled_from(sorted(p.name for p in SPECS)),
       st.lists(st.tuples(st.integers(min_value=0), st.integers(min_value=0, max_value=3),
       st.binary(max_size=4)), min_size=1, max_size=4))
@example("chat-sft.yaml", [(0, 0, b"\x00")])  # found by this test: PyYAML's reader error escaped as a traceback
def test_byte_level_mutations_of_shipped_specs(name, edits):
    data = bytearray((ROOT / "specs" / name).read_bytes())
    for at, remove, insert in edits:
        at %= len(data) + 1
        data[at:at + remove] = insert
    _check(bytes(data))
