"""`ftspec generate` and `ftspec chat` on tiny trained models, offline: the prompt built
for an input row is the prompt training and evaluation used for that row, the answers
are the evaluation's, and a spec that has not been trained is refused in one line."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("trl")

from click.testing import CliRunner
from conftest import ROOT

from ftspec.backends.executor import execute
from ftspec.cli import main
from ftspec.core.errors import SpecError
from ftspec.plan.compile import compile_spec, find_root

TINY = """
model: {kind: tiny, hidden_size: 32, num_layers: 2, num_heads: 4, max_position_embeddings: 256, init_seed: 1}
compute: {device: cpu}
method: {kind: sft, adapter: full}
training: {max_steps: 3, batch_size: 8, learning_rate: 1.0e-3, max_length: 160}
"""

# Renamed columns and derived ones: one the prompt reads, one only the answer reads (a
# bare text has no queue, so that one must not be rendered for it).
TEXT_SPEC = TINY + """
data:
  train: tickets.jsonl
  split: {validation: 0.1, test: 0.1, seed: 1}
  rename: {text: body}
  derive:
    request: "{{ body | trim }}"
    answer: "{{ queue }}"
format:
  kind: prompt_completion
  prompt: "Request: {{ request }}\\nQueue:"
  completion: " {{ answer }}"
eval: {mode: generate, max_new_tokens: 6, limit: 8, metrics: [accuracy], stop: ["\\n"]}
"""

CHAT_SPEC = TINY + """
data:
  train: tickets.jsonl
  split: {validation: 0.1, test: 0.1, seed: 1}
  derive:
    team: "{{ queue | capitalize }} team"
format:
  kind: chat
  chat_template: {builtin: chatml}
  messages:
    - {role: system, content: Route the request.}
    - {role: user, content: "Request: {{ text }}"}
    - {role: assistant, content: "{{ team }}"}
eval: {mode: generate, max_new_tokens: 6, limit: 8, metrics: [exact_match]}
"""


def _spec(folder: Path, body: str, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    lines = (ROOT / "specs/data/support-tickets.jsonl").read_text(encoding="utf-8").splitlines()[:120]
    (folder / "tickets.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    path = folder / f"{name}.yaml"
    path.write_text(f"ftspec: 1\nname: {name}\n" + body, encoding="utf-8")
    return path


def _train(spec: Path):
    plan, _ = compile_spec(spec)
    return plan, execute(plan, find_root(spec), echo=lambda line: None).run_dir


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    spec = _spec(tmp_path_factory.mktemp("text"), TEXT_SPEC, "tickets")
    plan, run_dir = _train(spec)
    return spec, plan, run_dir


@pytest.fixture(scope="module")
def chat_run(tmp_path_factory):
    spec = _spec(tmp_path_factory.mktemp("chat"), CHAT_SPEC, "chatty")
    plan, run_dir = _train(spec)
    return spec, plan, run_dir


def _raw_rows(spec: Path, run_dir: Path, split: str) -> list[dict]:
    """The data file's row behind each prepared record of ``split`` (<split>.origins: FILE:ROW)."""
    from ftspec.data.prepared import iter_origins

    origins = list(iter_origins(run_dir / "data", split))
    out = []
    for origin in origins:
        file, _, row = origin.rpartition(":")
        lines = (spec.parent / file).read_text(encoding="utf-8").split("\n")
        out.append(json.loads(lines[int(row) - 1]))
    return out


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _cli(*args, input=None):
    return CliRunner().invoke(main, [str(a) for a in args], input=input)


# ------------------------------------------------------------------ refusals and columns


def test_a_spec_that_has_not_been_trained_is_refused_in_one_line_naming_the_command(tmp_path):
    spec = _spec(tmp_path, TEXT_SPEC, "fresh")
    result = _cli("generate", spec, "hello")
    assert result.exit_code == 2, result.output
    lines = [l for l in result.output.splitlines() if l.strip()]
    assert len(lines) == 2 and lines[1].startswith("ftspec: 1 error"), result.output
    assert "no trained model for this plan" in lines[0] and f"run `ftspec run {spec}` first" in lines[0]
    assert "Traceback" not in result.output
    chat = _cli("chat", spec, input="hi\n")
    assert chat.exit_code == 2 and f"ftspec run {spec}" in chat.output


def test_a_bare_text_fills_the_one_column_the_prompt_reads_through_renames_and_derives(tmp_path):
    from ftspec.runtime.tools.generate import Prompter

    plan, _ = compile_spec(_spec(tmp_path, TEXT_SPEC, "cols"))
    p = Prompter.from_plan(plan)
    assert p.columns == ("text",)  # the data file's name, before data.rename
    assert [name for name, _ in p.derive] == ["request"]  # not `answer`: it reads queue, which a user has not got
    row = p.row_for("  my card was charged twice ", {})
    assert row == {"text": "  my card was charged twice "}
    assert p.prompt(row, tokenizer=None) == "Request: my card was charged twice\nQueue:"


def test_a_prompt_reading_several_columns_needs_them_named(tmp_path):
    from ftspec.runtime.tools.generate import Prompter, rows_from_inputs

    body = TEXT_SPEC.replace('prompt: "Request: {{ request }}\\nQueue:"',
                             'prompt: "[{{ lang }}] {{ request }}\\nQueue:"')
    (tmp_path / "x").mkdir()
    spec = _spec(tmp_path / "x", body, "two")
    rows = [json.dumps({"text": "hello", "queue": "billing", "lang": "en"})] * 30
    (spec.parent / "tickets.jsonl").write_text("\n".join(rows) + "\n")
    plan, _ = compile_spec(spec)
    p = Prompter.from_plan(plan)
    assert p.columns == ("lang", "text")
    with pytest.raises(SpecError) as err:
        rows_from_inputs(p, ["hello"], {}, None)
    assert "reads columns lang, text" in str(err.value) and "--column NAME=VALUE" in str(err.value)
    (row, _), = rows_from_inputs(p, ["hello"], {"lang": "fr"}, None)
    assert p.prompt(row, None) == "[fr] hello\nQueue:"
    with pytest.raises(SpecError, match="missing column lang"):
        p.check_row({"text": "x"}, "rows.jsonl:1")


# ------------------------------------------------------------------ formatting parity


def test_the_prompt_for_a_row_is_the_prompt_the_prepared_data_holds_for_it(text_run):
    from ftspec.runtime.tools.generate import Prompter

    spec, plan, run_dir = text_run
    p = Prompter.from_plan(plan)
    for split in ("train", "validation", "test"):
        records = _jsonl(run_dir / f"data/{split}.jsonl")
        raw = _raw_rows(spec, run_dir, split)
        assert len(raw) == len(records) > 0
        for row, record in zip(raw, records):
            only = {c: row[c] for c in p.columns}  # what a user gives: no answer column
            assert p.prompt(only, None) == record["prompt"]


def test_generate_file_answers_as_the_evaluation_answered_with_json_lines(text_run, tmp_path):
    spec, _plan, run_dir = text_run
    raw = _raw_rows(spec, run_dir, "test")[:8]
    rows = tmp_path / "rows.jsonl"
    rows.write_text("".join(json.dumps({"text": r["text"]}) + "\n" for r in raw))
    result = _cli("generate", spec, "--file", rows, "--base", "--json")
    assert result.exit_code == 0, result.output
    got = [json.loads(line) for line in result.output.splitlines()]
    tuned = _jsonl(run_dir / "generate-tuned/generations.jsonl")
    base = _jsonl(run_dir / "generate-base/generations.jsonl")
    assert [set(g) for g in got] == [{"input", "prompt", "tuned", "base"}] * 8
    assert [g["input"] for g in got] == [{"text": r["text"]} for r in raw]
    assert [g["prompt"] for g in got] == [t["prompt"] for t in tuned]
    assert [g["tuned"] for g in got] == [t["prediction"] for t in tuned]
    assert [g["base"] for g in got] == [b["prediction"] for b in base]


def test_generate_bare_text_prints_the_answer_and_the_prompt_on_request(text_run):
    spec, _plan, run_dir = text_run
    first = _raw_rows(spec, run_dir, "test")[0]["text"]
    want = _jsonl(run_dir / "generate-tuned/generations.jsonl")[0]
    alone = _cli("generate", spec, first)
    assert alone.exit_code == 0, alone.output
    assert alone.output == want["prediction"] + "\n"
    shown = _cli("generate", spec, first, "--show-prompt", "--max-new-tokens", "2")
    assert shown.exit_code == 0, shown.output
    assert shown.output.startswith(f"[1] text={first.strip()[:40]}") or shown.output.startswith("[1] text=")
    assert "  prompt Request: " in shown.output and "  tuned " in shown.output
    with_base = _cli("generate", spec, first, "again")
    assert with_base.exit_code == 0 and with_base.output.count("  tuned ") == 2


def test_chat_prompts_are_the_training_conversation_before_the_answer(chat_run):
    from transformers import AutoTokenizer

    from ftspec.runtime.tools.generate import Prompter

    spec, plan, run_dir = chat_run
    p = Prompter.from_plan(plan)
    assert p.columns == ("text",) and p.derive == []  # `team` is the answer's
    tokenizer = AutoTokenizer.from_pretrained(run_dir / "model")
    tuned = _jsonl(run_dir / "generate-tuned/generations.jsonl")
    raw = _raw_rows(spec, run_dir, "test")
    records = _jsonl(run_dir / "data/test.jsonl")
    for row, record, generated in zip(raw, records, tuned):
        messages = p.messages({"text": row["text"]})
        assert messages == record["messages"][:-1]  # as prepare_data rendered them, without the answer
        assert p.prompt({"text": row["text"]}, tokenizer) == generated["prompt"]
        assert generated["prompt"].endswith("<|im_start|>assistant\n")


def test_chat_keeps_the_conversation_and_resets_on_request(chat_run, monkeypatch):
    from ftspec.runtime.tools import generate as G

    spec, plan, run_dir = chat_run
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(run_dir / "model")
    prompts: list[str] = []

    def fake_answer(plan_, loaded, batch, max_new_tokens=None):
        prompts.extend(batch)
        return [f"answer {len(prompts)}"]

    monkeypatch.setattr(G, "answer", fake_answer)
    out, notes = [], []
    stdin = io.StringIO("my card failed\n\nand again?\n/reset\nhello\n/quit\nnever read\n")
    n = G.chat_loop(plan, G.check_chat(plan, str(spec)), G.Loaded(None, tokenizer), stdin, out.append, notes.append)
    assert n == 3 and out == ["answer 1\n", "answer 2\n", "answer 3\n"]
    assert prompts[0] == ("<|im_start|>system\nRoute the request.<|im_end|>\n<|im_start|>user\nRequest: my card failed"
                          "<|im_end|>\n<|im_start|>assistant\n")
    # The second turn: the first exchange, then the user's turn rendered by the spec's user template.
    assert prompts[1] == (prompts[0] + "answer 1<|im_end|>\n<|im_start|>user\nRequest: and again?<|im_end|>\n"
                          "<|im_start|>assistant\n")
    assert prompts[2] == prompts[0].replace("my card failed", "hello")  # after /reset
    assert notes == ["(conversation reset)\n"]


def test_chat_command_reads_stdin_until_its_end(chat_run):
    spec, _plan, _run_dir = chat_run
    result = _cli("chat", spec, input="my card failed\nwhere is my parcel\n")
    assert result.exit_code == 0, result.output
    # Two answers, each ending its line; the end of input ends the conversation.
    assert result.stdout.endswith("\n") and result.stdout.count("\n") >= 2, result.output


def test_chat_refuses_a_spec_that_is_not_chat(text_run):
    spec, _, _ = text_run
    result = _cli("chat", spec, input="hi\n")
    assert result.exit_code == 2
    assert "ftspec chat needs a chat-format spec (this one is prompt_completion)" in result.output


# ----------------------------------------------------------------------------- --file rows, read as data rows are


def test_generate_file_reads_rows_as_the_spec_data_reader_does(tmp_path):
    """A byte-order mark, CRLF and blank lines are read as in the spec's data; a .gz file too."""
    import gzip

    from ftspec.runtime.tools.generate import read_rows

    rows = tmp_path / "rows.jsonl"
    rows.write_bytes(b'\xef\xbb\xbf{"text": "a"}\r\n\r\n{"text": "b"}\r\n')
    assert read_rows(rows) == [(1, {"text": "a"}), (3, {"text": "b"})]
    packed = tmp_path / "rows.jsonl.gz"
    packed.write_bytes(gzip.compress(b'{"text": "a"}\n'))
    assert read_rows(packed) == [(1, {"text": "a"})]


@pytest.mark.parametrize("body, message", [
    (b"", "holds no rows to answer"),
    (b"\n\n", "holds no rows to answer"),
    (b'{"text": "a"}\n[1, 2]\n', "2: expected a JSON object per line, found a list"),
    (b'"text"\n', "1: expected a JSON object per line, found a string"),
    (b'{"text": "\xff"}\n', "1: not valid UTF-8"),
])
def test_generate_file_that_is_not_rows_is_one_line_at_its_row(tmp_path, body, message):
    from ftspec.runtime.tools.generate import read_rows

    rows = tmp_path / "rows.jsonl"
    rows.write_bytes(body)
    with pytest.raises(SpecError) as info:
        read_rows(rows)
    assert len(info.value.issues) == 1 and message in str(info.value), str(info.value)


def test_generate_output_never_carries_a_terminal_escape():
    """A row's value or key, or what the model wrote, is shown escaped; lines stay lines."""
    from ftspec.runtime.tools.generate import render_text

    evil = "a\x1b]0;TITLE\x07\x1b[2J\u202eb"
    one = render_text([{"input": {"text": evil}, "prompt": evil, "tuned": f"{evil}\nsecond"}])
    many = render_text([{"input": {evil: evil}, "prompt": evil, "tuned": evil, "base": evil}] * 2, show_prompt=True)
    for shown in (one, many):
        assert "\x1b" not in shown and "\x07" not in shown and "\u202e" not in shown
        assert "\\x1b]0;TITLE\\x07" in shown
    assert one.splitlines()[1] == "second"
