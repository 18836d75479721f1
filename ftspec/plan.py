"""The plan: plain, frozen, versioned data with a content id.

A plan is what a spec means once every default is filled in and every derived
value is computed. It is serialised as canonical JSON (sorted keys, no
insignificant whitespace), and its id is the sha256 of that text, so it does not
depend on key order in the YAML, on ``PYTHONHASHSEED`` or on the process. Each step
of the run carries a key: the hash of exactly what that step depends on.
"""

from __future__ import annotations

import hashlib
import json
from types import MappingProxyType
from typing import Any, Mapping

PLAN_VERSION = 1

# Which plan sections each step reads, besides the keys of the steps it needs.
# Changing a section re-runs the steps that read it and everything downstream.
STEP_INPUTS: dict[str, tuple[str, ...]] = {
    "prepare_data": ("data", "format", "model", "training.max_length"),
    "eval_base": ("model", "eval", "compute"),
    "train": ("model", "method", "training", "compute"),
    "eval_tuned": ("eval", "compute"),
    "report": ("eval",),
}
# What a step writes, versioned: a run folder that an older ftspec prepared is not
# reused when the layout of the step's output has changed since. (2: prepare_data
# writes the tokenized splits the SFT recipe trains on.)
STEP_LAYOUT: dict[str, int] = {"prepare_data": 2}
STEP_NEEDS: dict[str, tuple[str, ...]] = {
    "prepare_data": (),
    "eval_base": ("prepare_data",),
    "train": ("prepare_data",),
    "eval_tuned": ("train",),
    "report": ("eval_base", "eval_tuned", "train"),
}


def canonical_json(value: Any) -> str:
    return json.dumps(thaw(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def pretty_json(value: Any) -> str:
    return json.dumps(thaw(value), sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def digest(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()


def freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [thaw(v) for v in value]
    return value


def select(data: Mapping, dotted_key: str) -> Any:
    node: Any = data
    for part in dotted_key.split("."):
        node = node[part]
    return node


def step_keys(body: Mapping, steps: list[str]) -> dict[str, str]:
    """Key of each step: hash of its inputs, the keys of the steps it needs, and the plan version."""
    keys: dict[str, str] = {}
    for name in steps:
        needs = [n for n in STEP_NEEDS[name] if n in steps]
        material = {
            "plan_version": PLAN_VERSION,
            "step": name,
            "layout": STEP_LAYOUT.get(name, 1),
            "inputs": {k: select(body, k) for k in STEP_INPUTS[name]},
            "needs": {n: keys[n] for n in needs},
        }
        keys[name] = digest(material)
    return keys


class PlanVersionError(ValueError):
    pass


class Plan:
    """A compiled plan. Read it through ``plan[section]``; it cannot be changed."""

    __slots__ = ("_data", "_id")

    def __init__(self, data: Mapping):
        body = {k: v for k, v in thaw(data).items() if k != "id"}
        if body.get("plan_version") != PLAN_VERSION:
            raise PlanVersionError(f"plan_version {body.get('plan_version')!r} is not supported (this ftspec reads version {PLAN_VERSION})")
        self._id = digest(body)
        body["id"] = self._id
        self._data = freeze(body)

    @property
    def id(self) -> str:
        return self._id

    @property
    def short_id(self) -> str:
        return self._id[:12]

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self._data.get(key, default)

    def to_dict(self) -> dict:
        return thaw(self._data)

    def to_json(self, pretty: bool = True) -> str:
        return pretty_json(self._data) if pretty else canonical_json(self._data)

    @classmethod
    def from_json(cls, text: str) -> "Plan":
        data = json.loads(text)
        plan = cls(data)
        if "id" in data and data["id"] != plan.id:
            raise ValueError(f"plan id {data['id']} does not match its content ({plan.id}); the file was edited")
        return plan

    def step(self, name: str) -> Mapping:
        for step in self._data["steps"]:
            if step["name"] == name:
                return step
        raise KeyError(name)
