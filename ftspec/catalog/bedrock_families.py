"""What ftspec knows of each Amazon Bedrock model family, as data: which base model ids
belong to it, the JSONL row format its customization jobs read, which customizations
each model offers, the hyperparameters each takes (the API's names, types, ranges and
defaults) and the documented data limits.

Light: no boto3, nothing read from the network. Every table names the AWS page it was
taken from; where a value could not be found documented it is left out (None), never
guessed, and the check that would use it does not run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

FAMILIES = ("nova", "titan", "llama", "claude")

# The CreateModelCustomizationJob customizationType values ftspec offers (botocore's
# bedrock service-2.json, shape CustomizationType), by the spec's own names.
CUSTOMIZATIONS = {
    "fine_tuning": "FINE_TUNING",
    "continued_pre_training": "CONTINUED_PRE_TRAINING",
    "distillation": "DISTILLATION",
}


@dataclass(frozen=True)
class Hyper:
    """One hyperparameter of a customization job, as the API names it."""

    name: str  # e.g. epochCount
    type: type  # int or float
    min: float
    max: float
    default: float

    def text(self, value: float) -> str:
        """The value as the string the API's hyperParameters map takes."""
        return str(int(value)) if self.type is int else repr(float(value))

    def shown_range(self) -> str:
        return f"{_num(self.min)} to {_num(self.max)}"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) >= 1 else f"{x:g}"


@dataclass(frozen=True)
class Limits:
    """Documented data limits of a model's customization job (None: not found documented)."""

    train_rows_min: int | None = None
    train_rows_max: int | None = None
    validation_rows_max: int | None = None
    train_file_bytes: int | None = None  # the training file of a fine-tuning (or distillation) job
    pretraining_file_bytes: int | None = None  # the training file of a continued pre-training job
    validation_file_bytes: int | None = None
    # Characters of text in one record (its prompt, completion, system and messages' text,
    # together), whatever the job's batch size.
    max_chars_per_record: int | None = None
    # A user or system prompt may not start with these (reserved keywords).
    reserved_prefixes: tuple[str, ...] = ()


@dataclass(frozen=True)
class BaseModel:
    """A base model (or a group of them with the same customization settings)."""

    label: str
    pattern: str  # a regular expression over the whole model id
    customizations: tuple[str, ...]  # spec names: fine_tuning, continued_pre_training, distillation
    hyperparameters: tuple[Hyper, ...]
    teachers: tuple[str, ...] = ()  # distillation: the teacher model ids (patterns) it may learn from
    teachers_shown: str = ""  # the same, for messages
    limits: Limits = field(default_factory=Limits)

    def matches(self, model_id: str) -> bool:
        return re.fullmatch(self.pattern, model_id) is not None

    def hyper(self, name: str) -> Hyper | None:
        return next((h for h in self.hyperparameters if h.name == name), None)


@dataclass(frozen=True)
class Family:
    name: str
    data_format: str  # the row format of its training JSONL (ftspec.data.bedrock_jsonl)
    models: tuple[BaseModel, ...]
    # The row format of continued pre-training data, where the family offers it.
    pretraining_format: str | None = None


GB = 1_000_000_000
MB = 1_000_000

# --- Amazon Nova (understanding models) --------------------------------------------
# Hyperparameters: docs.aws.amazon.com/bedrock/latest/userguide/cm-hp-nova-mm.html
#   (Nova Micro, Lite and Pro: epochCount 1-5 (2), learningRate 1e-6..1e-4 (1e-5),
#   learningRateWarmupSteps 0-100 (10); no batch size, no early stopping).
# Customizations and distillation pairs: docs.aws.amazon.com/nova/latest/userguide/customization.html
#   (Micro, Lite: fine-tuning, distillation student; Pro: fine-tuning, teacher and
#   student; Premier: teacher only) and bedrock/latest/userguide/prequisites-model-distillation.html.
# Data format: nova/latest/userguide/fine-tune-prepare-data-understanding.html
#   (schemaVersion bedrock-conversation-2024, optional system, user/assistant turns).
# Reserved keywords: nova/latest/userguide/fine-tune-prepare-data-understanding.html
#   ("The terms User:, Bot:, Assistant:, System:, <image>, <video>, and [EOS] are reserved
#   keywords" that a user prompt or system prompt may not start with).
# Row counts, context length and file sizes of Nova jobs: not found in the pages read (the
#   Bedrock requirements page, model-training-validation-requirements.html, sends Nova to the
#   Nova guide, whose constraints table could not be read); left out.
_NOVA_LIMITS = Limits(reserved_prefixes=("User:", "Bot:", "Assistant:", "System:", "<image>", "<video>", "[EOS]"))
_NOVA_HP = (
    Hyper("epochCount", int, 1, 5, 2),
    Hyper("learningRate", float, 1e-6, 1e-4, 1e-5),
    Hyper("learningRateWarmupSteps", int, 0, 100, 10),
)
_NOVA_TEACHERS = (r"amazon\.nova-pro-v1:0(:\d+k)?", r"amazon\.nova-premier-v1:0(:\d+k)?",
                  r"(us|eu|apac)\.amazon\.nova-(pro|premier)-v1:0")
_NOVA_TEACHERS_SHOWN = "amazon.nova-pro-v1:0 or amazon.nova-premier-v1:0 (or their us./eu./apac. inference profiles)"
NOVA = Family("nova", "bedrock-conversation-2024", (
    BaseModel("Amazon Nova Micro", r"amazon\.nova-micro-v1:0(:128k)?", ("fine_tuning", "distillation"), _NOVA_HP,
              _NOVA_TEACHERS, _NOVA_TEACHERS_SHOWN, _NOVA_LIMITS),
    BaseModel("Amazon Nova Lite", r"amazon\.nova-lite-v1:0(:300k)?", ("fine_tuning", "distillation"), _NOVA_HP,
              _NOVA_TEACHERS, _NOVA_TEACHERS_SHOWN, _NOVA_LIMITS),
    BaseModel("Amazon Nova Pro", r"amazon\.nova-pro-v1:0(:300k)?", ("fine_tuning", "distillation"), _NOVA_HP,
              (r"amazon\.nova-premier-v1:0(:\d+k)?", r"(us|eu|apac)\.amazon\.nova-premier-v1:0"),
              "amazon.nova-premier-v1:0 (or its us./eu./apac. inference profile)", _NOVA_LIMITS),
))

# --- Amazon Titan Text ----------------------------------------------------------------
# Hyperparameters: docs.aws.amazon.com/bedrock/latest/userguide/cm-hp-titan-text.html
#   Lite/Express: epochCount 1-10 (5), batchSize 1-64 (1), learningRate 0-1 (1e-5),
#   learningRateWarmupSteps 0-250 (5). Premier: epochCount 1-5 (2), batchSize 1-1 (1),
#   learningRate 1e-7..1e-5 (1e-6), learningRateWarmupSteps 0-20 (5).
# Data: bedrock/latest/userguide/model-customization-prepare.html ({"prompt", "completion"}
#   lines for fine-tuning, {"input"} lines for continued pre-training).
# Limits: docs.aws.amazon.com/bedrock/latest/userguide/model-training-validation-requirements.html
#   Every Titan Text table there: training file 1 GB (fine-tuning) / 10 GB (continued
#   pre-training), validation file 100 MB, "Character quota per sample in dataset: Token quota
#   x 6", with a token quota ("sum of input and output tokens") of 4,096 at the smallest batch
#   sizes and 2,048 at the larger ones. ftspec holds a record to 4,096 x 6 = 24,576 characters,
#   the quota at any batch size; the stricter 2,048 x 6 at larger batch sizes is not applied
#   (the page's excerpt read did not name which of its two CPT tables is Lite and which Express).
#   Premier: the page's one fine-tuning-only table (batch size 1: 4,096 tokens; 2-4: N/A, as
#   Premier takes batchSize 1 only) gives the same 1 GB / 100 MB / 4,096 x 6.
#   Row counts of Titan Text jobs: not found documented; left out.
# Continued pre-training: Titan Text Lite and Express only (the models with a
#   continued pre-training column on model-training-validation-requirements.html).
_TITAN_HP = (
    Hyper("epochCount", int, 1, 10, 5),
    Hyper("batchSize", int, 1, 64, 1),
    Hyper("learningRate", float, 0.0, 1.0, 1e-5),
    Hyper("learningRateWarmupSteps", int, 0, 250, 5),
)
_TITAN_PREMIER_HP = (
    Hyper("epochCount", int, 1, 5, 2),
    Hyper("batchSize", int, 1, 1, 1),
    Hyper("learningRate", float, 1e-7, 1e-5, 1e-6),
    Hyper("learningRateWarmupSteps", int, 0, 20, 5),
)
_TITAN_LIMITS = Limits(train_file_bytes=1 * GB, pretraining_file_bytes=10 * GB, validation_file_bytes=100 * MB,
                       max_chars_per_record=4096 * 6)
TITAN = Family("titan", "prompt-completion", (
    BaseModel("Amazon Titan Text Lite", r"amazon\.titan-text-lite-v1(:0:4k)?",
              ("fine_tuning", "continued_pre_training"), _TITAN_HP, limits=_TITAN_LIMITS),
    BaseModel("Amazon Titan Text Express", r"amazon\.titan-text-express-v1(:0:8k)?",
              ("fine_tuning", "continued_pre_training"), _TITAN_HP, limits=_TITAN_LIMITS),
    BaseModel("Amazon Titan Text Premier", r"amazon\.titan-text-premier-v1:0(:32k)?", ("fine_tuning",),
              _TITAN_PREMIER_HP, limits=_TITAN_LIMITS),
), pretraining_format="input-text")

# --- Meta Llama -------------------------------------------------------------------------
# Hyperparameters: docs.aws.amazon.com/bedrock/latest/userguide/cm-hp-meta-llama31.html,
#   cm-hp-meta-llama32.html and cm-hp-meta-llama2.html (all: epochCount 1-10 (5),
#   batchSize 1-1 (1), learningRate 5e-6..0.1 (1e-4); no warm-up, no early stopping).
# Data: model-customization-prepare.html ({"prompt", "completion"} lines).
# Row, record and file limits: not found documented for Llama (model-training-validation-
#   requirements.html as read lists no Llama table; the "Sum of training and validation
#   records" quotas page could not be found); left out.
_LLAMA_HP = (
    Hyper("epochCount", int, 1, 10, 5),
    Hyper("batchSize", int, 1, 1, 1),
    Hyper("learningRate", float, 5e-6, 0.1, 1e-4),
)
LLAMA = Family("llama", "prompt-completion", (
    BaseModel("Meta Llama 3.1", r"meta\.llama3-1-(8|70)b-instruct-v1:0(:128k)?", ("fine_tuning",), _LLAMA_HP),
    BaseModel("Meta Llama 3.2", r"meta\.llama3-2-(1|3|11|90)b-instruct-v1:0(:128k)?", ("fine_tuning",), _LLAMA_HP),
    BaseModel("Meta Llama 2", r"meta\.llama2-(13|70)b-v1(:0:4k)?", ("fine_tuning",), _LLAMA_HP),
))

# --- Anthropic Claude 3 Haiku -----------------------------------------------------------
# Hyperparameters: docs.aws.amazon.com/bedrock/latest/userguide/cm-hp-anth-claude-3.html
#   epochCount 1-10 (2), batchSize 4-256 (32), learningRateMultiplier 0.1-2 (1),
#   earlyStoppingThreshold 0-0.1 (0.001), earlyStoppingPatience 1-10 (2).
# Data: model-customization-prepare.html ({"system", "messages"} lines).
# Row, record and file limits: not found documented for Claude 3 Haiku (neither on
#   model-training-validation-requirements.html as read nor a quotas page); left out.
_CLAUDE_HP = (
    Hyper("epochCount", int, 1, 10, 2),
    Hyper("batchSize", int, 4, 256, 32),
    Hyper("learningRateMultiplier", float, 0.1, 2.0, 1.0),
    Hyper("earlyStoppingThreshold", float, 0.0, 0.1, 0.001),
    Hyper("earlyStoppingPatience", int, 1, 10, 2),
)
CLAUDE = Family("claude", "claude-messages", (
    BaseModel("Anthropic Claude 3 Haiku", r"anthropic\.claude-3-haiku-20240307-v1:0(:200k)?", ("fine_tuning",),
              _CLAUDE_HP),
))

BY_NAME: dict[str, Family] = {f.name: f for f in (NOVA, TITAN, LLAMA, CLAUDE)}


def find(model_id: str) -> tuple[Family, BaseModel] | None:
    """The family and model entry a base model id belongs to, or None when ftspec does not know it."""
    for family in BY_NAME.values():
        for model in family.models:
            if model.matches(model_id):
                return family, model
    return None


def known_models() -> str:
    """The families and their models, for an error message."""
    return "; ".join(f"{f.name} ({', '.join(m.label for m in f.models)})" for f in BY_NAME.values())


def data_format(family: Family, customization: str) -> str:
    """The row format of the job's training JSONL."""
    if customization == "continued_pre_training" and family.pretraining_format:
        return family.pretraining_format
    return family.data_format


def is_teacher(model: BaseModel, teacher_id: str) -> bool:
    return any(re.fullmatch(p, teacher_id) for p in model.teachers)


def _texts(value, key: str | None = None):
    """(field, text) of every text in a rendered record; schemaVersion and role are not text."""
    if isinstance(value, str):
        if key not in ("schemaVersion", "role"):
            yield key, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _texts(v, k)
    elif isinstance(value, list):
        for v in value:
            yield from _texts(v, key)


def _prompts(record: dict):
    """The user and system prompts of a rendered record (any format), for the reserved keywords."""
    system = record.get("system")
    for _, text in _texts(system):
        yield "system prompt", text
    if isinstance(record.get("prompt"), str):
        yield "prompt", record["prompt"]
    for m in record.get("messages") or ():
        if isinstance(m, dict) and m.get("role") == "user":
            for _, text in _texts(m.get("content")):
                yield "user prompt", text


def data_problem(model: BaseModel, split: str, body: bytes, customization: str) -> tuple[int | None, str] | None:
    """The first documented limit a rendered split (JSONL bytes, ftspec.data.bedrock_jsonl) breaks,
    as (1-based row or None for the whole file, message), or None. ``customization``: the
    API's customizationType."""
    import json

    lim = model.limits
    if split == "train":
        cap = lim.pretraining_file_bytes if customization == "CONTINUED_PRE_TRAINING" else lim.train_file_bytes
    else:
        cap = lim.validation_file_bytes
    if cap is not None and len(body) > cap:
        return None, f"the {split} file is {len(body):,} bytes; a {model.label} job takes at most {cap:,}"
    if not has_record_limits(model):
        return None
    for row, line in enumerate(body.splitlines(), 1):
        problem = record_problem(model, json.loads(line))
        if problem is not None:
            return row, problem
    return None


def has_record_limits(model: BaseModel) -> bool:
    """Whether the model's documented limits say anything of a single record."""
    return model.limits.max_chars_per_record is not None or bool(model.limits.reserved_prefixes)


def record_problem(model: BaseModel, record: dict) -> str | None:
    """The first documented limit one rendered record (a line of the job's JSONL, parsed)
    breaks, as the end of a sentence about its row, or None. ``prepare_data`` checks every
    rendered line with it, ``validate`` the sample rows (ftspec.checks.rules.bedrock)."""
    lim = model.limits
    if lim.max_chars_per_record is not None:
        chars = sum(len(text) for _, text in _texts(record))
        if chars > lim.max_chars_per_record:
            return (f"has {chars:,} characters of text; a {model.label} job takes at most "
                    + f"{lim.max_chars_per_record:,} per record")
    for what, text in _prompts(record):
        word = next((w for w in lim.reserved_prefixes if text.lstrip().startswith(w)), None)
        if word is not None:
            return (f"its {what} starts with {word!r}, a keyword {model.label} reserves "
                    + f"(reserved: {', '.join(lim.reserved_prefixes)})")
    return None


# --- ftspec's training settings and the families' names ------------------------------
# training.<setting> -> the API hyperparameter it sets (and how the value is carried).
# early_stopping sets two: patience and min_delta (earlyStoppingPatience / earlyStoppingThreshold).
SETTING_TO_HYPER: dict[str, tuple[str, ...]] = {
    "epochs": ("epochCount",),
    "batch_size": ("batchSize",),
    "learning_rate": ("learningRate",),
    "learning_rate_multiplier": ("learningRateMultiplier",),
    "warmup_steps": ("learningRateWarmupSteps",),
    "early_stopping": ("earlyStoppingPatience", "earlyStoppingThreshold"),
}
# The training settings that no Bedrock model takes: set in a spec, each is an error at its line.
NOT_TAKEN = ("max_steps", "lr_scheduler", "warmup_ratio", "gradient_accumulation", "max_length", "optimizer",
             "weight_decay", "max_grad_norm", "batching", "gradient_checkpointing", "logging_steps", "eval_every",
             "eval_rows", "save_every", "save_total_limit")


def hyperparameters(training, model: BaseModel) -> tuple[dict[str, str], list[tuple[tuple, str]]]:
    """The job's hyperParameters (every one the model takes: the spec's value where it
    sets one, else the documented default), and the problems, each as (spec key path,
    message): a setting the model does not take, or a value out of its range.

    ``training`` is the spec's training section; only the settings it sets explicitly
    (pydantic's model_fields_set) count, so ftspec's own defaults never clash."""
    given = set(training.model_fields_set)
    values: dict[str, float] = {}
    problems: list[tuple[tuple, str]] = []
    names = ", ".join(h.name for h in model.hyperparameters)

    def take(setting: str, hyper_name: str, value: float, key: tuple) -> None:
        hyper = model.hyper(hyper_name)
        if hyper is None:
            problems.append((key, f"{model.label} takes no {hyper_name} (its hyperparameters: {names})"))
            return
        if hyper.type is int and not float(value).is_integer():
            problems.append((key, f"{model.label} takes a whole number for {hyper_name} (got {value:g})"))
            return
        if not hyper.min <= value <= hyper.max:
            problems.append((key, f"{model.label} takes {hyper_name} from {hyper.shown_range()} (got {value:g})"))
            return
        values[hyper_name] = value

    for setting in NOT_TAKEN:
        if setting in given:
            problems.append((("training", setting), "Amazon Bedrock customization jobs take no such setting "
                             f"(what {model.label} takes: {names})"))
    if "epochs" in given:
        take("epochs", "epochCount", training.epochs, ("training", "epochs"))
    if "batch_size" in given:
        take("batch_size", "batchSize", training.batch_size, ("training", "batch_size"))
    if "learning_rate" in given and training.learning_rate is not None:
        if model.hyper("learningRate") is None and model.hyper("learningRateMultiplier") is not None:
            problems.append((("training", "learning_rate"),
                             f"{model.label} takes a multiplier of its own learning rate, "
                             "not a learning rate: set training.learning_rate_multiplier instead"))
        else:
            take("learning_rate", "learningRate", training.learning_rate, ("training", "learning_rate"))
    if "learning_rate_multiplier" in given and training.learning_rate_multiplier is not None:
        take("learning_rate_multiplier", "learningRateMultiplier", training.learning_rate_multiplier,
             ("training", "learning_rate_multiplier"))
    if "warmup_steps" in given and training.warmup_steps is not None:
        take("warmup_steps", "learningRateWarmupSteps", training.warmup_steps, ("training", "warmup_steps"))
    if "early_stopping" in given and training.early_stopping is not None:
        stop = training.early_stopping
        if model.hyper("earlyStoppingPatience") is None:
            problems.append((("training", "early_stopping"),
                             f"{model.label} offers no early stopping (its hyperparameters: {names})"))
        else:
            take("early_stopping", "earlyStoppingPatience", stop.patience, ("training", "early_stopping", "patience"))
            take("early_stopping", "earlyStoppingThreshold", stop.min_delta,
                 ("training", "early_stopping", "min_delta"))
    out = {h.name: h.text(values.get(h.name, h.default)) for h in model.hyperparameters}
    return out, problems
