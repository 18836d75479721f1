"""Each spec field does what it says: the proofs that tests/field_proofs.py names for
fields no other test exercised.

Training settings are read back from inside a real (tiny, CPU) training run, by a
callback; data, model and evaluation settings from what the runtime builds out of a
compiled plan; settings that only shape validation from the errors they cause.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import ROOT
from helpers import successor_model

from ftspec.plan.compile import check_spec, compile_spec, find_root

TICKETS = (ROOT / "specs/data/support-tickets.jsonl").read_text(encoding="utf-8").splitlines()

TINY = "model: {kind: tiny, hidden_size: 32, num_layers: 2, num_heads: 4, max_position_embeddings: 256, init_seed: 1}\n"
PROMPT_COMPLETION = ('format: {kind: prompt_completion, prompt: "Request: {{ text }}\\nQueue:", completion: '
                     '" {{ queue }}"}\n')


def _write(folder: Path, body: str, rows: int = 48, name: str = "job") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tickets.jsonl").write_text("\n".join(TICKETS[:rows]) + "\n", encoding="utf-8")
    spec = folder / f"{name}.yaml"
    spec.write_text(f"ftspec: 1\nname: {name}\n" + body, encoding="utf-8")
    return spec


def _plan(folder: Path, body: str, *sets: str, rows: int = 48):
    spec = _write(folder, body, rows)
    return compile_spec(spec, sets=sets)[0], spec


def _execute(spec: Path, *sets: str, callbacks=None):
    from ftspec.backends.executor import execute

    plan, _ = compile_spec(spec, sets=sets)
    return execute(plan, find_root(spec), echo=lambda line: None, callbacks=callbacks)


def _errors(folder: Path, body: str) -> list[str]:
    from ftspec.core.errors import SpecError

    spec = _write(folder, body)
    try:
        check_spec(spec)
    except SpecError as err:
        return [f"{i.key}: {i.message}" for i in err.issues]
    return []


# --------------------------------------------------------------------------- training, inside a run


class Seen:
    """A trainer callback that keeps what the trainer was really given."""

    def __new__(cls):
        from transformers import TrainerCallback

        class _Seen(TrainerCallback):
            def __init__(self):
                self.args = self.model = self.optimizer = self.batch = self.callbacks = None
                self.learning_rates: list[float] = []
                self.substeps = 0
                self.saved: list[list[str]] = []
                self.steps = 0

            def on_train_begin(self, args, state, control, model=None, optimizer=None, train_dataloader=None, **kwargs):
                self.args, self.model, self.optimizer = args, model, optimizer
                self.batch = next(iter(train_dataloader))

            def on_substep_end(self, args, state, control, **kwargs):
                self.substeps += 1

            def on_step_end(self, args, state, control, lr_scheduler=None, **kwargs):
                self.learning_rates.append(lr_scheduler.get_last_lr()[0])
                self.steps = state.global_step

            def on_save(self, args, state, control, **kwargs):
                self.saved.append(sorted(p.name for p in Path(args.output_dir).glob("checkpoint-*")))

        return _Seen()


TRAINING_BODY = TINY + """data: {train: tickets.jsonl, limit: 32}
""" + PROMPT_COMPLETION + """method:
  kind: sft
  adapter: {kind: lora, r: 2, alpha: 6, dropout: 0.2, bias: lora_only, target_modules: [q_proj, v_proj]}
training:
  max_steps: 4
  learning_rate: 0.003
  lr_scheduler: linear
  warmup_steps: 1
  batch_size: 4
  gradient_accumulation: 2
  max_length: 100
  seed: 7
  optimizer: adafactor
  weight_decay: 0.05
  max_grad_norm: 0.5
  batching: padded
  gradient_checkpointing: true
  logging_steps: 2
  save_every: 1
  save_total_limit: 1
compute: {device: cpu}
"""


def test_training_and_lora_settings_reach_the_trainer(tmp_path):
    pytest.importorskip("trl")
    seen = Seen()
    result = _execute(_write(tmp_path, TRAINING_BODY), callbacks=[seen])
    args = seen.args
    assert args.max_steps == 4 and seen.steps == 4
    assert args.learning_rate == 0.003
    assert str(getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type)) == "linear"
    # Warm-up to the peak in one step, then linear decay: 2/3 of the peak after step 2
    # (cosine would give 3/4).
    assert seen.learning_rates[0] == pytest.approx(0.003)
    assert seen.learning_rates[1] == pytest.approx(0.002)
    assert args.warmup_steps == 1
    assert args.per_device_train_batch_size == 4 and seen.batch["input_ids"].shape[0] == 4
    assert args.gradient_accumulation_steps == 2 and seen.substeps >= 3, "forward passes between optimizer steps"
    assert args.max_length == 100 and seen.batch["input_ids"].shape[1] <= 100
    assert args.seed == 7 and args.data_seed == 7
    assert str(getattr(args.optim, "value", args.optim)) == "adafactor"
    assert type(seen.optimizer.optimizer if hasattr(seen.optimizer, "optimizer")
                else seen.optimizer).__name__ == "Adafactor"
    assert args.weight_decay == 0.05
    assert args.max_grad_norm == 0.5
    assert args.activation_checkpointing is True
    assert args.logging_steps == 2
    losses = [json.loads(line)["step"] for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()
              if "loss" in json.loads(line)]
    assert losses == [1, 2, 4], "the first step, then every logging_steps"
    assert args.save_steps == 1 and args.save_total_limit == 1
    assert seen.saved[-1] == ["checkpoint-3"] and len(seen.saved) == 3, "a checkpoint each step but the last; one kept"

    lora = seen.model.peft_config["default"]
    assert (lora.r, lora.lora_alpha, lora.lora_dropout, lora.bias) == (2, 6, 0.2, "lora_only")
    assert set(lora.target_modules) == {"q_proj", "v_proj"}
    saved = json.loads((result.run_dir / "model" / "adapter_config.json").read_text())
    assert (saved["r"], saved["lora_alpha"], saved["lora_dropout"], saved["bias"]) == (2, 6, 0.2, "lora_only")


EPOCHS_BODY = (TINY + "data: {train: tickets.jsonl, limit: 16}\n" + PROMPT_COMPLETION
               + """method: {kind: sft, adapter: full}
training: {epochs: 2, batch_size: 4, warmup_ratio: 0.5, max_length: 200, logging_steps: 1}
compute: {device: cpu}
""")


def test_epochs_and_warmup_ratio_set_the_steps_the_trainer_runs(tmp_path):
    pytest.importorskip("trl")
    seen = Seen()
    result = _execute(_write(tmp_path, EPOCHS_BODY), callbacks=[seen])
    assert result.plan.training.total_steps == 8, "16 rows in batches of 4, twice"
    assert seen.args.max_steps == 8 and seen.steps == 8
    assert seen.args.warmup_steps == 4, "half of the steps"
    rates = seen.learning_rates
    assert rates[:4] == sorted(rates[:4]) and rates[3] == max(rates), "rising for four steps, then falling"
    assert rates[4:] == sorted(rates[4:], reverse=True)


EARLY_BODY = (TINY + "data: {train: tickets.jsonl, split: {validation: 0.25, seed: 1}}\n" + PROMPT_COMPLETION
              + """method: {kind: sft, adapter: full}
training:
  max_steps: 6
  learning_rate: 1.0e-3
  batch_size: 4
  max_length: 200
  eval_every: 1
  logging_steps: 1
  early_stopping: {patience: 2, min_delta: 100.0}
eval: {baseline: false, limit: 1, max_new_tokens: 1}
compute: {device: cpu}
""")


def test_early_stopping_patience_and_min_delta_stop_training(tmp_path):
    pytest.importorskip("trl")
    seen = Seen()
    result = _execute(_write(tmp_path / "a", EARLY_BODY, rows=24), callbacks=[seen])
    # No evaluation improves the loss by 100: the first sets the best, two more without
    # improvement (the patience) stop the run at step 3.
    assert seen.steps == 3 and result.outcome("train").result["stopped_early"] is True
    assert seen.args.load_best_model_at_end is True and seen.args.metric_for_best_model == "eval_loss"

    # With min_delta 0 each evaluation improves on the last here: all six steps run.
    seen = Seen()
    result = _execute(_write(tmp_path / "b", EARLY_BODY.replace("min_delta: 100.0", "min_delta: 0.0"), rows=24),
                      callbacks=[seen])
    losses = [json.loads(line)["eval_loss"] for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()
              if "eval_loss" in json.loads(line)]
    assert losses == sorted(losses, reverse=True) and len(losses) == 6
    assert seen.steps == 6 and result.outcome("train").result["stopped_early"] is False


DPO_BODY = TINY + """data:
  train: tickets.jsonl
  limit: 8
  derive:
    wrong: "{{ {'billing': 'account', 'account': 'technical', 'technical': 'shipping', 'shipping': 'returns', \
'returns': 'billing'}[queue] }}"
format: {kind: preference, prompt: "Request: {{ text }}\\nQueue:", chosen: " {{ queue }}", rejected: " {{ wrong }}"}
method: {kind: dpo, beta: 0.25, loss_type: robust, label_smoothing: 0.2, adapter: {kind: lora, r: 2}}
training: {max_steps: 1, batch_size: 4, max_length: 200}
compute: {device: cpu}
"""


def test_dpo_beta_loss_type_and_label_smoothing_reach_the_trainer(tmp_path):
    pytest.importorskip("trl")
    seen = Seen()
    _execute(_write(tmp_path, DPO_BODY), callbacks=[seen])
    assert seen.args.beta == 0.25
    assert list(seen.args.loss_type) == ["robust"]
    assert seen.args.label_smoothing == 0.2


def test_format_loss_all_puts_loss_on_the_prompt_too(tmp_path):
    pytest.importorskip("trl")
    body = TINY + "data: {train: tickets.jsonl, limit: 8}\n" + PROMPT_COMPLETION + """method: {kind: sft, adapter: full}
training: {max_steps: 1, batch_size: 4, max_length: 200}
compute: {device: cpu}
"""
    completion = _execute(_write(tmp_path / "completion", body))
    everything = _execute(_write(tmp_path / "all", body), "format.loss=all")
    fraction = {name: json.loads((r.run_dir / "data/stats.json").read_text())["splits"]["train"]["loss_token_fraction"]
                for name, r in (("completion", completion), ("all", everything))}
    assert fraction["completion"] < 0.5 and fraction["all"] == 1.0


# --------------------------------------------------------------------------- data: what prepare_data reads


def _splits(plan, spec):
    from ftspec.runtime.training.splits import build_splits

    return build_splits(plan.data, plan.format, find_root(spec))


DATA_BODY = TINY + PROMPT_COMPLETION + "compute: {device: cpu}\n"


def test_rename_derive_and_limit_shape_the_rows(tmp_path):
    body = DATA_BODY.replace('{{ text }}', '{{ request }}').replace('{{ queue }}', '{{ answer }}') + """data:
  train: tickets.jsonl
  rename: {text: request}
  derive: {answer: "{{ queue | upper }}"}
  limit: 5
"""
    plan, spec = _plan(tmp_path, body)
    splits, _ = _splits(plan, spec)
    first = json.loads(TICKETS[0])
    assert len(splits["train"]) == 5
    assert splits["train"][0] == {"prompt": f"Request: {first['text']}\nQueue:",
                                  "completion": " " + first["queue"].upper()}


def test_split_fractions_seed_and_stratify_carve_the_held_out_rows(tmp_path):
    body = DATA_BODY + "data: {train: tickets.jsonl, split: {validation: 0.25, test: 0.125, seed: 1}}\n"
    plan, spec = _plan(tmp_path / "a", body, rows=80)
    a, _ = _splits(plan, spec)
    assert {k: len(v) for k, v in a.items()} == {"train": 50, "validation": 20, "test": 10}
    plan, spec = _plan(tmp_path / "b", body, "data.split.seed=2", rows=80)
    b, _ = _splits(plan, spec)
    assert a["validation"] != b["validation"], "another seed, other rows held out"

    queues = [json.loads(line)["queue"] for line in TICKETS[:80]]
    share = {q: queues.count(q) / len(queues) for q in set(queues)}
    plan, spec = _plan(tmp_path / "c", body, "data.split.stratify=queue", rows=80)
    c, _ = _splits(plan, spec)
    held = [r["completion"].strip() for r in c["validation"]]
    assert all(abs(held.count(q) - share[q] * 20) <= 1 for q in share), "each queue keeps its share"
    unstratified = [r["completion"].strip() for r in a["validation"]]
    assert (max(abs(unstratified.count(q) - share[q] * 20) for q in share)
            >= max(abs(held.count(q) - share[q] * 20) for q in share))


def test_validation_and_test_files_are_their_splits(tmp_path):
    folder = tmp_path
    folder.mkdir(exist_ok=True)
    (folder / "held.jsonl").write_text("\n".join(TICKETS[100:107]) + "\n", encoding="utf-8")
    (folder / "final.jsonl").write_text("\n".join(TICKETS[200:203]) + "\n", encoding="utf-8")
    plan, spec = _plan(folder, DATA_BODY + "data: {train: tickets.jsonl, validation: held.jsonl, test: final.jsonl}\n")
    splits, _ = _splits(plan, spec)
    assert {k: len(v) for k, v in splits.items()} == {"train": 48, "validation": 7, "test": 3}
    assert splits["test"][0]["completion"] == " " + json.loads(TICKETS[200])["queue"]


def test_file_format_columns_header_and_field_read_the_file(tmp_path):
    tmp_path.mkdir(exist_ok=True)
    rows = [json.loads(line) for line in TICKETS[:6]]
    # JSON lines in a file whose name says nothing: `format` says how to read it.
    (tmp_path / "rows.txt").write_text("\n".join(TICKETS[:6]) + "\n", encoding="utf-8")
    plan, spec = _plan(tmp_path, DATA_BODY + "data: {train: {path: rows.txt, format: jsonl}}\n")
    assert [r["completion"] for r in _splits(plan, spec)[0]["train"]] == [" " + r["queue"] for r in rows]
    # A TSV file without a header, its columns named by the spec.
    (tmp_path / "rows.tsv").write_text("".join(f"{r['text']}\t{r['queue']}\n" for r in rows), encoding="utf-8")
    plan, spec = _plan(tmp_path, DATA_BODY + "data: {train: {path: rows.tsv, columns: [text, queue], header: false}}\n")
    assert [r["completion"] for r in _splits(plan, spec)[0]["train"]] == [" " + r["queue"] for r in rows]
    # With header: true the first line is a header, and the columns replace its names.
    (tmp_path / "named.tsv").write_text("a\tb\n" + "".join(f"{r['text']}\t{r['queue']}\n" for r in rows),
                                        encoding="utf-8")
    plan, spec = _plan(tmp_path, DATA_BODY + "data: {train: {path: named.tsv, columns: [text, queue], header: true}}\n")
    assert len(_splits(plan, spec)[0]["train"]) == 6
    # A JSON object whose `field` holds the rows.
    (tmp_path / "doc.json").write_text(json.dumps({"meta": {}, "rows": rows}), encoding="utf-8")
    plan, spec = _plan(tmp_path, DATA_BODY + "data: {train: {path: doc.json, field: rows}}\n")
    assert len(_splits(plan, spec)[0]["train"]) == 6


def test_a_hub_subset_is_passed_to_datasets(tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    calls = []

    def load_dataset(name, subset=None, split=None, revision=None):
        calls.append((name, subset, split, revision))
        return datasets.Dataset.from_list([json.loads(line) for line in TICKETS[:4]])

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    plan, spec = _plan(tmp_path,
                       DATA_BODY + "data: {train: {hub: org/tickets, subset: english, split: dev, revision: abc123}}\n")
    _splits(plan, spec)
    assert calls == [("org/tickets", "english", "dev", "abc123")]


def test_messages_column_takes_the_conversation_from_a_column(tmp_path):
    tmp_path.mkdir(exist_ok=True)
    convo = [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "billing"}]
    (tmp_path / "chats.jsonl").write_text(json.dumps({"id": 1, "turns": convo}) + "\n", encoding="utf-8")
    body = TINY + ("format: {kind: chat, messages_column: turns, chat_template: {builtin: chatml}}\n"
                   "data: {train: chats.jsonl}\n")
    plan, spec = _plan(tmp_path, body)
    assert _splits(plan, spec)[0]["train"] == [{"messages": convo}]


# --------------------------------------------------------------------------- model


def test_tiny_model_settings_shape_the_built_model(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoTokenizer

    from ftspec.runtime.models import build_tiny

    body = DATA_BODY.replace(TINY, "model: {kind: tiny, architecture: qwen2, hidden_size: 48, num_layers: 3, "
                                   "num_heads: 6, num_kv_heads: 2, intermediate_size: 40, max_position_embeddings: 96, "
                                   "init_seed: 5}\n")
    plan, _ = _plan(tmp_path, body + "data: {train: tickets.jsonl}\n")
    build_tiny(plan.model, [], tmp_path / "a")
    config = AutoConfig.from_pretrained(tmp_path / "a")
    assert config.model_type == "qwen2"
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads,
            config.intermediate_size, config.max_position_embeddings) == (48, 3, 6, 2, 40, 96)
    tok = AutoTokenizer.from_pretrained(tmp_path / "a")
    assert tok("héllo", add_special_tokens=False)["input_ids"].__len__() == 6, "byte tokenizer: one token per byte"

    plan, _ = _plan(tmp_path, body + "data: {train: tickets.jsonl}\n", "model.architecture=gpt2")
    build_tiny(plan.model, [], tmp_path / "gpt2")
    assert AutoConfig.from_pretrained(tmp_path / "gpt2").model_type == "gpt2"

    # The same init_seed builds the same weights; another builds others.
    build_tiny(plan.model, [], tmp_path / "again")
    plan, _ = _plan(tmp_path, body + "data: {train: tickets.jsonl}\n", "model.architecture=gpt2", "model.init_seed=6")
    build_tiny(plan.model, [], tmp_path / "other")
    weights = {name: load_file(tmp_path / name / "model.safetensors") for name in ("gpt2", "again", "other")}
    assert all(torch.equal(weights["gpt2"][k], weights["again"][k]) for k in weights["gpt2"])
    assert not all(torch.equal(weights["gpt2"][k], weights["other"][k]) for k in weights["gpt2"])


def test_pretrained_model_settings_reach_from_pretrained(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    import transformers

    from ftspec.runtime.models import load_model, load_tokenizer
    from ftspec.runtime.training import builders

    calls = []

    class Loaded:
        def to(self, device):
            return self

    class FakeTokenizer:
        pad_token = "<pad>"
        eos_token = "</s>"

    def model_from_pretrained(source, **kwargs):
        calls.append(("model", source, kwargs))
        return Loaded()

    def tokenizer_from_pretrained(source, **kwargs):
        calls.append(("tokenizer", source, kwargs))
        return FakeTokenizer()

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", model_from_pretrained)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", tokenizer_from_pretrained)
    monkeypatch.setattr("ftspec.runtime.models.AutoModelForCausalLM.from_pretrained", model_from_pretrained)
    monkeypatch.setattr("ftspec.runtime.models.AutoTokenizer.from_pretrained", tokenizer_from_pretrained)
    body = (DATA_BODY.replace(TINY, "model: {base: org/model, revision: " + "ab" * 20 + ", dtype: bfloat16, "
                                    "trust_remote_code: true, tokenizer: org/tokenizer}\n")
            + "data: {train: tickets.jsonl}\n")
    plan, spec = _plan(tmp_path, body)
    load_tokenizer(plan.model, find_root(spec), tmp_path)
    load_model(plan.model, find_root(spec), tmp_path, builders.model_dtype(plan.model, "fp32"), "cpu")
    (_, tok_source, tok_kwargs), (_, model_source, model_kwargs) = calls
    assert tok_source == "org/tokenizer" and tok_kwargs["trust_remote_code"] is True
    assert "revision" not in tok_kwargs, "the model's revision is a commit of another repository"
    assert model_source == "org/model"
    assert model_kwargs["revision"] == "ab" * 20 and model_kwargs["trust_remote_code"] is True
    assert model_kwargs["dtype"] == torch.bfloat16
    # the model's own tokenizer loads at the model's revision; a local tokenizer folder is
    # found from the spec's folder, wherever ftspec runs
    calls.clear()
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "tok").mkdir()
    (tmp_path / "sub" / "tok" / "tokenizer_config.json").write_text("{}")
    for name, tokenizer, expected in (("own", None, ("org/model", "ab" * 20)),
                                      ("local", "./tok", (str(find_root(spec) / "sub" / "tok"), None))):
        text = body.replace(", tokenizer: org/tokenizer", "" if tokenizer is None else f", tokenizer: {tokenizer}")
        plan, spec2 = _plan(tmp_path / "sub" if name == "local" else tmp_path / name, text)
        monkeypatch.chdir("/")
        load_tokenizer(plan.model, find_root(spec2), tmp_path)
        (_, source, kwargs), = calls
        calls.clear()
        assert (source, kwargs.get("revision")) == expected, name


# --------------------------------------------------------------------------- evaluation


EVAL_BODY = DATA_BODY + "data: {train: tickets.jsonl, split: {validation: 0.25, test: 0.25, seed: 1}}\n"


def _evaluate(tmp_path, *sets: str, baseline: bool = False, monkeypatch=None):
    """The evaluation of a model that answers " shop\\nxyz" and then dots, on the plan's
    evaluation settings; the summary, the rows, and the batch sizes generate() saw."""
    pytest.importorskip("torch")

    from ftspec.runtime.evaluation import evaluate as E
    from ftspec.runtime.models import byte_tokenizer

    # Generate mode, no stop string unless a test sets one: these rows' labels would make
    # eval.mode auto score by choices, and stop generation at a newline.
    plan, spec = _plan(tmp_path, EVAL_BODY, "eval.mode=generate", "eval.stop=[]", *sets)
    splits, _ = _splits(plan, spec)
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    for name, records in splits.items():
        (data / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    tok = byte_tokenizer()
    model = successor_model(tok, end=None)
    batches = []
    real = model.generate

    def generate(*args, **kwargs):
        batches.append(kwargs["input_ids"].shape[0])
        return real(*args, **kwargs)

    model.generate = generate
    summary, rows = E.evaluate(model, tok, plan.eval, plan.format.kind, plan.training.max_length, data,
                               baseline=baseline)
    return plan, summary, rows, batches, splits


def test_eval_generation_settings_reach_generate(tmp_path):
    plan, summary, rows, batches, splits = _evaluate(tmp_path / "a", "eval.split=validation", "eval.max_new_tokens=7",
                                                     "eval.limit=3", "eval.batch_size=2", "eval.metrics=[exact_match]")
    assert summary["split"] == "validation" and summary["rows"] == 3
    assert [r["prompt"] for r in rows] == [r["prompt"] for r in splits["validation"][:3]]
    assert batches == [2, 1]
    assert {r["prediction"] for r in rows} == {" shop\nx"}, "seven new tokens"

    _, summary, rows, _, splits = _evaluate(tmp_path / "b", "eval.split=test", "eval.stop=[\"\\n\"]",
                                            "eval.metrics=[exact_match]")
    assert summary["split"] == "test" and [r["prompt"] for r in rows] == [r["prompt"] for r in splits["test"]]
    assert {r["prediction"] for r in rows} == {" shop"}


def test_eval_metric_extraction_is_applied(tmp_path):
    # The model answers " shop": the first letter, or the last.
    for which, letter in (("first", "s"), ("last", "p")):
        metrics = f"eval.metrics=[{{name: exact_match, extract: {{regex: '([a-z])', which: {which}}}}}]"
        _, summary, rows, _, _ = _evaluate(tmp_path / which, "eval.limit=2", "eval.stop=[\"\\n\"]", metrics)
        assert {r["extracted"]["exact_match"]["prediction"] for r in rows} == {letter}


def test_a_json_schema_metric_checks_the_extracted_answer_against_its_schema(tmp_path):
    folder = tmp_path / "a"
    folder.mkdir(parents=True)
    (folder / "queue.schema.json").write_text(json.dumps({"type": "object", "required": ["queue"]}), encoding="utf-8")
    plain = "{name: json_schema, schema: queue.schema.json}"
    wrapped = ("{name: json_schema, schema: queue.schema.json, "
               "extract: {template: '{\"queue\": \"{{ text | trim }}\"}'}}")
    _, summary, _, _, _ = _evaluate(folder, "eval.limit=2", "eval.stop=[\"\\n\"]", f"eval.metrics=[{plain}]")
    assert summary["metrics"]["json_schema"] == 0.0, "' shop' is not a JSON object"
    _, summary, rows, _, _ = _evaluate(folder, "eval.limit=2", "eval.stop=[\"\\n\"]", f"eval.metrics=[{wrapped}]")
    assert summary["metrics"]["json_schema"] == 1.0
    assert rows[0]["extracted"]["json_schema"]["prediction"] == '{"queue": "shop"}'


def test_few_shot_examples_go_before_the_baselines_prompt(tmp_path):
    plan, summary, rows, _, splits = _evaluate(tmp_path, "eval.few_shot=2", "eval.limit=2", "eval.max_new_tokens=2",
                                               "eval.metrics=[exact_match]", baseline=True)
    assert summary["few_shot"] == 2
    for row, record in zip(rows, splits["test"]):
        assert row["prompt"].endswith(record["prompt"]) and row["prompt"].count("Queue:") == 3


def test_baseline_false_drops_the_base_models_evaluation(tmp_path):
    body = EVAL_BODY + "eval: {metrics: [accuracy]}\n"
    with_base, _ = _plan(tmp_path, body)
    without, _ = _plan(tmp_path, body, "eval.baseline=false")
    assert [s.name for s in with_base.steps] == ["prepare_data", "generate_base", "eval_base", "train",
                                                 "generate_tuned", "eval_tuned", "report"]
    assert [s.name for s in without.steps] == ["prepare_data", "train", "generate_tuned", "eval_tuned", "report"]


def test_the_judges_rubric_score_regex_and_scale_come_from_the_spec(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from ftspec.runtime.evaluation import evaluate as E
    from ftspec.runtime.models import byte_tokenizer

    judge = ("{name: judge, model: org/judge, rubric: 'Q={{ prompt }} A={{ prediction }} R={{ reference }}', "
             "score_regex: 'grade ([0-9]+)', scale: [0, 4]}")
    plan, _ = _plan(tmp_path, EVAL_BODY, f"eval.metrics=[{judge}]")
    [metric] = [m.model_dump(mode="json", by_alias=True) for m in plan.eval.metrics]  # as evaluate() hands it on
    prompts = []

    def judge_generate(model, tokenizer, texts, *args, **kwargs):
        prompts.extend(texts)
        return ["grade 3, score 9", "score 9"]

    monkeypatch.setattr(E, "generate", judge_generate)
    examples = [E.Example("p1", "a", "r1", {}), E.Example("p2", "a", "r2", {})]
    scores, unparsed = E.judge_scores(metric, examples, ["x1", "x2"], None, byte_tokenizer(), batch_size=2)
    assert prompts == ["Q=p1 A=x1 R=r1", "Q=p2 A=x2 R=r2"]
    assert scores == [0.75, None] and unparsed == 1, "3 on the scale 0..4; no 'grade N' in the second reply"


# --------------------------------------------------------------------------- the plan and validation


def test_description_is_carried_into_the_plan(tmp_path):
    plan, _ = _plan(tmp_path, DATA_BODY + "data: {train: tickets.jsonl}\ndescription: Routes support tickets.\n")
    assert plan.description == "Routes support tickets."
    assert json.loads(plan.to_json())["description"] == "Routes support tickets."


# --------------------------------------------------------------------------- compute and output


def test_output_dir_places_the_run_directory(tmp_path):
    from ftspec.store.rundir import run_dir_of

    plan, spec = _plan(tmp_path, DATA_BODY + "data: {train: tickets.jsonl}\noutput: {dir: 'elsewhere/{name}-x'}\n")
    assert run_dir_of(plan, find_root(spec)) == (find_root(spec) / "elsewhere" / "job-x").resolve()


def test_precision_is_what_the_trainer_is_given_or_a_clear_error(tmp_path):
    pytest.importorskip("torch")
    from ftspec.core.errors import SpecError
    from ftspec.runtime.training import builders

    body = DATA_BODY + "data: {train: tickets.jsonl}\n"
    with pytest.raises(SpecError, match="compute.precision: fp16 training needs a GPU"):
        _plan(tmp_path, body, "compute.precision=fp16")  # found at validate, on a CPU device
    plan, _ = _plan(tmp_path, body, "compute.precision=fp32")
    precision = builders.resolve_precision(plan.compute, "cpu")
    kwargs = builders.training_arguments(plan.training, plan.tracking, "cpu", precision, str(tmp_path), False)
    assert (precision, kwargs["bf16"], kwargs["fp16"]) == ("fp32", False, False)
    if builders._cpu_supports_bf16():
        plan, _ = _plan(tmp_path, body, "compute.precision=bf16")
        kwargs = builders.training_arguments(plan.training, plan.tracking, "cpu",
                                             builders.resolve_precision(plan.compute, "cpu"),
                                             str(tmp_path), False)
        assert kwargs["bf16"] is True


def test_the_backend_can_only_be_local(tmp_path):
    errors = _errors(tmp_path, DATA_BODY.replace("compute: {device: cpu}", "compute: {device: cpu, backend: slurm}")
                     + "data: {train: tickets.jsonl}\n")
    assert any(e.startswith("compute.backend:") for e in errors), errors


def test_a_builtin_template_is_the_chat_template_the_tokenizer_renders(tmp_path):
    pytest.importorskip("torch")
    from ftspec.data.templates import builtin_dir
    from ftspec.runtime.models import build_tiny, load_tokenizer

    body = TINY + """format:
  kind: chat
  chat_template: {builtin: chatml}
  messages: [{role: user, content: "{{ text }}"}, {role: assistant, content: "{{ queue }}"}]
data: {train: tickets.jsonl}
"""
    plan, spec = _plan(tmp_path, body)
    assert plan.format.chat_template_text == (builtin_dir() / "chatml.jinja").read_text(encoding="utf-8")
    build_tiny(plan.model, [], tmp_path / "data" / "base-model")
    tok = load_tokenizer(plan.model, find_root(spec), tmp_path / "data", plan.format.chat_template_text)
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_qlora_settings_make_the_quantization_config(tmp_path, monkeypatch):
    """As far as this machine can go: the BitsAndBytesConfig the recipe passes to
    from_pretrained (loading 4- or 8-bit weights needs CUDA and bitsandbytes; see
    test_qlora_reaches_the_model_load for the load itself)."""
    pytest.importorskip("torch")
    from ftspec.checks import facts
    from ftspec.runtime.training import builders

    monkeypatch.setattr(facts, "has_package", lambda name: True)  # bitsandbytes, on a machine that has it

    body = (DATA_BODY.replace(TINY, "model: {base: org/model, revision: " + "ab" * 20 + "}\n")
            .replace("device: cpu", "device: cuda")
            + "data: {train: tickets.jsonl}\n")
    plan, _ = _plan(tmp_path, body,
                    "method={kind: sft, adapter: {kind: qlora, quant_type: fp4, double_quant: false, r: 4}}")
    config = builders.quantization_config(plan.method.adapter)
    assert (config.load_in_4bit, config.bnb_4bit_quant_type, config.bnb_4bit_use_double_quant) == (True, "fp4", False)
    assert builders.lora_config(plan.method.adapter).r == 4
    plan, _ = _plan(tmp_path, body, "method={kind: sft, adapter: {kind: qlora, bits: 8}}")
    config = builders.quantization_config(plan.method.adapter)
    assert config.load_in_8bit and not config.load_in_4bit


def test_qlora_reaches_the_model_load(tmp_path, monkeypatch):
    """The quantization config built from the plan is what the model is loaded with, on GPU 0."""
    pytest.importorskip("torch")
    import transformers

    from ftspec.checks import facts
    from ftspec.runtime import models
    from ftspec.runtime.training import builders

    monkeypatch.setattr(facts, "has_package", lambda name: True)
    body = (DATA_BODY.replace(TINY, "model: {base: org/model, revision: " + "ab" * 20 + "}\n")
            .replace("device: cpu", "device: cuda")
            + "data: {train: tickets.jsonl}\n")
    plan, spec = _plan(tmp_path, body, "method={kind: sft, adapter: {kind: qlora, quant_type: nf4, bits: 4}}")
    seen = {}

    class Loaded:
        def to(self, device):
            raise AssertionError("a quantized model is placed by device_map, not moved")

    def from_pretrained(source, **kwargs):
        seen.update(kwargs, source=source)
        return Loaded()

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", from_pretrained)
    models.load_model(plan.model, find_root(spec), tmp_path, builders.model_dtype(plan.model, "bf16"), "cuda",
                      quantization_config=builders.quantization_config(plan.method.adapter))
    config = seen["quantization_config"]
    assert seen["source"] == "org/model" and seen["revision"] == "ab" * 20 and seen["device_map"] == {"": 0}
    assert (config.load_in_4bit, config.bnb_4bit_quant_type, config.bnb_4bit_use_double_quant) == (True, "nf4", True)


def test_qlora_without_bitsandbytes_is_an_error_at_the_adapter(tmp_path, monkeypatch):
    from ftspec.checks import facts
    from ftspec.core.errors import SpecError

    monkeypatch.setattr(facts, "has_package", lambda name: name != "bitsandbytes")
    body = (DATA_BODY.replace(TINY, "model: {base: org/model, revision: " + "ab" * 20 + "}\n")
            .replace("device: cpu", "device: cuda")
            + "data: {train: tickets.jsonl}\n")
    with pytest.raises(SpecError) as err:
        _plan(tmp_path, body, "method={kind: sft, adapter: {kind: qlora}}")
    [issue] = [i for i in err.value.issues if "bitsandbytes" in i.message]
    assert issue.key == "method.adapter.kind" and "not installed" in issue.message
