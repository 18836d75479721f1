"""Teacher generation (ftspec.runtime.evaluation.teach): the prompts the teacher is given, answers
saved batch by batch, the filter's reasons, the student's records, and resuming after the
process is killed with SIGKILL without asking the teacher again for finished rows."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

# Without torch this module is skipped: the imports below need it.
torch = pytest.importorskip("torch")

from transformers import AutoModelForCausalLM  # noqa: E402

from ftspec.core.errors import SpecError  # noqa: E402
from ftspec.runtime.evaluation import teach as T  # noqa: E402
from ftspec.runtime.models import byte_tokenizer, tiny_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
TINY = {"architecture": "llama", "hidden_size": 32, "num_layers": 1, "num_heads": 4, "num_kv_heads": 4,
        "intermediate_size": 64, "max_position_embeddings": 256}
QUEUES = ["account", "billing", "returns", "shipping", "technical"]


def _tiny():
    torch.manual_seed(0)
    tok = byte_tokenizer()
    return AutoModelForCausalLM.from_config(tiny_config(SimpleNamespace(**TINY), tok)).eval(), tok


def _settings(batch_size=4, max_new_tokens=4, extract=None, max_tokens=None, train_on="answer", stop=()):
    return SimpleNamespace(max_new_tokens=max_new_tokens, stop=tuple(stop), batch_size=batch_size,
                           filter=SimpleNamespace(extract=extract, max_tokens=max_tokens, train_on=train_on))


def _splits(n_train=32, n_val=8, n_test=5):
    def rec(split, i):
        return {"prompt": f"Request: {split} ticket number {i}{'!' * (i % 7)}\nQueue:",
                "completion": f" {QUEUES[i % 5]}"}
    return {"train": [rec("train", i) for i in range(n_train)],
            "validation": [rec("validation", i) for i in range(n_val)],
            "test": [rec("test", i) for i in range(n_test)]}


class FakeTeacher:
    """Stands in for evaluate.generate: answers from a table, counting what it is asked."""

    def __init__(self, answer=lambda prompt: " billing", watch: Path | None = None):
        self.answer, self.watch = answer, watch
        self.asked: list[str] = []
        self.calls: list[dict] = []

    def __call__(self, model, tokenizer, prompts, max_new_tokens, batch_size, stop=(), chat=False,
                 progress=None, max_length=None):
        lines = None
        if self.watch is not None and self.watch.exists():
            lines = self.watch.read_text(encoding="utf-8").count("\n")
        self.calls.append({"n": len(prompts), "batch_size": batch_size, "chat": chat, "stop": list(stop),
                           "max_new_tokens": max_new_tokens, "max_length": max_length, "lines_before": lines})
        self.asked.extend(prompts)
        return [self.answer(p) for p in prompts]


# --------------------------------------------------------------------------- prompts


def test_prompts_are_train_and_validation_only_in_order():
    splits = _splits(3, 2, 4)
    items = T.teacher_prompts(splits, "prompt_completion", byte_tokenizer())
    assert [(i["split"], i["index"]) for i in items] == [("train", 0), ("train", 1), ("train", 2),
                                                         ("validation", 0), ("validation", 1)]
    assert [i["prompt"] for i in items] == [r["prompt"] for r in splits["train"] + splits["validation"]]
    assert not any(i["chat"] for i in items)
    assert all("test" not in i["prompt"] for i in items)


def test_chat_prompts_are_rendered_up_to_the_last_answer_with_the_generation_prompt():
    tok = byte_tokenizer()
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
                         "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    record = {"messages": [{"role": "system", "content": "Route tickets."},
                           {"role": "user", "content": "my card was charged twice"},
                           {"role": "assistant", "content": "SECRET-LABEL"}]}
    items = T.teacher_prompts({"train": [record], "test": [record]}, "chat", tok)
    assert len(items) == 1 and items[0]["chat"] is True
    assert items[0]["prompt"] == ("<|im_start|>system\nRoute tickets.<|im_end|>\n<|im_start|>user\n"
                                  "my card was charged twice<|im_end|>\n<|im_start|>assistant\n")
    with pytest.raises(ValueError):
        T.teacher_prompts({"train": [{"prompt": "p", "chosen": "a", "rejected": "b"}]}, "preference", tok)


# --------------------------------------------------------------------------- answering, saving, filtering


def test_answers_are_generated_in_batches_and_saved_after_each(tmp_path, monkeypatch):
    items = T.teacher_prompts(_splits(7, 3, 1), "prompt_completion", byte_tokenizer())
    fake = FakeTeacher(answer=lambda p: " billing " + p[-12:], watch=tmp_path / T.ANSWERS)
    monkeypatch.setattr(T, "generate", fake)
    echoed = []
    rows = T.run_teacher(None, byte_tokenizer(), items, _settings(batch_size=4, stop=["\n"]), tmp_path,
                         echo=echoed.append, max_length=200)
    assert [c["n"] for c in fake.calls] == [4, 4, 2]
    # Each batch's rows are on disk before the next batch is asked for.
    assert [c["lines_before"] for c in fake.calls] == [0, 4, 8]
    assert all(c["batch_size"] == 4 and c["stop"] == ["\n"] and c["max_new_tokens"] == 4 and c["max_length"] == 200
               and c["chat"] is False for c in fake.calls)
    assert [(r["split"], r["index"], r["prompt"]) for r in rows] == [(i["split"], i["index"], i["prompt"])
                                                                     for i in items]
    assert all(r["kept"] and r["reason"] is None and r["text"] == r["answer"] == " billing " + r["prompt"][-12:]
               for r in rows)
    saved = (tmp_path / T.ANSWERS).read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in saved] == rows  # in prompt order at the end
    assert list(rows[0]) == ["split", "index", "prompt", "answer", "kept", "reason", "text"]
    assert echoed and "10/10" in echoed[-1]


def test_the_filter_drops_by_reason(tmp_path, monkeypatch):
    answers = {0: " billing", 1: "   \n", 2: " I think it is shipping, clearly", 3: " no idea",
               4: " technical " + "x" * 40, 5: ""}
    items = [{"split": "train", "index": i, "prompt": f"p{i}", "chat": False} for i in answers]
    monkeypatch.setattr(T, "generate", FakeTeacher(answer=lambda p: answers[int(p[1:])]))
    extract = SimpleNamespace(regex=r"(account|billing|returns|shipping|technical)", template=None, which="first")
    rows = T.run_teacher(None, byte_tokenizer(), items, _settings(extract=extract, max_tokens=35), tmp_path,
                         echo=lambda s: None)
    assert [(r["kept"], r["reason"]) for r in rows] == [
        (True, None), (False, "empty"), (True, None), (False, "no match"), (False, "too long"), (False, "empty")]
    assert [r["text"] for r in rows] == [" billing", None, " I think it is shipping, clearly", None, None, None]

    # train_on: extracted — the student learns only what the extraction found.
    monkeypatch.setattr(T, "generate", FakeTeacher(answer=lambda p: answers[int(p[1:])]))
    rows = T.run_teacher(None, byte_tokenizer(), items, _settings(extract=extract, train_on="extracted"),
                         tmp_path / "b", echo=lambda s: None)
    assert [r["text"] for r in rows] == ["billing", None, "shipping", None, "technical", None]

    # A template extraction: what it renders must not be blank.
    template = SimpleNamespace(regex=None,
                               template=SimpleNamespace(text="{{ text.split('is')[-1] if 'is' in text else '' }}"),
                               which="last")
    monkeypatch.setattr(T, "generate", FakeTeacher(answer=lambda p: answers[int(p[1:])]))
    rows = T.run_teacher(None, byte_tokenizer(), items, _settings(extract=template, train_on="extracted"),
                         tmp_path / "c", echo=lambda s: None)
    assert [r["reason"] for r in rows] == ["no match", "empty", None, "no match", "no match", "empty"]
    assert rows[2]["text"] == "shipping, clearly"

    s = T.summary(rows)
    assert s["rows"] == 6 and s["kept"] == 1
    assert s["splits"]["train"]["dropped"] == {"no match": 3, "empty": 2}
    assert s["dropped"] == {"empty": 2, "no match": 3}
    assert [e["index"] for e in s["splits"]["train"]["examples"]] == [0, 1, 3, 4, 5]


def test_extracted_without_an_extraction_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(T, "generate", FakeTeacher())
    with pytest.raises(SpecError, match="method.filter.train_on"):
        T.run_teacher(None, byte_tokenizer(), [{"split": "train", "index": 0, "prompt": "p"}],
                      _settings(train_on="extracted"), tmp_path, echo=lambda s: None)


# --------------------------------------------------------------------------- the student's records


def test_with_answers_puts_the_teachers_text_in_place_of_the_answers():
    records = [{"prompt": "Request: a\nQueue:", "completion": " account", "extra": 1},
               {"prompt": "Request: b\nQueue:", "completion": " billing"},
               {"prompt": "Request: c\nQueue:", "completion": " returns"}]
    rows = [  # out of order on purpose
        {"split": "train", "index": 2, "prompt": "", "answer": " shipping now", "kept": True, "reason": None,
         "text": "shipping"},
        {"split": "train", "index": 0, "prompt": "", "answer": " technical", "kept": True, "reason": None,
         "text": " technical"},
        {"split": "train", "index": 1, "prompt": "", "answer": "??", "kept": False, "reason": "no match", "text": None},
        {"split": "validation", "index": 0, "prompt": "", "answer": "x", "kept": True, "reason": None, "text": "x"},
    ]
    out, dropped = T.with_answers(records, "prompt_completion", rows, split="train")
    assert dropped == 1
    # The answer as the teacher continued the prompt; the extracted text keeps the answer's leading space.
    assert out == [{"prompt": "Request: a\nQueue:", "completion": " technical", "extra": 1},
                   {"prompt": "Request: c\nQueue:", "completion": " shipping"}]
    with pytest.raises(ValueError, match="several splits"):
        T.with_answers(records, "prompt_completion", rows)
    with pytest.raises(ValueError, match="do not match"):
        T.with_answers(records[:2], "prompt_completion", rows, split="train")

    chat = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "label"}]},
            {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "yo"}]}]
    rows = [{"split": "train", "index": 0, "prompt": "", "answer": "Hello!", "kept": True, "reason": None,
             "text": "Hello!"},
            {"split": "train", "index": 1, "prompt": "", "answer": "Hey", "kept": True, "reason": None, "text": "Hey"}]
    out, dropped = T.with_answers(chat, "chat", rows)
    assert dropped == 0
    assert out[0]["messages"] == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello!"}]
    assert out[1]["messages"][-1] == {"role": "assistant", "content": "Hey"} and len(out[1]["messages"]) == 3


# --------------------------------------------------------------------------- resuming


CHILD = """
import sys, time, json
from pathlib import Path
from types import SimpleNamespace
import torch
from transformers import AutoModelForCausalLM
from ftspec.runtime.evaluation import teach as T
from ftspec.runtime.models import byte_tokenizer, tiny_config
args = json.loads(sys.argv[1])
torch.manual_seed(0)
tok = byte_tokenizer()
model = AutoModelForCausalLM.from_config(tiny_config(SimpleNamespace(**args["tiny"]), tok)).eval()
real = T.generate
def slow(*a, **k):
    out = real(*a, **k)
    time.sleep(0.6)  # slow enough to be killed mid-way
    return out
T.generate = slow
settings = SimpleNamespace(max_new_tokens=4, stop=(), batch_size=4,
                           filter=SimpleNamespace(extract=None, max_tokens=None, train_on="answer"))
T.run_teacher(model, tok, args["items"], settings, Path(args["scratch"]), echo=lambda s: None)
print("FINISHED")
"""


def test_resume_after_sigkill_asks_only_for_the_missing_prompts(tmp_path, monkeypatch):
    model, tok = _tiny()
    items = T.teacher_prompts(_splits(32, 8, 3), "prompt_completion", tok)
    assert len(items) == 40
    scratch = tmp_path / "scratch"
    answers = scratch / T.ANSWERS
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    child = subprocess.Popen([sys.executable, "-c", CHILD,
                              json.dumps({"tiny": TINY, "items": items, "scratch": str(scratch)})],
                             cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and child.poll() is None:
            if answers.exists() and answers.read_bytes().count(b"\n") >= 8:  # two batches on disk
                break
            time.sleep(0.02)
        assert child.poll() is None, child.communicate()[1].decode()[-2000:]
        os.kill(child.pid, signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(30)
    assert child.returncode == -signal.SIGKILL
    before = answers.read_bytes()
    complete = [line + b"\n" for line in before.split(b"\n")[:-1]]
    assert 8 <= len(complete) < 40, "killed mid-way"
    finished = {(r["split"], r["index"]) for r in map(json.loads, complete)}
    # As if the kill had landed while a line was written: half a row, no newline.
    torn = json.dumps({"split": "train", "index": 39, "prompt": "x", "answer": "never finished"})[:40]
    with open(answers, "ab") as fh:
        fh.write(torn.encode())

    fake_asked: list[str] = []
    real = T.generate

    def counting(model_, tokenizer, prompts, *a, **k):
        fake_asked.extend(prompts)
        return real(model_, tokenizer, prompts, *a, **k)

    monkeypatch.setattr(T, "generate", counting)
    echoed: list[str] = []
    rows = T.run_teacher(model, tok, items, _settings(batch_size=4), scratch, echo=echoed.append)
    missing = [i["prompt"] for i in items if (i["split"], i["index"]) not in finished]
    assert sorted(fake_asked) == sorted(missing) and len(fake_asked) == 40 - len(complete)
    assert f"{len(complete)} of 40 answers kept from an earlier attempt" in echoed[0]
    assert len(rows) == 40
    assert [(r["split"], r["index"]) for r in rows] == [(i["split"], i["index"]) for i in items]
    final = answers.read_bytes()
    assert final.count(b"\n") == 40 and final.endswith(b"\n")
    final_lines = {line + b"\n" for line in final.split(b"\n")[:-1]}
    assert all(line in final_lines for line in complete), "finished rows are kept byte for byte"
    assert torn.encode() not in final

    # The same answers as one uninterrupted run (greedy, left padding: batches do not change them).
    monkeypatch.setattr(T, "generate", real)
    fresh = T.run_teacher(model, tok, items, _settings(batch_size=4), tmp_path / "fresh", echo=lambda s: None)
    assert fresh == rows


def test_a_changed_prompt_is_asked_again_and_nothing_else(tmp_path, monkeypatch):
    items = T.teacher_prompts(_splits(6, 2, 1), "prompt_completion", byte_tokenizer())
    monkeypatch.setattr(T, "generate", FakeTeacher(answer=lambda p: " first"))
    first = T.run_teacher(None, byte_tokenizer(), items, _settings(batch_size=3), tmp_path, echo=lambda s: None)
    changed = [dict(i) for i in items]
    changed[4]["prompt"] = "Request: something else entirely\nQueue:"
    fake = FakeTeacher(answer=lambda p: " second")
    monkeypatch.setattr(T, "generate", fake)
    echoed: list[str] = []
    rows = T.run_teacher(None, byte_tokenizer(), changed, _settings(batch_size=3), tmp_path, echo=echoed.append)
    assert fake.asked == [changed[4]["prompt"]]
    assert "7 of 8 answers kept" in echoed[0]
    assert [r["answer"] for r in rows] == [" first"] * 4 + [" second"] + [" first"] * 3
    assert rows[:4] == first[:4] and rows[5:] == first[5:]
    # The file holds the current prompts only: the old row for the changed prompt is gone.
    saved = [json.loads(line) for line in (tmp_path / T.ANSWERS).read_text(encoding="utf-8").splitlines()]
    assert saved == rows


# --------------------------------------------------------------------------- choices mode


def test_a_teacher_in_choices_mode_answers_with_the_likeliest_label_as_evaluation_scores_it(tmp_path):
    from ftspec.runtime.evaluation.evaluate import Example, choose

    model, tok = _tiny()
    splits = _splits(n_train=10, n_val=2)
    prompts = T.teacher_prompts(splits, "prompt_completion", tok)
    settings = SimpleNamespace(**vars(_settings(batch_size=4)), mode="choices",
                               choices=("account", "billing", "returns"),
                               prefix=" ")
    rows = T.run_teacher(model, tok, prompts, settings, tmp_path, echo=lambda _: None)
    assert {r["answer"] for r in rows} <= {" account", " billing", " returns"} and all(r["kept"] for r in rows)
    # The same label evaluation's choices mode picks for the same prompt and answer prefix.
    expected = choose(model, tok, [Example(p["prompt"], " ", "", {}) for p in prompts], list(settings.choices),
                      "prompt_completion", 4)
    assert [r["answer"] for r in rows] == [" " + label for label in expected]
    records, dropped = T.with_answers(splits["train"], "prompt_completion", [r for r in rows if r["split"] == "train"])
    assert dropped == 0 and [r["completion"] for r in records] == [" " + label for label in expected[:10]]
