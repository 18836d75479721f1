"""The steps of a run, each declared once: its name, its folder in the run
directory, the steps it needs and the plan fields it reads. What runs it is each
backend's table of step implementations (ftspec.backends).

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

This module is the table of steps, plain data below the plan (the checks read the
folders a run writes; ftspec.plan.keys keys the steps and makes their views).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping


@dataclass(frozen=True)
class StepDef:
    name: str
    folder: str  # in the run directory
    needs: tuple[str, ...]  # steps whose outputs this one reads (when the plan has them)
    reads: tuple[str, ...]  # dotted plan fields; a field covers everything below it
    # What the step writes, versioned: a run folder an older ftspec wrote is not reused
    # when the layout of the step's output has changed since. (prepare_data 2: it writes
    # the tokenized splits the SFT recipe trains on; 3: streamed, each split's origins
    # beside it, the tokens as memory-mapped shards cut to max_length; 4: a training mixture's
    # splits each with its .sources, and stats.json's per-source rows.)
    layout: int = 1
    # Whether a plan has this step at all (decided on the plan's body).
    present: Callable[[Mapping], bool] = lambda body: True
    # Needs of which this step reads only a part: its key hashes, in place of the need's key,
    # what that part depends on (a function of the plan's body and the keys so far).
    partial: Mapping[str, Callable[[Mapping, Mapping[str, str]], Any]] = field(default_factory=dict)


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
    present=_distills,
)
PREPARE_DATA = StepDef(
    name="prepare_data", folder="data", needs=("teach",), layout=4,
    # On Bedrock it renders the family's JSONL and uploads it (region, bucket, prefix, format).
    reads=("data", "format", "model", "training.max_length", "compute.backend", "compute.bedrock"),
)
# What of a mixture only chooses the training rows (plan model MixtureSource, MixturePart).
_DRAW_FIELDS = ("take", "amount", "drawn")
_MIXTURE_DRAW_FIELDS = ("total", "seed", "rows")


def held_out_part(body: Mapping, keys: Mapping[str, str]) -> Any:
    """What the base model's generation reads of prepare_data's output: the held-out splits
    (and the base model it builds or converts). They do not depend on how many rows of each
    training source are drawn, or on ``data.limit``'s cut of the training split, so a weight
    change re-keys prepare_data and training but not the base evaluation. Except where the
    base evaluation does read the training split: few-shot examples are drawn from it, and
    a tiny model's BPE tokenizer is trained on it — then it is prepare_data's whole key."""
    model = body.get("model") or {}
    tiny_bpe = model.get("kind") == "tiny" and (model.get("tokenizer") or {}).get("kind") != "byte"
    if (body.get("eval") or {}).get("few_shot") or tiny_bpe:
        return keys[PREPARE_DATA.name]
    data = dict(body["data"])
    sources = dict(data.get("sources") or {})
    train = sources.get("train")
    if isinstance(train, Mapping) and train.get("kind") == "mixture":
        parts = [{k: v for k, v in part.items() if k not in _DRAW_FIELDS} for part in train.get("parts") or ()]
        sources["train"] = {**{k: v for k, v in train.items() if k not in _MIXTURE_DRAW_FIELDS}, "parts": parts}
    data["sources"] = sources
    for cut in ("rows", "limit"):  # the training split's count and limit; the held-out ones stay
        if isinstance(data.get(cut), Mapping):
            kept = {k: v for k, v in data[cut].items() if k != "train"}
            data[cut] = kept if any(v is not None for v in kept.values()) else None
    return {
        "step": PREPARE_DATA.name, "layout": PREPARE_DATA.layout, "part": "held_out",
        "reads": {path: _select(body, path) for path in PREPARE_DATA.reads if path != "data"} | {"data": data},
        "needs": {n: keys[n] for n in PREPARE_DATA.needs if n in keys},
    }


def _select(body: Any, dotted: str) -> Any:
    node = body
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
        if node is None:
            return None
    return node


GENERATE_BASE = StepDef(
    name="generate_base", folder="generate-base", needs=("prepare_data",), reads=_GENERATE_READS,
    present=_baseline, partial={"prepare_data": held_out_part},
)
EVAL_BASE = StepDef(
    name="eval_base", folder="eval-base", needs=("generate_base",), reads=_SCORE_READS, layout=2,
    present=_baseline,
)
TRAIN = StepDef(
    # needs teach: the teacher, for logit distillation. Layout 2: length_grouped batches are
    # drawn with numpy's generator (another order than before for the same seed), so an
    # older entry is not taken for what this version trains.
    name="train", folder="model", needs=("prepare_data", "teach"), layout=2,
    reads=("model", "method", "training", "compute", "tracking", "format.kind", "format.chat_template"),
)
GENERATE_TUNED = StepDef(
    name="generate_tuned", folder="generate-tuned", needs=("train", "prepare_data"),
    reads=_GENERATE_READS + ("method.adapter.kind",),
    present=_tuned_evaluated,
)
# The tuned model's scores need the base model's outputs too where they compare with
# it: DPO's implicit reward is beta × (log p_tuned − log p_base) of each answer.
EVAL_TUNED = StepDef(
    name="eval_tuned", folder="eval-tuned", needs=("generate_tuned", "generate_base"),
    reads=_SCORE_READS + ("method.dpo.beta",), layout=2,
    present=_tuned_evaluated,
)
# The teacher answers the held-out rows as the student is evaluated: same prompts, same scoring.
GENERATE_TEACHER = StepDef(
    name="generate_teacher", folder="generate-teacher", needs=("teach", "prepare_data"),
    reads=_GENERATE_READS + ("method.distill.teacher",),
    present=_teacher_evaluated,
)
EVAL_TEACHER = StepDef(
    name="eval_teacher", folder="eval-teacher", needs=("generate_teacher",), reads=_SCORE_READS,
    present=_teacher_evaluated,
)
# Every model of every stage side by side. It reads the earlier stages' plans whole (their
# step keys among them), so it is done again when any stage changes.
COMPARE_STAGES = StepDef(
    name="compare_stages", folder="stages", needs=("eval_base", "eval_tuned", "eval_teacher", "train", "teach"),
    reads=("stage", "stages", "model", "method", "eval.split", "eval.metrics"),
    present=_compares,
)
# The report reads the training split too: the majority baseline is its most frequent answer.
REPORT = StepDef(
    name="report", folder="report", needs=("prepare_data", "eval_base", "eval_tuned", "train", "compare_stages"),
    reads=("name", "model", "method", "eval.split", "eval.metrics", "eval.gates"),
)

STEPS: tuple[StepDef, ...] = (TEACH, PREPARE_DATA, GENERATE_BASE, EVAL_BASE, TRAIN, GENERATE_TUNED, EVAL_TUNED,
                              GENERATE_TEACHER, EVAL_TEACHER, COMPARE_STAGES, REPORT)
BY_NAME: dict[str, StepDef] = {s.name: s for s in STEPS}


def step(name: str) -> StepDef:
    return BY_NAME[name]


def folder(name: str) -> str:
    return BY_NAME[name].folder
