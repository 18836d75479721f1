"""Rules on the evaluation: a split to score, metrics that fit the format, gates on
declared metrics, readable JSON Schemas, references among eval.choices.
"""

from __future__ import annotations

import json
from typing import Iterator

from ftspec.checks.derived import answered_by_teacher, has_test, has_validation, metric_names
from ftspec.checks.evalmode import default_metrics, eval_split, resolve_for
from ftspec.checks.facts import MAX_SCHEMA_BYTES, Context
from ftspec.checks.registry import WHOLE_SPEC, rule
from ftspec.core.errors import Issue, Pos, did_you_mean
from ftspec.core.paths import TooLarge, describe_os_error, read_regular
from ftspec.data import templates as tpl
from ftspec.data.formatting import FormatError, reference
from ftspec.data.splitting import SPLITS
from ftspec.spec import schema as S
from ftspec.spec.schema import PREFERENCE_METRICS


@rule(reads=WHOLE_SPEC)
def check_eval(ctx: Context) -> Iterator[Issue]:
    """The evaluation has a split to score, metrics that fit the format, and gates on declared metrics."""
    e = ctx.spec.eval
    if e.split == "test" and not has_test(ctx.spec):
        yield ctx.error(("eval", "split"), "no test split; add data.test or data.split.test")
    if e.split == "validation" and not has_validation(ctx.spec):
        yield ctx.error(("eval", "split"), "no validation split; add data.validation or data.split.validation")
    if e.split == "auto" and not has_test(ctx.spec) and not has_validation(ctx.spec):
        yield ctx.warning(("eval",), "no held-out split: the tuned model is not evaluated",
                          "add data.test or data.split.test")
    if e.mode == "choices" and ctx.spec.format.kind == "preference":
        yield ctx.error(("eval", "mode"), "choices mode scores labels of prompt/completion or chat data, "
                                          "not preference pairs")
    names = metric_names(ctx.spec) or default_metrics(ctx.spec, resolve_for(ctx, eval_split(ctx.spec)).mode)
    seen: set[str] = set()
    for i, name in enumerate(metric_names(ctx.spec)):
        if name in seen:
            yield ctx.error(("eval", "metrics", i), f"metric '{name}' is listed twice")
        seen.add(name)
        if name in PREFERENCE_METRICS and ctx.spec.format.kind != "preference":
            yield ctx.error(("eval", "metrics", i), f"{name} scores preference pairs (format.kind: preference)")
        elif name in ("reward_accuracy", "reward_margin") and not e.baseline:
            yield ctx.error(("eval", "metrics", i), f"{name} is DPO's reward, measured against the base model; "
                            "set eval.baseline: true")
    for gate in e.gates:
        metric = gate[len("improvement."):] if gate.startswith("improvement.") else gate
        if metric not in names:
            yield ctx.error(("eval", "gates", gate), f"gate on '{metric}', which is not among eval.metrics "
                                                     f"({', '.join(names) or 'none'})",
                            did_you_mean(metric, names))
        elif gate.startswith("improvement.") and not e.baseline:
            yield ctx.error(("eval", "gates", gate), "an improvement gate compares with the base model; "
                                                     "set eval.baseline: true")


@rule(reads=("eval",))
def check_json_schemas(ctx: Context) -> Iterator[Issue]:
    """A json_schema metric names a readable JSON Schema file."""
    for i, metric in enumerate(ctx.spec.eval.metrics):
        if isinstance(metric, S.JsonSchemaMetric):
            text, issue = schema_text(ctx, metric.schema_, ("eval", "metrics", i, "schema"))
            if issue is not None:
                yield issue
            else:
                ctx.schemas[i] = text


def schema_text(ctx: Context, written: str, at: tuple) -> tuple[str | None, Issue | None]:
    """The JSON Schema file ``written`` (relative to the spec) as text, or the issue at ``at`` that
    says why it cannot be used (outside the repository, unreadable, not a JSON object)."""
    path = ctx.spec_dir / written
    refusal = ctx.policy.outside(path, written)
    if refusal:
        return None, ctx.error(at, refusal)
    try:
        text = read_regular(path, MAX_SCHEMA_BYTES).decode("utf-8-sig")
        schema = json.loads(text)
    except TooLarge:
        return None, ctx.error(at, f"schema file '{written}' is larger than {MAX_SCHEMA_BYTES >> 20} MiB")
    except (UnicodeDecodeError, ValueError) as exc:
        return None, ctx.error(at, f"schema file '{written}' is not JSON: {exc}")
    except RecursionError:
        return None, ctx.error(at, f"schema file '{written}' nests too deeply")
    except OSError as exc:
        return None, ctx.error(at, f"schema file '{written}' {describe_os_error(exc)}")
    if not isinstance(schema, dict):
        return None, ctx.error(at, f"schema file '{written}' must hold a JSON object")
    problem = schema_problem(schema)
    if problem:
        return None, ctx.error(at, f"schema file '{written}' is not a valid JSON Schema: {problem}")
    return text, None


def schema_problem(schema: dict) -> str | None:
    """Why ``schema`` is not a JSON Schema (its validator's first complaint), or None; None too where
    jsonschema is not installed (the run, which needs it, checks again)."""
    try:
        from jsonschema import exceptions, validators
    except ImportError:  # the training extra's; validate runs without it
        return None
    try:
        validators.validator_for(schema).check_schema(schema)
    except exceptions.SchemaError as exc:
        return str(exc.message).splitlines()[0][:300]
    return None


@rule(reads=WHOLE_SPEC)
def check_choices(ctx: Context) -> Iterator[Issue]:
    """In choices mode, the sampled references are among the allowed labels."""
    e = ctx.spec.eval
    if e.mode == "generate" or not e.choices or ctx.formatter is None:  # auto with choices is choices mode
        return
    allowed = set(e.choices)
    teacher = answered_by_teacher(ctx.spec)  # their answers are the teacher's, unknown until it runs
    for split in SPLITS:
        info = ctx.sources.get(split)
        if not info or not info.readable or split in teacher:
            continue
        for row in info.sample:
            try:
                record = ctx.formatter(row.values)
            except FormatError:
                continue
            ref = reference(ctx.spec.format.kind, record)
            if ref not in allowed:
                yield Issue(Pos(info.shown, row.number), "eval.choices",
                            f"the answer {ref!r} is not one of eval.choices ({tpl.listing(e.choices)})",
                            tpl.close_match(ref, e.choices))
                break
