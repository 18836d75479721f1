"""Rules on learning from rewards (method.kind: grpo): prompts to answer, rewards that can be
computed (their schema files read, their Python files inside the repository and defining the
function, never imported here), a batch the group size divides, and what GRPO does not do.
"""

from __future__ import annotations

import ast
import hashlib
from dataclasses import dataclass
from typing import Iterator

from ftspec.checks.facts import Context
from ftspec.checks.registry import WHOLE_SPEC, rule
from ftspec.checks.rules.eval import schema_text
from ftspec.core.errors import Issue
from ftspec.core.paths import TooLarge, describe_os_error, read_regular
from ftspec.data.formatting import FormatError
from ftspec.spec import schema as S

MAX_REWARD_FILE = 1 << 20  # bytes of a Python reward's file


@dataclass(frozen=True)
class RewardCode:
    """A Python reward's file as validate read it (the plan names it by path and sha256)."""

    sha256: str


@rule(reads=WHOLE_SPEC)
def check_rewards(ctx: Context) -> Iterator[Issue]:
    """GRPO samples answers to prompts and scores them with rewards that can be computed."""
    m = ctx.spec.method
    if not isinstance(m, S.GRPOMethod):
        return
    if ctx.spec.format.kind == "preference":
        yield ctx.error(("format", "kind"), "GRPO samples its own answers to prompts: format.kind must be "
                                            "prompt_completion or chat, whose answers are the rewards' references "
                                            "(preference pairs are for DPO)")
    elif _no_prompts(ctx):
        at = ("format", "prompt") if ctx.spec.format.kind == "prompt_completion" else ("format",)
        yield ctx.error(at, "GRPO samples answers to the rows' prompts, and every sampled row's prompt is empty",
                        "give format.prompt (or the turns before the answer) the text the model answers")
    for i, reward in enumerate(m.rewards):
        if isinstance(reward, S.JsonSchemaReward):
            text, issue = schema_text(ctx, reward.schema_, ("method", "rewards", i, "schema"))
            if issue is not None:
                yield issue
            else:
                ctx.reward_schemas[i] = text
        elif isinstance(reward, S.PythonReward):
            yield from _python_reward(ctx, i, reward)
    if m.estimator == "leave_one_out" and "loss_type" in m.model_fields_set:
        yield ctx.error(("method", "loss_type"), "RLOO (estimator: leave_one_out) has no loss_type: TRL's "
                        "RLOOTrainer aggregates its losses one way", "remove method.loss_type")
    t, c = ctx.spec.training, ctx.spec.compute
    effective = t.batch_size * t.gradient_accumulation * c.num_processes * c.num_nodes
    if effective % m.group_size:
        yield ctx.error(("method", "group_size"), f"{m.group_size} completions per prompt do not divide the batch of "
                        f"{effective} completions (training.batch_size {t.batch_size} × gradient_accumulation "
                        f"{t.gradient_accumulation} × {c.num_processes * c.num_nodes} processes)",
                        f"make training.batch_size a multiple of {m.group_size}, or change method.group_size")
    # As the plan resolves them: completions as long as the evaluation's answers, max_length from the model.
    completion = m.max_completion_tokens or ctx.spec.eval.max_new_tokens
    limit = t.max_length or min(1024, (ctx.model.max_positions if ctx.model else None) or 1024)
    if completion >= limit:
        at = (("method", "max_completion_tokens") if m.max_completion_tokens is not None
              else ("training", "max_length") if t.max_length is not None else ("method",))
        yield ctx.error(at, f"completions of up to {completion} tokens leave no room for a prompt within "
                        f"training.max_length {limit}",
                        "lower method.max_completion_tokens (default: eval.max_new_tokens), or raise "
                        "training.max_length")
    if t.eval_every is not None:
        yield ctx.error(("training", "eval_every"), "GRPO has no validation loss to compute as it trains: it is "
                        "measured by its rewards at every step, and by the held-out evaluation after",
                        "remove training.eval_every")
    if t.early_stopping is not None:
        yield ctx.error(("training", "early_stopping"), "early stopping watches the validation loss, which GRPO does "
                        "not compute", "remove training.early_stopping")
    if t.batching not in ("auto", "padded"):
        yield ctx.error(("training", "batching"), f"GRPO batches the completions it samples; it cannot "
                        f"{'pack' if t.batching == 'packed' else 'group by length'} rows", "remove training.batching")
    if c.strategy in ("fsdp", "deepspeed"):
        yield ctx.error(("compute", "strategy"), f"GRPO runs on one process or several with ddp; {c.strategy} is "
                        "not supported for it yet", "use compute.strategy: ddp")




def _no_prompts(ctx: Context) -> bool:
    """Whether the training source's sample rows, as the format renders them, all have an empty prompt
    (False when they cannot be rendered here: other rules say why)."""
    info = ctx.sources.get("train")
    if ctx.formatter is None or info is None or not info.readable or not info.sample:
        return False
    prompts = []
    for row in info.sample:
        try:
            record = ctx.formatter(row.values)
        except FormatError:
            continue
        if ctx.spec.format.kind == "chat":
            prompts.append("".join(str(m.get("content", "")) for m in record["messages"][:-1]))
        else:
            prompts.append(str(record.get("prompt", "")))
    return bool(prompts) and not any(p.strip() for p in prompts)


def _python_reward(ctx: Context, i: int, reward: S.PythonReward) -> Iterator[Issue]:
    written, function = reward.python.rsplit(":", 1)
    at = ("method", "rewards", i, "python")
    path = ctx.spec_dir / written
    refusal = ctx.policy.outside(path, written)
    if refusal:
        yield ctx.error(at, refusal)
        return
    try:
        data = read_regular(path, MAX_REWARD_FILE)
        tree = ast.parse(data.decode("utf-8-sig"), filename=written)  # read, never run, here
    except TooLarge:
        yield ctx.error(at, f"reward file '{written}' is larger than {MAX_REWARD_FILE >> 20} MiB")
        return
    except (UnicodeDecodeError, SyntaxError, ValueError) as exc:
        yield ctx.error(at, f"reward file '{written}' is not Python ftspec can read: {str(exc).splitlines()[0]}")
        return
    except RecursionError:
        yield ctx.error(at, f"reward file '{written}' nests too deeply")
        return
    except OSError as exc:
        yield ctx.error(at, f"reward file '{written}' {describe_os_error(exc)}")
        return
    defined = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    if function in {n.name for n in tree.body if isinstance(n, ast.AsyncFunctionDef)} - \
            {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}:
        yield ctx.error(at, f"reward {function!r} in '{written}' is an async function; a reward is called as TRL "
                        "calls one, and must return its list of numbers (write it with `def`)")
        return
    if function not in defined:
        yield ctx.error(at, f"reward file '{written}' defines no function {function!r} at its top level"
                        + (f" (it defines {', '.join(defined[:10])})" if defined else ""))
        return
    ctx.reward_code[i] = RewardCode(hashlib.sha256(data).hexdigest())
