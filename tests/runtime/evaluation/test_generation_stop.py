"""Generation stops where the answer ends, inside ``generate()``: at a stop string
(``eval.stop``), at end of sequence, at the chat template's end of turn. Not by
generating ``max_new_tokens`` and cutting the text afterwards.

The model is built from a config with weights set by hand, so that what it writes
is known: each token's successor is fixed (helpers.successor_model), the chain
(helpers.CHAIN) spells the answer, and any other token is followed by ``.`` for ever.
"""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from helpers import Spy, successor_model  # noqa: E402

from ftspec.runtime.evaluation import evaluate as E  # noqa: E402
from ftspec.runtime.evaluation.stopping import cut_at_stop, end_of_turn_ids, stop_token_ids, stopping_arguments  # noqa: E402
from ftspec.runtime.models import byte_tokenizer  # noqa: E402

MAX_NEW = 24
PROMPT = "Queue:"
END_OF_ANSWER = "<|end_of_answer|>"


@pytest.fixture
def tok():
    return byte_tokenizer()


def test_the_successor_model_writes_its_chain_and_then_filler(tok):
    model = successor_model(tok, end=None)
    text = E.generate(model, tok, [PROMPT], max_new_tokens=MAX_NEW, batch_size=1)[0]
    assert text == " shop\nxyz" + "." * (MAX_NEW - 9)


def test_a_stop_string_stops_generation_and_is_not_in_the_prediction(tok, monkeypatch):
    model = successor_model(tok, end=None)
    spy = Spy(model, monkeypatch)
    text = E.generate(model, tok, [PROMPT], max_new_tokens=MAX_NEW, batch_size=1, stop=["\n"])[0]
    assert text == " shop"
    assert spy.generated == [6], "generate() stopped right after the stop string: ' shop\\n' is 6 tokens"


def test_a_stop_string_of_several_tokens_and_the_earliest_of_several_stops(tok, monkeypatch):
    model = successor_model(tok, end=None)
    spy = Spy(model, monkeypatch)
    texts = E.generate(model, tok, [PROMPT, PROMPT], max_new_tokens=MAX_NEW, batch_size=2, stop=["xyz", "op"])
    assert texts == [" sh", " sh"]
    assert spy.generated == [5]


def test_rows_of_a_batch_stop_each_at_their_own_stop(tok, monkeypatch):
    model = successor_model(tok, end=None)
    spy = Spy(model, monkeypatch)
    # "Queue:" writes the chain; "q" writes filler only and never meets the stop string,
    # so the batch runs to max_new_tokens, but the first row's answer still ends at it.
    texts = E.generate(model, tok, [PROMPT, "q"], max_new_tokens=MAX_NEW, batch_size=2, stop=["\n"])
    assert texts == [" shop", "." * MAX_NEW]
    assert spy.generated == [MAX_NEW]


def test_end_of_sequence_stops_generation(tok, monkeypatch):
    model = successor_model(tok, end=tok.eos_token_id)
    spy = Spy(model, monkeypatch)
    text = E.generate(model, tok, [PROMPT], max_new_tokens=MAX_NEW, batch_size=1)[0]
    assert text == " shop\nxyz"
    assert spy.generated == [10]


def test_every_eos_id_of_the_generation_config_stops_generation(tok, monkeypatch):
    tok.add_special_tokens({"additional_special_tokens": [END_OF_ANSWER]})
    end = tok.convert_tokens_to_ids(END_OF_ANSWER)
    model = successor_model(tok, end=end, eos=[tok.eos_token_id, end])
    assert end in stop_token_ids(tok, model)
    spy = Spy(model, monkeypatch)
    assert E.generate(model, tok, [PROMPT], max_new_tokens=MAX_NEW, batch_size=1)[0] == " shop\nxyz"
    assert spy.generated == [10]


CUSTOM_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}" + END_OF_ANSWER + "\n{% endfor %}"
                   "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def test_the_chat_templates_end_of_turn_token_stops_generation(tok, monkeypatch):
    tok.add_special_tokens({"additional_special_tokens": [END_OF_ANSWER]})
    end = tok.convert_tokens_to_ids(END_OF_ANSWER)
    model = successor_model(tok, end=end)  # not an eos id of the tokenizer or of the model
    assert end not in stop_token_ids(tok, model)
    spy = Spy(model, monkeypatch)
    E.generate(model, tok, [PROMPT], max_new_tokens=MAX_NEW, batch_size=1)
    assert spy.generated == [MAX_NEW], "without the template, nothing says the turn ended"

    tok.chat_template = CUSTOM_TEMPLATE
    assert end_of_turn_ids(tok) == [end]
    spy = Spy(model, monkeypatch)
    text = E.generate(model, tok, [PROMPT], max_new_tokens=MAX_NEW, batch_size=1)[0]
    assert text == " shop\nxyz"
    assert spy.generated == [10]


def test_end_of_turn_of_the_shipped_chatml_template(tok):
    from ftspec.data.templates import builtin_dir

    tok.chat_template = (builtin_dir() / "chatml.jinja").read_text(encoding="utf-8")
    assert end_of_turn_ids(tok) == [tok.convert_tokens_to_ids("<|im_end|>")]


def test_a_template_that_ends_turns_with_plain_text_has_no_end_of_turn_token(tok):
    tok.chat_template = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n\n{% endfor %}"
    assert end_of_turn_ids(tok) == []
    tok.chat_template = "{{ raise_exception('needs a system message') }}"
    assert end_of_turn_ids(tok) == []


def test_stopping_arguments_and_cut_at_stop(tok):
    model = successor_model(tok, end=None)
    assert stopping_arguments(model, tok, []) == {"eos_token_id": [tok.eos_token_id]}
    kwargs = stopping_arguments(model, tok, ["\n", ""])
    assert kwargs["stop_strings"] == ["\n"] and kwargs["tokenizer"] is tok
    assert cut_at_stop("a\nb###c", ["###", "\n"]) == "a"
    assert cut_at_stop("abc", ["", "z"]) == "abc"
