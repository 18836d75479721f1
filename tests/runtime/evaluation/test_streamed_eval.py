"""The evaluation reads the prepared splits as streams: the evaluated split up to
eval.limit only, the training split for its few-shot examples (the same ones as from
the whole list) and its labels, and each record's origin from ``<split>.origins`` for an
error at the data file's row."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")

from transformers import AutoModelForCausalLM  # noqa: E402

from ftspec.core.errors import SpecError  # noqa: E402
from ftspec.core.io import BadFileError  # noqa: E402
from ftspec.data.formatting import few_shot  # noqa: E402
from ftspec.runtime.evaluation import evaluate as E  # noqa: E402
from ftspec.runtime.models import byte_tokenizer, tiny_config  # noqa: E402


@pytest.fixture(scope="module")
def model_and_tokenizer():
    torch.manual_seed(0)
    tok = byte_tokenizer()
    sizes = SimpleNamespace(architecture="llama", hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=2,
                            intermediate_size=64, max_position_embeddings=256)
    return AutoModelForCausalLM.from_config(tiny_config(sizes, tok)).eval(), tok


def write_split(folder, split, rows, origins=None, tail=""):
    (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + tail, encoding="utf-8")
    if origins is not None:
        (folder / f"{split}.origins").write_text("".join(json.dumps(o) + "\n" for o in origins), encoding="utf-8")


def rows(answers):
    return [{"prompt": f"Request {i}:", "completion": " " + a} for i, a in enumerate(answers)]


def eval_section(**kw):
    e = dict(split="test", limit=None, outputs=("answers",), few_shot=0, few_shot_seed=0, choices=(),
             mode="generate", batch_size=4, max_new_tokens=2, stop=())
    return SimpleNamespace(**{**e, **kw})


def test_eval_limit_reads_only_the_rows_evaluated(tmp_path, model_and_tokenizer):
    model, tok = model_and_tokenizer
    write_split(tmp_path, "train", rows(["yes", "no"] * 3))
    # Past the limit the split is not read at all: a broken line there changes nothing.
    write_split(tmp_path, "test", rows(["yes", "no", "yes"]), tail="{not json\n")
    summary, out = E.generate_outputs(model, tok, eval_section(limit=3), "prompt_completion", 64, tmp_path,
                                      baseline=False)
    assert summary["rows"] == 3 and [r["reference"] for r in out] == ["yes", "no", "yes"]
    with pytest.raises(BadFileError, match=r"test\.jsonl:4"):  # without a limit the whole split is read
        E.generate_outputs(model, tok, eval_section(), "prompt_completion", 64, tmp_path, baseline=False)


def test_few_shot_examples_are_those_drawn_from_the_whole_training_list(tmp_path, model_and_tokenizer):
    model, tok = model_and_tokenizer
    train = rows([f"answer{i}" for i in range(40)])
    write_split(tmp_path, "train", train)
    write_split(tmp_path, "test", rows(["yes"]))
    for seed in (0, 7):
        summary, out = E.generate_outputs(model, tok, eval_section(few_shot=3, few_shot_seed=seed),
                                          "prompt_completion", 256, tmp_path, baseline=True)
        shots = few_shot(train, 3, seed)  # the draw from the list of every training record
        assert summary["few_shot"] == 3
        assert out[0]["prompt"] == "".join(s["prompt"] + s["completion"] + "\n\n" for s in shots) + "Request 0:"


def test_choices_labels_are_the_training_split_s_distinct_answers(tmp_path, model_and_tokenizer):
    model, tok = model_and_tokenizer
    write_split(tmp_path, "train", rows(["no", "yes", "maybe", "yes", "no"]))
    write_split(tmp_path, "test", rows(["yes", "no"]))
    summary, _ = E.generate_outputs(model, tok, eval_section(mode="choices"), "prompt_completion", 64, tmp_path,
                                    baseline=False)
    assert summary["labels"] == ["maybe", "no", "yes"]


def test_too_many_distinct_training_answers_are_not_labels(tmp_path, model_and_tokenizer, monkeypatch):
    model, tok = model_and_tokenizer
    monkeypatch.setattr(E, "MAX_DERIVED_LABELS", 2)
    write_split(tmp_path, "train", rows(["no", "yes", "no", "maybe"]),
                origins=["tickets.jsonl:2", "tickets.jsonl:3", "tickets.jsonl:5", "tickets.jsonl:8"])
    write_split(tmp_path, "test", rows(["yes"]))
    with pytest.raises(SpecError) as err:
        E.generate_outputs(model, tok, eval_section(mode="choices"), "prompt_completion", 64, tmp_path,
                           baseline=False)
    line = err.value.issues[0].format()
    assert line.startswith("tickets.jsonl:8: eval.mode: choices mode without eval.choices") and "\n" not in line


def test_an_answer_outside_the_choices_is_named_at_its_data_row(tmp_path):
    write_split(tmp_path, "train", rows(["yes", "no"]), origins=["tickets.jsonl:2", "tickets.jsonl:3"])
    write_split(tmp_path, "test", rows(["yes", "no", "sales"]),
                origins=["held.jsonl:4", "held.jsonl:9", "held.jsonl:221"])
    with pytest.raises(SpecError) as err:
        E.check_choices(tmp_path, "prompt_completion", ["no", "yes"])
    assert err.value.issues[0].format() == (
        "held.jsonl:221: eval.choices: the answer 'sales' is not one of eval.choices (no, yes)")


def test_an_answer_outside_the_choices_without_origins_is_named_by_its_record(tmp_path):
    write_split(tmp_path, "train", rows(["yes", "no"]), origins=["tickets.jsonl:2", "tickets.jsonl:3"])
    write_split(tmp_path, "validation", rows(["yes", "sales"]))
    with pytest.raises(SpecError) as err:
        E.check_choices(tmp_path, "prompt_completion", ["no", "yes"])
    assert err.value.issues[0].format().startswith("validation split:2: eval.choices: the answer 'sales'")
    E.check_choices(tmp_path, "prompt_completion", [])  # no choices: nothing to check


def test_a_teacher_s_answers_are_not_checked_against_the_choices(tmp_path):
    write_split(tmp_path, "train", rows(["sales"]), origins=["tickets.jsonl:2"])
    (tmp_path / "stats.json").write_text(json.dumps({"teacher_answers": {"train": 1}}), encoding="utf-8")
    E.check_choices(tmp_path, "prompt_completion", ["no", "yes"])
