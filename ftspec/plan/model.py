"""The plan: plain, frozen, versioned data with a content id.

A plan is what a spec means once every default is filled in and every derived
value is computed. It is a tree of frozen pydantic models (plan version 1), read
by attribute (``plan.training.learning_rate``), never by string key. It is
serialised as canonical JSON (sorted keys, no insignificant whitespace), and its
id is the sha256 of that text, so it does not depend on key order in the YAML, on
``PYTHONHASHSEED`` or on the process. Each step carries a key: the hash of exactly
the plan fields that step reads (see :mod:`ftspec.plan.keys`).

``schema/plan.schema.json`` is generated from these models (``ftspec schema --plan``).
"""

from __future__ import annotations

import hashlib
import json
import re
from types import MappingProxyType
from typing import Annotated, Any, Literal, Mapping, TypeVar, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    WrapSerializer,
)

from ftspec.catalog import steps as catalog_steps
from ftspec.core import jsonread
from ftspec.core.errors import did_you_mean

PLAN_VERSION = 1
PLAN_MAX_DEPTH = 100  # nesting in a plan file: its sections, and a spec's values (at most 64) in them

K = TypeVar("K")
V = TypeVar("V")

# A mapping that cannot be changed once the plan is built; serialised as a plain object.
FrozenMap = Annotated[dict[K, V], AfterValidator(MappingProxyType), WrapSerializer(lambda v, nxt: nxt(dict(v)))]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", serialize_by_alias=True, validate_by_name=True,
                              validate_by_alias=True)


# --------------------------------------------------------------------------- sections


class SpecInfo(_Frozen):
    """Which files and choices made this plan (paths relative to the repository root)."""

    path: str
    bases: tuple[str, ...] = ()
    profiles: tuple[str, ...] = ()
    overrides: tuple[str, ...] = ()


class Template(_Frozen):
    """A resolved jinja template: where it came from, its text and the hash of the text."""

    source: Literal["inline", "file", "builtin"]
    ref: str
    text: str
    sha256: str


class TinyTokenizer(_Frozen):
    kind: Literal["byte", "bpe"]
    vocab_size: int | None = None


class TinyModel(_Frozen):
    """A small model built from a config (no download), with a tokenizer made on the spot."""

    kind: Literal["tiny"]
    architecture: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    max_position_embeddings: int
    tokenizer: TinyTokenizer
    init_seed: int
    trust_remote_code: bool = False


class ModelRef(_Frozen):
    """A model or tokenizer: a hub id, or a folder relative to the repository root."""

    source: Literal["local", "hub"]
    name_or_path: str


class PretrainedModel(_Frozen):
    """A pretrained model: a hub id or a folder relative to the repository root."""

    kind: Literal["pretrained"]
    source: Literal["local", "hub"]
    name_or_path: str
    revision: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    trust_remote_code: bool = False
    tokenizer: ModelRef | None = None  # a different tokenizer; None: the model's own
    # A GGUF file in the folder (or hub repository) name_or_path, converted to safetensors when
    # data is prepared; its sha256 where it is a local file. Left out of the plan when None, so
    # the plan (and every step key) of a model that is not GGUF is what it was before them.
    gguf_file: str | None = Field(None, exclude_if=lambda v: v is None)
    gguf_sha256: str | None = Field(None, exclude_if=lambda v: v is None)


class BedrockModel(_Frozen):
    """An Amazon Bedrock base model, customised and served by Bedrock (compute.backend bedrock)."""

    kind: Literal["bedrock"]
    id: str  # the base model identifier, e.g. amazon.nova-micro-v1:0:128k
    # The family (ftspec.catalog.bedrock_families) sets the data format, methods and hyperparameters.
    family: Literal["nova", "titan", "llama", "claude"]


class StageModel(_Frozen):
    """The model an earlier stage of the same spec trained. A later stage (or a
    distillation teacher) gets it as whole weights: a LoRA adapter is merged into the
    stage's base model when the data of the stage that uses it is prepared."""

    kind: Literal["stage"]
    stage: str  # the stage's name
    adapter: Literal["full", "lora", "qlora"]  # what that stage trained
    train: str  # that stage's train step key: the weights
    data: str  # that stage's prepare_data step key: its prepared base model and tokenizer
    base: "Model"  # what that stage started from


Model = Annotated[Union[TinyModel, PretrainedModel, BedrockModel, StageModel], Field(discriminator="kind")]


class FileSource(_Frozen):
    kind: Literal["file"]
    path: str
    format: str
    columns: tuple[str, ...] | None = None
    header: bool | None = None
    field: str | None = None
    rows: int | None = None
    sha256: str


class HubSource(_Frozen):
    kind: Literal["hub"]
    hub: str
    split: str
    subset: str | None = None
    revision: str | None = None
    rows: None = None


class Derived(_Frozen):
    name: str
    template: Template


class MixturePart(_Frozen):
    """One source of a training mixture (``data.train`` as a list): where its rows come from,
    how its columns map to the spec's (before ``data.rename`` and ``data.derive``), and how
    many of its training rows the mixture draws."""

    name: str
    source: Annotated[Union[FileSource, HubSource], Field(discriminator="kind")]
    rename: FrozenMap[str, str] = Field(default_factory=dict)
    derive: tuple[Derived, ...] = ()
    # `weight`: a share of the weighted parts' rows (normalised: the weighted parts' amounts
    # sum to 1); `rows`: exactly this many rows; `epochs`: this many passes over the part.
    take: Literal["weight", "rows", "epochs"]
    amount: float
    available: int | None = None  # its training rows after data.filter and the held-out split
    drawn: int | None = None  # the rows it puts in the training mixture (None: unknown until read)
    # Mean characters of a training text of its rows rendered in validate's sample (None: no
    # sample): the plan's estimate of its share of the mixture's tokens.
    sample_chars: float | None = None


class MixtureSource(_Frozen):
    """``data.train`` as a list of sources, drawn into one training split (docs/use-cases/mixtures.md)."""

    kind: Literal["mixture"]
    parts: tuple[MixturePart, ...]
    # How many rows the weighted parts make together: `no_repeats`, the most that repeats no
    # row; `every_row`, the fewest that use every row of every weighted part; or a number.
    total: Union[Literal["no_repeats", "every_row"], int]
    seed: int
    rows: int | None = None  # rows of the mixture (before data.limit); None: unknown until read
    # (Which of these fields only choose the training rows: ftspec.catalog.steps.held_out_part.)


Source = Annotated[Union[FileSource, HubSource, MixtureSource], Field(discriminator="kind")]


class Split(_Frozen):
    validation: float
    test: float
    seed: int
    stratify: str | None = None


class Rows(_Frozen):
    """Rows of each split after `filter`, splitting and `limit` (None: unknown until the data is read)."""

    train: int | None
    validation: int | None
    test: int | None


class Limit(_Frozen):
    """The effective `data.limit` of each split (None: that split is not cut)."""

    train: int | None = None
    validation: int | None = None
    test: int | None = None

    def __str__(self) -> str:
        cuts = {s: getattr(self, s) for s in ("train", "validation", "test")}
        if len(set(cuts.values())) == 1:
            return f"{self.train} rows of each split"
        return ", ".join(f"{s} {n}" for s, n in cuts.items() if n is not None)


class Data(_Frozen):
    sources: FrozenMap[Literal["train", "validation", "test"], Source]
    rename: FrozenMap[str, str]
    derive: tuple[Derived, ...] = ()
    split: Split | None = None
    filter: Template | None = None  # keeps the rows it renders true for, before splitting
    # A number is every split's limit (as `data.limit: N` in a spec).
    limit: Annotated[Limit | None, BeforeValidator(lambda v: dict.fromkeys(("train", "validation", "test"), v)
                                                   if isinstance(v, int) and not isinstance(v, bool) else v)] = None
    on_bad_row: Literal["error", "skip"]
    rows: Rows
    # The splits whose count in `rows` is an estimate: data.filter was rendered over
    # validate's sample of rows only, and the share it kept there stands for the rest.
    rows_estimated: tuple[Literal["train", "validation", "test"], ...] = ()

    def named_sources(self) -> list[tuple[str, Union[FileSource, HubSource]]]:
        """Each file or hub source the data reads, by name: a split's own as the split, a training
        mixture's parts as ``train.NAME`` (how the lock file, the manifest and the model card name them)."""
        return [item for split, src in self.sources.items()
                for item in ([(f"{split}.{p.name}", p.source) for p in src.parts] if src.kind == "mixture"
                             else [(split, src)])]

    def rows_shown(self, split: str) -> str:
        """A split's count as people read it: `~` marks an estimate, `?` an unknown."""
        n = getattr(self.rows, split)
        return "?" if n is None else (f"~{n}" if split in self.rows_estimated else str(n))


class ChatTurn(_Frozen):
    role: Literal["system", "user", "assistant"]
    content: Template


class ChatFormat(_Frozen):
    kind: Literal["chat"]
    messages: tuple[ChatTurn, ...] = ()
    messages_column: str | None = None
    chat_template: Union[Template, Literal["model"]]
    templates: FrozenMap[str, Template]
    loss: Literal["assistant", "all"]

    @property
    def chat_template_text(self) -> str | None:
        """The spec's chat template, or None where the model's own is used."""
        return None if self.chat_template == "model" else self.chat_template.text


class TextFormat(_Frozen):
    kind: Literal["prompt_completion", "preference", "feedback"]
    templates: FrozenMap[str, Template]
    loss: Literal["completion", "all", "preference"]

    @property
    def chat_template_text(self) -> None:
        return None


Format = Annotated[Union[ChatFormat, TextFormat], Field(discriminator="kind")]


class FullAdapter(_Frozen):
    kind: Literal["full"]


class LoraAdapter(_Frozen):
    kind: Literal["lora"]
    r: int
    alpha: float
    dropout: float
    target_modules: Union[str, tuple[str, ...]]
    bias: Literal["none", "all", "lora_only"]


class QLoraAdapter(LoraAdapter):
    """LoRA on a base model loaded in 4 or 8 bits."""

    kind: Literal["qlora"]  # type: ignore[assignment]
    bits: Literal[4, 8]
    quant_type: Literal["nf4", "fp4"]
    double_quant: bool
    # The dtype 4-bit weights are stored in: FSDP and ZeRO-3 shard them with the other
    # parameters, which works only when it is the dtype those load in.
    quant_storage: Literal["uint8", "float32", "bfloat16", "float16"] = "uint8"


Adapter = Annotated[Union[FullAdapter, LoraAdapter, QLoraAdapter], Field(discriminator="kind")]


class DPOSettings(_Frozen):
    beta: float
    loss_type: str
    label_smoothing: float


class Extract(_Frozen):
    regex: str | None = None
    template: Template | None = None
    which: Literal["first", "last"] = "last"


class TeacherFilter(_Frozen):
    extract: Extract | None = None  # must find something in a teacher answer for it to be kept
    max_tokens: int | None = None  # longer teacher answers (teacher tokens) are dropped
    train_on: Literal["answer", "extracted"] = "answer"


class LogitDistillation(_Frozen):
    """loss = (1 − alpha)·cross-entropy + alpha·T²·KL(teacher ‖ student) at temperature T, on answer tokens."""

    alpha: float
    temperature: float


class Distill(_Frozen):
    """Distillation: the teacher answers the training and validation prompts (the answers
    the data may hold are not read), and the student is trained on its kept answers."""

    teacher: Model  # a pretrained model, or an earlier stage's (kind: stage)
    # generate: greedy answers; choices: the likeliest of `choices` after each prompt (with
    # `prefix`, the whitespace the format's answer starts with, before each label).
    mode: Literal["generate", "choices"] = "generate"
    choices: tuple[str, ...] | None = Field(None, exclude_if=lambda v: v is None)
    prefix: str = Field("", exclude_if=lambda v: v == "")
    max_new_tokens: int
    stop: tuple[str, ...] = ()
    batch_size: int
    filter: TeacherFilter
    logits: LogitDistillation | None = None


class MetricReward(_Frozen):
    """A metric of the evaluation's kind (as eval.metrics holds one) scoring each completion."""

    kind: Literal["metric"]
    metric: "Metric"
    weight: float
    missing: float  # the reward of a completion it cannot score (no reference, nothing extracted)


class PythonReward(_Frozen):
    """A function in a file of the repository, run in the training process."""

    kind: Literal["python"]
    path: str  # relative to the repository root
    sha256: str  # of the file as planned; the run refuses another
    function: str
    weight: float
    missing: float


class ModelReward(_Frozen):
    """An earlier stage's reward model (method.kind reward_model), scoring prompt + completion + end of sequence."""

    kind: Literal["reward_model"]
    stage: str
    model: StageModel  # that stage's trained model: its train key is this stage's too
    weight: float
    missing: float = Field(0.0, exclude_if=lambda v: v == 0.0)  # never used: a reward model scores every completion


Reward = Annotated[Union[MetricReward, PythonReward, ModelReward], Field(discriminator="kind")]


class GRPO(_Frozen):
    """Group relative policy optimisation (TRL's GRPOTrainer): ``group_size`` completions per prompt,
    scored by ``rewards``; each completion is cut at ``stop`` before it is scored, as evaluation cuts
    its answers, so that what is optimised is what is reported."""

    rewards: tuple[Reward, ...]
    group_size: int
    max_completion_tokens: int
    stop: tuple[str, ...] = ()
    temperature: float
    kl: float
    # group: GRPO (GRPOTrainer); leave_one_out: RLOO (RLOOTrainer), which has no loss_type (None)
    estimator: Literal["group", "leave_one_out"] = "group"
    loss_type: str | None
    sample_every: int


class KTO(_Frozen):
    """Kahneman-Tversky optimisation (TRL's KTOTrainer) on feedback rows (prompt, completion, label)."""

    beta: float
    desirable_weight: float
    undesirable_weight: float
    loss_type: str


class RewardModel(_Frozen):
    """A reward model (TRL's RewardTrainer): the base model with a one-output score head, trained on pairs."""

    center_rewards_coefficient: float


class Method(_Frozen):
    """The objective (sft, dpo, distill, grpo, kto or reward_model) and the adapter (full, lora or qlora) it trains."""

    objective: Literal["sft", "dpo", "distill", "grpo", "kto", "reward_model"]
    adapter: Adapter
    dpo: DPOSettings | None = None
    # distill only; left out of the plan otherwise, so other plans keep their keys.
    distill: Distill | None = Field(None, exclude_if=lambda v: v is None)
    # grpo only; left out of the plan otherwise.
    grpo: GRPO | None = Field(None, exclude_if=lambda v: v is None)
    # kto only; left out of the plan otherwise.
    kto: KTO | None = Field(None, exclude_if=lambda v: v is None)
    # reward_model only; left out of the plan otherwise.
    reward_model: RewardModel | None = Field(None, exclude_if=lambda v: v is None)


class Batching(_Frozen):
    mode: Literal["padded", "length_grouped", "packed"]
    reason: str


class LossPositions(_Frozen):
    """Where the LM head runs in training: at the positions that carry loss only, or at all."""

    mode: Literal["supervised", "all"]
    share: float | None  # of the sample rows' text that carries loss (characters); None: not measured
    reason: str


class EarlyStopping(_Frozen):
    patience: int
    min_delta: float


Cadence = Union[int, Literal["epoch"], None]


class Training(_Frozen):
    epochs: float | None
    max_steps: int | None
    total_steps: int | None
    steps_per_epoch: int | None
    learning_rate: float
    lr_scheduler: str
    warmup_steps: int | None
    batch_size: int
    gradient_accumulation: int
    effective_batch_size: int
    max_length: int
    seed: int
    optimizer: str
    weight_decay: float
    max_grad_norm: float
    batching: Batching
    gradient_checkpointing: bool
    logging_steps: int
    eval_every: Cadence
    # Validation rows the training-time loss is computed on (None: no validation loss).
    eval_rows: int | None = Field(None, exclude_if=lambda v: v is None)
    save_every: Cadence
    save_total_limit: int
    early_stopping: EarlyStopping | None = None
    # None where another service trains (Bedrock); left out of the plan then.
    loss_positions: LossPositions | None = Field(None, exclude_if=lambda v: v is None)


class SchemaFile(_Frozen):
    path: str
    text: str
    sha256: str


class SimpleMetric(_Frozen):
    name: str
    extract: Extract | None = None
    positive: str | None = None  # f1: the positive label
    # How answers and references are normalised before they are compared: a key of
    # ftspec.catalog.metrics.NORMALIZATIONS, from the metric's row (None: not compared as text).
    normalization: str | None = None


class JsonSchemaMetric(_Frozen):
    name: Literal["json_schema"]
    schema_: SchemaFile = Field(alias="schema")
    extract: Extract | None = None
    normalization: str | None = None


class JudgeMetric(_Frozen):
    name: Literal["judge"]
    model: ModelRef
    rubric: Template
    score_regex: str
    scale: tuple[float, float]


def _metric_kind(value: Any) -> str:
    name = value.get("name") if isinstance(value, Mapping) else getattr(value, "name", None)
    return name if name in ("json_schema", "judge") else "simple"


Metric = Annotated[
    Union[Annotated[SimpleMetric, Tag("simple")], Annotated[JsonSchemaMetric, Tag("json_schema")],
          Annotated[JudgeMetric, Tag("judge")]],
    Discriminator(_metric_kind),
]


class Gate(_Frozen):
    """A threshold the run must meet: on a metric of the tuned model, or on its
    improvement over the base model."""

    gate: str
    metric: str
    improvement: bool
    op: Literal[">=", "<=", "==", ">", "<"]
    threshold: float


class Eval(_Frozen):
    enabled: bool
    split: Literal["test", "validation"] | None
    rows: int | None
    baseline: bool
    mode: Literal["generate", "choices"]  # resolved: the spec's `auto` is one of the two here
    mode_reason: str = ""  # why this mode (and these stop strings), in words: read by no step
    choices: tuple[str, ...] | None = None
    metrics: tuple[Metric, ...]
    # What the generation steps compute with the evaluated model for the scoring steps:
    # "answers" (generated, or chosen in choices mode), "perplexity" (the answers' token
    # log-likelihood), "pair_logprobs" (chosen and rejected log-probabilities of preference
    # pairs), "completion_logprobs" (each feedback row's completion's log-probability),
    # "pair_scores" (a reward model's scores of the chosen and the rejected answer of each pair).
    # Derived from eval.metrics, so that a metrics change that needs nothing new
    # from the model re-runs only the scoring steps.
    outputs: tuple[Literal["answers", "perplexity", "pair_logprobs", "completion_logprobs", "pair_scores"], ...] = ()
    max_new_tokens: int
    stop: tuple[str, ...] = ()  # resolved: the spec's, or a newline for label-like answers
    few_shot: int
    # The seed that draws the few-shot examples (the training seed); None without few-shot
    # examples, so that a seed change does not re-run a zero-shot evaluation.
    few_shot_seed: int | None = None
    batch_size: int
    limit: int | None = None
    gates: tuple[Gate, ...] = ()


class FSDP(_Frozen):
    """FSDP2 (torch's fully_shard) as the plan runs it."""
    # Module classes each sharded as one unit (the decoder layer, from the architecture by default).
    wrap: tuple[str, ...]
    wrap_from: Literal["spec", "architecture"]
    reshard_after_forward: bool
    cpu_offload: bool
    activation_checkpointing: bool
    state_dict: Literal["full", "sharded"]  # of checkpoints; the finished model is always gathered and saved whole


class DeepSpeed(_Frozen):
    zero_stage: Literal[1, 2, 3]
    offload_optimizer: bool
    offload_params: bool


class Launch(_Frozen):
    """How `ftspec run` starts the training processes (None in the plan: one process)."""
    world_size: int  # processes in all
    processes_per_node: int
    nodes: int
    backend: Literal["auto", "gloo", "nccl"]  # torch.distributed backend; auto: nccl on CUDA, gloo on the CPU
    # local: 127.0.0.1 and a free port; environment: MASTER_ADDR, MASTER_PORT and NODE_RANK
    # (or SLURM's variables) on each node (ftspec.runtime.distributed.rendezvous).
    rendezvous: Literal["local", "environment"]
    # Exactly the distributed keyword arguments given to transformers' TrainingArguments
    # (ddp_*, fsdp + fsdp_config, deepspeed): the generated accelerate/FSDP/DeepSpeed
    # configuration, reviewable in `ftspec diff`.
    trainer: FrozenMap[str, Any]


class BedrockS3(_Frozen):
    bucket: str
    prefix: str  # "" or ending in "/"


class BedrockVpc(_Frozen):
    subnets: tuple[str, ...]
    security_groups: tuple[str, ...]


class Bedrock(_Frozen):
    """A Bedrock model customization job, and how its models are evaluated.

    No credentials: boto3's standard chain supplies them when the run starts."""

    region: str
    customization: Literal["FINE_TUNING", "CONTINUED_PRE_TRAINING", "DISTILLATION"]
    data_format: str  # the family's JSONL row format, e.g. "bedrock-conversation-2024" (ftspec.data.bedrock_jsonl)
    role_arn: str
    s3: BedrockS3
    kms_key_id: str | None = None
    vpc: BedrockVpc | None = None
    tags: FrozenMap[str, str] = {}
    teacher_model: str | None = None  # distillation only
    max_response_length: int | None = None  # distillation only
    # The family's own hyperparameter names, as the strings the API takes, from the plan's
    # training section (ftspec.catalog.bedrock_families maps and checks them).
    hyperparameters: FrozenMap[str, str] = {}
    # How the custom model answers the held-out rows: none (no evaluation of it), on_demand
    # (a custom model deployment) or provisioned (provisioned throughput); both cost money
    # while they exist, and the run deletes what it created once evaluation is done.
    serve: Literal["none", "on_demand", "provisioned"] = "none"
    model_units: int | None = None  # provisioned only
    max_concurrency: int = 4  # Converse calls in flight at once
    # Exactly the CreateModelCustomizationJob parameters, without secrets. Two values are
    # filled when the run starts and shown here as placeholders: the data's S3 keys carry
    # the sha256 of the rendered file ("{train_sha256}", "{validation_sha256}"), and
    # clientRequestToken is derived from the train step's key ("{train_key}").
    request: FrozenMap[str, Any] = {}


class Compute(_Frozen):
    backend: Literal["local", "bedrock"]
    device: Literal["auto", "cpu", "cuda", "mps"]
    precision: Literal["auto", "fp32", "bf16", "fp16"]
    attention: Literal["auto", "sdpa", "eager", "flash_attention_2"]
    num_processes: int
    num_nodes: int
    strategy: Literal["none", "ddp", "fsdp", "deepspeed"]
    # CPU threads torch computes with (intra-op and inter-op): a number, or `auto`, resolved by each run
    threads: int | Literal["auto"]
    fsdp: FSDP | None = None  # strategy fsdp only
    deepspeed: DeepSpeed | None = None  # strategy deepspeed only
    launch: Launch | None = None  # None: training runs in the `ftspec run` process itself
    # backend bedrock only; left out of the plan otherwise, so local plans keep their keys.
    bedrock: Bedrock | None = Field(None, exclude_if=lambda v: v is None)


class Output(_Frozen):
    dir: str
    relative_to: Literal["repository root"] = "repository root"


class NoTracking(_Frozen):
    kind: Literal["none"]


class TensorboardTracking(_Frozen):
    kind: Literal["tensorboard"]


class WandbTracking(_Frozen):
    kind: Literal["wandb"]
    project: str
    entity: str | None = None


class MlflowTracking(_Frozen):
    kind: Literal["mlflow"]
    experiment: str


Tracking = Annotated[Union[NoTracking, TensorboardTracking, WandbTracking, MlflowTracking], Field(discriminator="kind")]


class Checks(_Frozen):
    # Without positions: a plan must not depend on the directory it was made from.
    warnings: tuple[str, ...] = ()
    not_checked: tuple[str, ...] = ()


class Step(_Frozen):
    name: str
    needs: tuple[str, ...] = ()
    # a sha256: the store names folders after it, so a plan file read back may hold nothing else
    key: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]  # pydantic-core's $ is the end of the text only


class Plan(_Frozen):
    """A compiled plan, version 1. It cannot be changed; build one with :meth:`build`
    (which computes the content id) or read one with :meth:`from_json`."""

    plan_version: Literal[1]
    ftspec_version: str
    name: str
    description: str | None = None
    # A spec with stages: this plan's stage, and (on the last stage's plan, which is the
    # spec's plan) the plans of the stages before it, in order, each whole with its own
    # id and steps. Both are left out of a plan without stages.
    stage: str | None = Field(None, exclude_if=lambda v: v is None)
    stages: tuple["Plan", ...] = Field((), exclude_if=lambda v: not v)
    spec: SpecInfo
    model: Model
    data: Data
    format: Format
    method: Method
    training: Training
    eval: Eval
    compute: Compute
    output: Output
    tracking: Tracking
    checks: Checks
    steps: tuple[Step, ...]
    id: str = Field(description="sha256 of the canonical JSON of everything else")

    @classmethod
    def build(cls, body: Mapping) -> "Plan":
        """Validate ``body`` (a plan without its id) and give it its content id."""
        body = {k: v for k, v in thaw(body).items() if k != "id"}
        _check_version(body)
        draft = cls.model_validate({**body, "id": ""})
        return draft.model_copy(update={"id": digest(draft._body())})

    @classmethod
    def from_json(cls, text: str) -> "Plan":
        """A plan read back from ``plan.json``. Raises :class:`PlanFormatError` (one line,
        with the ``line`` of the file where it can be placed) when it is not standard JSON
        of bounded nesting, not a plan of this version, names a step ftspec does not have,
        or its id does not match its content."""
        try:
            data = jsonread.decode(text, max_depth=PLAN_MAX_DEPTH, bounded_ints=True)
        except json.JSONDecodeError as exc:
            raise PlanFormatError(f"not JSON: {exc.msg} (column {exc.colno})", exc.lineno) from None
        except jsonread.BadValue as exc:
            line = jsonread.where(text, exc.pos)[0] if exc.pos is not None else None
            raise PlanFormatError(f"not usable JSON: {exc.message}", line) from None
        try:
            return cls.from_dict(data)
        except PlanFormatError as exc:
            if exc.step is not None and exc.line is None:
                found = re.search(r'"name"\s*:\s*' + re.escape(json.dumps(exc.step)), text)
                exc.line = jsonread.where(text, found.start())[0] if found else None
            raise

    @classmethod
    def from_dict(cls, data: Any) -> "Plan":
        if not isinstance(data, dict):
            raise PlanFormatError(f"a plan is a JSON object (got {jsonread.json_kind(data)})")
        try:
            plan = cls.build(data)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "(top)"
            more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
            raise PlanFormatError(f"not a valid version-{PLAN_VERSION} plan: {where}: {err['msg']}{more}") from None
        for prefix, one in [("", plan), *((f"stages.{i}.", p) for i, p in enumerate(plan.stages))]:
            for i, step_ in enumerate(one.steps):
                for name in (step_.name, *step_.needs):
                    if name not in catalog_steps.BY_NAME:
                        hint = did_you_mean(name, list(catalog_steps.BY_NAME))
                        raise PlanFormatError(f"{prefix}steps.{i}: no step is named {name!r}"
                                              f"{'; ' + hint if hint else ''}", step=name)
        if "id" in data and data["id"] != plan.id:
            raise PlanFormatError(f"plan id {str(data['id'])[:12]} does not match its content ({plan.short_id}); "
                                  "the file was edited")
        return plan

    @property
    def short_id(self) -> str:
        return self.id[:12]

    def _body(self) -> dict:
        body = self.to_dict()
        body.pop("id", None)
        return body

    def to_dict(self) -> dict:
        return self.model_dump(mode="json", by_alias=True)

    def to_json(self, pretty: bool = True) -> str:
        return pretty_json(self.to_dict()) if pretty else canonical_json(self.to_dict())

    def step(self, name: str) -> Step:
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)


StageModel.model_rebuild()
MetricReward.model_rebuild()
Plan.model_rebuild()


class PlanVersionError(ValueError):
    """A plan of another ``plan_version``."""


class PlanFormatError(ValueError):
    """A plan file that ftspec cannot read: one line, said to the user; ``line``: where in
    the file, when it is known; ``step``: the unknown step name it is about, if any."""

    def __init__(self, message: str, line: int | None = None, *, step: str | None = None):
        super().__init__(message)
        self.line = line
        self.step = step


def _check_version(data: Mapping) -> None:
    version = data.get("plan_version")
    if version != PLAN_VERSION or isinstance(version, bool):
        raise PlanVersionError(f"plan_version {version!r} is not supported (this ftspec reads version {PLAN_VERSION})")


def chat_template_text(fmt: Any) -> str | None:
    """The chat template a format names, or None where the tokenizer's own is used
    (and for formats that are not chat)."""
    if fmt.kind != "chat" or fmt.chat_template == "model":
        return None
    return fmt.chat_template.text


def json_schema() -> dict:
    """The JSON Schema of ``plan.json``."""
    schema = Plan.model_json_schema(by_alias=True, mode="serialization")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://ftspec.dev/schema/plan-v1.json"
    schema["title"] = "ftspec plan, version 1"
    return schema


# --------------------------------------------------------------------------- canonical JSON


def canonical_json(value: Any) -> str:
    return json.dumps(thaw(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def pretty_json(value: Any) -> str:
    return json.dumps(thaw(value), sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def digest(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()


def thaw(value: Any) -> Any:
    """Plain JSON-shaped data: models dumped, mappings as dicts, sequences as lists."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True)
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [thaw(v) for v in value]
    return value
