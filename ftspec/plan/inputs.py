"""Every local file and folder a plan reads, as the plan records them: what no command may
write over (ftspec.core.paths.target_problem). Light: no torch."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any, Iterator, Mapping

from ftspec.plan.model import Plan


def plan_inputs(plan: Plan, root: Path) -> list[Path]:
    """The spec and every file it extends, the local data files, template files, JSON
    Schema files, local models and tokenizers (a GGUF file's folder too) of ``plan`` and
    of each stage before it; absolute, under ``root`` (the spec's repository root)."""
    found: dict[Path, None] = {}
    for one in (*plan.stages, plan):
        for rel in _recorded(one):
            found[Path(root) / rel] = None  # an absolute path (a folder allowed by --allow-path) stays as it is
    return list(found)


def _recorded(plan: Plan) -> Iterator[str]:
    yield plan.spec.path
    yield from plan.spec.bases
    # A template file is written relative to the spec's folder; every other path, to the root.
    spec_dir = PurePosixPath(plan.spec.path).parent
    body = plan.to_dict()
    for node in _walk({k: body.get(k) for k in ("data", "format", "eval")}):
        if node.get("kind") == "file" and isinstance(node.get("path"), str):
            yield node["path"]  # a data source
        elif node.get("source") == "file" and isinstance(node.get("ref"), str) and node["ref"]:
            yield str(spec_dir / node["ref"])  # a template file
        elif node.get("source") == "local" and isinstance(node.get("name_or_path"), str):
            yield node["name_or_path"]  # a judge's local model
        elif set(node) == {"path", "text", "sha256"} and isinstance(node["path"], str):
            yield node["path"]  # a JSON Schema file
    yield from _models(body.get("model"))


def _models(model: Any) -> Iterator[str]:
    """The local folders of a model section, following a stage's model to the one it began with."""
    while isinstance(model, Mapping):
        if model.get("source") == "local" and isinstance(model.get("name_or_path"), str):
            yield model["name_or_path"]
        tokenizer = model.get("tokenizer")
        if isinstance(tokenizer, Mapping) and tokenizer.get("source") == "local":
            yield tokenizer["name_or_path"]
        model = model.get("base") if model.get("kind") == "stage" else None


def _walk(node: Any) -> Iterator[Mapping]:
    if isinstance(node, Mapping):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, (list, tuple)):
        for value in node:
            yield from _walk(value)
