"""The evaluation's model-facing parts on a tiny model: batched generation agrees
with one-at-a-time generation, choices mode picks the most likely label,
perplexity and log-likelihoods match a direct computation, few-shot prompts, and
the judge's score parsing."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")

from transformers import AutoModelForCausalLM  # noqa: E402

from ftspec.data.formatting import few_shot  # noqa: E402
from ftspec.runtime.evaluation import evaluate as E  # noqa: E402
from ftspec.runtime.models import byte_tokenizer, tiny_config  # noqa: E402

TINY = {"architecture": "llama", "hidden_size": 32, "num_layers": 2, "num_heads": 4, "num_kv_heads": 4,
        "intermediate_size": 64, "max_position_embeddings": 256}


@pytest.fixture(scope="module")
def model_and_tokenizer():
    torch.manual_seed(0)
    tok = byte_tokenizer()
    model = AutoModelForCausalLM.from_config(tiny_config(SimpleNamespace(**TINY), tok)).eval()
    return model, tok


RECORDS = [
    {"prompt": "Request: my card was charged twice\nQueue:", "completion": " billing"},
    {"prompt": "Request: the app crashes\nQueue:", "completion": " technical"},
    {"prompt": "Request: where is order 12?\nQueue:", "completion": " shipping"},
]


def _direct_logprob(model, tok, prompt_ids, cont_ids):
    ids = torch.tensor([prompt_ids + cont_ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
    return sum(float(logp[len(prompt_ids) - 1 + j, t]) for j, t in enumerate(cont_ids))


def test_batched_generation_matches_one_at_a_time(model_and_tokenizer):
    model, tok = model_and_tokenizer
    prompts = [r["prompt"] for r in RECORDS] + ["x"]
    batched = E.generate(model, tok, prompts, max_new_tokens=6, batch_size=4)
    single = [E.generate(model, tok, [p], max_new_tokens=6, batch_size=1)[0] for p in prompts]
    assert batched == single
    assert tok.padding_side == "right", "generation restores the tokenizer's padding side"


def test_stop_strings_cut_the_answer(model_and_tokenizer, monkeypatch):
    model, tok = model_and_tokenizer
    full = E.generate(model, tok, ["Request:"], max_new_tokens=8, batch_size=1)[0]
    assert len(full) >= 2
    cut = E.generate(model, tok, ["Request:"], max_new_tokens=8, batch_size=1, stop=[full[1]])[0]
    assert cut == full.split(full[1], 1)[0]


def test_continuation_logprobs_match_a_direct_computation(model_and_tokenizer):
    model, tok = model_and_tokenizer
    pairs = [E._continuation_ids(tok, r["prompt"], r["completion"], chat=False, add_eos=True) for r in RECORDS]
    got = E.continuation_logprobs(model, tok, pairs, batch_size=2)
    for (p, c), (lp, n) in zip(pairs, got):
        assert n == len(c)
        assert lp == pytest.approx(_direct_logprob(model, tok, p, c), abs=1e-4)


def test_choices_mode_picks_the_most_likely_label(model_and_tokenizer):
    model, tok = model_and_tokenizer
    labels = ["billing", "technical", "shipping", "returns"]
    examples = E.build_examples(RECORDS, "prompt_completion", tok)
    picked = E.choose(model, tok, examples, labels, "prompt_completion", batch_size=3)
    for ex, answer in zip(examples, picked):
        scores = {}
        for label in labels:
            p, c = E._continuation_ids(tok, ex.prompt, " " + label, chat=False, add_eos=True)
            scores[label] = _direct_logprob(model, tok, p, c)
        assert answer == max(scores, key=scores.get)


def test_perplexity_is_the_exponent_of_the_mean_token_loss(model_and_tokenizer):
    model, tok = model_and_tokenizer
    examples = E.build_examples(RECORDS, "prompt_completion", tok)
    total, count = 0.0, 0
    for ex in examples:
        p, c = E._continuation_ids(tok, ex.prompt, ex.answer, chat=False, add_eos=True)
        total += _direct_logprob(model, tok, p, c)
        count += len(c)
    assert E.perplexity(model, tok, examples, "prompt_completion",
                        batch_size=2) == pytest.approx(math.exp(-total / count), rel=1e-4)


def test_few_shot_examples_come_before_the_prompt(model_and_tokenizer):
    _, tok = model_and_tokenizer
    shots = few_shot(RECORDS, 2, seed=1)
    assert shots == few_shot(RECORDS, 2, seed=1) and len(shots) == 2
    ex = E.build_examples(RECORDS[:1], "prompt_completion", tok, shots)[0]
    expected_prefix = "".join(s["prompt"] + s["completion"] + "\n\n" for s in shots)
    assert ex.prompt == expected_prefix + RECORDS[0]["prompt"]
    assert ex.reference == "billing"


def test_chat_examples_use_the_chat_template():
    tok = byte_tokenizer()
    from ftspec.data.templates import builtin_dir

    tok.chat_template = builtin_dir().joinpath("chatml.jinja").read_text()
    record = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "billing"}]}
    shot = {"messages": [{"role": "user", "content": "yo"}, {"role": "assistant", "content": "account"}]}
    ex = E.build_examples([record], "chat", tok, [shot])[0]
    assert ex.prompt == ("<|im_start|>user\nyo<|im_end|>\n<|im_start|>assistant\naccount<|im_end|>\n"
                         "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    assert ex.answer == "billing<|im_end|>\n"
    assert ex.reference == "billing"


def test_judge_scores_are_parsed_and_scaled(monkeypatch):
    replies = ["Score: 7", "I give it 10/10", "no idea", "1"]
    monkeypatch.setattr(E, "generate", lambda *a, **k: list(replies))
    tok = byte_tokenizer()
    metric = {"rubric": {"text": "Q: {{ prompt }}\nA: {{ prediction }}\nRef: {{ reference }}\nScore 1-10:"},
              "score_regex": r"(\d+(?:\.\d+)?)", "scale": [1.0, 10.0]}
    examples = [E.Example("p", "a", "r", {}) for _ in replies]
    scores, unparsed = E.judge_scores(metric, examples, ["x"] * 4, None, tok, batch_size=2)
    assert scores == [pytest.approx(6 / 9), 1.0, None, 0.0]
    assert unparsed == 1


def test_prompts_longer_than_max_length_keep_their_end(model_and_tokenizer):
    model, tok = model_and_tokenizer
    tail = "Request: where is order 12?\nQueue:"
    long_prompt = "x" * 5000 + tail
    got = E.generate(model, tok, [long_prompt], max_new_tokens=4, batch_size=1, max_length=64)
    kept = tok.decode(tok(long_prompt)["input_ids"][-60:])
    assert kept.endswith(tail)
    assert got == E.generate(model, tok, [kept], max_new_tokens=4, batch_size=1)
    pairs = [E._continuation_ids(tok, long_prompt, " billing", chat=False, add_eos=True)]
    (lp, n), = E.continuation_logprobs(model, tok, pairs, batch_size=1, max_length=64)
    p, c = pairs[0]
    assert lp == pytest.approx(_direct_logprob(model, tok, p[len(p) + len(c) - 64:], c), abs=1e-4)


def test_chat_choices_keep_the_few_shot_turns(model_and_tokenizer):
    model, _ = model_and_tokenizer
    tok = byte_tokenizer()
    from ftspec.data.templates import builtin_dir

    tok.chat_template = builtin_dir().joinpath("chatml.jinja").read_text()
    record = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "billing"}]}
    shot = {"messages": [{"role": "user", "content": "yo"}, {"role": "assistant", "content": "account"}]}
    ex = E.build_examples([record], "chat", tok, [shot])[0]
    labels = ["billing", "account"]
    picked = E.choose(model, tok, [ex], labels, "chat", batch_size=2)[0]
    scores = {}
    for label in labels:  # scored after the prompt the model actually sees, shots included
        prompt, cont = E._chat_continuation(ex.messages, label, tok)
        assert prompt == ex.prompt
        p, c = E._continuation_ids(tok, prompt, cont, chat=True, add_eos=False)
        scores[label] = _direct_logprob(model, tok, p, c)
    assert picked == max(scores, key=scores.get)
