"""Nothing declared that does not run: every field of the spec schema names the test
that proves its effect (tests/field_proofs.py), and every such test exists.

The fields are found by walking the schema's pydantic models from ``Spec`` down,
through lists, mappings and every variant of a union. A field is named by its
dotted path, with ``:tag`` for the variant of a union it belongs to and ``[]`` for
the items of a list: ``method:dpo.beta``, ``eval.metrics[]:judge.rubric``. A model
used at several places (the data sources, templates, adapters, answer extraction)
is read by the same code wherever it is, so its fields are listed once, at the
first place it is found. A field whose value is always a section (``training``,
``method.adapter``) has no effect but its fields', and is not listed itself.
"""

from __future__ import annotations

import ast
import typing
from pathlib import Path

from field_proofs import PROOFS
from pydantic import BaseModel

from ftspec.spec import schema as S

TESTS = Path(__file__).resolve().parent


def _unwrap(tp):
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _alternatives(tp) -> list:
    tp = _unwrap(tp)
    origin = typing.get_origin(tp)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        return [a for arg in typing.get_args(tp) for a in _alternatives(arg)]
    return [tp]


def _is_section(tp) -> bool:
    """Whether every value of this type is a model (a section), and nothing else."""
    return all(isinstance(a, type) and issubclass(a, BaseModel) for a in _alternatives(tp))


def _models(tp, suffix: str = ""):
    """(path suffix, model) of every model inside a field's type, with the union tag."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        inner, *meta = args
        tag = next((m.tag for m in meta if type(m).__name__ == "Tag"), None)
        for sub, model in _models(inner, suffix if tag is None else f"{suffix}:{tag}"):
            yield sub, model
    elif origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        for arg in args:
            yield from _models(arg, suffix)
    elif origin in (list, tuple):
        yield from _models(args[0], suffix + "[]")
    elif origin is dict:
        yield from _models(args[1], suffix + "{}")
    elif isinstance(tp, type) and issubclass(tp, BaseModel):
        yield suffix, tp


def schema_fields() -> list[str]:
    """Every field of the spec schema, by its dotted path (breadth first)."""
    seen: set[type] = set()
    todo: list[tuple[str, type[BaseModel]]] = [("", S.Spec)]
    paths: list[str] = []
    while todo:
        prefix, model = todo.pop(0)
        if model in seen:
            continue
        seen.add(model)
        own = set(getattr(model, "__annotations__", {}))  # fields a subclass inherits unchanged are its base's
        for name, field in model.model_fields.items():
            path = f"{prefix}.{field.alias or name}" if prefix else (field.alias or name)
            if name in own and not _is_section(field.annotation):
                paths.append(path)
            todo.extend((path + suffix, sub) for suffix, sub in _models(field.annotation))
    return paths


def test_tests() -> dict[str, set[str]]:
    """The test functions of each test file, found by reading the files (nothing is run)."""
    found: dict[str, set[str]] = {}
    for path in sorted(TESTS.rglob("test_*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        found[f"tests/{path.relative_to(TESTS).as_posix()}"] = {
            node.name for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test_")
        }
    return found


test_tests.__test__ = False  # a helper, not a test


def test_the_walk_finds_fields_at_every_depth_and_in_every_variant():
    fields = schema_fields()
    assert len(fields) == len(set(fields))
    for path in ("name", "model:tiny.hidden_size", "model:tiny.tokenizer:bpe.vocab_size", "data.train:hub.subset",
                 "format:chat.messages[].role", "method:sft.adapter:qlora.bits", "method:dpo.beta",
                 "eval.metrics[]:judge.scale", "method:distill.filter.extract.which", "tracking:wandb.entity"):
        assert path in fields, path
    assert "training" not in fields and "method:sft.adapter" not in fields, "sections are listed by their fields"
    assert "method:sft.adapter:qlora.r" not in fields, "qlora's r is lora's r"


def test_every_schema_field_names_the_test_that_proves_it():
    fields = schema_fields()
    missing = [f for f in fields if f not in PROOFS]
    assert missing == [], "add these fields to tests/field_proofs.py, each with the test that proves its effect"


def test_every_entry_names_a_field_that_exists():
    fields = set(schema_fields())
    stale = sorted(set(PROOFS) - fields)
    assert stale == [], "these fields are no longer in the schema: remove them from tests/field_proofs.py"


def test_every_proof_is_a_test_that_exists():
    found = test_tests()
    broken = []
    for field, proofs in PROOFS.items():
        assert proofs, field
        for node in proofs:
            file, _, name = node.partition("::")
            if name not in found.get(file, set()):
                broken.append(f"{field}: {node}")
    assert broken == []


