"""Keys and views of the steps of a run (the table of steps is ftspec.catalog.steps).

A step function never sees the whole plan. It receives a :class:`PlanView` of
exactly the fields it declares (reading any other field raises
:class:`UndeclaredRead`), and its key is the hash of that same view plus the keys
of the steps it needs. So a step re-runs when, and only when, something it reads
has changed; a reviewer can trust ``ftspec diff``'s list of steps that will run.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from pydantic import BaseModel

from ftspec.catalog.steps import STEPS, StepDef, step
from ftspec.plan.model import PLAN_VERSION, Plan, digest, thaw

# --------------------------------------------------------------------------- keys


def select(body: Any, dotted: str) -> Any:
    """The value at a dotted field path of a plan (model or JSON-shaped data)."""
    node = body
    for part in dotted.split("."):
        # A field only some variants have (format.chat_template of a text format) reads as null.
        node = node.get(part) if isinstance(node, Mapping) else getattr(node, part, None)
        if node is None:
            return None
    return node


def material(step_def: StepDef, body: Any, needs: Mapping[str, str]) -> dict:
    """What a step's key hashes: the fields it reads, as its view shows them, and the
    keys of the steps it needs."""
    return {
        "plan_version": PLAN_VERSION,
        "step": step_def.name,
        "layout": step_def.layout,
        "reads": {path: thaw(select(body, path)) for path in step_def.reads},
        "needs": dict(needs),
    }


def plan_steps(body: Mapping) -> list[dict]:
    """The steps of a plan body (a plan without steps or id, JSON-shaped), keyed."""
    body = thaw(body)
    present = [s for s in STEPS if s.present(body)]
    names = {s.name for s in present}
    keys: dict[str, str] = {}
    out = []
    for s in present:
        needs = [n for n in s.needs if n in names]
        needed = {n: _part_key(s.partial[n](body, keys)) if n in s.partial else keys[n] for n in needs}
        keys[s.name] = digest(material(s, body, needed))
        out.append({"name": s.name, "needs": needs, "key": keys[s.name]})
    return out


def _part_key(part: Any) -> str:
    """The key standing for the part of a need that a step reads (a key, or what to hash)."""
    return part if isinstance(part, str) else digest(part)


# --------------------------------------------------------------------------- views


class UndeclaredRead(AttributeError):
    """A step read a plan field that its declaration (and so its key) does not cover."""


def _trie(paths: Iterable[str]) -> dict:
    root: dict = {}
    for path in paths:
        node = root
        parts = path.split(".")
        for i, part in enumerate(parts):
            if node.get(part) is True:
                break  # an ancestor is declared whole
            if i == len(parts) - 1:
                node[part] = True
            else:
                node = node.setdefault(part, {})
    return root


class PlanView:
    """A read-only window on the plan: attribute access to the declared fields only.

    A field declared whole is returned as it is (a frozen model, a tuple, a read-only
    mapping or a scalar); a field of which only parts are declared is another view.
    """

    __slots__ = ("_obj", "_allowed", "_path", "_step")

    def __init__(self, obj: Any, allowed: Mapping, path: str = "", step: str = ""):
        object.__setattr__(self, "_obj", obj)
        object.__setattr__(self, "_allowed", allowed)
        object.__setattr__(self, "_path", path)
        object.__setattr__(self, "_step", step)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        allowed = self._allowed.get(name)
        full = f"{self._path}.{name}" if self._path else name
        if allowed is None:
            raise UndeclaredRead(f"step {self._step} reads plan field '{full}', which it does not declare "
                                 f"(ftspec/catalog/steps.py); its key would not change when that field does")
        value = getattr(self._obj, name)
        if allowed is True or value is None:
            return value
        if not isinstance(value, BaseModel):
            raise TypeError(f"plan field '{full}' has no fields to declare one by one")
        return PlanView(value, allowed, full, self._step)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("the plan is read-only")

    def __repr__(self) -> str:
        return f"<view of plan{'.' + self._path if self._path else ''} for step {self._step}>"

    def __reduce__(self):
        # The same window in a training worker process: the plan travels as its JSON
        # (checked against its id on arrival), the window as the step's declaration.
        if self._path:
            raise TypeError("only a step's whole view of the plan can be handed to another process")
        return (_view_from_json, (self._obj.to_json(pretty=False), self._step))


def _view_from_json(text: str, step_name: str) -> "PlanView":
    return view(Plan.from_json(text), step(step_name))


def view(plan: Plan, step_def: StepDef) -> PlanView:
    return PlanView(plan, _trie(step_def.reads), "", step_def.name)
