"""What the tests of the checks share: a spec and its files written to a repository of
their own, validated and checked, and its issues."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest

from ftspec.checks import inspect, run_checks
from ftspec.checks.facts import Context
from ftspec.core.errors import Issue
from ftspec.spec.load import load
from ftspec.spec.validate import validate

# A spec that draws no issue of its own: a tiny model, 700 rows of tickets, held-out splits.
BASE = """\
ftspec: 1
name: demo
model: {kind: tiny}
data:
  train: train.jsonl
  split: {validation: 0.1, test: 0.1}
format:
  kind: prompt_completion
  prompt: "Request: {{ text }}"
  completion: " {{ queue }}"
compute: {device: cpu}
"""


def tickets(n: int = 700) -> str:
    return "".join(json.dumps({"text": f"ticket {i}", "queue": ["billing", "account", "returns"][i % 3]}) + "\n"
                   for i in range(n))


def write(root: Path, spec: str, files: dict[str, str] | None = None) -> Path:
    (root / ".git").mkdir(exist_ok=True)
    for name, text in {"train.jsonl": tickets(), **(files or {})}.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    path = root / "spec.yaml"
    path.write_text(spec)
    return path


@pytest.fixture
def context(tmp_path, monkeypatch) -> Callable[..., Context]:
    """The checked context of a spec (the schema must accept it), from its folder: messages
    name its files as the user would see them."""
    monkeypatch.chdir(tmp_path)

    def make(spec: str = BASE, files: dict[str, str] | None = None) -> Context:
        loaded = load(write(tmp_path, spec, files))
        valid, problems = validate(loaded)
        assert valid is not None, [p.format() for p in problems]
        return inspect(loaded, valid)
    return make


@pytest.fixture
def issues(context) -> Callable[..., list[Issue]]:
    """Every issue the checks find in a spec."""
    def check(spec: str = BASE, files: dict[str, str] | None = None) -> list[Issue]:
        return run_checks(context(spec, files))
    return check


def at(found: list[Issue], key: str) -> list[str]:
    """The messages of the issues at one key."""
    return [i.message for i in found if i.key == key]
