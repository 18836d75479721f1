"""Rules on Amazon Bedrock jobs: the backend and the model go together, and the model's
family (ftspec.catalog.bedrock_families) decides what else of the spec applies.
"""

from __future__ import annotations

from typing import Iterator

from ftspec.catalog import bedrock_families as families
from ftspec.checks.derived import metric_names
from ftspec.checks.facts import Context
from ftspec.checks.registry import rule
from ftspec.core.errors import Issue, Pos
from ftspec.data import bedrock_jsonl
from ftspec.data.formatting import FormatError
from ftspec.spec import schema as S

MAX_ROW_ISSUES = 5  # rows over a limit reported at validate: the same mistake is usually on many
# The splits the job is sent (the test split stays on this machine).
JOB_SPLITS = ("train", "validation")


@rule(reads=("model", "compute", "method", "training", "data", "eval"))
def check_bedrock(ctx: Context) -> Iterator[Issue]:
    """compute.backend bedrock and a Bedrock model go together; the model id belongs to a
    known family (ftspec.catalog.bedrock_families), which decides the customizations, the
    hyperparameters and their ranges, and what of ftspec's settings applies at all."""
    spec = ctx.spec
    m, c, t = spec.model, spec.compute, spec.training
    on_bedrock = c.backend == "bedrock"
    bedrock_model = isinstance(m, S.BedrockModel)
    if on_bedrock and not bedrock_model:
        yield ctx.error(("compute", "backend"), "the bedrock backend customises a Bedrock base model, not a local one",
                        "set model: {kind: bedrock, id: MODEL_ID}, or compute.backend: local")
    if bedrock_model and not on_bedrock:
        yield ctx.error(("model", "kind"), "a Bedrock model is customised by Amazon Bedrock; set compute.backend: "
                        "bedrock (with compute.bedrock)")
    if c.bedrock is not None and not on_bedrock:
        yield ctx.error(("compute", "bedrock"), f"Bedrock settings are given but compute.backend is '{c.backend}'",
                        "set compute.backend: bedrock, or remove compute.bedrock")
    if on_bedrock and c.bedrock is None:
        yield ctx.error(("compute", "backend"), "bedrock needs compute.bedrock: region, role_arn and s3 at least")
    if t.learning_rate_multiplier is not None and not (on_bedrock and bedrock_model):
        yield ctx.error(("training", "learning_rate_multiplier"), "is for Amazon Bedrock models that take a "
                        "learning-rate multiplier; a local run takes training.learning_rate")
    if not (on_bedrock and bedrock_model and c.bedrock is not None):
        return
    found = families.find(m.id)
    if found is None:
        yield ctx.error(("model", "id"), f"'{m.id}' is not a Bedrock base model ftspec can customise; known families: "
                        f"{families.known_models()}")
        return
    family, model = found
    b = c.bedrock
    if b.customization not in model.customizations:
        yield ctx.error(("compute", "bedrock", "customization"), f"{model.label} offers "
                        f"{' and '.join(model.customizations)}, not {b.customization}")
    if b.customization == "distillation":
        if b.teacher_model is None:
            yield ctx.error(("compute", "bedrock", "customization"), "distillation needs compute.bedrock.teacher_model",
                            f"{model.label} may learn from {model.teachers_shown}" if model.teachers_shown else None)
        elif model.teachers and not families.is_teacher(model, b.teacher_model):
            yield ctx.error(("compute", "bedrock", "teacher_model"), f"'{b.teacher_model}' is not a teacher "
                            f"{model.label} may learn from; it may learn from {model.teachers_shown}")
    else:
        for name in ("teacher_model", "max_response_length"):
            if getattr(b, name) is not None:
                yield ctx.error(("compute", "bedrock", name), "is for distillation "
                                                              f"(customization is {b.customization})")
    if b.model_units is not None and b.serve != "provisioned":
        yield ctx.error(("compute", "bedrock", "model_units"), f"is for serve: provisioned (serve is {b.serve})")
    if b.serve == "provisioned" and b.model_units is None:
        yield ctx.error(("compute", "bedrock", "serve"), "provisioned throughput needs compute.bedrock.model_units")
    for name in sorted(c.model_fields_set - {"backend", "bedrock"}):
        yield ctx.error(("compute", name), "does not apply to a Bedrock job, which runs on AWS's machines",
                        f"remove compute.{name}")
    method = spec.method
    if method.kind == "dpo":
        yield ctx.error(("method", "kind"), "Amazon Bedrock customization jobs do not train on "
                                            "preference pairs (no DPO)",
                        "use method.kind: sft")
    if method.kind == "grpo":
        yield ctx.error(("method", "kind"), "Amazon Bedrock customization jobs do not learn from rewards (no GRPO)",
                        "use compute.backend: local")
    if method.kind == "kto":
        yield ctx.error(("method", "kind"), "Amazon Bedrock customization jobs do not learn from thumbs up/down "
                        "feedback (no KTO)", "use compute.backend: local")
    if method.kind == "distill":
        yield ctx.error(("method", "kind"), "on Bedrock, distillation is the job's own customization",
                        "use method.kind: sft with compute.bedrock.customization: distillation and teacher_model")
    if "adapter" in method.model_fields_set:
        yield ctx.error(("method", "adapter"), "Amazon Bedrock chooses how the model is trained; there is no choice of "
                        "adapter", "remove method.adapter")
    for key, message in families.hyperparameters(t, model)[1]:
        yield ctx.error(key, message)
    if spec.format.kind not in ("prompt_completion", "chat"):
        yield ctx.error(("format", "kind"), f"{family.name} customization jobs train on prompt_completion or chat rows "
                        f"(got {spec.format.kind})")
    if spec.eval.mode == "choices":
        yield ctx.error(("eval", "mode"), "a Bedrock model answers through the Converse API, which gives no "
                        "log-probabilities to score choices with", "use eval.mode: generate (or auto)")
    for i, name in enumerate(metric_names(spec)):
        if name == "perplexity":  # the model's token probabilities; Converse returns text only
            yield ctx.error(("eval", "metrics", i), "perplexity needs the model's token probabilities, which "
                            "Bedrock's Converse API does not return",
                            "score the answers instead (accuracy, rouge_l, …)")
    rows = ctx.planned_rows()[0] if "train" in ctx.sources else {}
    lim = model.limits
    train, validation = rows.get("train"), rows.get("validation")
    if train is not None and lim.train_rows_min is not None and train < lim.train_rows_min:
        yield ctx.error(("data", "train"), f"{train} training rows; "
                                           f"a {model.label} job needs at least {lim.train_rows_min}")
    if train is not None and lim.train_rows_max is not None and train > lim.train_rows_max:
        yield ctx.error(("data", "train"), f"{train} training rows; "
                                           f"a {model.label} job takes at most {lim.train_rows_max}",
                        "cut them with data.limit: {train: N}")
    if validation is not None and lim.validation_rows_max is not None and validation > lim.validation_rows_max:
        where = ("data", "validation") if spec.data.validation is not None else ("data", "split", "validation")
        yield ctx.error(where, f"{validation} validation rows; "
                               f"a {model.label} job takes at most {lim.validation_rows_max}")
    yield from _rows_within_limits(ctx, family, model)


def _rows_within_limits(ctx: Context, family: families.Family, model: families.BaseModel) -> Iterator[Issue]:
    """The sample rows of the sources the job is sent, rendered into the family's JSONL as
    prepare_data renders every row, against the model's documented limits on one record
    (families.record_problem, the run's own check), each at its FILE:LINE. Rows that do not
    format are check_sample_rows' to report; ctx.formatter is None when the templates failed."""
    formatter = ctx.formatter
    if formatter is None or not families.has_record_limits(model):
        return
    b = ctx.spec.compute.bedrock
    data_format = families.data_format(family, b.customization)
    answered = b.customization != "distillation"  # as prepare_data: the teacher writes the answers
    reported = 0
    for split in JOB_SPLITS:
        info = ctx.sources.get(split)
        if not info or not info.readable:
            continue
        for row in info.sample:
            try:
                record = bedrock_jsonl.record(formatter(row.values), data_format, row.number, answered=answered)
            except (FormatError, ValueError):
                continue
            problem = families.record_problem(model, record)
            if problem is None:
                continue
            yield Issue(Pos(info.shown, row.number), info.key, f"row {row.number}: {problem}",
                        "fix the row, or leave it out with data.filter")
            reported += 1
            if reported >= MAX_ROW_ISSUES:
                return
