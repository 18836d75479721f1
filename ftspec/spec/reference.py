"""The spec reference in Markdown, generated from the schema's field descriptions.

The documentation site's page docs/reference.md is this text, and a test keeps the two
in sync, so a field is documented exactly once: in its ``Field(description=...)``.
"""

from __future__ import annotations

import json
import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from ftspec.spec import schema as S

# Sections in reading order, with the key path they live at.
SECTIONS: list[tuple[str, type[BaseModel]]] = [
    ("(top level)", S.Spec),
    ("stages[]", S.StageSpec),
    ("model (pretrained)", S.PretrainedModel),
    ("model (kind: tiny)", S.TinyModel),
    ("model (kind: bedrock)", S.BedrockModel),
    ("model.tokenizer (kind: bpe)", S.BPETokenizer),
    ("data", S.Data),
    ("data.train / validation / test (file)", S.FileSource),
    ("data.train / validation / test (hub)", S.HubSource),
    ("data.train[] (a mixture's file)", S.FileMixtureSource),
    ("data.train[] (a mixture's hub dataset)", S.HubMixtureSource),
    ("data.mix", S.Mix),
    ("data.split", S.Split),
    ("data.limit (per split)", S.SplitLimits),
    ("format (kind: prompt_completion)", S.PromptCompletionFormat),
    ("format (kind: chat)", S.ChatFormat),
    ("format.messages[]", S.ChatTurn),
    ("format (kind: preference)", S.PreferenceFormat),
    ("format (kind: feedback)", S.FeedbackFormat),
    ("method (kind: sft)", S.SFTMethod),
    ("method (kind: dpo)", S.DPOMethod),
    ("method (kind: distill)", S.DistillMethod),
    ("method.teacher (stage)", S.StageTeacher),
    ("method.filter", S.TeacherFilter),
    ("method.logits", S.LogitDistillation),
    ("method (kind: grpo)", S.GRPOMethod),
    ("method.rewards[]", S.MetricReward),
    ("method.rewards[] (name: json_schema)", S.JsonSchemaReward),
    ("method.rewards[] (python)", S.PythonReward),
    ("method.rewards[] (name: judge)", S.JudgeReward),
    ("method.rewards[] (reward_model)", S.ModelReward),
    ("method (kind: kto)", S.KTOMethod),
    ("method (kind: reward_model)", S.RewardModelMethod),
    ("method.adapter (kind: lora)", S.LoraAdapter),
    ("method.adapter (kind: qlora)", S.QLoraAdapter),
    ("training", S.Training),
    ("training.early_stopping", S.EarlyStopping),
    ("eval", S.Eval),
    ("eval.metrics[]", S.SimpleMetric),
    ("eval.metrics[] (name: json_schema)", S.JsonSchemaMetric),
    ("eval.metrics[] (name: judge)", S.JudgeMetric),
    ("eval.metrics[].extract", S.Extract),
    ("compute", S.Compute),
    ("compute.fsdp", S.FSDPSettings),
    ("compute.deepspeed", S.DeepSpeedSettings),
    ("compute.bedrock", S.BedrockSettings),
    ("compute.bedrock.s3", S.BedrockS3),
    ("compute.bedrock.vpc", S.BedrockVpc),
    ("output", S.Output),
    ("tracking (kind: wandb)", S.WandbTracking),
    ("tracking (kind: mlflow)", S.MlflowTracking),
]


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is typing.Literal:
        return " \\| ".join(f"`{json.dumps(a)}`" for a in args)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        names = []
        for a in args:
            if a is type(None):
                continue
            name = _type_name(a)
            if name not in names:
                names.append(name)
        return " \\| ".join(names)
    if origin in (list, tuple):
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return f"mapping to {_type_name(args[1])}" if args else "mapping"
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return "mapping"
    if tp is Any:
        return "any value"
    return {int: "integer", float: "number", str: "string", bool: "boolean"}.get(tp, getattr(tp, "__name__", str(tp)))


def _default(field: Any) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        value = field.default_factory()
        if isinstance(value, BaseModel):
            kind = getattr(value, "kind", None)
            return f"`{{kind: {kind}}}`" if kind else "(see below)"
        return f"`{json.dumps(value)}`"
    if field.default is PydanticUndefined or field.default is None:
        return "—"
    value = list(field.default) if isinstance(field.default, tuple) else field.default
    return f"`{json.dumps(value)}`"


# The command that regenerates the committed page; the page and the test that keeps it in step both say it.
REGENERATE = "ftspec schema --markdown -o docs/reference.md"

INTRO = """\
Every key a spec may hold, section by section: its type, its default and what it does.
A spec is checked against exactly these fields; a key not listed here is an error (with a
"did you mean"). For completion and checking in an editor, point yaml-language-server at
the JSON Schema generated from the same fields:
`# yaml-language-server: $schema=../schema/ftspec-v1.schema.json`."""


def markdown_reference() -> str:
    """The whole reference page: a title, how to read it, and one table per section."""
    out = [
        "# Spec reference",
        "",
        f"<!-- generated by `{REGENERATE}`; edit the Field descriptions in ftspec/spec/schema.py -->",
        "",
        INTRO,
        "",
    ]
    for title, model in SECTIONS:
        out.append(f"## `{title}`" if not title.startswith("(") else f"## {title}")
        out.append("")
        doc = (model.__doc__ or "").strip().splitlines()[0] if model.__doc__ else ""
        if doc:
            out.append(doc)
            out.append("")
        out.append("| key | type | default | description |")
        out.append("| --- | --- | --- | --- |")
        for name, field in model.model_fields.items():
            key = field.alias or name
            desc = (field.description or "").replace("|", "\\|")
            out.append(f"| `{key}` | {_type_name(field.annotation)} | {_default(field)} | {desc} |")
        out.append("")
    return "\n".join(out)
