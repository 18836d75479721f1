"""The spec schema, version 1: what a user may write, each field documented once.

Every choice is a discriminated union (``kind:`` for most sections, ``name:`` for
metrics, the key used for templates and data sources), every model forbids unknown
keys, and every field carries the description that ``ftspec schema`` and the README's
reference are generated from. Short forms that users reach for (``adapter: lora``,
``train: data/train.jsonl``, ``metrics: [accuracy]``) are expanded before validation.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator,
    AllowInfNan,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Strict,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.functional_validators import BeforeValidator
from pydantic_core import PydanticCustomError

from ftspec.catalog import architectures
from ftspec.catalog import aws_patterns as aws
from ftspec.catalog import metrics as metric_catalog
from ftspec.core import storeurl
from ftspec.core.paths import revision_problem
from ftspec.spec.limits import MAX_PROFILES
from ftspec.spec.sweep import SweepSpec


def _no_bool(value: Any) -> Any:
    # YAML's `true` is not the number 1, whatever Python thinks.
    if isinstance(value, bool):
        raise PydanticCustomError("float_type", "Input should be a valid number")
    # Not finite (.inf, .nan) is said as such, before any range.
    if isinstance(value, float) and not math.isfinite(value):
        raise PydanticCustomError("finite_number", "Input should be a finite number")
    return value


# Integers must be integers (not `true`, not 2.5), numbers numbers (`1e-4` is one, as
# YAML 1.2 reads it): a quoted value is text, for every field alike ("16" and "2e-4" are
# refused with a hint to drop the quotes, ftspec.spec.validate). Numbers are finite (no
# .inf or .nan): every one of them goes into the plan's JSON.
Int = Annotated[int, Strict()]
Number = Annotated[float, BeforeValidator(_no_bool), Strict(), AllowInfNan(False)]

# Seeds reach numpy and torch, which take 32-bit unsigned seeds.
MAX_SEED = 2**32 - 1
# Counts of steps and rows: far past any real job, far below what breaks arithmetic.
MAX_COUNT = 10**12
# How many of each repeated thing a spec may hold: every one costs work in validate.
MAX_DERIVED = 100
MAX_TURNS = 256
MAX_METRICS = 64


def _revision(value: str | None) -> str | None:
    if value is not None:
        problem = revision_problem(value)
        if problem:
            raise ValueError(problem)
    return value


Revision = Annotated[str | None, AfterValidator(_revision)]


def _regex(value: str | None) -> str | None:
    if value is not None:
        try:
            re.compile(value)
        except (re.error, RecursionError, OverflowError) as exc:
            raise ValueError(f"invalid regular expression: {exc}") from None
    return value


# A model's docstring is its description in the generated schema and reference, where it must stay one line: a long
# one is written as adjacent string literals in parentheses, which Python still takes as the docstring.
class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=False, validate_default=False)


def _by_key(keys: dict[str, str], default: str | None = None):
    """A discriminator that picks a union member by which key a mapping holds."""

    def pick(value: Any) -> str | None:
        if isinstance(value, BaseModel):
            return getattr(value, "_tag", None)
        if isinstance(value, dict):
            for key, tag in keys.items():
                if key in value:
                    return tag
            return default
        return None

    return pick


def _by_kind(infer: dict[str, str] | None = None, field: str = "kind"):
    """A discriminator on ``kind`` that can infer the kind from a telling key when it is left out."""

    def pick(value: Any) -> str | None:
        if isinstance(value, BaseModel):
            return getattr(value, field)
        if isinstance(value, dict):
            if field in value:
                return value[field] if isinstance(value[field], str) else repr(value[field])
            for key, tag in (infer or {}).items():
                if key in value:
                    return tag
        return None

    return pick


# --------------------------------------------------------------------------- templates


class FileTemplate(_Section):
    """A jinja template read from a file next to the spec."""

    _tag = "file"
    file: str = Field(description="Path of a jinja template file, relative to the spec file.", min_length=1)


class BuiltinTemplate(_Section):
    """One of the templates shipped with ftspec in `templates/`."""

    _tag = "builtin"
    builtin: str = Field(description=(
        "Name of a built-in template (`ftspec templates` lists them), e.g. `chatml`."), min_length=1)

    @field_validator("builtin")
    @classmethod
    def _name(cls, v: str) -> str:
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", v):
            raise ValueError("a built-in template is a name (letters, digits, '-', '_' and '.'; "
                             "`ftspec templates` lists them), not a path; use {file: PATH} for a template file")
        return v


Template = Annotated[
    Union[
        Annotated[str, Tag("inline")],
        Annotated[FileTemplate, Tag("file")],
        Annotated[BuiltinTemplate, Tag("builtin")],
    ],
    Discriminator(
        lambda v: "inline" if isinstance(v, str) else _by_key({"file": "file", "builtin": "builtin"})(v),
        custom_error_type="template",
        custom_error_message="expected a jinja template: a string, {file: PATH} or {builtin: NAME}",
    ),
    Field(description=(
        "A jinja template: inline text, `{file: PATH}` next to the spec, or `{builtin: NAME}` from `templates/`.")),
]

# --------------------------------------------------------------------------- model


class ByteTokenizer(_Section):
    """A byte-level tokenizer: 256 byte tokens plus special tokens. Needs no download and no training."""

    kind: Literal["byte"] = Field(description="`byte`: one token per UTF-8 byte.")


class BPETokenizer(_Section):
    """A byte-level BPE tokenizer trained on the training split when data is prepared."""

    kind: Literal["bpe"] = Field(description="`bpe`: byte-level BPE trained on the training split.")
    vocab_size: Int = Field(1024, ge=300, le=65536, description=(
        "Vocabulary size including the 256 byte tokens and the special tokens."))


TinyTokenizerSpec = Annotated[
    Union[Annotated[ByteTokenizer, Tag("byte")], Annotated[BPETokenizer, Tag("bpe")]],
    Discriminator(_by_kind()),
    Field(description="The tokenizer of a tiny model; it never needs a download."),
]


class PretrainedModel(_Section):
    """A pretrained model: a hub id or a local directory in transformers' layout."""

    kind: Literal["pretrained"] = Field("pretrained", description="`pretrained` (inferred when `base` is given).")
    base: str = Field(min_length=1, description=(
        "A hub model id such as `Qwen/Qwen2.5-0.5B-Instruct`, or a local directory "
        "relative to the spec (start it with `./` or `../`), or a local `.gguf` file."))
    gguf_file: str | None = Field(None, min_length=1, description=(
        "A GGUF file (its name, in the `base` folder or hub repository) to load: de-quantised through "
        "transformers and converted once, when data is prepared, into an ordinary safetensors model."))
    revision: Revision = Field(None, description=(
        "Hub revision to pin: a commit hash (best), tag or branch. Unpinned hub models draw a warning."))
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field("auto", description=(
        "Weight dtype when loading; `auto` follows `compute.precision`."))
    trust_remote_code: bool = Field(False, description=(
        "Run Python code shipped inside the model repository. Off unless set here; `ftspec plan` shows it when on."))
    tokenizer: str | None = Field(None, description=(
        "A different tokenizer (hub id or local path); defaults to the model's own."))


class TinyModel(_Section):
    """A small model built from a config with random weights: runs anywhere, with no network."""

    kind: Literal["tiny"] = Field(description="`tiny`: build a small model from this config.")
    # The choices are the catalog's rows that say how to size a tiny model of them.
    architecture: Literal[architectures.TINY] = Field("llama", description=(
        "transformers architecture to instantiate."))
    hidden_size: Int = Field(64, ge=8, le=16384, description="Width of the model.")
    num_layers: Int = Field(2, ge=1, le=128, description="Number of transformer blocks.")
    num_heads: Int = Field(4, ge=1, le=256, description="Attention heads; must divide `hidden_size`.")
    num_kv_heads: Int | None = Field(None, ge=1, le=256, description=(
        "Key/value heads for grouped-query attention; defaults to `num_heads` (not used by gpt2)."))
    intermediate_size: Int | None = Field(None, ge=8, le=65536, description=(
        "Width of the MLP; defaults to 4 × `hidden_size`."))
    max_position_embeddings: Int = Field(512, ge=16, le=131072, description="Longest sequence the model can take.")
    tokenizer: TinyTokenizerSpec = Field(default_factory=lambda: ByteTokenizer(kind="byte"))
    init_seed: Int = Field(0, ge=0, le=MAX_SEED, description="Seed of the random initial weights.")

    @model_validator(mode="after")
    def _heads(self) -> "TinyModel":
        if self.hidden_size % self.num_heads:
            raise ValueError(f"num_heads ({self.num_heads}) must divide hidden_size ({self.hidden_size})")
        if self.num_kv_heads and self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_kv_heads ({self.num_kv_heads}) must divide num_heads ({self.num_heads})")
        return self


class BedrockModel(_Section):
    """An Amazon Bedrock base model, customised and served by Bedrock (with `compute.backend: bedrock`)."""

    kind: Literal["bedrock"] = Field(description=(
        "`bedrock`: a model that Amazon Bedrock customises; needs `compute.backend: bedrock`."))
    id: Annotated[str, AfterValidator(aws.BASE_MODEL_ID.check)] = Field(min_length=1, max_length=2048, description=(
        "The Bedrock base model id, e.g. `amazon.nova-micro-v1:0:128k`. Its family (nova, titan, llama or claude) "
        "is inferred from it, and sets the data format, the customizations and the hyperparameters the job takes."))


ModelSpec = Annotated[
    Union[Annotated[PretrainedModel, Tag("pretrained")], Annotated[TinyModel, Tag("tiny")],
          Annotated[BedrockModel, Tag("bedrock")]],
    Discriminator(_by_kind({"base": "pretrained", "architecture": "tiny", "hidden_size": "tiny"})),
    Field(description="The base model: `{base: ID_OR_PATH, …}`, `{kind: tiny, …}` or `{kind: bedrock, id: MODEL_ID}`."),
]

# --------------------------------------------------------------------------- data

_FORMATS = Literal["jsonl", "json", "csv", "tsv", "parquet"]


class FileSource(_Section):
    """Rows from a local file."""

    _tag = "file"
    path: str = Field(min_length=1, description="File path relative to the spec. `.gz` files are read compressed.")
    format: _FORMATS | None = Field(None, description="File format; inferred from the extension when left out.")
    columns: list[str] | None = Field(None, min_length=1, max_length=10_000, description=(
        "Column names for CSV/TSV, in order. Without a header row they name "
        "the columns; with `header: true` they replace the header's names."))
    header: bool | None = Field(None, description=(
        "Whether a CSV/TSV file starts with a header row; defaults to true unless `columns` is given."))
    field: str | None = Field(None, description=(
        "For JSON files holding an object: the key whose value is the list of rows."))

    @field_validator("columns")
    @classmethod
    def _unique(cls, v):
        if v is not None:
            dupes = sorted(c for c, n in Counter(v).items() if n > 1)
            if dupes:
                raise ValueError("column names must be unique "
                                 f"(repeated: {', '.join(dupes[:20])}{', …' if len(dupes) > 20 else ''})")
        return v


class HubSource(_Section):
    """Rows from a dataset on the Hugging Face hub, read through `datasets`."""

    _tag = "hub"
    hub: str = Field(min_length=1, description="Hub dataset id, e.g. `stanfordnlp/sst2`.")
    split: str = Field("train", description="Which split of the hub dataset to read.")
    subset: str | None = Field(None, description="Configuration (subset) name, when the dataset has several.")
    revision: Revision = Field(None, description="Dataset revision (commit hash, tag or branch) to pin.")


def _path_shorthand(v: Any) -> Any:
    return {"path": v} if isinstance(v, str) else v


Source = Annotated[
    Union[Annotated[FileSource, Tag("file")], Annotated[HubSource, Tag("hub")]],
    Discriminator(
        _by_key({"path": "file", "hub": "hub"}),
        custom_error_type="source",
        custom_error_message="expected a file path, {path: FILE, …} or {hub: DATASET_ID, …}",
    ),
    BeforeValidator(_path_shorthand, json_schema_input_type=Union[str, FileSource, HubSource]),
]


class Split(_Section):
    """Carve validation and test rows out of the training source, reproducibly."""

    validation: Number = Field(0.0, ge=0, lt=1, description=(
        "Fraction of the training rows held out for validation (only when `data.validation` is not given)."))
    test: Number = Field(0.0, ge=0, lt=1, description=(
        "Fraction of the training rows held out for the test split (only when `data.test` is not given)."))
    seed: Int = Field(42, ge=0, le=MAX_SEED, description="Seed of the shuffle before splitting.")
    stratify: str | None = Field(None, description=(
        "Column whose value proportions each split keeps (for classification labels)."))

    @model_validator(mode="after")
    def _sum(self) -> "Split":
        if self.validation + self.test >= 1:
            raise ValueError(f"validation + test must leave rows to train on (got {self.validation} + {self.test})")
        return self


_IDENT = r"^[A-Za-z_][A-Za-z0-9_]*$"


class SplitLimits(_Section):
    """A limit on the rows of the splits named; a split not named is not cut."""

    train: Int | None = Field(None, ge=1, le=MAX_COUNT, description="Keep at most this many training rows.")
    validation: Int | None = Field(None, ge=1, le=MAX_COUNT, description="Keep at most this many validation rows.")
    test: Int | None = Field(None, ge=1, le=MAX_COUNT, description="Keep at most this many test rows.")

    @model_validator(mode="after")
    def _some(self) -> "SplitLimits":
        if self.train is None and self.validation is None and self.test is None:
            raise ValueError("name at least one split to limit: train, validation or test")
        return self


RowLimit = Annotated[
    Union[
        Annotated[Annotated[int, Strict(), Field(ge=1, le=MAX_COUNT)], Tag("every")],
        Annotated[SplitLimits, Tag("splits")],
    ],
    Discriminator(
        lambda v: "splits" if isinstance(v, (dict, SplitLimits)) else "every",
    ),
]


# A mixture's source names: in the plan, the prepared data's `.sources` files and the report.
SOURCE_NAME = r"^[a-z0-9][a-z0-9._-]{0,63}$"
MAX_MIXTURE_SOURCES = 64


def default_source_name(source: Any) -> str:
    """A mixture source's name when it gives none: its file's stem (without `.gz` and the
    format's extension), or its hub id's last part."""
    if isinstance(source, HubSource):
        return source.hub.rstrip("/").rsplit("/", 1)[-1]
    name = source.path.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    name = name[:-3] if name.lower().endswith(".gz") else name
    return name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name


_NAME_HELP = ("The source's name in the plan, the prepared data and the report's per-source metrics (lower-case "
              "letters, digits, `.`, `_`, `-`); defaults to the file's stem or the hub id's last part. Unique in the "
              "mixture.")
_RENAME_HELP = "Rename this source's columns (`{old_name: new_name}`), before `data.rename` applies to every source."
_DERIVE_HELP = "New columns computed from this source's rows by jinja templates, in order, before `data.derive`."
_WEIGHT_HELP = ("This source's share of the weighted sources' rows (normalised over them to sum to 1); their total is "
                "`data.mix.total`. Rows are drawn without replacement until the source runs out: every row once "
                "before any row twice.")
_ROWS_HELP = "Draw exactly this many rows of the source (every row once before any row twice)."
_EPOCHS_HELP = ("Passes over the source: round(epochs × its training rows). The default when no weight, rows or "
                "epochs is given is 1, every row once.")
SourceName = Annotated[str, Field(pattern=SOURCE_NAME)]
Renames = dict[str, Annotated[str, Field(pattern=_IDENT)]]


class _MixtureDraw:
    """What a mixture's file and hub sources share: how they are checked and drawn."""

    @field_validator("derive")
    @classmethod
    def _derive_names(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v:
            if not re.match(_IDENT, name):
                raise ValueError(f"derived column name '{name}' must be an identifier (letters, digits, _)")
        return v

    @model_validator(mode="after")
    def _one_amount(self):
        given = [k for k in ("weight", "rows", "epochs") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"give at most one of weight, rows and epochs (got {' and '.join(given)})")
        return self

    def draw(self) -> tuple[str, float]:
        """How this source is drawn: (`weight` | `rows` | `epochs`, its amount as written)."""
        for take in ("weight", "rows", "epochs"):
            if getattr(self, take) is not None:
                return take, float(getattr(self, take))
        return "epochs", 1.0

    def source_name(self) -> str:
        return self.name if self.name is not None else default_source_name(self)


# Each field is declared on both sources (the same types and descriptions): the schema lists a field where declared.
class FileMixtureSource(_MixtureDraw, FileSource):
    """One file of a training mixture (`data.train` as a list)."""

    _tag = "file"
    name: SourceName | None = Field(None, description=_NAME_HELP)
    rename: Renames = Field(default_factory=dict, max_length=1000, description=_RENAME_HELP)
    derive: dict[str, str] = Field(default_factory=dict, max_length=MAX_DERIVED, description=_DERIVE_HELP)
    weight: Number | None = Field(None, gt=0, description=_WEIGHT_HELP)
    rows: Int | None = Field(None, ge=1, le=MAX_COUNT, description=_ROWS_HELP)
    epochs: Number | None = Field(None, gt=0, le=10_000, description=_EPOCHS_HELP)


class HubMixtureSource(_MixtureDraw, HubSource):
    """One hub dataset of a training mixture (`data.train` as a list)."""

    _tag = "hub"
    name: SourceName | None = Field(None, description=_NAME_HELP)
    rename: Renames = Field(default_factory=dict, max_length=1000, description=_RENAME_HELP)
    derive: dict[str, str] = Field(default_factory=dict, max_length=MAX_DERIVED, description=_DERIVE_HELP)
    weight: Number | None = Field(None, gt=0, description=_WEIGHT_HELP)
    rows: Int | None = Field(None, ge=1, le=MAX_COUNT, description=_ROWS_HELP)
    epochs: Number | None = Field(None, gt=0, le=10_000, description=_EPOCHS_HELP)


MixtureItem = Annotated[
    Union[Annotated[FileMixtureSource, Tag("file")], Annotated[HubMixtureSource, Tag("hub")]],
    Discriminator(
        _by_key({"path": "file", "hub": "hub"}),
        custom_error_type="source",
        custom_error_message="expected a file path, {path: FILE, …} or {hub: DATASET_ID, …}",
    ),
    BeforeValidator(_path_shorthand, json_schema_input_type=Union[str, FileMixtureSource, HubMixtureSource]),
]


def _train_kind(value: Any) -> str | None:
    return "mixture" if isinstance(value, (list, tuple)) else _by_key({"path": "file", "hub": "hub"})(value)


TrainSource = Annotated[
    Union[Annotated[FileSource, Tag("file")], Annotated[HubSource, Tag("hub")],
          Annotated[list[MixtureItem], Field(min_length=1, max_length=MAX_MIXTURE_SOURCES), Tag("mixture")]],
    Discriminator(
        _train_kind,
        custom_error_type="source",
        custom_error_message="expected a file path, {path: FILE, …}, {hub: DATASET_ID, …} or a list of them",
    ),
    BeforeValidator(_path_shorthand, json_schema_input_type=Union[str, FileSource, HubSource, list[MixtureItem]]),
]
HeldOutSource = Annotated[
    Union[Annotated[FileSource, Tag("file")], Annotated[HubSource, Tag("hub")]],
    Discriminator(
        _by_key({"path": "file", "hub": "hub"}),
        custom_error_type="source",
        custom_error_message="expected a file path, {path: FILE, …} or {hub: DATASET_ID, …} (a list of sources, a "
                             "mixture, is for data.train only)",
    ),
    BeforeValidator(_path_shorthand, json_schema_input_type=Union[str, FileSource, HubSource]),
]


class Mix(_Section):
    """How a training mixture (`data.train` as a list) is drawn: docs/use-cases/mixtures.md."""

    total: Union[Literal["no_repeats", "every_row"], Annotated[int, Strict(), Field(ge=1, le=MAX_COUNT)]] = Field(
        "no_repeats", description=(
            "Rows of the weighted sources together: `no_repeats`, the most that repeats no row (the source that "
            "runs out first, relative to its weight, is used whole); `every_row`, the fewest that use every row "
            "of every weighted source; or a number."))
    seed: Int | None = Field(None, ge=0, le=MAX_SEED, description=(
        "Seed of the draw and of the order the sources' rows are interleaved in; defaults to `data.split.seed`, "
        "else 42."))


class Data(_Section):
    """Where the rows come from and how they are mapped before formatting."""

    train: TrainSource = Field(description=(
        "Training rows: a file path, `{path: …}` or `{hub: …}`; or a list of them, a mixture, each with its "
        "`name`, `rename`, `derive` and one of `weight`, `rows` or `epochs` (docs/use-cases/mixtures.md)."))
    validation: HeldOutSource | None = Field(None, description=(
        "Validation rows, watched during training for over-fitting."))
    test: HeldOutSource | None = Field(None, description="Held-out test rows for the evaluation.")
    mix: Mix | None = Field(None, description=(
        "How a mixture (`data.train` as a list) is drawn: its total and seed."))
    split: Split | None = Field(None, description=(
        "Hold out validation/test rows from `train` when no file is given for them."))
    rename: dict[str, Annotated[str, Field(pattern=_IDENT)]] = Field(
        default_factory=dict, max_length=1000, description="Rename columns: `{old_name: new_name}`.")
    derive: dict[str, str] = Field(default_factory=dict, max_length=MAX_DERIVED, description=(
        "New columns computed from each row by jinja templates, in "
        "order: `{answer: \"{{ 'yes' if label == '1' else 'no' }}\"}`."))
    filter: Template | None = Field(None, description=(
        "Keep only the rows for which this template renders true (`true`, `1` or `yes`; `false`, "
        "`0`, `no` or nothing drops the row; anything else is an error), e.g. `\"{{ label in "
        "['0', '1'] }}\"`. It sees the columns after `rename` and `derive`, and applies to every "
        "split before splitting; the rows it drops are counted in the data statistics."))
    limit: RowLimit | None = Field(None, description=(
        "Keep at most this many rows of each split (after filtering and splitting): a number cuts "
        "every split, `{train: 200}` cuts only the splits it names. For quick runs and smoke profiles."))
    on_bad_row: Literal["error", "skip"] = Field("error", description=(
        "A row that cannot be read or rendered: stop with its row number "
        "(`error`), or `skip` it and count it in the data statistics."))

    @field_validator("derive")
    @classmethod
    def _derive_names(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v:
            if not re.match(_IDENT, name):
                raise ValueError(f"derived column name '{name}' must be an identifier (letters, digits, _)")
        return v


# --------------------------------------------------------------------------- format


class PromptCompletionFormat(_Section):
    """Single-turn rows: a prompt and the completion the model should learn to write."""

    kind: Literal["prompt_completion"] = Field(description="`prompt_completion`: TRL's `prompt`/`completion` columns.")
    prompt: Template = Field(description="Template of the prompt.")
    completion: Template = Field(description="Template of the expected completion (the answer).")
    loss: Literal["completion", "all"] = Field("completion", description=(
        "Which tokens carry loss: the completion only (recommended) or the whole text."))


class ChatTurn(_Section):
    """One message of a templated conversation."""

    role: Literal["system", "user", "assistant"] = Field(description="Who speaks.")
    content: Template = Field(description="Template of the message text.")


class ChatFormat(_Section):
    """Conversations (a `messages` list), rendered with a chat template."""

    kind: Literal["chat"] = Field(description="`chat`: TRL's conversational `messages` column.")
    messages: list[ChatTurn] | None = Field(None, min_length=1, max_length=MAX_TURNS, description=(
        "The conversation built from each row, turn by turn. Give this or `messages_column`."))
    messages_column: str | None = Field(None, description=(
        "A column that already holds a list of `{role, content}` messages."))
    chat_template: Template | None = Field(None, description=(
        "Chat template; defaults to the tokenizer's own. Use `{builtin: chatml}` for models without one."))
    loss: Literal["assistant", "all"] = Field("assistant", description=(
        "Which tokens carry loss: assistant turns only (recommended) or the whole conversation."))

    @model_validator(mode="after")
    def _one_source(self) -> "ChatFormat":
        if (self.messages is None) == (self.messages_column is None):
            raise ValueError("give exactly one of 'messages' (templated turns) or 'messages_column'")
        return self


class PreferenceFormat(_Section):
    """Preference pairs for DPO: a prompt, a preferred and a rejected answer."""

    kind: Literal["preference"] = Field(description="`preference`: TRL's `prompt`/`chosen`/`rejected` columns.")
    prompt: Template = Field(description="Template of the prompt shared by both answers.")
    chosen: Template = Field(description="Template of the preferred answer.")
    rejected: Template = Field(description="Template of the rejected answer.")


class FeedbackFormat(_Section):
    """Unpaired feedback for KTO: a prompt, a completion, and whether it was desirable (a thumbs up or down)."""

    kind: Literal["feedback"] = Field(description="`feedback`: TRL's `prompt`/`completion`/`label` columns.")
    prompt: Template = Field(description="Template of the prompt.")
    completion: Template = Field(description="Template of the completion the feedback is about.")
    label: Template = Field(description=(
        "Template that renders to `true` (desirable: a thumbs up) or `false` (undesirable), case-insensitively and "
        "after trimming: a boolean column is `'{{ thumbs_up }}'`, anything else a test such as "
        "`'{{ rating >= 4 }}'`. A row whose label renders to anything else is a bad row (`data.on_bad_row`)."))


FormatSpec = Annotated[
    Union[
        Annotated[PromptCompletionFormat, Tag("prompt_completion")],
        Annotated[ChatFormat, Tag("chat")],
        Annotated[PreferenceFormat, Tag("preference")],
        Annotated[FeedbackFormat, Tag("feedback")],
    ],
    Discriminator(_by_kind()),
    Field(description="How each row becomes training text: `kind: prompt_completion | chat | preference | feedback`."),
]

# --------------------------------------------------------------------------- method


class FullAdapter(_Section):
    """Train every weight of the model."""

    kind: Literal["full"] = Field(description="`full`: full fine-tuning.")


class LoraAdapter(_Section):
    """Low-rank adapters (LoRA) through peft; the base weights stay frozen."""

    kind: Literal["lora"] = Field(description="`lora`.")
    r: Int = Field(16, ge=1, le=1024, description="Rank of the adapter matrices.")
    alpha: Number | None = Field(None, gt=0, le=1e6, description=(
        "Scaling numerator (`alpha / r`); defaults to 2 × `r`."))
    dropout: Number = Field(0.05, ge=0, lt=1, description="Dropout on the adapter input.")
    target_modules: Union[Literal["all-linear"], Annotated[list[str], Field(min_length=1, max_length=256)]] = Field(
        "all-linear", description="Module names to adapt, or `all-linear` for every linear layer but the output head.")
    bias: Literal["none", "all", "lora_only"] = Field("none", description="Which biases to train.")


class QLoraAdapter(LoraAdapter):
    """LoRA on a 4- or 8-bit quantised base model (bitsandbytes). Needs a CUDA device."""

    kind: Literal["qlora"] = Field(description="`qlora`.")  # type: ignore[assignment]
    bits: Literal[4, 8] = Field(4, description="Quantisation of the frozen base weights.")
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type.")
    double_quant: bool = Field(True, description="Quantise the quantisation constants too (saves memory).")
    quant_storage: Literal["auto", "uint8", "float32", "bfloat16", "float16"] = Field("auto", description=(
        "The dtype the 4-bit weights are packed into. FSDP and DeepSpeed ZeRO-3 shard the quantised "
        "weights together with the other parameters, which works only when they share one dtype: "
        "`auto` is the dtype the base model loads in (`model.dtype`; its `auto` loads float32) under "
        "`compute.strategy: fsdp` or ZeRO stage 3, and `uint8` (bitsandbytes' default) otherwise."))


def _adapter_shorthand(v: Any) -> Any:
    return {"kind": v} if isinstance(v, str) else v


AdapterSpec = Annotated[
    Union[Annotated[FullAdapter, Tag("full")], Annotated[LoraAdapter, Tag("lora")],
          Annotated[QLoraAdapter, Tag("qlora")]],
    Discriminator(_by_kind()),
    BeforeValidator(
        _adapter_shorthand,
        json_schema_input_type=Union[Literal["full", "lora", "qlora"], FullAdapter, LoraAdapter, QLoraAdapter],
    ),
    Field(description="What is trained: `full`, `lora` or `qlora` (or `{kind: lora, r: …}`)."),
]


def _default_adapter() -> LoraAdapter:
    return LoraAdapter(kind="lora")


class SFTMethod(_Section):
    """Supervised fine-tuning: learn to produce the completions (or assistant turns)."""

    kind: Literal["sft"] = Field(description="`sft`: supervised fine-tuning.")
    adapter: AdapterSpec = Field(default_factory=_default_adapter)


DPO_LOSSES = (  # TRL 1.x
    "sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot", "aot_unpaired",
    "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm",
)


class DPOMethod(_Section):
    """Direct preference optimisation on (prompt, chosen, rejected) pairs."""

    kind: Literal["dpo"] = Field(description="`dpo`: direct preference optimisation.")
    adapter: AdapterSpec = Field(default_factory=_default_adapter)
    beta: Number = Field(0.1, gt=0, le=100, description=(
        "Strength of the pull towards the reference model; higher stays closer."))
    loss_type: Literal[DPO_LOSSES] = Field("sigmoid", description=(
        "DPO loss variant (TRL's `loss_type`)."))  # type: ignore[valid-type]
    label_smoothing: Number = Field(0.0, ge=0, lt=0.5, description=(
        "Assumed rate of flipped preference labels (robust/cDPO losses)."))


class Extract(_Section):
    """Pull the answer out of a prediction and its reference before scoring."""

    regex: Annotated[str | None, AfterValidator(_regex)] = Field(None, description=(
        "A regular expression; the first group (or the whole match) is the answer."))
    template: str | None = Field(None, description=(
        "A jinja expression over `text`, e.g. `{{ text.split('####')[-1] | trim }}`."))
    which: Literal["first", "last"] = Field("last", description="With `regex`: use the first or the last match.")

    @model_validator(mode="after")
    def _one(self) -> "Extract":
        if (self.regex is None) == (self.template is None):
            raise ValueError("give exactly one of 'regex' or 'template'")
        return self


class StageTeacher(_Section):
    """The model an earlier stage of this spec trained."""

    stage: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$", description="The name of an earlier stage in `stages`.")


TeacherSpec = Annotated[
    Union[Annotated[StageTeacher, Tag("stage")], Annotated[PretrainedModel, Tag("pretrained")]],
    Discriminator(_by_key({"stage": "stage"}, default="pretrained")),
    Field(description=(
        "The teacher: `{stage: NAME}` (an earlier stage's model) or a pretrained model "
        "`{base: ID_OR_PATH, …}` (a hub id, a local folder, or a GGUF file with `gguf_file`).")),
]


class TeacherFilter(_Section):
    """Which teacher answers the student learns from."""

    extract: Extract | None = Field(None, description=(
        "An extraction (`regex` or `template`) that must find something in a teacher answer for it to be kept."))
    max_tokens: Int | None = Field(None, ge=1, le=1_000_000, description=(
        "Drop teacher answers longer than this many tokens (the teacher's tokenizer)."))
    train_on: Literal["answer", "extracted"] = Field("answer", description=(
        "What the student learns: the teacher's whole `answer`, or only what `extract` found (`extracted`)."))

    @model_validator(mode="after")
    def _extracted_needs_extract(self) -> "TeacherFilter":
        if self.train_on == "extracted" and self.extract is None:
            raise ValueError("train_on: extracted needs an extract (regex or template) that says what to keep")
        return self


class LogitDistillation(_Section):
    """Also match the teacher's token distributions on the answer tokens."""

    alpha: Number = Field(0.5, ge=0, le=1, description=(
        "Weight of the KL term: loss = (1 − alpha)·cross-entropy + alpha·T²·KL(teacher ‖ student) at temperature T."))
    temperature: Number = Field(2.0, gt=0, le=100, description=(
        "Softening temperature T of both distributions in the KL term."))


class DistillMethod(_Section):
    """Distillation: a teacher answers the training prompts and the student is fine-tuned on its answers."""

    kind: Literal["distill"] = Field(description=(
        "`distill`: learn from a teacher's answers (sequence-level distillation), optionally its logits too."))
    adapter: AdapterSpec = Field(default_factory=_default_adapter)
    teacher: TeacherSpec
    mode: Literal["auto", "generate", "choices"] = Field("auto", description=(
        "How the teacher answers: `generate` writes greedy answers; `choices` picks the likeliest of the labels "
        "(`eval.choices`) after each prompt, as evaluation's `choices` mode scores a model; `auto` answers as "
        "the models are evaluated (`choices` when the evaluation picks among labels, else `generate`)."))
    max_new_tokens: Int | None = Field(None, ge=1, le=32768, description=(
        "Longest teacher answer; defaults to `eval.max_new_tokens`."))
    stop: list[str] | None = Field(None, max_length=64, description=(
        "Strings that end a teacher answer; defaults to the evaluation's stop strings."))
    batch_size: Int = Field(16, ge=1, le=4096, description="Prompts the teacher answers per batch.")
    filter: TeacherFilter = Field(default_factory=TeacherFilter, description="Which teacher answers are kept.")
    logits: LogitDistillation | None = Field(None, description=(
        "Logit distillation besides the teacher's answers; needs the teacher's tokenizer vocabulary."))



# --------------------------------------------------------------------------- training


class EarlyStopping(_Section):
    """Stop when the validation loss stops improving."""

    patience: Int = Field(3, ge=1, le=1_000_000, description="Evaluations without improvement before stopping.")
    min_delta: Number = Field(0.0, ge=0, le=1e6, description=(
        "Smallest decrease of the validation loss that counts as an improvement."))


Cadence = Union[Annotated[int, Strict(), Field(ge=1, le=MAX_COUNT)], Literal["epoch"]]


class Training(_Section):
    """Optimisation settings. Steps are optimizer steps (after gradient accumulation)."""

    epochs: Number = Field(1.0, gt=0, le=1000, description="Passes over the training split.")
    max_steps: Int | None = Field(None, ge=1, le=MAX_COUNT, description=(
        "Stop after this many optimizer steps; overrides `epochs`."))
    learning_rate: Number | None = Field(None, gt=0, lt=1, description=(
        "Peak learning rate; defaults to 2e-4 for LoRA/QLoRA and 2e-5 for full fine-tuning (5e-6 for full DPO)."))
    learning_rate_multiplier: Number | None = Field(None, gt=0, le=1000, description=(
        "Amazon Bedrock only, for models that take a multiplier of their own learning rate instead of a "
        "learning rate (Claude 3 Haiku's `learningRateMultiplier`); the family's default when left out."))
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field("cosine", description=(
        "Learning-rate schedule after warm-up."))
    warmup_ratio: Number | None = Field(None, ge=0, lt=1, description=(
        "Fraction of the steps spent warming up; defaults to 0.03. Give this or `warmup_steps`."))
    warmup_steps: Int | None = Field(None, ge=0, le=MAX_COUNT, description=(
        "Warm-up steps; give this or `warmup_ratio`."))
    batch_size: Int = Field(8, ge=1, le=65536, description="Rows per device per forward pass.")
    gradient_accumulation: Int = Field(1, ge=1, le=4096, description="Forward passes per optimizer step.")
    max_length: Int | None = Field(None, ge=8, le=1_048_576, description=(
        "Longest tokenised row; longer rows are truncated (the prepared-data statistics report "
        "how many). Defaults to 1024, or the model's context length when that is shorter."))
    seed: Int = Field(42, ge=0, le=MAX_SEED, description="Seed of initialisation, shuffling and dropout.")
    optimizer: Literal[
        "adamw_torch", "adamw_torch_fused", "adafactor", "sgd", "adamw_8bit", "paged_adamw_8bit"
    ] = Field("adamw_torch", description="Optimizer.")
    weight_decay: Number = Field(0.0, ge=0, lt=1, description="Decoupled weight decay.")
    max_grad_norm: Number = Field(1.0, ge=0, le=1e6, description="Gradient clipping norm (0 turns clipping off).")
    batching: Literal["auto", "padded", "length_grouped", "packed"] = Field("auto", description=(
        "How rows become batches: `packed` puts several rows into one sequence with no padding (kept "
        "apart by position ids), `length_grouped` batches rows of similar length, `padded` pads each "
        "batch to its longest row; `auto` lets the compiler choose, and the plan says which and why."))
    gradient_checkpointing: bool = Field(False, description=(
        "Recompute activations in the backward pass: less memory, about a third more time."))
    logging_steps: Int = Field(10, ge=1, le=MAX_COUNT, description="Log the training loss every this many steps.")
    eval_every: Cadence | None = Field(None, description=(
        "Compute the validation loss every N steps or every `epoch`; defaults to about ten times per run."))
    eval_rows: Int | None = Field(None, ge=1, le=MAX_COUNT, description=(
        "Rows of the validation split the validation loss is computed on, each time: the first N of the "
        "split (the same rows every time, dealt at random by `data.split`); defaults to all of them up to "
        "1,000, so that watching the loss does not cost an epoch on a large validation split; set it "
        "higher where a finer estimate matters (early stopping on small differences)."))
    save_every: Cadence | None = Field(None, description=(
        "Write a checkpoint every N steps or every `epoch`; defaults to `eval_every`."))
    save_total_limit: Int = Field(2, ge=1, le=10_000, description=(
        "Checkpoints kept on disk (the newest, plus the best when early stopping)."))
    early_stopping: EarlyStopping | None = Field(None, description=(
        "Stop when the validation loss stops improving (needs validation data)."))

    @model_validator(mode="after")
    def _warmup(self) -> "Training":
        if self.warmup_ratio is not None and self.warmup_steps is not None:
            raise ValueError("give warmup_ratio or warmup_steps, not both")
        return self


# --------------------------------------------------------------------------- eval

# Preference data (DPO) is scored on its held-out pairs by log-probability: the share of
# pairs whose chosen answer the model finds likelier than the rejected one, the mean
# log-probability margin, and DPO's implicit reward (beta × log-ratio to the base model).
PREFERENCE_METRICS = metric_catalog.names(family="preference")
# Feedback rows (KTO) are scored by their completion's log-probability: desirable against undesirable.
FEEDBACK_METRICS = metric_catalog.names(family="feedback")
# A reward model (method.kind: reward_model) is scored on held-out pairs by its own scores of each answer.
REWARD_MODEL_METRICS = metric_catalog.names(family="reward_model")
# The metrics named by their name alone; json_schema and judge take settings, each its own model below.
SIMPLE_METRICS = tuple(m.name for m in metric_catalog.METRICS if not m.settings)


class SimpleMetric(_Section):
    """A metric computed from predictions and references."""

    name: Literal[SIMPLE_METRICS] = Field(description="Metric name.")  # type: ignore[valid-type]
    extract: Extract | None = Field(None, description="Answer extraction applied to prediction and reference first.")
    positive: str | None = Field(None, min_length=1, max_length=1000, description=(
        "`f1` only: the positive label, whose F1 (one label against the rest, as scikit-learn's "
        "binary F1) `f1` reports. Without it, `f1` with two labels is the F1 of the second "
        "label in sorted order, and with more labels the macro average (as `f1_macro`)."))

    @model_validator(mode="after")
    def _positive(self) -> "SimpleMetric":
        if self.positive is not None and self.name != "f1":
            raise ValueError(f"'positive' names the positive label of the f1 metric; {self.name} does not take one")
        return self

    @model_validator(mode="after")
    def _no_extract_for_pairs(self) -> "SimpleMetric":
        if self.extract is not None and self.name in PREFERENCE_METRICS + FEEDBACK_METRICS + REWARD_MODEL_METRICS:
            raise ValueError(f"{self.name} compares log-probabilities or scores; there is no answer to extract")
        return self


class JsonSchemaMetric(_Section):
    """Share of predictions that are JSON conforming to a JSON Schema."""

    name: Literal["json_schema"] = Field(description="`json_schema`.")
    schema_: str = Field(alias="schema", description="Path of a JSON Schema file, relative to the spec.")
    extract: Extract | None = Field(None, description="Answer extraction applied first.")


class JudgeMetric(_Section):
    """An LLM judge scores each answer with a rubric."""

    name: Literal["judge"] = Field(description="`judge`.")
    model: str = Field(min_length=1, description="Judge model: a hub id or local path.")
    rubric: Template = Field(description="Template of the judge prompt; sees `prompt`, `reference` and `prediction`.")
    score_regex: Annotated[str, AfterValidator(_regex)] = Field(r"(\d+(?:\.\d+)?)", description=(
        "Regex whose first group is the judge's score."))
    scale: Annotated[list[Annotated[Number, Field(ge=-1e9, le=1e9)]], Field(min_length=2, max_length=2)] = Field(
        default_factory=lambda: [1.0, 10.0], description="Lowest and highest score `[low, high]`, mapped to 0..1.")

    @field_validator("scale")
    @classmethod
    def _scale(cls, v: list[float]) -> list[float]:
        if v[0] >= v[1]:
            raise ValueError(f"the lowest score must be below the highest (got {v[0]:g}, {v[1]:g})")
        return v


def _metric_shorthand(v: Any) -> Any:
    return {"name": v} if isinstance(v, str) else v


def _metric_tag(v: Any) -> str | None:
    if isinstance(v, BaseModel):
        v = {"name": v.name}
    if isinstance(v, dict):
        name = v.get("name")
        if name in ("json_schema", "judge"):
            return name
        if name is None:
            return None
        return "simple"
    return None


MetricSpec = Annotated[
    Union[Annotated[SimpleMetric, Tag("simple")], Annotated[JsonSchemaMetric, Tag("json_schema")],
          Annotated[JudgeMetric, Tag("judge")]],
    Discriminator(_metric_tag, custom_error_type="metric",
                  custom_error_message="expected a metric name or {name: METRIC, …}"),
    BeforeValidator(
        _metric_shorthand,
        json_schema_input_type=Union[Literal[SIMPLE_METRICS], SimpleMetric, JsonSchemaMetric, JudgeMetric],  # type: ignore[valid-type]
    ),
]

# --------------------------------------------------------------------------- rewards (method.kind: grpo)

# The metrics that score one completion against its row's reference (a reward scores each one).
REWARD_METRICS = metric_catalog.names(reward=True)


class _RewardWeights(_Section):
    weight: Number = Field(1.0, ge=-1000, le=1000, description=(
        "This reward's weight in the sum the policy maximises (TRL's `reward_weights`)."))
    missing: Number = Field(0.0, ge=-1e6, le=1e6, description=(
        "The reward of a completion it cannot score: its row has no reference, or the extraction finds nothing "
        "in the completion."))


class MetricReward(SimpleMetric, _RewardWeights):
    """A metric of `eval.metrics`, scoring each completion against its row's reference."""

    @model_validator(mode="after")
    def _scores_one_completion(self) -> "MetricReward":
        if self.name not in REWARD_METRICS:
            raise ValueError(f"{self.name} does not score one completion against its reference; a reward can be "
                             f"one of {', '.join(REWARD_METRICS)} (or {{python: FILE:FUNCTION}})")
        return self


class JsonSchemaReward(JsonSchemaMetric, _RewardWeights):
    """`json_schema` as a reward: 1 for a completion that is JSON valid against the schema, else 0."""


class JudgeReward(JudgeMetric, _RewardWeights):
    """Not a reward: an LLM judge scores the held-out answers in `eval.metrics` only (refused here, saying why)."""

    @model_validator(mode="after")
    def _not_yet(self) -> "JudgeReward":
        raise ValueError("an LLM judge is not offered as a reward: it would run the judge model on every completion "
                         "of every step; use it in eval.metrics, and a metric or {python: FILE:FUNCTION} here")


class PythonReward(_RewardWeights):
    """Your own reward: a function in a Python file inside the repository, run in the training process."""

    python: str = Field(pattern=r"^[^:\x00]{1,400}\.py:[A-Za-z_][A-Za-z0-9_]{0,99}$", description=(
        "`FILE.py:FUNCTION`, the file relative to the spec (the path policy of data files applies). As TRL calls a "
        "reward function, it is called with keyword arguments `prompts`, `completions` and `references` (the rows' "
        "answers), lists of strings, and returns a list of numbers (None: `missing`). The plan names the file by "
        "path and sha256, and `ftspec plan` and `ftspec diff` say that it runs."))


class ModelReward(_Section):
    """A reward model an earlier stage of this spec trained (`method.kind: reward_model`), scoring each prompt
    with its completion."""

    reward_model: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$", description=(
        "The name of an earlier stage whose `method.kind` is `reward_model`. Its score of the prompt and the "
        "completion (with the end-of-sequence token, as it was trained and evaluated) is the reward; the plan names "
        "the stage's train key, so a change to the reward model trains this stage again."))
    weight: Number = Field(1.0, ge=-1000, le=1000, description=(
        "This reward's weight in the sum the policy maximises (TRL's `reward_weights`)."))


def _reward_tag(v: Any) -> str | None:
    if isinstance(v, BaseModel):
        return ("python" if isinstance(v, PythonReward) else "reward_model" if isinstance(v, ModelReward)
                else _metric_tag(v))
    if isinstance(v, dict):
        return "python" if "python" in v else "reward_model" if "reward_model" in v else _metric_tag(v)
    return None


RewardSpec = Annotated[
    Union[Annotated[MetricReward, Tag("simple")], Annotated[JsonSchemaReward, Tag("json_schema")],
          Annotated[JudgeReward, Tag("judge")], Annotated[PythonReward, Tag("python")],
          Annotated[ModelReward, Tag("reward_model")]],
    Discriminator(_reward_tag, custom_error_type="reward",
                  custom_error_message="expected a metric name, {name: METRIC, …}, {python: FILE:FUNCTION} or "
                                       "{reward_model: STAGE}"),
    BeforeValidator(
        _metric_shorthand,
        # A bare metric name is a reward too (`rewards: [exact_match]`), as in eval.metrics.
        json_schema_input_type=Union[Literal[REWARD_METRICS], MetricReward,  # type: ignore[valid-type]
                                     JsonSchemaReward, PythonReward, ModelReward],
    ),
]

GRPO_LOSSES = ("dapo", "grpo", "dr_grpo", "bnpo", "cispo", "sapo")  # TRL 1.x GRPOConfig.loss_type


class GRPOMethod(_Section):
    """Group relative policy optimisation: the model answers each training prompt several times, and learns
    towards the answers the rewards score above their group's mean. The rewards are the spec's own metrics."""

    kind: Literal["grpo"] = Field(description="`grpo`: learn from rewards (TRL's GRPOTrainer).")
    adapter: AdapterSpec = Field(default_factory=_default_adapter)
    rewards: Annotated[list[RewardSpec], Field(min_length=1, max_length=16)] = Field(description=(
        "What the policy maximises: the weighted sum of these. Each is a metric of `eval.metrics` (the same "
        "names and options, e.g. `{name: exact_match, extract: {regex: …}}`) scoring a completion against its "
        "row's answer, or `{python: FILE.py:FUNCTION}`; each takes a `weight` and a `missing` value. In a spec "
        "with stages, `{reward_model: STAGE}` names an earlier stage's trained reward model."))
    group_size: Int = Field(8, ge=2, le=256, description=(
        "Completions sampled per prompt; the advantage of each is its reward against its group's. "
        "`training.batch_size` counts completions, and must be a multiple of it."))
    max_completion_tokens: Int | None = Field(None, ge=1, le=32768, description=(
        "Longest completion sampled; defaults to `eval.max_new_tokens`."))
    temperature: Number = Field(1.0, gt=0, le=10, description="Sampling temperature of the completions.")
    kl: Number = Field(0.0, ge=0, le=100, description=(
        "KL coefficient towards the starting model (TRL's `beta`); 0 loads no reference model."))
    estimator: Literal["group", "leave_one_out"] = Field("group", description=(
        "Each completion's advantage: its reward against its group's mean and spread (`group`: GRPO, TRL's "
        "GRPOTrainer), or against the mean of the other completions of its group (`leave_one_out`: RLOO, "
        "TRL's RLOOTrainer, which has no `loss_type`)."))
    loss_type: Literal[GRPO_LOSSES] = Field("dapo", description=(  # type: ignore[valid-type]
        "How token losses are aggregated (TRL's `loss_type`; `estimator: group` only): `dapo` (TRL's default), "
        "`grpo`, `dr_grpo`, `bnpo`, `cispo`, `sapo`."))
    sample_every: Int = Field(10, ge=1, le=1_000_000, description=(
        "Every this many steps, the step's prompts, completions and rewards are written to the run's "
        "`completions.jsonl`."))


KTO_LOSSES = ("kto", "apo_zero_unpaired")  # TRL 1.x KTOConfig.loss_type


class KTOMethod(_Section):
    """Kahneman-Tversky optimisation on unpaired feedback (`format.kind: feedback`): the model learns towards the
    desirable completions and away from the undesirable ones, each row on its own, relative to the base model."""

    kind: Literal["kto"] = Field(description="`kto`: learn from thumbs up/down feedback (TRL's KTOTrainer).")
    adapter: AdapterSpec = Field(default_factory=_default_adapter)
    beta: Number = Field(0.1, gt=0, le=100, description=(
        "Strength of the pull towards the reference (starting) model; higher stays closer (TRL's `beta`)."))
    desirable_weight: Number = Field(1.0, gt=0, le=1000, description=(
        "Weight of the desirable rows' losses; raise it when they are the fewer (TRL's `desirable_weight`)."))
    undesirable_weight: Number = Field(1.0, gt=0, le=1000, description=(
        "Weight of the undesirable rows' losses; raise it when they are the fewer (TRL's `undesirable_weight`)."))
    loss_type: Literal[KTO_LOSSES] = Field("kto", description=(  # type: ignore[valid-type]
        "`kto` (estimates the KL term from mismatched rows of each batch, so `training.batch_size` must be at "
        "least 2) or `apo_zero_unpaired` (anchored preference optimisation, no KL term) (TRL's `loss_type`)."))


class RewardModelMethod(_Section):
    """A reward model: the base model with a one-output score head (a sequence classifier), trained on preference
    pairs (`format.kind: preference`) to score the chosen answer above the rejected one (TRL's RewardTrainer).
    Evaluated by held-out pair accuracy against chance (0.5); a later GRPO stage can use it as a reward."""

    kind: Literal["reward_model"] = Field(description="`reward_model`: train a reward model (TRL's RewardTrainer).")
    adapter: AdapterSpec = Field(default_factory=_default_adapter)
    center_rewards_coefficient: Number = Field(0.0, ge=0, le=100, description=(
        "Weight of a penalty on the squared mean score of each pair, which keeps the scores centred on 0 "
        "(TRL's `center_rewards_coefficient`, 0.01 in its documentation); 0: none."))


MethodSpec = Annotated[
    Union[Annotated[SFTMethod, Tag("sft")], Annotated[DPOMethod, Tag("dpo")], Annotated[DistillMethod, Tag("distill")],
          Annotated[GRPOMethod, Tag("grpo")], Annotated[KTOMethod, Tag("kto")],
          Annotated[RewardModelMethod, Tag("reward_model")]],
    Discriminator(_by_kind()),
    Field(description="The training objective: `kind: sft | dpo | distill | grpo | kto | reward_model`, with its "
                      "adapter."),
]

_GATE = re.compile(r"^\s*(>=|<=|==|>|<)\s*(-?\d+(\.\d+)?([eE]-?\d+)?)\s*$")


MAX_THRESHOLD = 1e9


def _gate(cond: str) -> str:
    m = _GATE.match(cond) if len(cond) <= 100 else None
    if not m:
        shown = cond if len(cond) <= 40 else cond[:37] + "..."
        raise ValueError(f"expected a comparison such as \">= 0.85\" (got {shown!r})")
    if not abs(float(m.group(2))) <= MAX_THRESHOLD:
        raise ValueError(f"the threshold must be a number between {-MAX_THRESHOLD:g} and {MAX_THRESHOLD:g} "
                         f"(got {m.group(2)[:40]})")
    return cond


GateCondition = Annotated[str, AfterValidator(_gate)]


class Eval(_Section):
    """Held-out evaluation of the tuned model, against the base model when `baseline` is on."""

    split: Literal["auto", "test", "validation"] = Field("auto", description=(
        "Split to score; `auto` takes test, else validation."))
    baseline: bool = Field(True, description=(
        "Score the base model with the same prompts, so the tuned model is compared with it."))
    mode: Literal["auto", "generate", "choices"] = Field("auto", description=(
        "`generate` answers greedily; `choices` scores each allowed label by log-likelihood and picks the "
        "best (fair to a base model that rambles); `auto` takes `choices` when `choices` is given or the sampled "
        "training answers form a closed set of labels — at most 20 distinct answers, each one line of at most 40 "
        "characters, at least 3 sampled rows per answer on average, and every held-out answer among them — else "
        "`generate`, and the plan says why."))
    choices: list[str] | None = Field(None, min_length=2, max_length=10_000, description=(
        "Allowed labels in `choices` mode; defaults to the distinct references of the training split."))
    metrics: list[MetricSpec] = Field(default_factory=list, max_length=MAX_METRICS, description=(
        "Metrics to compute: names (`accuracy`) or `{name: …, extract: …}`. Defaults to accuracy "
        "in `choices` mode, exact_match otherwise, and for preference data to preference_accuracy, "
        "logprob_margin, reward_accuracy and reward_margin (the reward ones with a baseline)."))
    max_new_tokens: Int = Field(64, ge=1, le=32768, description="Longest generated answer.")
    stop: list[str] | None = Field(None, max_length=64, description=(
        "Strings that end a generated answer. By default a newline when every "
        "sampled answer is a single short line (a label), else none; `[]` for none."))
    few_shot: Int = Field(0, ge=0, le=64, description=(
        "Examples from the training split prepended to the baseline prompt (try prompt engineering first)."))
    batch_size: Int = Field(16, ge=1, le=4096, description="Rows per generation batch.")
    limit: Int | None = Field(None, ge=1, le=MAX_COUNT, description="Score at most this many rows.")
    gates: dict[str, GateCondition] = Field(default_factory=dict, max_length=MAX_METRICS * 2, description=(
        "Thresholds the run must meet or exit with status 3: "
        "`{accuracy: \">= 0.85\", improvement.accuracy: \">= 0.05\"}`."))


def parse_gate(cond: str) -> tuple[str, float]:
    m = _GATE.match(cond)
    assert m, cond
    return m.group(1), float(m.group(2))


# --------------------------------------------------------------------------- compute, output, tracking


Threads = Annotated[
    Union[Annotated[Literal["auto"], Tag("auto")], Annotated[int, Strict(), Field(ge=1, le=1024), Tag("count")]],
    Discriminator(lambda v: "auto" if isinstance(v, str) else "count"),
]


def _class_name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
        raise ValueError(f"{value[:60]!r} is not a class name: FSDP wraps the modules of the classes named "
                         "(e.g. LlamaDecoderLayer), or use auto")
    return value


class FSDPSettings(_Section):
    ("FSDP2 (torch's fully_shard, through accelerate): parameters, gradients and optimizer state sharded across "
     "the processes.")

    wrap: Annotated[Union[
        Annotated[Literal["auto"], Tag("auto")],
        Annotated[list[Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_class_name)]],
                  Field(min_length=1, max_length=64), Tag("classes")],
    ], Discriminator(lambda v: "auto" if isinstance(v, str) else "classes")] = Field("auto", description=(
        "Module classes each sharded as one unit (gathered whole for its forward and backward, then freed). `auto` is "
        "the decoder-layer class of the model's architecture (`LlamaDecoderLayer` for llama), or, where ftspec cannot "
        "tell it offline, the layers transformers marks as not to be split (`_no_split_modules`); a list names the "
        "classes, e.g. `[LlamaDecoderLayer]`."))
    reshard_after_forward: bool = Field(True, description=(
        "Free each unit's gathered parameters after its forward and gather them again for the backward: "
        "less memory for one more all-gather per unit (`false` is ZeRO-2-like: faster, more memory)."))
    cpu_offload: bool = Field(False, description=(
        "Keep the sharded parameters, gradients and optimizer state in CPU memory "
        "between uses: fits a larger model, at the cost of host-device copies every step."))
    activation_checkpointing: bool = Field(False, description=(
        "Recompute each unit's activations in the backward instead of keeping them (FSDP's own checkpointing). Use "
        "this rather than `training.gradient_checkpointing`, which under FSDP adds a redundant all-gather per layer."))
    state_dict: Literal["full", "sharded"] = Field("full", description=(
        "How checkpoints (for resuming) are written: `full` gathers one whole state on the main "
        "process; `sharded` lets each process write its own shard (faster and lighter for a large "
        "model). The finished model is always gathered and saved whole, loadable on one process."))


class DeepSpeedSettings(_Section):
    ("DeepSpeed ZeRO (through accelerate): optimizer state, then gradients, then parameters partitioned across "
     "the processes.")

    zero_stage: Literal[1, 2, 3] = Field(2, description=(
        "What is partitioned across the processes: 1 the optimizer state, 2 the gradients "
        "too, 3 the parameters too (the most memory saved, the most communication)."))
    offload_optimizer: bool = Field(False, description=(
        "Keep the optimizer state in CPU memory and run the optimizer "
        "step there (ZeRO-Offload): much less GPU memory, slower steps."))
    offload_params: bool = Field(False, description=(
        "Keep the parameters in CPU memory between uses; only at `zero_stage: 3`, where parameters are partitioned."))


def _bucket(name: str) -> str:
    """S3 general purpose bucket naming rules (docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html)."""
    if not 3 <= len(name) <= 63:
        raise ValueError(f"a bucket name has 3 to 63 characters (got {len(name)})")
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]*[a-z0-9]", name):
        raise ValueError("a bucket name has lower-case letters, digits, '.' and '-', "
                         "and begins and ends with a letter or digit")
    if ".." in name or re.fullmatch(r"\d+\.\d+\.\d+\.\d+", name):
        raise ValueError("a bucket name has no two adjacent dots and is not an IP address")
    if (name.startswith(("xn--", "sthree-", "amzn-s3-demo-"))
            or name.endswith(("-s3alias", "--ol-s3", ".mrap", "--x-s3"))):
        raise ValueError("a bucket name must not use a prefix or suffix that S3 reserves")
    return name


def _prefix(value: str) -> str:
    """A key prefix: segments the job's s3Uri accepts, ending in '/' (added when left out)."""
    if value in ("", "/"):
        return ""
    if value.startswith("/"):
        raise ValueError("a key prefix does not start with '/'")
    parts = value.rstrip("/").split("/")
    for part in parts:
        if aws.S3_SEGMENT.problem(part):
            raise ValueError(f"prefix segment {part!r} may hold only letters, digits and - ! _ * ' ( ) . "
                             "(what CreateModelCustomizationJob's s3Uri accepts)")
    return "/".join(parts) + "/"


class BedrockS3(_Section):
    """Where the job's data and output live in S3."""

    bucket: Annotated[str, AfterValidator(_bucket)] = Field(description=(
        "S3 bucket for the rendered data (under `PREFIX/data/`) and the "
        "job's output (under `PREFIX/output/`), in the job's region."))
    prefix: Annotated[str, AfterValidator(_prefix)] = Field("", max_length=512, description=(
        "Key prefix inside the bucket, e.g. `ftspec/` (a trailing `/` is added)."))


class BedrockVpc(_Section):
    """The VPC the customization job reaches its data through."""

    subnets: list[
        Annotated[str, AfterValidator(aws.SUBNET_ID.check)]
    ] = Field(min_length=1, max_length=16, description="Subnet ids (`subnet-…`), 1 to 16.")
    security_groups: list[
        Annotated[str, AfterValidator(aws.SECURITY_GROUP_ID.check)]
    ] = Field(min_length=1, max_length=5, description="Security group ids (`sg-…`), 1 to 5.")


class BedrockSettings(_Section):
    ("An Amazon Bedrock model customization job. No credentials here: boto3's standard chain (environment, profile, "
     "instance role) supplies them when the run starts.")

    region: Annotated[str, AfterValidator(aws.REGION.check)] = Field(description=(
        "AWS region of the job, its data bucket and the models, e.g. `us-east-1`."))
    customization: Literal["fine_tuning", "continued_pre_training", "distillation"] = Field("fine_tuning", description=(
        "The job's customization type: `fine_tuning` on labelled rows, `continued_pre_training` on unlabelled "
        "text (Titan Text Lite and Express), or `distillation` from a teacher model's answers (Nova students)."))
    teacher_model: Annotated[
        str, Field(min_length=1, max_length=2048), AfterValidator(aws.TEACHER_MODEL_ID.check)
    ] | None = Field(None, description=(
        "`distillation` only: the teacher model id (or inference profile), "
        "one the student may learn from, e.g. `amazon.nova-pro-v1:0`."))
    max_response_length: Int | None = Field(None, ge=1, le=MAX_COUNT, description=(
        "`distillation` only: the most tokens the teacher is asked for per answer (`maxResponseLengthForInference`)."))
    role_arn: Annotated[str, AfterValidator(aws.ROLE_ARN.check)] = Field(max_length=2048, description=(
        "The service role Bedrock assumes to read the data and write the output: `arn:aws:iam::ACCOUNT:role/NAME`."))
    s3: BedrockS3 = Field(description="The S3 bucket and prefix for data and output.")
    kms_key_id: Annotated[
        str, Field(max_length=2048), AfterValidator(aws.KMS_KEY_ID.check)
    ] | None = Field(None, description="KMS key (id, alias or ARN) that encrypts the custom model.")
    vpc: BedrockVpc | None = Field(None, description="Run the job inside a VPC: its subnets and security groups.")
    tags: dict[
        Annotated[str, Field(min_length=1, max_length=128), AfterValidator(aws.TAG_KEY.check)],
        Annotated[str, Field(max_length=256), AfterValidator(aws.TAG_VALUE.check)],
    ] = Field(default_factory=dict, max_length=200, description=(
        "Tags put on the job and on the custom model (keys 1-128 characters, values up to 256)."))
    serve: Literal["none", "on_demand", "provisioned"] = Field("none", description=(
        "How the custom model answers the held-out rows for the evaluation: `none` (not evaluated; "
        "nothing to pay for), `on_demand` (a custom model deployment) or `provisioned` (provisioned "
        "throughput, billed by the hour). Whatever the run creates, it deletes after the evaluation."))
    model_units: Int | None = Field(None, ge=1, le=1000, description=(
        "`serve: provisioned` only: model units of the provisioned throughput."))
    max_concurrency: Int = Field(4, ge=1, le=256, description=(
        "Converse calls in flight at once while the base and custom models answer the held-out rows."))

    @field_validator("tags")
    @classmethod
    def _no_aws_tags(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            if key.lower().startswith("aws:"):
                raise ValueError(f"tag key {key!r}: the aws: prefix is reserved for AWS")
        return v


class Compute(_Section):
    """Where and how the training runs."""

    backend: Literal["local", "bedrock"] = Field("local", description=(
        "Execution backend: `local` runs on this machine; `bedrock` runs an Amazon Bedrock "
        "model customization job (with `model.kind: bedrock` and `compute.bedrock`)."))
    bedrock: BedrockSettings | None = Field(None, description="The Amazon Bedrock job, with `backend: bedrock` only.")
    device: Literal["auto", "cpu", "cuda", "mps"] = Field("auto", description=(
        "Device; `auto` takes CUDA, then MPS, then the CPU."))
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field("auto", description=(
        "Training precision. bf16 and fp16 are autocast: the weights that train (and LoRA's adapters) stay fp32. "
        "`auto` is a rule the plan keeps and each run applies to its machine: bf16 on a CPU with AVX512-BF16 or AMX "
        "(its matrix multiplies 4-7× fp32's; a whole training step gains less, `bench/precision.py`) and on a GPU "
        "that supports it, fp32 otherwise "
        "(always on mps). `ftspec plan` says what it is on the machine it runs on; `manifest.json` records what a "
        "run used. The step keys hash `auto`, not what it became, so a step stored by one machine is reused by "
        "another: bf16's training losses stay within 0.1% of fp32's at each step on a tiny model. Set `fp32` or "
        "`bf16` for results that must not depend on the machine."))
    attention: Literal["auto", "sdpa", "eager", "flash_attention_2"] = Field("auto", description=(
        "Attention implementation: `auto` is transformers' default (SDPA); `flash_attention_2` needs a CUDA GPU, "
        "bf16 or fp16 and the flash-attn package, and lets `batching: auto` pack rows with no padding at all."))
    strategy: Literal["none", "ddp", "fsdp", "deepspeed"] = Field("none", description=(
        "How the processes share the work: `none` is one process; `ddp` keeps a whole model in each process and "
        "averages gradients; `fsdp` (FSDP2) and `deepspeed` (ZeRO) shard the model's state across processes to fit "
        "larger models. Several processes need one of the three; `fsdp` or `deepspeed` on one process still shards "
        "nothing but can offload to CPU memory. `fsdp` and `deepspeed` need CUDA GPUs (on the CPU, use `ddp`)."))
    num_processes: Int = Field(1, ge=1, le=1024, description=(
        "Training processes on each node, one per GPU (on the CPU, each takes `threads` cores). `ftspec run` "
        "starts them itself; `training.batch_size` is per process, so the effective batch grows with the processes."))
    num_nodes: Int = Field(1, ge=1, le=1024, description=(
        "Machines. The spec holds no addresses: on each machine `ftspec run` reads the rendezvous "
        "(MASTER_ADDR, MASTER_PORT, NODE_RANK, or SLURM's variables) from the environment."))
    fsdp: FSDPSettings | None = Field(None, description=(
        "FSDP settings, with `strategy: fsdp` only; left out, the defaults apply."))
    deepspeed: DeepSpeedSettings | None = Field(None, description=(
        "DeepSpeed settings, with `strategy: deepspeed` only; left out, the defaults apply."))
    threads: Threads = Field("auto", description=(
        "CPU threads torch computes with, in training and evaluation (intra-op and inter-op). `auto` is resolved "
        "by each run, not the plan (which stays the same on every machine): the CPUs the process may run on "
        "(`os.sched_getaffinity`: taskset, cgroups, SLURM), shared among `num_processes`, or `OMP_NUM_THREADS` "
        "where it is set; `manifest.json` records the number. On a machine other jobs share, or in CI, set "
        "`OMP_NUM_THREADS=1` or `threads: 1`: there more threads made quickstart-sized training up to 4× slower "
        "(`bench/threads.py`). Training losses agree across thread counts to a relative 1e-5 at each step."))

    # At the key that asks for several (strategy is declared first, so it is known here).
    @field_validator("num_processes", "num_nodes")
    @classmethod
    def _needs_strategy(cls, v: int, info: ValidationInfo) -> int:
        if v > 1 and info.data.get("strategy", "none") == "none":
            what = "processes" if info.field_name == "num_processes" else "nodes"
            raise ValueError(f"{v} {what} need a strategy to share the work: set compute.strategy: ddp (a whole model "
                             "in each process), fsdp or deepspeed (sharded)")
        return v


class Output(_Section):
    """Where the run directory goes."""

    dir: str = Field("runs/{name}", min_length=1, description=(
        "Run directory, relative to the spec's repository root "
        "(or its folder outside git); `{name}` is the spec's name."))
    store: str | None = Field(None, description=(
        "A step store shared by every machine that runs this spec: `s3://bucket/prefix`, or a folder on a shared "
        "filesystem (absolute, or relative to the repository root). A step found there is fetched instead of "
        "computed, and what is computed is uploaded. `--store` and `FTSPEC_STORE` take precedence. Credentials "
        "come from the storage library's own chain (for S3: the environment, ~/.aws, an instance or CI role), "
        "never from the spec. Not part of the plan: steps have the same keys in every store."))

    @field_validator("store")
    @classmethod
    def _store_url(cls, v: str | None) -> str | None:
        if v is not None:
            problem = storeurl.problem(v)
            if problem:
                raise ValueError(problem)
        return v


class NoTracking(_Section):
    kind: Literal["none"] = Field(description="`none`: only the run directory's `metrics.jsonl`.")


class TensorboardTracking(_Section):
    kind: Literal["tensorboard"] = Field(description=(
        "`tensorboard`: event files in the run directory's `tensorboard/` folder."))


class WandbTracking(_Section):
    kind: Literal["wandb"] = Field(description=(
        "`wandb`: Weights & Biases (`pip install wandb`); the key and the mode (`WANDB_MODE=offline`) come from "
        "the environment. The run is named after the run directory and written under it unless `WANDB_DIR` is set."))
    project: str = Field(min_length=1, description="W&B project the run is logged to (over `WANDB_PROJECT`).")
    entity: str | None = Field(None, description=(
        "W&B team or user the project belongs to (over `WANDB_ENTITY`); defaults to your default entity."))


class MlflowTracking(_Section):
    kind: Literal["mlflow"] = Field(description=(
        "`mlflow`: MLflow (`pip install mlflow-skinny`); the server comes "
        "from `MLFLOW_TRACKING_URI`. The run is named after the run directory."))
    experiment: str = Field(min_length=1, description=(
        "MLflow experiment the run is logged to, created when missing (over `MLFLOW_EXPERIMENT_NAME`)."))


TrackingSpec = Annotated[
    Union[
        Annotated[NoTracking, Tag("none")],
        Annotated[TensorboardTracking, Tag("tensorboard")],
        Annotated[WandbTracking, Tag("wandb")],
        Annotated[MlflowTracking, Tag("mlflow")],
    ],
    Discriminator(_by_kind()),
    Field(description="Experiment tracking besides `metrics.jsonl`: `kind: none | tensorboard | wandb | mlflow`."),
]

# --------------------------------------------------------------------------- the spec

_NAME = r"^[a-z0-9][a-z0-9._-]{0,63}$"


class StageSpec(_Section):
    ("One stage of a spec with `stages:`: its `model`, `data`, `format` and `method` replace the spec's, its "
     "`training`, `eval`, `compute` and `tracking` merge key by key onto the spec's, and the chosen profiles and "
     "`--set` apply to every stage after its own keys.")

    name: str = Field(pattern=_NAME, description=(
        "The stage's name, unique in the spec: its run directory is "
        "`RUN_DIR.stage-NAME` (the last stage's is the spec's run directory)."))
    description: str | None = Field(None, description="What this stage is for.")
    from_: str | None = Field(None, alias="from", description=(
        "What the stage starts from: an earlier stage's name (its trained model, a "
        "LoRA adapter merged into its base), or `base` (the spec's model). Defaults "
        "to the stage before it; a stage that sets `model` starts from that model."))
    model: ModelSpec | None = Field(None, description=(
        "A model of its own to start from, replacing the spec's `model` "
        "(the stage then starts fresh, not from an earlier stage)."))
    data: Data | None = Field(None, description="This stage's rows, replacing the spec's `data`.")
    format: FormatSpec | None = Field(None, description="This stage's format, replacing the spec's `format`.")
    method: MethodSpec | None = Field(None, description=(
        "This stage's method, replacing the spec's `method` (e.g. `{kind: "
        "dpo}` after SFT, or `{kind: distill, teacher: {stage: NAME}}`)."))
    training: dict[str, Any] | None = Field(None, description="Settings merged onto the spec's `training`.")
    eval: dict[str, Any] | None = Field(None, description="Settings merged onto the spec's `eval`.")
    compute: dict[str, Any] | None = Field(None, description="Settings merged onto the spec's `compute`.")
    tracking: dict[str, Any] | None = Field(None, description="Settings merged onto the spec's `tracking`.")


class Spec(_Section):
    """An ftspec fine-tuning spec, version 1."""

    ftspec: Literal[1] = Field(description="Spec schema version; `1`.")
    name: str = Field(pattern=_NAME, description=(
        "Name of the job: lower-case letters, digits, `.`, `_` and `-`; names the run directory."))
    description: str | None = Field(None, description="What this job is for.")
    extends: str | None = Field(None, description=(
        "A base spec this one overrides, relative to this file; mappings merge key by key, other values replace."))
    profiles: dict[str, dict[str, Any]] | None = Field(None, max_length=MAX_PROFILES, description=(
        "Named overlays chosen with `--profile NAME`, e.g. `smoke: {data: {limit: 64}, training: {max_steps: 5}}`."))
    model: ModelSpec
    data: Data = Field(description="Training, validation and test rows.")
    format: FormatSpec
    method: MethodSpec = Field(default_factory=lambda: SFTMethod(kind="sft"))
    training: Training = Field(default_factory=Training, description="Optimisation settings.")
    eval: Eval = Field(default_factory=Eval, description="Held-out evaluation and its gates.")
    compute: Compute = Field(default_factory=Compute, description="Device, precision and processes.")
    output: Output = Field(default_factory=Output, description="Where the run directory goes.")
    tracking: TrackingSpec = Field(default_factory=lambda: NoTracking(kind="none"))
    stages: list[StageSpec] | None = Field(None, min_length=1, max_length=16, description=(
        "Stages run in order in one spec (e.g. SFT then DPO, or a teacher then its distilled student): "
        "each a `name` and the keys it changes. Each stage is a whole spec of its own once its keys are "
        "put over this one; a stage starts from the model of the stage before it unless it says otherwise. "
        "The plan chains their step keys: a change to one stage re-runs it and the stages after it."))
    sweep: SweepSpec | None = Field(None, description=(
        "Trials of this spec for `ftspec sweep`: the fields to vary, how trials are picked and the validation "
        "metric the winner is chosen by. Not part of the plan: `ftspec run` ignores it."))

    @field_validator("ftspec", mode="before")
    @classmethod
    def _version_is_the_integer(cls, v: Any) -> Any:
        # Literal[1] takes anything equal to 1: `ftspec: true` and `ftspec: 1.0` are not version 1.
        if type(v) is not int:
            raise PydanticCustomError("literal_error", "Input should be 1", {"expected": "1"})
        return v


def json_schema() -> dict:
    """The JSON Schema of a spec, for editors (yaml-language-server) and the reference docs."""
    schema = Spec.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://ftspec.dev/schema/v1.json"
    schema["title"] = "ftspec spec, version 1"
    return schema
