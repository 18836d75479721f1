"""prepare_data tokenizes the SFT splits once, in batches; the train step hands those
tokens to TRL. They must be exactly what TRL would have prepared from the text rows
itself — the same ids and the same loss mask — or ftspec would train on something
else than the plain-TRL run it is measured against."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from datasets import Dataset  # noqa: E402
from tokenizers import processors  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402
from trl import SFTConfig, SFTTrainer  # noqa: E402

from ftspec.data.templates import builtin_dir  # noqa: E402
from ftspec.runtime.models import bpe_tokenizer, byte_tokenizer, tiny_config  # noqa: E402
from ftspec.runtime.training import data as D  # noqa: E402

TEXT_ROWS = [
    {"prompt": "Request: my card was charged twice\nQueue:", "completion": " billing"},
    {"prompt": "Request: where is order 12?\nQueue:", "completion": " shipping"},
    {"prompt": "Q: 2+2=", "completion": "4"},  # no space at the boundary: BPE may merge across it
    {"prompt": "Say hi.", "completion": " hi</s>"},  # already ends with EOS: not added twice
]
CHAT_ROWS = [
    {"messages": [{"role": "user", "content": "Where is my parcel?"}, {"role": "assistant", "content": "shipping"}]},
    {"messages": [{"role": "system", "content": "Route tickets."}, {"role": "user", "content": "Refund please"},
                  {"role": "assistant", "content": "billing"}, {"role": "user", "content": "Thanks"},
                  {"role": "assistant", "content": "You are welcome."}]},
]


def _tokenizer(kind: str):
    if kind == "byte":
        return byte_tokenizer()
    texts = ([r["prompt"] + r["completion"] for r in TEXT_ROWS]
             + [m["content"] for r in CHAT_ROWS for m in r["messages"]])
    tok = bpe_tokenizer(texts * 20, 400)
    if kind == "bpe+bos":  # like Llama's tokenizer: a BOS token in front of every text
        tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{tok.bos_token} $A", special_tokens=[(tok.bos_token, tok.bos_token_id)])
    return tok


def _trl_prepared(rows, tok, **loss_args):
    tok.pad_token = tok.pad_token or tok.eos_token
    model = AutoModelForCausalLM.from_config(tiny_config(SimpleNamespace(**{
        "architecture": "llama", "hidden_size": 16, "num_layers": 1, "num_heads": 2, "num_kv_heads": 2,
        "intermediate_size": 32, "max_position_embeddings": 512}), tok))
    args = SFTConfig(output_dir="unused", use_cpu=True, bf16=False, report_to="none", max_length=512, **loss_args)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok)
    return trainer.train_dataset["input_ids"], trainer.train_dataset["labels"]


@pytest.mark.parametrize("tokenizer", ["byte", "bpe", "bpe+bos"])
@pytest.mark.parametrize("loss", ["completion", "all"])
def test_prompt_completion_tokens_are_trls(tokenizer, loss):
    tok = _tokenizer(tokenizer)
    ours = D.tokenize(TEXT_ROWS, "prompt_completion", tok, loss)
    theirs = _trl_prepared(TEXT_ROWS, tok, completion_only_loss=loss == "completion")
    assert ours == (theirs[0], theirs[1])
    ids, labels = ours
    if tokenizer == "bpe+bos":
        assert all(row[0] == tok.bos_token_id for row in ids)
    assert all(row[-1] == tok.eos_token_id for row in ids), "every row ends with one EOS"
    assert sum(row.count(tok.eos_token_id) for row in ids) == len(ids)
    masked = [sum(1 for t in row if t == -100) for row in labels]
    assert (max(masked) == 0) == (loss == "all"), "the prompt carries loss only when the format says all"


@pytest.mark.parametrize("loss", ["assistant", "all"])
def test_chat_tokens_are_trls(loss):
    tok = _tokenizer("bpe")
    tok.chat_template = (builtin_dir() / "chatml.jinja").read_text(encoding="utf-8")
    ours = D.tokenize(CHAT_ROWS, "chat", tok, loss)
    theirs = _trl_prepared(CHAT_ROWS, tok, assistant_only_loss=loss == "assistant")
    assert ours == (theirs[0], theirs[1])
    trained = [tok.decode([t for t in row if t != -100]) for row in ours[1]]
    if loss == "assistant":
        assert trained[1] == "billing<|im_end|>You are welcome.<|im_end|>"
    else:
        assert trained[1].startswith("<|im_start|>system")


def test_batches_give_the_same_tokens_as_one_row_at_a_time(monkeypatch):
    tok = _tokenizer("bpe")
    rows = TEXT_ROWS * 3
    batched = D.tokenize(rows, "prompt_completion", tok, "completion")
    monkeypatch.setattr(D, "TOKENIZE_BATCH", 1)
    assert D.tokenize(rows, "prompt_completion", tok, "completion") == batched


def test_token_stats_count_what_the_trainer_sees():
    ids = [[1, 2, 3, 4], [1, 2], [1, 2, 3, 4, 5, 6]]
    labels = [[-100, -100, 3, 4], [-100, 2], [-100, -100, -100, -100, 5, 6]]
    stats = D.token_stats(ids, labels, max_length=4)
    assert stats["rows"] == 3 and stats["truncated_rows"] == 1 and stats["truncation_rate"] == 0.3333
    assert stats["tokens"]["max"] == 6 and stats["tokens"]["p50"] == 4 and stats["tokens"]["mean"] == 4.0
    # After truncation at 4 the third row keeps no loss token: 3 of 10 kept tokens carry loss.
    assert stats["loss_token_fraction"] == 0.3
