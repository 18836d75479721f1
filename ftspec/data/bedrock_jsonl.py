"""Prepared records written as the JSONL a Bedrock model family trains on.

Pure python (no boto3), in the data layer so that ``validate`` renders its sample rows as a
run renders every row (ftspec.checks.rules.bedrock, against the documented limits of
ftspec.catalog.bedrock_families). The same records give the same bytes, always. Each line is
``json.dumps`` with the fields in the order the AWS documentation shows them (not sorted),
``ensure_ascii=False`` and fixed separators; lines end in "\\n"; the file is UTF-8.

Records are prepare_data's: ``{"prompt", "completion"}`` (prompt_completion) or
``{"messages": [{"role", "content"}, …]}`` (chat; a leading "system" message becomes the
format's system field).

Formats (sources, AWS Bedrock user guide):
  bedrock-conversation-2024  Amazon Nova;
                             docs.aws.amazon.com/nova/latest/userguide/fine-tune-prepare-data-understanding.html
                             and bedrock/latest/userguide/preparing-text-data.html ("Converse API format"):
                             {"schemaVersion", "system": [{"text"}], "messages": [{"role", "content": [{"text"}]}]};
                             roles user and assistant, the first turn user, the last assistant
  prompt-completion          Titan, Llama; bedrock/latest/userguide/preparing-text-data.html: {"prompt", "completion"}
  claude-messages            Claude 3 Haiku; bedrock/latest/userguide/preparing-text-data.html:
                             {"system", "messages": [{"role", "content"}]}, user and assistant alternating
  input-text                 continued pre-training; bedrock/latest/userguide/dataset-prep-continued-pretraining.html:
                             {"input"}
"""

from __future__ import annotations

import json
from typing import Any, Callable

FORMATS = ("bedrock-conversation-2024", "prompt-completion", "claude-messages", "input-text")
NOVA_SCHEMA = "bedrock-conversation-2024"


def _line(obj: dict, row: int) -> bytes:
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    # JSON allows U+2028/U+2029 raw, but line splitters that follow Unicode (Python's
    # splitlines among them) break a line there: written escaped, the value is the same.
    text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    try:
        return (text + "\n").encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate (e.g. from "\ud800" in a JSON source)
        raise ValueError(f"row {row}: holds text that is not valid Unicode (a lone surrogate)") from None


def _text(value: Any, row: int, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"row {row}: {what} is {type(value).__name__}, not text")
    if not value.strip():
        raise ValueError(f"row {row}: {what} is empty")
    return value


def _turns(record: dict, row: int, system: str | None, answered: bool) -> tuple[str | None, list[tuple[str, str]]]:
    """A record as (system, [(role, text)…]): user first, user and assistant alternating,
    and (when ``answered``) an assistant turn last."""
    if "messages" in record:
        messages = record["messages"]
        if not isinstance(messages, list) or not messages:
            raise ValueError(f"row {row}: messages is not a non-empty list")
        turns = []  # (role, text, 1-based position in the row's messages)
        for i, m in enumerate(messages, 1):
            if not isinstance(m, dict) or "role" not in m or "content" not in m:
                raise ValueError(f"row {row}: message {i} has no role and content")
            turns.append((m["role"], _text(m["content"], row, f"message {i}'s content"), i))
        if turns[0][0] == "system":
            if system is not None:
                raise ValueError(f"row {row}: has its own system message and a system prompt was given as well")
            system = turns.pop(0)[1]
    elif "prompt" in record and "completion" in record:
        turns = [("user", _text(record["prompt"], row, "prompt"), 1),
                 ("assistant", _text(record["completion"], row, "completion"), 2)]
    elif "prompt" in record and not answered:
        turns = [("user", _text(record["prompt"], row, "prompt"), 1)]
    else:
        raise ValueError(f"row {row}: has neither messages nor prompt and completion "
                         f"(keys: {', '.join(sorted(record)) or 'none'})")
    if not turns:
        raise ValueError(f"row {row}: has a system message and no turns")
    for i, (role, _, pos) in enumerate(turns):
        expected = "user" if i % 2 == 0 else "assistant"
        if role != expected:
            raise ValueError(f"row {row}: message {pos} is {role!r} where {expected!r} was expected "
                             "(turns must alternate user, assistant, starting with user)")
    if answered and turns[-1][0] != "assistant":
        raise ValueError(f"row {row}: ends with a user turn: nothing to learn from (the last turn must be the "
                         "assistant's)")
    return system, [(role, text) for role, text, _ in turns]


def _nova(record: dict, row: int, system: str | None, answered: bool) -> dict:
    system, turns = _turns(record, row, system, answered)
    out: dict[str, Any] = {"schemaVersion": NOVA_SCHEMA}
    if system is not None:
        out["system"] = [{"text": system}]
    out["messages"] = [{"role": role, "content": [{"text": text}]} for role, text in turns]
    return out


def _claude(record: dict, row: int, system: str | None, answered: bool) -> dict:
    system, turns = _turns(record, row, system, answered)
    out: dict[str, Any] = {}
    if system is not None:
        out["system"] = system
    out["messages"] = [{"role": role, "content": text} for role, text in turns]
    return out


def _prompt_completion(record: dict, row: int, system: str | None, answered: bool) -> dict:
    system, turns = _turns(record, row, system, answered=True)
    if system is not None:
        raise ValueError(f"row {row}: prompt-completion lines have no system field; drop the system prompt "
                         "or use a family that takes one")
    if len(turns) != 2:
        raise ValueError(f"row {row}: has {len(turns)} turns; "
                         "prompt-completion lines hold one prompt and one completion")
    return {"prompt": turns[0][1], "completion": turns[1][1]}


def _input_text(record: dict, row: int, system: str | None, answered: bool) -> dict:
    if system is not None:
        raise ValueError(f"row {row}: continued pre-training lines hold text only, no system prompt")
    if "input" in record or "text" in record:
        value = record["input"] if "input" in record else record["text"]
        return {"input": _text(value, row, "input" if "input" in record else "text")}
    if "prompt" in record and "completion" in record:  # the text as the model reads it
        return {"input": _text(record["prompt"], row, "prompt") + _text(record["completion"], row, "completion")}
    raise ValueError(f"row {row}: continued pre-training takes text (input, text, or prompt and completion); "
                     f"this row has {', '.join(sorted(record)) or 'no keys'}")


RENDERERS: dict[str, Callable[[dict, int, str | None, bool], dict]] = {
    "bedrock-conversation-2024": _nova,
    "prompt-completion": _prompt_completion,
    "claude-messages": _claude,
    "input-text": _input_text,
}


def _renderer(data_format: str) -> Callable[[dict, int, str | None, bool], dict]:
    try:
        return RENDERERS[data_format]
    except KeyError:
        raise ValueError(f"unknown data format {data_format!r} (known: {', '.join(FORMATS)})") from None


def record(values: Any, data_format: str, row: int, system: str | None = None, *, answered: bool = True) -> dict:
    """One record as ``data_format``'s line holds it (before it is written as JSON): what
    :func:`render` writes for the record at 1-based ``row``; ValueError naming the row."""
    if not isinstance(values, dict):
        raise ValueError(f"row {row}: is {type(values).__name__}, not an object")
    if system is not None and not system.strip():
        system = None
    return _renderer(data_format)(values, row, system, answered)


def render(records: list[dict], data_format: str, system: str | None = None, *, answered: bool = True) -> bytes:
    """``records`` as ``data_format``'s JSONL, UTF-8 bytes. ``system``: a system prompt for
    every row (a row's own leading system message takes its place when there is none).
    ``answered=False`` accepts rows that end with the user's turn (distillation's prompts:
    the teacher writes the answers). A row that cannot be written raises ValueError naming it
    (1-based)."""
    _renderer(data_format)
    return b"".join(_line(record(values, data_format, row, system, answered=answered), row)
                    for row, values in enumerate(records, 1))
