"""The steps of a run, each declared once: its name, its folder in the run
directory, the steps it needs, the plan fields it reads, and the function that
runs it.

    prepare_data ──▶ train ──▶ generate_tuned ──▶ eval_tuned ──▶ report
          └────────▶ generate_base ──▶ eval_base ──┴──────────────┘

A distillation plan begins with ``teach`` (the teacher answers the training prompts;
prepare_data puts its answers in place of the data's) and evaluates the teacher too
(``generate_teacher``, ``eval_teacher``); a plan with stages, or a distillation plan,
has ``compare_stages`` before its report: every model of every stage on the held-out rows.

Evaluation is two steps per model: ``generate_*`` runs the model on the held-out
rows (answers, and what else the metrics need from the model) and ``eval_*`` scores
what it saved. A metrics-only change re-runs only the scoring steps and the report.

A step function never sees the whole plan. It receives a :class:`PlanView` of
exactly the fields it declares (reading any other field raises
:class:`UndeclaredRead`), and its key is the hash of that same view plus the keys
of the steps it needs. So a step re-runs when, and only when, something it reads
has changed; a reviewer can trust ``ftspec diff``'s list of steps that will run.

This module is light (no torch): the compiler uses it to key the steps, and
``ftspec status`` to find their folders. The functions are named as
``module:function`` and imported only when a step runs.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from pydantic import BaseModel

if TYPE_CHECKING:
    from ftspec.plan.model import Plan


@dataclass(frozen=True)
class StepDef:
    name: str
    folder: str  # in the run directory
    needs: tuple[str, ...]  # steps whose outputs this one reads (when the plan has them)
    reads: tuple[str, ...]  # dotted plan fields; a field covers everything below it
    run: str  # "module:function", called as function(view, ctx, out_dir) -> dict
    # What the step writes, versioned: a run folder an older ftspec wrote is not reused
    # when the layout of the step's output has changed since. (prepare_data 2: it writes
    # the tokenized splits the SFT recipe trains on.)
    layout: int = 1
    # Whether a plan has this step at all (decided on the plan's body).
    present: Callable[[Mapping], bool] = lambda body: True

    def function(self) -> Callable:
        module, _, name = self.run.partition(":")
        return getattr(importlib.import_module(module), name)


# The generation steps read everything that shapes what the model is asked and how it
# answers, and eval.outputs (derived from eval.metrics: which model outputs the metrics
# need), but not eval.metrics itself: a metric that needs nothing new from the model
# re-runs only the scoring steps. Perplexity needs the evaluated model, so it is
# computed while generating (eval.outputs names it); a judge is another model, loaded
# by the scoring step, so a rubric change does not generate the answers again.
_GENERATE_READS = (
    "eval.split", "eval.mode", "eval.choices", "eval.outputs", "eval.max_new_tokens", "eval.stop",
    "eval.few_shot", "eval.few_shot_seed", "eval.batch_size", "eval.limit",
    "format.kind", "format.chat_template",  # how prompts are shown to the model
    "training.max_length",  # prompts are cut to it
    "compute.device", "compute.precision", "compute.attention",
    "compute.backend", "compute.bedrock",  # on Bedrock: the region, and how the custom model is served
    "model",
)
# Scoring reads the metric definitions, and where and in what batches a judge model runs.
_SCORE_READS = ("eval.metrics", "eval.batch_size", "compute.device", "compute.precision")


def _evaluated(body: Mapping) -> bool:
    return bool(body["eval"]["enabled"])


def _baseline(body: Mapping) -> bool:
    return bool(body["eval"]["enabled"] and body["eval"]["baseline"])


def _tuned_evaluated(body: Mapping) -> bool:
    """The tuned model is evaluated, except a Bedrock custom model the plan does not serve
    (serving it costs money: only when the spec asks)."""
    compute = body["compute"]
    if compute.get("backend") == "bedrock" and (compute.get("bedrock") or {}).get("serve", "none") == "none":
        return False
    return _evaluated(body)


def _distills(body: Mapping) -> bool:
    return body["method"]["objective"] == "distill"


def _teacher_evaluated(body: Mapping) -> bool:
    return _distills(body) and _evaluated(body)


def _compares(body: Mapping) -> bool:
    return bool(body.get("stages")) and _evaluated(body) or _teacher_evaluated(body)


# The teacher answers the training and validation prompts: what shapes the prompts (data,
# format, the length they are cut to), the teacher and how it answers, and where it runs.
TEACH = StepDef(
    name="teach", folder="teacher", needs=(),
    reads=("data", "format", "method.distill", "training.max_length",
           "compute.device", "compute.precision", "compute.attention"),
    run="ftspec.runtime.execute:step_teach", present=_distills,
)
PREPARE_DATA = StepDef(
    name="prepare_data", folder="data", needs=("teach",), layout=2,
    # On Bedrock it renders the family's JSONL and uploads it (region, bucket, prefix, format).
    reads=("data", "format", "model", "training.max_length", "compute.backend", "compute.bedrock"),
    run="ftspec.runtime.execute:step_prepare_data",
)
GENERATE_BASE = StepDef(
    name="generate_base", folder="generate-base", needs=("prepare_data",), reads=_GENERATE_READS,
    run="ftspec.runtime.execute:step_generate_base", present=_baseline,
)
EVAL_BASE = StepDef(
    name="eval_base", folder="eval-base", needs=("generate_base",), reads=_SCORE_READS, layout=2,
    run="ftspec.runtime.execute:step_eval_base", present=_baseline,
)
TRAIN = StepDef(
    name="train", folder="model", needs=("prepare_data", "teach"),  # teach: the teacher, for logit distillation
    reads=("model", "method", "training", "compute", "tracking", "format.kind", "format.chat_template"),
    run="ftspec.runtime.execute:step_train",
)
GENERATE_TUNED = StepDef(
    name="generate_tuned", folder="generate-tuned", needs=("train", "prepare_data"),
    reads=_GENERATE_READS + ("method.adapter.kind",),
    run="ftspec.runtime.execute:step_generate_tuned", present=_tuned_evaluated,
)
# The tuned model's scores need the base model's outputs too where they compare with
# it: DPO's implicit reward is beta × (log p_tuned − log p_base) of each answer.
EVAL_TUNED = StepDef(
    name="eval_tuned", folder="eval-tuned", needs=("generate_tuned", "generate_base"),
    reads=_SCORE_READS + ("method.dpo.beta",), layout=2,
    run="ftspec.runtime.execute:step_eval_tuned", present=_tuned_evaluated,
)
# The teacher answers the held-out rows as the student is evaluated: same prompts, same scoring.
GENERATE_TEACHER = StepDef(
    name="generate_teacher", folder="generate-teacher", needs=("teach", "prepare_data"),
    reads=_GENERATE_READS + ("method.distill.teacher",),
    run="ftspec.runtime.execute:step_generate_teacher", present=_teacher_evaluated,
)
EVAL_TEACHER = StepDef(
    name="eval_teacher", folder="eval-teacher", needs=("generate_teacher",), reads=_SCORE_READS,
    run="ftspec.runtime.execute:step_eval_teacher", present=_teacher_evaluated,
)
# Every model of every stage side by side. It reads the earlier stages' plans whole (their
# step keys among them), so it is done again when any stage changes.
COMPARE_STAGES = StepDef(
    name="compare_stages", folder="stages", needs=("eval_base", "eval_tuned", "eval_teacher", "train", "teach"),
    reads=("stage", "stages", "model", "method", "eval.split", "eval.metrics"),
    run="ftspec.runtime.execute:step_compare_stages", present=_compares,
)
# The report reads the training split too: the majority baseline is its most frequent answer.
REPORT = StepDef(
    name="report", folder="report", needs=("prepare_data", "eval_base", "eval_tuned", "train", "compare_stages"),
    reads=("name", "model", "method", "eval.split", "eval.metrics", "eval.gates"),
    run="ftspec.runtime.execute:step_report",
)

STEPS: tuple[StepDef, ...] = (TEACH, PREPARE_DATA, GENERATE_BASE, EVAL_BASE, TRAIN, GENERATE_TUNED, EVAL_TUNED,
                              GENERATE_TEACHER, EVAL_TEACHER, COMPARE_STAGES, REPORT)
BY_NAME: dict[str, StepDef] = {s.name: s for s in STEPS}


def step(name: str) -> StepDef:
    return BY_NAME[name]


def folder(name: str) -> str:
    return BY_NAME[name].folder


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
    from ftspec.plan.model import PLAN_VERSION, thaw

    return {
        "plan_version": PLAN_VERSION,
        "step": step_def.name,
        "layout": step_def.layout,
        "reads": {path: thaw(select(body, path)) for path in step_def.reads},
        "needs": dict(needs),
    }


def plan_steps(body: Mapping) -> list[dict]:
    """The steps of a plan body (a plan without steps or id, JSON-shaped), keyed."""
    from ftspec.plan.model import digest, thaw

    body = thaw(body)
    present = [s for s in STEPS if s.present(body)]
    names = {s.name for s in present}
    keys: dict[str, str] = {}
    out = []
    for s in present:
        needs = [n for n in s.needs if n in names]
        keys[s.name] = digest(material(s, body, {n: keys[n] for n in needs}))
        out.append({"name": s.name, "needs": needs, "key": keys[s.name]})
    return out


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
                                 f"(ftspec/plan/steps.py); its key would not change when that field does")
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
    from ftspec.plan.model import Plan

    return view(Plan.from_json(text), step(step_name))


def view(plan: Plan, step_def: StepDef) -> PlanView:
    return PlanView(plan, _trie(step_def.reads), "", step_def.name)
