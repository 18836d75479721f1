"""Rules on the templates: the names they read are columns, the sample rows render
through them, chat templates, extraction templates and judge rubrics render sample
values, and chat data has a chat template.
"""

from __future__ import annotations

import re
from typing import Iterator

import jinja2

from ftspec.checks.derived import answer_templates, answered_by_teacher
from ftspec.checks.facts import Context
from ftspec.checks.registry import rule
from ftspec.checks.samples import Dropped, sample_formatter
from ftspec.core.errors import Issue, Pos
from ftspec.data import templates as tpl
from ftspec.data.formatting import FormatError
from ftspec.data.splitting import SPLITS
from ftspec.spec import schema as S


@rule(reads=("data.train", "data.rename", "data.derive", "format"))
def check_template_names(ctx: Context) -> Iterator[Issue]:
    """Every name a template reads is a column, a derived column, or (for extraction) `text`."""
    info = ctx.sources.get("train")
    if not info or not info.readable:
        return
    rename = ctx.spec.data.rename
    base = [rename.get(c, c) for c in info.columns]
    available = list(base)
    problems: list[Issue] = []

    def names_of(names: set, path: tuple) -> None:
        left = tpl.MAX_NAME_ISSUES_IN_ALL - len(problems)
        if left > 0:
            problems.extend(tpl.check_names(names, available, ctx.pos(*path), ctx.key(*path),
                                            min(left, tpl.MAX_NAME_ISSUES)))
        elif set(names) - set(available) and not problems[-1].message.startswith("more templates"):
            problems.append(ctx.error(path, "more templates use names that are not columns (not listed: "
                                      f"{tpl.MAX_NAME_ISSUES_IN_ALL} are enough)"))

    for name in ctx.spec.data.derive:
        key = f"data.derive.{name}"
        if key in ctx.parsed:
            names_of(ctx.parsed[key][1], ("data", "derive", name))
        available.append(name)
    if "data.filter" in ctx.parsed:  # the filter sees the columns after renames and derived columns
        names_of(ctx.parsed["data.filter"][1], ("data", "filter"))
    # A training source only a distillation's teacher answers need not hold the answer's
    # columns: the answer templates are checked against the test source's columns instead.
    answers = answer_templates(ctx.spec) if "train" in answered_by_teacher(ctx.spec) else set()
    for key, (_, names) in ctx.parsed.items():
        if not key.startswith("format.") or key == "format.chat_template" or key in answers:
            continue
        names_of(names, tuple(int(p) if p.isdigit() else p for p in key.split(".")))
    test = ctx.sources.get("test")
    if answers and test is not None and test.readable:
        available = [rename.get(c, c) for c in test.columns] + list(ctx.spec.data.derive)
        for key in sorted(answers & set(ctx.parsed)):
            names_of(ctx.parsed[key][1], tuple(int(p) if p.isdigit() else p for p in key.split(".")))
    f = ctx.spec.format
    if isinstance(f, S.ChatFormat) and f.messages_column and f.messages_column not in available:
        problems.append(ctx.error(("format", "messages_column"), f"no column '{f.messages_column}'",
                        tpl.close_match(f.messages_column, available) or f"columns: {tpl.listing(available)}"))
    ctx.names_ok = not problems
    yield from problems


@rule(reads=("data.train", "data.validation", "data.test", "data.rename", "data.derive", "data.filter",
              "data.on_bad_row", "format"))
def check_sample_rows(ctx: Context) -> Iterator[Issue]:
    """The first rows of every split render through renames, derived columns and the format's templates."""
    formatter = sample_formatter(ctx)
    if formatter is None or not ctx.names_ok:
        return
    ctx.formatter = formatter
    for split in SPLITS:
        info = ctx.sources.get(split)
        if not info or not info.readable:
            continue
        reported = 0
        for row in info.sample:
            try:
                formatter(row.values)
            except Dropped:  # data.filter leaves the row out (check_filter reports a filter that cannot decide)
                continue
            except FormatError as exc:
                if exc.refused:  # the template's fault: one report, and no more rendering by any check
                    ctx.formatter = None
                    yield Issue(Pos(info.shown, row.number), exc.key, exc.message)
                    return
                if ctx.spec.data.on_bad_row == "skip":
                    continue
                yield Issue(Pos(info.shown, row.number), exc.key, exc.message)
                reported += 1
                if reported >= 5:  # the same mistake is usually on every row
                    break


# What the non-row templates see when they are tried out at validate time.
_SAMPLE_MESSAGES = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"},
                    {"role": "assistant", "content": "a"}]


_CHAT_CONTEXT = {"messages": _SAMPLE_MESSAGES, "add_generation_prompt": True, "bos_token": "<s>", "eos_token": "</s>",
                 "pad_token": "<pad>", "unk_token": "<unk>", "sep_token": "<sep>", "cls_token": "<cls>",
                 "mask_token": "<mask>", "additional_special_tokens": [], "tools": None, "documents": None}


# Conversations a chat template is tried on when the data gives none (hub data, say).
_TRIAL_CONVERSATIONS = [
    _SAMPLE_MESSAGES,
    [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}],
    [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"},
     {"role": "user", "content": "u2"}, {"role": "assistant", "content": "a2"}],
]


def _sample_conversations(ctx: Context) -> list[list[dict]]:
    """The conversations of the first sample rows that format, as the data gives them."""
    found: list[list[dict]] = []
    if ctx.formatter is None:
        return found
    for split in SPLITS:
        info = ctx.sources.get(split)
        if not info or not info.readable:
            continue
        for row in info.sample[:3]:
            try:
                record = ctx.formatter(row.values)
            except FormatError:
                continue
            if record.get("messages"):
                found.append(record["messages"])
        if found:
            break
    return found[:3]


_NEVER_GIVEN = re.compile(r"^'([A-Za-z_][A-Za-z0-9_]*)' is undefined$")


def _try_chat_template(ctx: Context, template: jinja2.Template) -> Iterator[Issue]:
    """A chat template must render the conversations this spec makes, both whole (for
    training) and as a prompt (for evaluation), and must not print a name that
    transformers never gives it (it would print nothing)."""
    path = ("format", "chat_template")
    data = _sample_conversations(ctx)
    conversations = data or _TRIAL_CONVERSATIONS
    failures: list[Exception] = []
    for messages in conversations:
        prompt = messages[:-1] if messages[-1]["role"] == "assistant" and len(messages) > 1 else messages
        for msgs, add in ((messages, False), (prompt, True)):
            try:
                tpl.render(template, {**_CHAT_CONTEXT, "messages": msgs, "add_generation_prompt": add},
                           budget=ctx.render_budget)
            except Exception as exc:  # any error: the template cannot render this conversation
                if tpl.is_refusal(exc):
                    yield ctx.error(path, tpl.describe_render_error(exc))
                    return
                name = (_NEVER_GIVEN.match(getattr(exc, "message", "") or "")
                        if isinstance(exc, jinja2.UndefinedError) else None)
                if name and name.group(1) not in tpl.CHAT_NAMES:
                    yield ctx.error(path, f"the chat template prints '{name.group(1)}', which transformers never gives "
                                    "a chat template (it would print nothing); it is given "
                                    f"{', '.join(tpl.CHAT_NAMES)}")
                    return
                failures.append(exc)
    if failures and (data or len(failures) == 2 * len(conversations)):
        which = "this spec's conversations (from the first rows)" if data else "any conversation"
        yield ctx.error(path, f"the chat template cannot render {which}: {tpl.describe_render_error(failures[0])}")


@rule(reads=("format", "eval"))
def check_other_templates(ctx: Context) -> Iterator[Issue]:
    """Chat templates, extraction templates and judge rubrics are tried on sample
    values, so a hostile or broken one is refused now rather than in the middle of a run."""
    for key, (template, names) in ctx.parsed.items():
        path = tuple(int(p) if p.isdigit() else p for p in key.split("."))
        if key == "format.chat_template":
            yield from _try_chat_template(ctx, template)
            continue
        elif key.endswith("extract.template"):
            values = {"text": "sample answer 42"}
        elif key.endswith(".rubric"):
            values = {"prompt": "p", "reference": "r", "prediction": "p"}
        else:
            continue
        unknown = sorted(set(names) - set(values))
        if unknown:
            yield ctx.error(path, f"template uses '{unknown[0]}'; it can use only {', '.join(sorted(values))}")
            continue
        try:
            tpl.render(template, values, budget=ctx.render_budget)
        except Exception as exc:  # each kind of failure is the template's
            yield ctx.error(path, tpl.describe_render_error(exc))


@rule(reads=("format", "model"))
def check_chat_template(ctx: Context) -> Iterator[Issue]:
    """Chat data needs a chat template: the spec's, or the tokenizer's own."""
    f = ctx.spec.format
    if not isinstance(f, S.ChatFormat) or f.chat_template is not None:
        return
    if ctx.model and ctx.model.has_chat_template is False:
        what = "a tiny model's tokenizer" if ctx.model.source == "tiny" else "this model's tokenizer"
        yield ctx.error(("format", "kind"), f"{what} has no chat template; set format.chat_template",
                        "e.g. chat_template: {builtin: chatml}")
