"""Held-out evaluation of one model (the base or the tuned one) on the plan's
evaluation split, with the same rendered prompts for both.

- ``generate`` mode: batched greedy generation (left padding, KV cache, stop at the
  end-of-sequence token or a stop string, ``max_new_tokens`` from the plan);
- ``choices`` mode: each allowed label is scored by the log-likelihood of its
  continuation, and the best one is the answer, so a base model that rambles is
  still measured fairly;
- few-shot examples from the training split can be put before the baseline's
  prompt ("try prompt engineering first");
- perplexity needs the evaluated model, so it is computed here (when ``eval.outputs``
  names it), and so are the log-probabilities of preference pairs; the scoring step
  (``scoring.py``) turns what this saves into metrics, and runs an LLM judge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import torch

from ftspec.core.errors import Pos, SpecError
from ftspec.core.io import read_json
from ftspec.data.formatting import prompt_messages, prompt_text, reference
from ftspec.data.prepared import few_shot_records, has_split, iter_with_origins, read_records, split_position
from ftspec.data.templates import environment, render
from ftspec.runtime.evaluation.extraction import bounded_matches, compile_bounded
from ftspec.runtime.evaluation.likelihood import continuation_logprobs
from ftspec.runtime.evaluation.progress import Progress
from ftspec.runtime.evaluation.reward_scores import pair_scores
from ftspec.runtime.evaluation.scoring import score_outputs
from ftspec.runtime.evaluation.stopping import stopping_arguments

# Choices mode without eval.choices scores every distinct training answer for every row:
# past this many the answers are not labels, and the set is not kept in memory.
MAX_DERIVED_LABELS = 10_000

# --------------------------------------------------------------------------- prompts


@dataclass
class Example:
    prompt: str  # what the model is given, as text
    answer: str  # the text that should follow it (for perplexity)
    reference: str  # the expected answer, as metrics compare it
    record: dict
    messages: list[dict] | None = None  # chat: the conversation before the answer, few-shot turns included


def chat_prompt(messages: list[dict], tokenizer) -> str:
    """The text a chat model continues: the conversation with the generation prompt, as its template renders it."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def _chat_continuation(messages: list[dict], answer: str, tokenizer) -> tuple[str, str]:
    """(prompt, continuation) for an assistant answer, as the chat template renders them."""
    prompt = chat_prompt(messages, tokenizer)
    full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": answer}], tokenize=False)
    return prompt, (full[len(prompt):] if full.startswith(prompt) else answer)


def _leading_space(text: str) -> str:
    return text[: len(text) - len(text.lstrip())]


def build_examples(records: list[dict], kind: str, tokenizer, shots: list[dict] = ()) -> list[Example]:
    """Each record's prompt (with few-shot examples before it, when given) and answer."""
    examples = []
    for r in records:
        ref = reference(kind, r)
        if kind == "chat":
            last = r["messages"][-1] if r["messages"] else None
            answer_text = last["content"] if last and last["role"] == "assistant" else ""
            messages = prompt_messages(r, shots)
            prompt, answer = _chat_continuation(messages, answer_text, tokenizer)
            examples.append(Example(prompt, answer, ref, r, messages))
        else:
            completion = r["chosen"] if kind == "preference" else r["completion"]
            examples.append(Example(prompt_text(r, kind, shots), completion, ref, r))
    return examples


def stop_token_ids(tokenizer) -> list[int]:
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    vocab = tokenizer.get_vocab()
    for marker in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>"):
        if marker in vocab and vocab[marker] not in ids:
            ids.append(vocab[marker])
    return ids


# --------------------------------------------------------------------------- generation


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int,
             stop: list[str] = (), chat: bool = False, progress: Callable[[int], None] | None = None,
             max_length: int | None = None) -> list[str]:
    """Greedy answers, in batches: left padding so every prompt ends where generation starts.

    A prompt longer than ``max_length - max_new_tokens`` tokens keeps its end (where
    the question and the answer cue are), as the training data was cut to ``max_length``.
    """
    model.eval()
    device = next(model.parameters()).device
    side, truncation_side = tokenizer.padding_side, tokenizer.truncation_side
    tokenizer.padding_side = "left"
    tokenizer.truncation_side = "left"
    limit = max(1, max_length - max_new_tokens) if max_length else None
    answers: list[str] = []
    try:
        # Longest prompts first: batches of similar length waste less on padding.
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        out_by_index: dict[int, str] = {}
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            enc = tokenizer([prompts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=not chat,
                            truncation=limit is not None, max_length=limit).to(device)
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, use_cache=True,
                                 pad_token_id=tokenizer.pad_token_id, **stopping_arguments(model, tokenizer, stop))
            new = out[:, enc["input_ids"].shape[1]:]
            for i, text in zip(idx, tokenizer.batch_decode(new, skip_special_tokens=True)):
                for s in stop:
                    text = text.split(s, 1)[0]
                out_by_index[i] = text
            if progress is not None:
                progress(len(idx))
        answers = [out_by_index[i] for i in range(len(prompts))]
    finally:
        tokenizer.padding_side, tokenizer.truncation_side = side, truncation_side
    return answers


# --------------------------------------------------------------------------- log-likelihood


def _continuation_ids(tokenizer, prompt: str, continuation: str, chat: bool,
                      add_eos: bool) -> tuple[list[int], list[int]]:
    special = not chat
    p_ids = tokenizer(prompt, add_special_tokens=special)["input_ids"]
    full = tokenizer(prompt + continuation, add_special_tokens=special)["input_ids"]
    if full[: len(p_ids)] == p_ids:
        c_ids = full[len(p_ids):]
    else:  # the tokenizer merged across the boundary: tokenise the parts apart
        c_ids = tokenizer(continuation, add_special_tokens=False)["input_ids"]
    if add_eos and tokenizer.eos_token_id is not None:
        c_ids = c_ids + [tokenizer.eos_token_id]
    return p_ids, c_ids


def choice_pairs(tokenizer, examples: list[Example], labels: list[str], kind: str) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, continuation ids) of every example with every label, example by example."""
    chat = kind == "chat"
    pairs = []
    for ex in examples:
        for label in labels:
            if chat:
                prompt, cont = _chat_continuation(ex.messages, label, tokenizer)
                pairs.append(_continuation_ids(tokenizer, prompt, cont, chat=True, add_eos=False))
            else:
                cont = _leading_space(ex.answer) + label
                pairs.append(_continuation_ids(tokenizer, ex.prompt, cont, chat=False, add_eos=True))
    return pairs


def choose(model, tokenizer, examples: list[Example], labels: list[str], kind: str, batch_size: int,
           max_length: int | None = None, progress: Callable[[int], None] | None = None) -> list[str]:
    """The label whose continuation is most likely after each prompt (``progress`` is
    called with the number of (prompt, label) pairs scored, batch by batch)."""
    pairs = choice_pairs(tokenizer, examples, labels, kind)
    scores = continuation_logprobs(model, tokenizer, pairs, batch_size, max_length, progress)
    answers = []
    for i in range(len(examples)):
        row = scores[i * len(labels):(i + 1) * len(labels)]
        best = max(range(len(labels)), key=lambda j: row[j][0])
        answers.append(labels[best])
    return answers


def perplexity(model, tokenizer, examples: list[Example], kind: str, batch_size: int,
               max_length: int | None = None, progress: Callable[[int], None] | None = None) -> float | None:
    """exp(mean negative log-likelihood per answer token) over the split."""
    chat = kind == "chat"
    pairs = [_continuation_ids(tokenizer, ex.prompt, ex.answer, chat=chat, add_eos=not chat) for ex in examples]
    scores = continuation_logprobs(model, tokenizer, pairs, batch_size, max_length, progress)
    tokens = sum(n for _, n in scores)
    if tokens == 0:
        return None
    return math.exp(-sum(lp for lp, _ in scores) / tokens)


# --------------------------------------------------------------------------- judge


def judge_scores(metric: Mapping, examples: list[Example], predictions: list[str], judge_model, judge_tokenizer,
                 batch_size: int) -> tuple[list[float | None], int]:
    """Scores in 0..1 from an LLM judge, and how many answers it gave no parsable score for."""
    rubric = environment().from_string(metric["rubric"]["text"])
    prompts = []
    for ex, pred in zip(examples, predictions):
        text = render(rubric, {"prompt": ex.prompt, "reference": ex.reference, "prediction": pred})
        if judge_tokenizer.chat_template:
            text = chat_prompt([{"role": "user", "content": text}], judge_tokenizer)
        prompts.append(text)
    replies = generate(judge_model, judge_tokenizer, prompts, 16, batch_size, chat=bool(judge_tokenizer.chat_template))
    low, high = metric["scale"]
    pattern = compile_bounded(metric["score_regex"])
    scores: list[float | None] = []
    for reply in replies:
        found = bounded_matches(pattern, reply, first_only=True)
        m = found[0] if found else None
        try:
            value = float(m.group(1) if m and m.groups() else m.group(0)) if m else None
        except ValueError:
            value = None
        scores.append(None if value is None else min(1.0, max(0.0, (value - low) / (high - low))))
    return scores, sum(1 for s in scores if s is None)


# --------------------------------------------------------------------------- the whole evaluation


def check_choices(data_dir: Path, kind: str, choices) -> None:
    """In choices mode every answer, of every split, must be one of the allowed labels:
    a label the model can never pick is a mistake in the data or in eval.choices."""
    if not choices:
        return

    allowed = set(choices)
    # A distillation's training and validation answers are its teacher's: one outside the
    # labels is the teacher's mistake, which the student learns and the scores show.
    teacher = (read_json(data_dir / "stats.json", lenient=True) or {}).get("teacher_answers") or {}
    for split in ("train", "validation", "test"):
        if not has_split(data_dir, split) or split in teacher:
            continue
        for i, record, origin in iter_with_origins(data_dir, split):
            ref = reference(kind, record)
            if ref not in allowed:
                file, row = split_position(origin, split, i)
                raise SpecError.one(Pos(file, row), "eval.choices",
                                    f"the answer {ref!r} is not one of eval.choices ({', '.join(choices)})")


def training_labels(data_dir: Path, kind: str) -> list[str]:
    """Choices mode's labels when eval.choices lists none: the training split's distinct
    answers, sorted, read one record at a time (at most :data:`MAX_DERIVED_LABELS`)."""
    labels: set[str] = set()
    for i, record, origin in iter_with_origins(data_dir, "train"):
        labels.add(reference(kind, record))
        if len(labels) > MAX_DERIVED_LABELS:
            file, row = split_position(origin, "train", i)
            raise SpecError.one(Pos(file, row), "eval.mode",
                                f"choices mode without eval.choices takes the training split's answers as its "
                                f"labels, and it has more than {MAX_DERIVED_LABELS} distinct ones",
                                "list the labels in eval.choices, or set eval.mode: generate")
    return sorted(labels)


def pair_logprobs(model, tokenizer, records: list[dict], batch_size: int, max_length: int | None = None,
                  progress: Callable[[int], None] | None = None) -> list[tuple[float, float]]:
    """(log p(chosen | prompt), log p(rejected | prompt)) of each preference pair, each
    summed over the answer's tokens and its end-of-sequence token, as trl's DPO trainer
    sums them (it appends the EOS to both answers of a text pair)."""
    pairs = []
    for r in records:
        pairs.append(_continuation_ids(tokenizer, r["prompt"], r["chosen"], chat=False, add_eos=True))
        pairs.append(_continuation_ids(tokenizer, r["prompt"], r["rejected"], chat=False, add_eos=True))
    scores = continuation_logprobs(model, tokenizer, pairs, batch_size, max_length, progress)
    return [(scores[2 * i][0], scores[2 * i + 1][0]) for i in range(len(records))]


def completion_logprobs(model, tokenizer, records: list[dict], batch_size: int, max_length: int | None = None,
                        progress: Callable[[int], None] | None = None) -> list[float]:
    """log p(completion | prompt) of each feedback row, summed over the completion's tokens and
    its end-of-sequence token, as trl's KTO trainer sums them (it appends the EOS to each)."""
    rows = [_continuation_ids(tokenizer, r["prompt"], r["completion"], chat=False, add_eos=True) for r in records]
    return [score[0] for score in continuation_logprobs(model, tokenizer, rows, batch_size, max_length, progress)]


def generate_outputs(model, tokenizer, e, kind: str, max_length: int, data_dir: Path, *,
                     baseline: bool) -> tuple[dict, list[dict]]:
    """What one model makes of the evaluation split, for the scoring step: its answers
    (generated, or picked among the labels in choices mode), and what else the metrics
    need from the model (``e.outputs``): the answers' perplexity, the log-probabilities of
    preference pairs. ``e`` is the plan's eval section, ``kind`` the format's kind,
    ``max_length`` the training length that prompts are cut to. Returns the step's
    ``outputs.json`` and its rows (``generations.jsonl``).

    Each part shows its progress on stderr (:class:`Progress`), and ``outputs.json``'s
    ``speed`` keeps, per part (``choices`` or ``generate``, ``perplexity``,
    ``pair_logprobs``), its rows, seconds and rows per second."""
    records = read_records(data_dir, e.split, e.limit or None)  # only the rows evaluated are read
    outputs = set(e.outputs)
    shots = (few_shot_records(data_dir, "train", e.few_shot, e.few_shot_seed)
             if baseline and e.few_shot and "answers" in outputs else [])
    examples = build_examples(records, kind, tokenizer, shots)
    labels = list(e.choices) if e.choices else None

    speed: dict[str, dict] = {}

    def timed(part: str, run: Callable, scale: float = 1.0):
        progress = Progress(part, len(examples), scale=scale)
        try:
            value = run(progress.advance)
        finally:
            speed[part] = progress.close()
        return value

    predictions = None
    if "answers" in outputs:
        if e.mode == "choices":
            check_choices(data_dir, kind, labels)
            labels = labels or training_labels(data_dir, kind)
            predictions = timed("choices", lambda advance: choose(model, tokenizer, examples, labels, kind,
                                                                  e.batch_size, max_length, advance),
                                scale=1 / max(1, len(labels)))
        else:
            predictions = timed("generate", lambda advance: generate(
                model, tokenizer, [ex.prompt for ex in examples], e.max_new_tokens, e.batch_size, list(e.stop),
                chat=kind == "chat", progress=advance, max_length=max_length))
    summary: dict = {"rows": len(examples), "split": e.split, "few_shot": len(shots), "mode": e.mode,
                     "outputs": sorted(outputs), "labels": labels if e.mode == "choices" else None}
    if "perplexity" in outputs:
        summary["perplexity"] = timed("perplexity", lambda advance: perplexity(model, tokenizer, examples, kind,
                                                                               e.batch_size, max_length, advance))
    # A preference pair's log-probabilities are taken on its own prompt, without few-shot
    # examples: DPO's implicit reward compares the tuned and the base model on the same text.
    logprobs = (timed("pair_logprobs", lambda advance: pair_logprobs(model, tokenizer, records, e.batch_size,
                                                                     max_length, advance), scale=0.5)
                if "pair_logprobs" in outputs and kind == "preference" else None)
    # A feedback row's completion is scored on its own prompt too, for the same reason.
    feedback = (timed("completion_logprobs", lambda advance: completion_logprobs(
                    model, tokenizer, records, e.batch_size, max_length, advance))
                if "completion_logprobs" in outputs and kind == "feedback" else None)
    # A reward model scores each pair's two answers after its own prompt, as it trained on them.
    scores = (timed("pair_scores", lambda advance: pair_scores(model, tokenizer, records, e.batch_size, max_length,
                                                               advance), scale=0.5)
              if "pair_scores" in outputs and kind == "preference" else None)
    summary["speed"] = speed
    rows = []
    for i, ex in enumerate(examples):
        row = {"index": i, "prompt": ex.prompt, "reference": ex.reference}
        if predictions is not None:
            row["prediction"] = predictions[i]
        if logprobs is not None:
            row.update(chosen=ex.record["chosen"], rejected=ex.record["rejected"],
                       chosen_logprob=logprobs[i][0], rejected_logprob=logprobs[i][1])
        if feedback is not None:
            row.update(completion=ex.record["completion"], label=ex.record["label"], completion_logprob=feedback[i])
        if scores is not None:
            row.update(chosen=ex.record["chosen"], rejected=ex.record["rejected"], chosen_score=scores[i][0],
                       rejected_score=scores[i][1])
        rows.append(row)
    return summary, rows


def evaluate(model, tokenizer, e, kind: str, max_length: int, data_dir: Path, *, baseline: bool,
             load_judge: Callable[[object], tuple] | None = None) -> tuple[dict, list[dict]]:
    """Generate and score in one go (the run does the two in separate steps): the scoring
    step's metrics.json and its predictions."""
    generated, rows = generate_outputs(model, tokenizer, e, kind, max_length, data_dir, baseline=baseline)
    definitions = [m.model_dump(mode="json", by_alias=True) for m in e.metrics]
    judge = None
    if load_judge is not None:
        def judge(definition, rows_, predictions):
            judge_model, judge_tokenizer = load_judge(definition)
            return judge_rows(definition, rows_, predictions, judge_model, judge_tokenizer, e.batch_size)
    return score_outputs(definitions, generated, rows, judge=judge)


def judge_rows(definition: Mapping, rows: list[dict], predictions: list[str], judge_model, judge_tokenizer,
               batch_size: int) -> tuple[list[float | None], int]:
    """:func:`judge_scores` over the rows a generation step saved (prompt and reference)."""
    examples = [Example(r["prompt"], "", r["reference"], {}) for r in rows]
    return judge_scores(definition, examples, predictions, judge_model, judge_tokenizer, batch_size)
