"""Turn one data row into TRL's columns: rename, derive, render the format's templates.

The same :class:`RowFormatter` checks a sample of rows in ``validate`` and formats
every row when the runtime prepares the data, so what validates is what trains.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Iterable

import jinja2

from ftspec.data import templates as tpl


class FormatError(Exception):
    """A row cannot be formatted; ``key`` names the spec key of the template at fault."""

    def __init__(self, key: str, message: str, refused: bool = False):
        self.key = key
        self.message = message
        self.refused = refused  # the sandbox or a limit stopped the template: no row will do better
        super().__init__(f"{key}: {message}")


@dataclass
class RowFormatter:
    kind: str  # prompt_completion | chat | preference | feedback
    rename: dict[str, str]
    derive: list[tuple[str, jinja2.Template]]
    fields: dict[str, jinja2.Template]  # prompt/completion/chosen/rejected/label
    turns: list[tuple[str, jinja2.Template]] = field(default_factory=list)  # chat: (role, content)
    messages_column: str | None = None
    budget: tpl.RenderBudget | None = None  # all renderings together (validate's sample rows)
    # One source of a mixture: its own renames and derived columns, applied before the data's
    # (so sources with other column names map onto the spec's); `pre_key` is its spec key.
    pre_rename: dict[str, str] = field(default_factory=dict)
    pre_derive: list[tuple[str, jinja2.Template]] = field(default_factory=list)
    pre_key: str = ""

    @classmethod
    def from_plan(cls, data, fmt) -> "RowFormatter":
        """Build from the plan's ``data`` and ``format`` sections (templates embedded there)."""
        env = tpl.environment()
        derive = [(d.name, env.from_string(d.template.text)) for d in data.derive]
        fields = {k: env.from_string(v.text) for k, v in fmt.templates.items() if k != "chat_template"}
        chat = fmt.kind == "chat"
        turns = [(t.role, env.from_string(t.content.text)) for t in fmt.messages] if chat else []
        return cls(fmt.kind, dict(data.rename), derive, fields, turns, fmt.messages_column if chat else None)

    def for_part(self, part: Any, key: str) -> "RowFormatter":
        """This formatter for one source of a mixture (the plan's ``MixturePart``), whose
        ``rename`` and ``derive`` apply first; ``key`` is its spec key (``data.train.0``)."""
        env = tpl.environment()
        return replace(self, pre_rename=dict(part.rename), pre_key=key,
                       pre_derive=[(d.name, env.from_string(d.template.text)) for d in part.derive])

    def columns(self, values: dict) -> dict:
        """The row after renames and derived columns (a mixture source's own first)."""
        if self.pre_rename or self.pre_derive:
            values = {self.pre_rename.get(k, k): v for k, v in values.items()}
            for name, template in self.pre_derive:
                values[name] = self._render(template, values, f"{self.pre_key}.derive.{name}", self.budget)
        row = {self.rename.get(k, k): v for k, v in values.items()}
        for name, template in self.derive:
            row[name] = self._render(template, row, f"data.derive.{name}", self.budget)
        return row

    def __call__(self, values: dict, answer: bool = True) -> dict:
        row = self.columns(values)
        return self.render(row, answer)

    def render(self, row: dict, answer: bool = True) -> dict:
        """The formatted record. ``answer`` False: the prompt alone, for a row a
        distillation's teacher answers (its answer template is not rendered, so the row
        needs no answer column); the completion is empty, a chat ends before its answer."""
        if self.kind == "chat":
            if self.messages_column is not None:
                return {"messages": self._messages_from_column(row)}
            turns = list(enumerate(self.turns))
            while not answer and turns and turns[-1][1][0] == "assistant":
                turns.pop()
            return {"messages": [
                {"role": role, "content": self._render(t, row, f"format.messages.{i}.content", self.budget)}
                for i, (role, t) in turns
            ]}
        names = TEXT_FIELDS[self.kind]
        out = {n: self._render(self.fields[n], row, f"format.{n}", self.budget)
               for n in names if answer or n == "prompt"}
        if "label" in out:
            out["label"] = _label(out["label"])
        return out if answer else {**out, "completion": ""}

    def _messages_from_column(self, row: dict) -> list[dict]:
        key = "format.messages_column"
        value = row.get(self.messages_column)
        if not isinstance(value, list) or not value:
            raise FormatError(key, f"column '{self.messages_column}' must hold a non-empty list of messages")
        out = []
        for i, msg in enumerate(value):
            if (not isinstance(msg, dict) or not isinstance(msg.get("role"), str)
                    or not isinstance(msg.get("content"), str)):
                raise FormatError(key, f"message {i} must be an object with string 'role' and 'content'")
            if msg["role"] not in ("system", "user", "assistant", "tool"):
                raise FormatError(key, f"message {i} has an unknown role '{msg['role']}'")
            out.append({"role": msg["role"], "content": msg["content"]})
        return out

    @staticmethod
    def _render(template: jinja2.Template, row: dict, key: str, budget: tpl.RenderBudget | None = None) -> str:
        try:
            return tpl.render(template, row, budget=budget)
        except Exception as exc:  # jinja raises many types; each is the row's or template's fault
            raise FormatError(key, tpl.describe_render_error(exc), tpl.is_refusal(exc)) from None


# The templates each text format renders, in the order of the record they make.
TEXT_FIELDS: dict[str, tuple[str, ...]] = {
    "prompt_completion": ("prompt", "completion"),
    "preference": ("prompt", "chosen", "rejected"),
    "feedback": ("prompt", "completion", "label"),
}

# What a feedback row's label may render to (case-insensitively, trimmed): Jinja writes a
# boolean column as True or False.
_LABELS = {"true": True, "false": False}


def _label(text: str) -> bool:
    value = _LABELS.get(text.strip().lower())
    if value is None:
        raise FormatError("format.label", f"the label must render to true or false (a thumbs up or down); got "
                                          f"{text.strip()[:60]!r}")
    return value


def teacher_sources(distill: bool, sources: Iterable[str], test_from_train: bool) -> set[str]:
    """The data sources whose rows only a distillation's teacher answers: the validation
    source, and the training source unless the test split is cut from it (held-out rows
    keep their own answers, which every model is scored against). Their answer templates
    are never rendered, so their rows need no answer column: data without ground truth."""
    if not distill:
        return set()
    sources = set(sources)
    return {s for s in ("train", "validation") if s in sources and not (s == "train" and test_from_train)}


def reference(kind: str, record: dict) -> str:
    """The expected answer of a formatted record, as evaluation compares it."""
    if kind in ("prompt_completion", "feedback"):
        return record["completion"].strip()
    if kind == "preference":
        return record["chosen"].strip()
    for msg in reversed(record["messages"]):
        if msg["role"] == "assistant":
            return msg["content"].strip()
    return ""


# --------------------------------------------------------------------------- evaluation prompts
# The same prompts whichever model answers them: a local model (ftspec.runtime.evaluation.evaluate) or
# one behind Amazon Bedrock's Converse API (ftspec.backends.bedrock.converse).


def few_shot_indices(n: int, k: int, seed: int) -> list[int]:
    """Which of ``n`` training records :func:`few_shot` shows, in the order shown: the
    draw depends only on ``n``, ``k`` and the seed, so a split too large to hold can be
    counted, then read again for just these rows (ftspec.data.prepared.few_shot_records)."""
    import random

    if k <= 0 or n <= 0:
        return []
    # random.sample reads its population only by len() and index: a range draws the same
    # positions as the list of records would.
    return random.Random(seed).sample(range(n), min(k, n))


def few_shot(train: list[dict], k: int, seed: int) -> list[dict]:
    """The training records shown before each prompt of a few-shot baseline: k of them,
    drawn with the training seed."""
    return [train[i] for i in few_shot_indices(len(train), k, seed)]


def prompt_messages(record: dict, shots: list[dict] = ()) -> list[dict]:
    """A chat record's turns up to its answer, with the few-shot records' turns (their
    system turns left out) after its own system turn."""
    messages = list(record["messages"])
    while messages and messages[-1]["role"] == "assistant":
        messages.pop()
    if shots:
        system = [m for m in messages[:1] if m["role"] == "system"]
        demo = [m for s in shots for m in s["messages"] if m["role"] != "system"]
        messages = system + demo + messages[len(system):]
    return messages


def prompt_text(record: dict, kind: str, shots: list[dict] = ()) -> str:
    """A text record's prompt, after the few-shot records written out whole."""
    field = "chosen" if kind == "preference" else "completion"
    return "".join(s["prompt"] + s[field] + "\n\n" for s in shots) + record["prompt"]

