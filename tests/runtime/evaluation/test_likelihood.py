"""The fast log-likelihood path (each prompt run once, its continuations scored from its
cache) gives the scores of the plain full forward pass, and the labels choices mode picks
are the same: continuations of different lengths, prompts of different lengths in one
batch, a LoRA-wrapped model, a sliding-window model, prompts cut to max_length."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")

from transformers import AutoModelForCausalLM, MistralConfig  # noqa: E402

from ftspec.runtime.evaluation import evaluate as E  # noqa: E402
from ftspec.runtime.evaluation import likelihood as L  # noqa: E402
from ftspec.runtime.models import byte_tokenizer, tiny_config  # noqa: E402

TINY = {"architecture": "llama", "hidden_size": 32, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2,
        "intermediate_size": 64, "max_position_embeddings": 256}


@pytest.fixture(scope="module")
def tok():
    return byte_tokenizer()


@pytest.fixture(scope="module")
def llama(tok):
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(tiny_config(SimpleNamespace(**TINY), tok)).eval()


@torch.no_grad()
def reference_logprobs(model, pairs):
    """The computation as it was before the fast path: one unpadded forward pass over each
    prompt + continuation, log-softmax over the vocabulary at every position."""
    out = []
    for p, c in pairs:
        ids = torch.tensor([p + c])
        logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
        out.append((sum(float(logp[len(p) - 1 + j, t]) for j, t in enumerate(c)), len(c)))
    return out


def random_pairs(seed=1, prompt_lengths=(3, 9, 17, 5, 30, 1, 12), continuation_lengths=(1, 2, 4, 7, 0)):
    rnd = random.Random(seed)
    pairs = []
    for n in prompt_lengths:
        prompt = [rnd.randrange(3, 250) for _ in range(n)]
        for m in continuation_lengths:
            pairs.append((prompt, [rnd.randrange(3, 250) for _ in range(m)]))
    rnd.shuffle(pairs)
    return pairs


def assert_same_scores(got, expected):
    assert len(got) == len(expected)
    for (lp, n), (ref_lp, ref_n) in zip(got, expected):
        assert n == ref_n
        assert lp == pytest.approx(ref_lp, abs=1e-5)


@pytest.fixture
def fast_only(monkeypatch):
    """Fails a test whose model falls back to the plain computation."""
    def refuse(*args, **kwargs):
        raise AssertionError("the fast path fell back to the full forward pass")
    monkeypatch.setattr(L, "full_forward_logprobs", refuse)


@pytest.mark.parametrize("batch_size", [1, 2, 5, 64])
def test_the_fast_path_scores_equal_a_full_forward_pass(llama, tok, fast_only, batch_size):
    pairs = random_pairs()
    assert_same_scores(E.continuation_logprobs(llama, tok, pairs, batch_size=batch_size),
                       reference_logprobs(llama, pairs))


def test_the_kept_full_forward_path_scores_equal_the_reference(llama, tok):
    pairs = [(p, c) for p, c in random_pairs(seed=2)]
    assert_same_scores(L.full_forward_logprobs(llama, tok, pairs, batch_size=4), reference_logprobs(llama, pairs))


def test_prompts_cut_to_max_length_score_as_the_cut_pairs(llama, tok, fast_only):
    pairs = random_pairs(seed=3, prompt_lengths=(40, 12, 25), continuation_lengths=(1, 3, 8))
    got = E.continuation_logprobs(llama, tok, pairs, batch_size=3, max_length=20)
    cut = L.cut_to_length(pairs, 20)
    assert all(len(p) + len(c) <= 20 for p, c in cut)
    assert_same_scores(got, reference_logprobs(llama, cut))


def test_a_lora_wrapped_model_scores_as_its_full_forward_pass(llama, tok, fast_only):
    peft = pytest.importorskip("peft")
    torch.manual_seed(1)
    wrapped = peft.get_peft_model(llama, peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"],
                                                          init_lora_weights=False)).eval()
    try:
        pairs = random_pairs(seed=4)
        assert_same_scores(E.continuation_logprobs(wrapped, tok, pairs, batch_size=4),
                           reference_logprobs(wrapped, pairs))
    finally:
        wrapped.unload()


def test_a_sliding_window_model_scores_as_its_full_forward_pass(tok):
    torch.manual_seed(2)
    config = MistralConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, intermediate_size=64, sliding_window=4,
                           max_position_embeddings=256, pad_token_id=tok.pad_token_id)
    model = AutoModelForCausalLM.from_config(config).eval()
    pairs = random_pairs(seed=5)
    assert_same_scores(E.continuation_logprobs(model, tok, pairs, batch_size=3), reference_logprobs(model, pairs))


def test_a_model_without_a_cache_argument_is_scored_by_the_full_forward_pass(llama, tok, monkeypatch):
    used = []
    plain = L.full_forward_logprobs
    monkeypatch.setattr(L, "full_forward_logprobs", lambda *a, **k: used.append(1) or plain(*a, **k))
    monkeypatch.setattr(L, "_cache_argument", lambda model: None)
    pairs = random_pairs(seed=6)
    assert_same_scores(E.continuation_logprobs(llama, tok, pairs, batch_size=4), reference_logprobs(llama, pairs))
    assert used


RECORDS = [
    {"prompt": "Request: my card was charged twice\nQueue:", "completion": " billing"},
    {"prompt": "Request: the app crashes on start, every time, since the update\nQueue:", "completion": " tech"},
    {"prompt": "Where?\nQueue:", "completion": " shipping"},
    {"prompt": "Request: a refund for order 12, which never came\nQueue:", "completion": " returns"},
]
LABELS = ["billing", "tech", "shipping and delivery", "returns", "x"]  # 1 to 21 tokens, plus the EOS


@pytest.mark.parametrize("kind", ["prompt_completion", "chat"])
def test_choices_mode_picks_the_labels_the_full_forward_pass_picks(llama, tok, fast_only, kind):
    if kind == "chat":
        tok = byte_tokenizer()
        tok.chat_template = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
                             "{% if add_generation_prompt %}<assistant>{% endif %}")
        records = [{"messages": [{"role": "user", "content": r["prompt"]},
                                 {"role": "assistant", "content": r["completion"].strip()}]} for r in RECORDS]
    else:
        records = RECORDS
    examples = E.build_examples(records, kind, tok)
    picked = E.choose(llama, tok, examples, LABELS, kind, batch_size=3)
    scores = reference_logprobs(llama, E.choice_pairs(tok, examples, LABELS, kind))
    expected = [LABELS[max(range(len(LABELS)), key=lambda j: scores[i * len(LABELS) + j][0])]
                for i in range(len(examples))]
    assert picked == expected
    done = []
    E.choose(llama, tok, examples, LABELS, kind, batch_size=3, progress=done.append)
    assert sum(done) == len(examples) * len(LABELS), "progress counts every (row, label) pair once"


@pytest.mark.parametrize("batch_size", [1, 3, 64])
def test_prompts_that_start_alike_score_as_a_full_forward_pass(llama, tok, fast_only, batch_size):
    """A system turn or few-shot examples every prompt starts with are run once and shared."""
    rnd = random.Random(7)
    head = [rnd.randrange(3, 250) for _ in range(20)]
    prompts = [head + [rnd.randrange(3, 250) for _ in range(n)] for n in (1, 6, 2, 13, 1)] + [head[:12]]
    pairs = [(p, [rnd.randrange(3, 250) for _ in range(m)]) for p in prompts for m in (1, 3, 6)]
    assert_same_scores(E.continuation_logprobs(llama, tok, pairs, batch_size=batch_size),
                       reference_logprobs(llama, pairs))
    alike = pairs[:15]  # the five prompts that start with all 20 tokens of the head
    assert_same_scores(E.continuation_logprobs(llama, tok, alike, batch_size=batch_size),
                       reference_logprobs(llama, alike))
