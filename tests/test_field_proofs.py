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
import re
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


def _definitions(path: Path) -> dict[str, ast.AST]:
    """The top-level functions, classes and assignments of a file, by name (a fixture or a
    constant a test builds its spec text from)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: dict[str, ast.AST] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            found[node.name] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        found[name.id] = node
    return found


def _shared(folder: Path) -> dict[str, ast.AST]:
    """What every test in ``folder`` may use without defining it: tests/helpers.py and the
    conftest.py files from tests/ down to the folder."""
    names: dict[str, ast.AST] = {}
    folders = [d for d in [folder, *folder.parents] if d.is_relative_to(TESTS)][::-1]
    for path in [TESTS / "helpers.py"] + [d / "conftest.py" for d in folders]:
        if path.is_file():
            names.update(_definitions(path))
    return names


def _test_node(tree: ast.Module, name: str) -> ast.AST | None:
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
            return node
    return None


def reached_text(file: str, name: str, depth: int = 3) -> str:
    """The text of test ``name`` in ``file``: its decorators (the parametrisation), its body,
    and, ``depth`` references deep, the module constants, fixtures and helpers it names
    (the spec text it builds)."""
    path = TESTS.parent / file
    tree = ast.parse(path.read_text(encoding="utf-8"))
    test = _test_node(tree, name)
    if test is None:
        return ""
    scope = {**_shared(path.parent), **_definitions(path)}
    seen: set[int] = set()
    parts: list[str] = []
    todo = [(test, 0)]
    while todo:
        node, level = todo.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        parts.append(ast.unparse(node))
        if level >= depth:
            continue
        used = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
        used |= {a.arg for n in ast.walk(node) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                 for a in n.args.args}  # fixtures, by their parameter names
        todo.extend((scope[u], level + 1) for u in sorted(used) if u in scope)
    # The strings' own text too: unparsed, "a\\nstrategy: ddp" would hide the word after "\\n".
    strings = [n.value for p in parts for n in ast.walk(ast.parse(p))
               if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    return "\n".join(parts + strings + _files_read(parts))


def _files_read(parts: list[str]) -> list[str]:
    """The text of the spec and data files of the repository that the reached code names:
    ``"specs/quickstart.yaml"``, or ``f"specs/{spec}.yaml"`` with ``spec`` one of the
    strings it names (its parametrisation)."""
    trees = [ast.parse(p) for p in parts]
    strings = {n.value for t in trees for n in ast.walk(t) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    names = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.JoinedStr) and sum(isinstance(v, ast.FormattedValue) for v in node.values) == 1:
                pieces = [v.value if isinstance(v, ast.Constant) else None for v in node.values]
                names |= {"".join(p if p is not None else s for p in pieces) for s in strings if "/" not in s}
    root = TESTS.parent
    texts = []
    for name in sorted((strings | names)):
        if name.endswith((".yaml", ".yml", ".jsonl", ".j2")) and "\n" not in name and len(name) < 200:
            path = root / name
            if path.is_file() and path.resolve().is_relative_to(root):
                texts.append(path.read_text(encoding="utf-8"))
    return texts


def leaf(field: str) -> str:
    """The name a field is written by: ``eval.metrics[]:judge.rubric`` -> ``rubric``."""
    return field.rsplit(".", 1)[-1].split(":")[0].removesuffix("[]").removesuffix("{}")


def silent_proofs(proofs: dict[str, list[str]]) -> list[str]:
    """Each ``field: test`` whose test never names the field (neither in its own text nor in
    what it builds its spec from): a proof in name only."""
    texts: dict[str, str] = {}
    silent = []
    for field, nodes in proofs.items():
        word = re.compile(rf"(?<![A-Za-z0-9_]){re.escape(leaf(field))}(?![A-Za-z0-9_])")
        for node in nodes:
            if node not in texts:
                texts[node] = reached_text(*node.split("::", 1))
            if not word.search(texts[node]):
                silent.append(f"{field}: {node}")
    return silent


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




def test_every_proof_mentions_its_field():
    silent = silent_proofs(PROOFS)
    assert silent == [], "each named test must build or read the field it proves: point the entry at one that does"


def test_a_proof_that_never_mentions_its_field_is_refused():
    # Real tests, named for fields they never touch: the check reads the tests, not their names.
    planted = {
        "method:dpo.beta": ["tests/test_field_proofs.py::test_every_entry_names_a_field_that_exists"],
        "model:tiny.hidden_size": ["tests/test_field_proofs.py::test_every_schema_field_names_the_test_that_proves_it"],
    }
    assert silent_proofs(planted) == [f"{f}: {n[0]}" for f, n in planted.items()]
    # ...and one that does name it (here in its parametrisation-free body) passes.
    assert silent_proofs({"model:tiny.hidden_size": [
        "tests/test_field_proofs.py::test_the_walk_finds_fields_at_every_depth_and_in_every_variant"]}) == []
