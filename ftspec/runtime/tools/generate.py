"""Try a trained model: ``ftspec generate`` and ``ftspec chat``.

The input is formatted exactly as training formatted its rows, through the same code:
the plan's :class:`~ftspec.data.formatting.RowFormatter` (``data.rename``, the
``data.derive`` columns the prompt needs, the prompt template, or the chat turns before
the answer), then for chat the chat template with ``add_generation_prompt``, as the
evaluation builds its prompts (``evaluate.chat_prompt``). Answers come from the
evaluation's own greedy :func:`~ftspec.runtime.evaluation.evaluate.generate`: same stop ids, same
``eval.stop`` strings, same cut of over-long prompts.

The models load as the generation steps load them (``models.load_evaluated``): the tuned
one from the train step's output under this plan's key, the base one from the prepared
data. Nothing here imports torch until a model is loaded, so a spec that has not been
trained is refused at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import jinja2
import jinja2.meta

from ftspec.catalog import steps
from ftspec.core.errors import Pos, SpecError
from ftspec.core.text import printable
from ftspec.data import sources
from ftspec.data import templates as tpl
from ftspec.data.formatting import FormatError, RowFormatter
from ftspec.runtime.quiet import quiet_libraries
from ftspec.store.rundir import run_dir_of, step_states, store_of


def _variables(template_text: str) -> set[str]:
    return set(jinja2.meta.find_undeclared_variables(tpl.environment().parse(template_text)))


@dataclass
class Prompter:
    """Builds the model's prompt for an input row (columns as in the spec's data files)."""

    kind: str  # prompt_completion | chat | preference
    formatter: RowFormatter
    derive: list[tuple[str, jinja2.Template]]  # only those the prompt needs, in the spec's order
    columns: tuple[str, ...]  # the input columns the prompt reads, as the data files name them
    prompt_turns: list[tuple[str, jinja2.Template]]  # chat: the turns before the answer

    @classmethod
    def from_plan(cls, plan) -> Prompter:
        formatter = RowFormatter.from_plan(plan.data, plan.format)
        kind = plan.format.kind
        turns: list[tuple[str, jinja2.Template]] = []
        if kind == "chat":
            if plan.format.messages_column is not None:
                return cls(kind, formatter, [], (plan.format.messages_column,), [])
            texts = [(t.role, t.content.text) for t in plan.format.messages]
            while texts and texts[-1][0] == "assistant":  # the answer: what the model is asked for
                texts.pop()
            turns = formatter.turns[:len(texts)]
            needed = set().union(*(_variables(text) for _, text in texts)) if texts else set()
        else:
            needed = _variables(plan.format.templates["prompt"].text)
        # Walk the derived columns backwards: a derived column the prompt reads needs the
        # columns its own template reads, and so on; the others (the answer's) are left out.
        chosen = []
        for d, (name, template) in reversed(list(zip(plan.data.derive, formatter.derive))):
            if name in needed:
                chosen.append((name, template))
                needed = (needed - {name}) | _variables(d.template.text)
        source_of = {new: old for old, new in plan.data.rename.items()}
        columns = tuple(sorted({source_of.get(c, c) for c in needed}))
        return cls(kind, formatter, list(reversed(chosen)), columns, turns)

    # ---------------------------------------------------------------- rows

    def row_for(self, text: str | None, fixed: dict) -> dict:
        """An input row from a bare text (it fills the one column not given with
        ``--column``) and the ``--column`` values."""
        row = dict(fixed)
        if text is None:
            return row
        if self.kind == "chat" and self.formatter.messages_column is not None:
            row[self.formatter.messages_column] = [{"role": "user", "content": text}]
            return row
        free = [c for c in self.columns if c not in fixed]
        if len(free) != 1:
            what = "the prompt reads no column" if not self.columns else (
                f"the prompt reads columns {', '.join(self.columns)}")
            hint = "give the others with --column NAME=VALUE, or rows with --file" if free else (
                "every column is given with --column: leave out the text")
            raise SpecError.one(Pos("TEXT"), "", f"a bare text fills one column, but {what}; {hint}")
        row[free[0]] = text
        return row

    def check_row(self, row: dict, where: str) -> None:
        missing = [c for c in self.columns if c not in row]
        if missing:
            raise SpecError.one(Pos(where), "", f"missing column{'s' if len(missing) > 1 else ''} "
                                f"{', '.join(missing)} (the prompt reads {', '.join(self.columns)})")

    def _mapped(self, row: dict) -> dict:
        """The row after renames and the derived columns the prompt needs, as prepare_data maps it."""
        mapped = {self.formatter.rename.get(k, k): v for k, v in row.items()}
        for name, template in self.derive:
            mapped[name] = RowFormatter._render(template, mapped, f"data.derive.{name}")
        return mapped

    def messages(self, row: dict) -> list[dict]:
        """Chat: the conversation before the answer, as the training conversation holds it."""
        if self.formatter.messages_column is not None:
            messages = self.formatter._messages_from_column(row)
            while messages and messages[-1]["role"] == "assistant":
                messages.pop()
            return messages
        mapped = self._mapped(row)
        return [{"role": role, "content": RowFormatter._render(t, mapped, f"format.messages.{i}.content")}
                for i, (role, t) in enumerate(self.prompt_turns)]

    def next_turns(self, row: dict) -> list[dict]:
        """Chat, after the first exchange: the turns a new line adds (the user's block of
        the spec's turns: those after its last assistant turn, or all but its system turns)."""
        messages = self.messages(row)
        if self.formatter.messages_column is not None:
            return messages
        last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
        if last is not None:
            return messages[last + 1:]
        return [m for m in messages if m["role"] != "system"] or messages

    def prompt(self, row: dict, tokenizer) -> str:
        """The text the model continues: the prompt template's, or the chat template's
        rendering of the conversation with the generation prompt."""
        if self.kind == "chat":
            return chat_prompt(self.messages(row), tokenizer)
        return RowFormatter._render(self.formatter.fields["prompt"], self._mapped(row), "format.prompt")


def chat_prompt(messages: list[dict], tokenizer) -> str:
    """The evaluation's own rendering of a conversation for the model to continue."""
    # Deferred: the evaluation module imports torch.
    from ftspec.runtime.evaluation import evaluate

    return evaluate.chat_prompt(messages, tokenizer)


# -------------------------------------------------------------------- the run's models


def trained_state(plan, root: Path) -> tuple[str, Path]:
    """The train step's state for this plan (done, stale, running, missing) and the run directory."""
    run_dir = run_dir_of(plan, root)
    states = step_states(plan, run_dir)
    return (states[steps.TRAIN.name] if states[steps.PREPARE_DATA.name] == "done" else
            states[steps.PREPARE_DATA.name]), run_dir


def require_trained(plan, root: Path, spec_shown: str, command: str) -> Path:
    """The run directory, or a one-line refusal naming the command that trains this plan."""
    state, run_dir = trained_state(plan, root)
    if state == "done":
        return run_dir
    why = {"stale": f"the model in {plan.output.dir}/model was trained for another version of this spec",
           "running": "a run of this plan is under way now",
           "missing": "it has not been trained"}.get(state, "it has not been trained")
    hint = f"wait for it to finish (`{command}`)" if state == "running" else f"run `{command}` first"
    raise SpecError.one(Pos(spec_shown), "", "no trained model for this plan "
                        f"(train key {plan.step('train').key[:8]}): {why}", hint)


@dataclass
class Loaded:
    model: object
    tokenizer: object


def load(plan, root: Path, tuned: bool) -> Loaded:
    """The tuned or the base model with its tokenizer, loaded as the generation steps load them."""
    # Deferred: loading a model imports torch.
    from ftspec.runtime.models import load_evaluated

    store = store_of(run_dir_of(plan, root))
    data_dir = store.path(steps.PREPARE_DATA.name, plan.step(steps.PREPARE_DATA.name).key)
    model_dir = store.path(steps.TRAIN.name, plan.step(steps.TRAIN.name).key) if tuned else None
    return Loaded(*load_evaluated(plan, root, data_dir, model_dir))


def prepare_runtime(plan) -> None:
    """What a run sets before computing: quiet libraries, the plan's CPU threads."""
    # Deferred: the builders import torch.
    from ftspec.runtime.training.builders import apply_threads

    quiet_libraries()
    apply_threads(plan.compute)


def answer(plan, loaded: Loaded, prompts: list[str], max_new_tokens: int | None = None) -> list[str]:
    """Greedy answers, stopping as the evaluation stops (end of sequence or of turn, eval.stop)."""
    # Deferred: the evaluation module imports torch.
    from ftspec.runtime.evaluation.evaluate import generate

    return generate(loaded.model, loaded.tokenizer, prompts, max_new_tokens or plan.eval.max_new_tokens,
                    plan.eval.batch_size, list(plan.eval.stop), chat=plan.format.kind == "chat",
                    max_length=plan.training.max_length)


# -------------------------------------------------------------------- generate


# Rows given to `generate --file`: read by the reader of the spec's own data (a regular file
# only, strict JSON, a byte-order mark and CRLF as a user means them, .gz read within its
# expansion limit, rows of bounded size), and no more than a person would ask at once.
MAX_FILE_BYTES = 64 << 20


def read_rows(path: Path) -> list[tuple[int, dict]]:
    """(line number, row) of each row of a JSON-lines file (or .jsonl.gz). Raises SpecError at FILE:LINE."""
    rows, total, shown = [], 0, str(path)
    try:
        for row in sources.read_rows(Path(path), "jsonl", shown):
            total += row.size
            if total > MAX_FILE_BYTES:
                raise SpecError.one(Pos(shown, row.number), "--file", f"more than {MAX_FILE_BYTES >> 20} MiB of rows "
                                    "is refused; give fewer rows at a time")
            rows.append((row.number, row.values))
    except sources.RowError as exc:
        raise SpecError([exc.issue()]) from None
    if not rows:
        raise SpecError.one(Pos(shown), "--file", "holds no rows to answer", "write one JSON object per line")
    return rows


def generate_rows(plan, root: Path, rows: list[tuple[dict, str]], base: bool, max_new_tokens: int | None) -> list[dict]:
    """``rows``: (input row, where it came from). Each result: input, prompt, tuned (and base)."""
    prompter = Prompter.from_plan(plan)
    for row, where in rows:
        prompter.check_row(row, where)
    prepare_runtime(plan)
    tuned = load(plan, root, tuned=True)
    prompts = [_format(prompter, row, where, tuned.tokenizer) for row, where in rows]
    results = [{"input": row, "prompt": p} for (row, _), p in zip(rows, prompts)]
    for result, text in zip(results, answer(plan, tuned, prompts, max_new_tokens)):
        result["tuned"] = text
    if base:
        del tuned
        model = load(plan, root, tuned=False)
        base_prompts = [_format(prompter, row, where, model.tokenizer) for row, where in rows]
        for result, text in zip(results, answer(plan, model, base_prompts, max_new_tokens)):
            result["base"] = text
    return results


def _format(prompter: Prompter, row: dict, where: str, tokenizer) -> str:
    try:
        return prompter.prompt(row, tokenizer)
    except FormatError as exc:
        raise SpecError.one(Pos(where), exc.key, exc.message) from None


def render_text(results: list[dict], show_prompt: bool = False) -> str:
    """Readable output: a lone answer as it is (but for escapes); several, or with the base model's, in blocks."""
    if len(results) == 1 and "base" not in results[0] and not show_prompt:
        return _lines(results[0]["tuned"]) + "\n"
    lines = []
    for i, r in enumerate(results, start=1):
        shown = ", ".join(f"{printable(k)}={_one_line(v)}" for k, v in r["input"].items())
        lines.append(f"[{i}] {shown}")
        if show_prompt:
            lines.append(_indented("prompt", r["prompt"]))
        lines.append(_indented("tuned", r["tuned"]))
        if "base" in r:
            lines.append(_indented("base", r["base"]))
    return "\n".join(lines) + "\n"


def _one_line(value) -> str:
    import json

    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = printable(text)  # "\n" included: one line
    return text if len(text) <= 80 else text[:77] + "…"


def _lines(text: str) -> str:
    """Text for the terminal: its lines kept, what else is not printable (an escape sequence
    in a row or in what the model wrote, a bidi override) shown as its escape."""
    return "\n".join(printable(line) for line in text.split("\n"))


def _indented(label: str, text: str) -> str:
    pad = " " * 9
    body = _lines(text).split("\n")
    return "\n".join([f"  {label:<6} {body[0]}"] + [pad + line for line in body[1:]])


# -------------------------------------------------------------------- chat


def check_chat(plan, spec_shown: str) -> Prompter:
    if plan.format.kind != "chat":
        raise SpecError.one(Pos(spec_shown), "format.kind", f"ftspec chat needs a chat-format spec (this one is "
                            f"{plan.format.kind})", "try it with `ftspec generate SPEC \"text…\"`")
    prompter = Prompter.from_plan(plan)
    if prompter.formatter.messages_column is None and len(prompter.columns) != 1:
        raise SpecError.one(Pos(spec_shown), "format.messages", f"a chat line fills one column, but the turns read "
                            f"{', '.join(prompter.columns) or 'none'}", "use `ftspec generate --column NAME=VALUE`")
    return prompter


def chat_loop(plan, prompter: Prompter, loaded: Loaded, read: TextIO, write: Callable[[str], None],
              note: Callable[[str], None], max_new_tokens: int | None = None, interactive: bool = False) -> int:
    """Read a line, answer it, keep the conversation; ``/reset`` starts again, ``/quit``
    or the end of input ends. Returns how many lines were answered."""
    column = prompter.columns[0] if prompter.formatter.messages_column is None else None
    messages: list[dict] = []
    answered = 0
    while True:
        if interactive:
            note("> ")
        line = read.readline()
        if not line:  # Ctrl-D, or the end of piped input
            break
        text = line.rstrip("\r\n")
        command = text.strip()
        if not command:
            continue
        if command == "/quit":
            break
        if command == "/reset":
            messages = []
            note("(conversation reset)\n")
            continue
        if column is None:
            turn = [{"role": "user", "content": text}]
        else:
            row = {column: text}
            try:
                turn = prompter.messages(row) if not messages else prompter.next_turns(row)
            except FormatError as exc:
                raise SpecError.one(Pos("<chat>"), exc.key, exc.message) from None
        conversation = messages + turn
        reply = answer(plan, loaded, [chat_prompt(conversation, loaded.tokenizer)], max_new_tokens)[0]
        write(_lines(reply) + "\n")  # what the model wrote, never a terminal escape
        messages = conversation + [{"role": "assistant", "content": reply.strip()}]
        answered += 1
    return answered


def rows_from_inputs(prompter: Prompter, texts: Iterable[str], fixed: dict,
                     file: Path | None) -> list[tuple[dict, str]]:
    """The input rows of ``ftspec generate``: from --file (with --column values over
    each), or one per bare text, or one from --column alone."""
    texts = list(texts)
    if file is not None:
        if texts:
            raise SpecError.one(Pos(str(file)), "--file", "give rows with --file or texts, not both")
        return [({**row, **fixed}, f"{file}:{i}") for i, row in read_rows(file)]
    if texts:
        return [(prompter.row_for(t, fixed), "TEXT") for t in texts]
    if fixed:
        return [(dict(fixed), "--column")]
    raise SpecError.one(Pos("TEXT"), "", "nothing to answer", "give a text, --column NAME=VALUE or --file rows.jsonl")
