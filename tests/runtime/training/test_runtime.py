"""The runtime on tiny models, offline: SFT (full and LoRA), DPO, the chat loss
mask, resume after a crash, and bad input found only at run time."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from conftest import ROOT, run_cli  # noqa: E402
from helpers import BASE_BODY, TINY, run_job, write_job  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

from ftspec.backends.executor import execute  # noqa: E402
from ftspec.core.errors import SpecError  # noqa: E402
from ftspec.plan.compile import compile_spec, find_root  # noqa: E402


def test_sft_full_trains_every_weight_and_writes_the_run_directory(tmp_path):
    spec = write_job(tmp_path, BASE_BODY + "method: {kind: sft, adapter: full}\n")
    ctx, lines = run_job(spec)
    run = ctx.run_dir
    assert run == (tmp_path / "runs" / "job").resolve()
    base = load_file(run / "data/base-model/model.safetensors")
    tuned = load_file(run / "model/model.safetensors")
    assert base.keys() == tuned.keys()
    changed = [k for k in base if not torch.equal(base[k], tuned[k])]
    assert len(changed) >= len(base) - 1, f"unchanged: {set(base) - set(changed)}"

    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_pretrained(run / "model")
    AutoTokenizer.from_pretrained(run / "model")

    plan = json.loads((run / "plan.json").read_text())
    manifest = json.loads((run / "manifest.json").read_text())
    jsonschema = pytest.importorskip("jsonschema")
    for name, doc in (("manifest", manifest), ("plan", plan)):  # the files hold what their published schemas say
        schema = json.loads((ROOT / "schema" / f"{name}.schema.json").read_text())
        assert [e.message for e in jsonschema.Draft202012Validator(schema).iter_errors(doc)] == [], name
    assert manifest["plan_id"] == plan["id"] == ctx.plan.id
    assert manifest["status"] == "finished"
    assert [s["name"] for s in manifest["steps"]] == ["prepare_data", "generate_base", "eval_base", "train",
                                                      "generate_tuned", "eval_tuned", "report"]
    assert {s["key"] for s in manifest["steps"]} == {s["key"] for s in plan["steps"]}
    for lib in ("python", "torch", "transformers", "peft", "trl", "ftspec"):
        assert manifest["versions"][lib]
    assert manifest["started_at"] and manifest["finished_at"]

    stats = json.loads((run / "data/stats.json").read_text())["splits"]
    assert stats["train"]["rows"] == 96 and stats["validation"]["rows"] == 12 and stats["test"]["rows"] == 12
    assert 0 < stats["train"]["loss_token_fraction"] < 0.5
    assert set(stats["train"]["tokens"]) == {"p50", "p90", "p99", "max", "mean"}

    metrics = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "loss" in m] == [1, 2, 3, 4]
    assert [m["step"] for m in metrics if "eval_loss" in m][:2] == [2, 4]
    assert any(l.strip().startswith("accuracy") and "→ tuned" in l for l in "\n".join(lines).splitlines())
    for name in ("metrics.json", "predictions.jsonl", "report.md", "report.html"):
        assert (run / name).is_file()

    # Nothing changed: a second run reuses every step.
    _, again = run_job(spec)
    assert sum("up to date" in l for l in again) == len(ctx.plan.steps) == 7


def test_data_is_tokenized_once_and_a_changed_training_setting_does_not_tokenize_again(tmp_path, monkeypatch):
    spec = write_job(tmp_path, BASE_BODY + "method: {kind: sft, adapter: full}\n")
    ctx, lines = run_job(spec)
    data = ctx.run_dir / "data"
    preparation = json.loads((data / "stats.json").read_text())["preparation"]
    assert preparation["rows_per_second"] > 0 and preparation["seconds"] > 0
    assert any(l.strip().startswith("rows train 96") and l.endswith("rows/s") for l in lines), lines
    assert (data / "train-tokens").is_dir() and (data / "validation-tokens").is_dir()

    # A new learning rate trains again, on the tokens prepare_data left: neither ftspec
    # nor TRL tokenizes a row.
    import trl.trainer.sft_trainer as trl_sft

    from ftspec.runtime.training import data as D

    def no_tokenizing(*args, **kwargs):
        raise AssertionError("tokenized again")

    monkeypatch.setattr(D, "tokenize", no_tokenizing)
    monkeypatch.setattr(trl_sft, "_tokenize", no_tokenizing)
    _, again = run_job(spec, "training.learning_rate=5e-4")
    text = "\n".join(again)
    assert "prepare_data: up to date" in text and "train: running" in text


def test_no_checkpoint_at_the_last_step_and_none_left_once_the_step_is_complete(tmp_path):
    class Saves(TrainerCallback):
        def __init__(self):
            self.steps = []

        def on_save(self, args, state, control, **kwargs):
            self.steps.append(state.global_step)

    spec = write_job(tmp_path,
                     BASE_BODY.replace("max_steps: 4", "max_steps: 6") + "method: {kind: sft, adapter: full}\n")
    saves = Saves()
    ctx, _ = run_job(spec, callbacks=[saves])
    assert saves.steps == [2, 4], "every save_every steps, but not at the last one: the model itself is saved there"
    from ftspec.store.rundir import store_of

    assert not store_of(ctx.run_dir).scratch("train", ctx.plan.step("train").key, "checkpoints").exists()
    assert not (ctx.run_dir / "checkpoints").exists(), "no empty checkpoints/ folder left in the run directory"
    assert (ctx.run_dir / "model/model.safetensors").is_file()


def test_sft_lora_trains_the_adapter_and_leaves_the_base(tmp_path):
    spec = write_job(tmp_path, BASE_BODY + "method: {kind: sft, adapter: {kind: lora, r: 4}}\n")
    ctx, _ = run_job(spec)
    run = ctx.run_dir
    adapter = load_file(run / "model/adapter_model.safetensors")
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b), "lora_B starts at zero and must have moved"

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base_files = load_file(run / "data/base-model/model.safetensors")
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(run / "data/base-model"), run / "model")
    state = {k.replace("base_model.model.", "").replace(".base_layer", ""): v
             for k, v in model.state_dict().items() if "lora_" not in k}
    for name, value in base_files.items():
        assert torch.equal(state[name], value), f"base weight {name} changed"


def test_dpo_lora_trains(tmp_path):
    body = TINY + """
data:
  train: tickets.jsonl
  split: {validation: 0.1, seed: 1}
  derive:
    wrong: "{{ {'billing': 'account', 'account': 'technical', 'technical': 'shipping', 'shipping': 'returns', \
'returns': 'billing'}[queue] }}"
format:
  kind: preference
  prompt: "Request: {{ text }}\\nQueue:"
  chosen: " {{ queue }}"
  rejected: " {{ wrong }}"
method: {kind: dpo, beta: 0.1, adapter: {kind: lora, r: 4}}
training: {max_steps: 3, batch_size: 4, learning_rate: 1.0e-3, max_length: 128, eval_every: 3, logging_steps: 1}
compute: {device: cpu}
"""
    ctx, _ = run_job(write_job(tmp_path, body))
    run = ctx.run_dir
    adapter = load_file(run / "model/adapter_model.safetensors")
    assert any(v.abs().sum() > 0 for k, v in adapter.items() if "lora_B" in k)
    metrics = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("rewards/margins" in m for m in metrics)
    first = next(m for m in metrics if "loss" in m)
    assert first["loss"] == pytest.approx(0.6931, abs=1e-3), "at step 1 the policy equals the reference"
    # Preference runs are evaluated on their held-out pairs too (tests/runtime/evaluation/test_dpo_eval.py).
    assert [s.name for s in ctx.plan.steps] == ["prepare_data", "generate_base", "eval_base", "train",
                                                "generate_tuned", "eval_tuned", "report"]


class _CaptureBatch(TrainerCallback):
    def __init__(self):
        self.batch = None
        self.tokenizer = None

    def on_train_begin(self, args, state, control, train_dataloader=None, processing_class=None, **kwargs):
        self.batch = next(iter(train_dataloader))
        self.tokenizer = processing_class


def test_chat_loss_mask_covers_exactly_the_assistant_tokens(tmp_path):
    import trl

    # A real chat template as trl ships it (Qwen2.5's); trl swaps in its training
    # variant, with generation markers, for assistant-only loss.
    template = Path(trl.__file__).parent / "chat_templates" / "qwen2_5.jinja"
    folder = tmp_path / "chat"
    folder.mkdir()
    shutil.copy(template, folder / "qwen2_5.jinja")
    body = TINY + """
data:
  train: tickets.jsonl
  split: {validation: 0.1, seed: 1}
format:
  kind: chat
  chat_template: {file: qwen2_5.jinja}
  messages:
    - {role: system, content: Route the request.}
    - {role: user, content: "{{ text }}"}
    - {role: assistant, content: "{{ queue }}"}
method: {kind: sft, adapter: full}
training: {max_steps: 1, batch_size: 4, max_length: 256}
compute: {device: cpu}
"""
    spec = write_job(folder, body)
    capture = _CaptureBatch()
    ctx, _ = run_job(spec, callbacks=[capture])
    tok = capture.tokenizer
    rows = [json.loads(l) for l in (ctx.run_dir / "data/train.jsonl").read_text().splitlines()]
    answers = {r["messages"][-1]["content"] for r in rows}
    batch = capture.batch
    assert batch["input_ids"].shape[0] == 4
    for ids, labels in zip(batch["input_ids"].tolist(), batch["labels"].tolist()):
        pieces = []
        for token, label in zip(ids, labels):
            if token == tok.pad_token_id and label == -100:
                continue
            text = tok.decode([token])
            pieces.append((text, label != -100))
            if label != -100:
                assert label == token, "labels are the input ids where they carry loss"
        # Group the trained tokens into runs: each run is one assistant turn.
        runs, current = [], ""
        for text, is_trained in pieces:
            if is_trained:
                current += text
            elif current:
                runs.append(current)
                current = ""
        if current:
            runs.append(current)
        assert len(runs) == 1, runs
        # The template's generation block holds "\n" + answer + "<|im_end|>\n": the answer
        # and its end-of-turn token carry loss (so the model learns to stop), nothing else.
        span = runs[0]
        assert span.startswith("\n") and span.endswith("<|im_end|>\n"), span
        assert span[1: -len("<|im_end|>\n")] in answers
        whole = "".join(text for text, _ in pieces)
        assert whole.startswith("<|im_start|>system\nRoute the request.<|im_end|>\n<|im_start|>user\n")
        assert whole.endswith("<|im_start|>assistant" + span), "every token before the answer is masked, none after"


class _CrashAt(TrainerCallback):
    """Simulate a crash right after a checkpoint was written."""

    def __init__(self, step: int):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt("simulated crash")


@pytest.mark.parametrize("batching", ["padded", "length_grouped", "packed"])
def test_a_crashed_run_resumes_to_the_same_final_weights(tmp_path, batching):
    # Each batching mode orders or packs rows its own way; a resumed run must see the
    # same batches after the checkpoint as an uninterrupted one.
    body = BASE_BODY.replace("max_steps: 4", "max_steps: 6") + "method: {kind: sft, adapter: full}\n"
    mode = f"training.batching={batching}"
    straight = write_job(tmp_path / "a", body)
    ctx_a, _ = run_job(straight, mode)
    assert ctx_a.plan.training.batching.mode == batching
    crashed = write_job(tmp_path / "b", body)
    with pytest.raises(KeyboardInterrupt):
        run_job(crashed, mode, callbacks=[_CrashAt(4)])
    run_b = tmp_path / "b" / compile_spec(crashed, sets=[mode])[0].output.dir  # runs/job@training.batching=…
    assert not (run_b / "model").exists(), "no finished model where a crashed step left none"
    assert json.loads((run_b / "manifest.json").read_text())["status"] == "failed"
    ctx, lines = run_job(crashed, mode)
    assert any("resumed from checkpoint-4" in l for l in lines)
    a = load_file(ctx_a.run_dir / "model/model.safetensors")
    b = load_file(run_b / "model/model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from an uninterrupted run"
    steps = [json.loads(l)["step"] for l in (run_b / "metrics.jsonl").read_text().splitlines()
             if "loss" in json.loads(l)]
    assert steps == [1, 2, 3, 4, 5, 6], "metrics.jsonl has each step once"


def test_a_bad_row_past_the_validated_sample_stops_the_run_with_its_row(tmp_path):
    spec = write_job(tmp_path, BASE_BODY + "method: {kind: sft, adapter: full}\n")
    rows = (tmp_path / "tickets.jsonl").read_text().splitlines()
    rows += rows[:100]
    rows.append('{"id": "X", "queue": "billing"}')  # no text: the prompt cannot render
    (tmp_path / "tickets.jsonl").write_text("\n".join(rows) + "\n")
    out = run_cli(["run", str(spec)], cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert "tickets.jsonl:221: format.prompt: template error: 'text' is undefined" in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "runs/job/model").exists()


def test_data_changed_after_planning_is_refused(tmp_path):
    spec = write_job(tmp_path, BASE_BODY + "method: {kind: sft, adapter: full}\n")
    plan, _ = compile_spec(spec)
    with open(tmp_path / "tickets.jsonl", "a") as fh:
        fh.write('{"id": "Y", "text": "late row", "queue": "billing"}\n')
    with pytest.raises(SpecError, match="changed since the plan was made"):
        execute(plan, find_root(spec), echo=lambda _: None)


def test_tiny_model_with_a_bpe_tokenizer_trained_on_the_train_split(tmp_path):
    body = BASE_BODY.replace("  init_seed: 1\n", "  init_seed: 1\n  tokenizer: {kind: bpe, vocab_size: 320}\n")
    ctx, _ = run_job(write_job(tmp_path, body + "method: {kind: sft, adapter: full}\n", name="bpe"),
                     "training.max_steps=1")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ctx.run_dir / "data/base-model")
    assert len(tok) == 320
    text = "Where is my order #12345? Thanks!"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text, "byte-level BPE is lossless"
    assert len(ids) < len(text.encode()), "merges learned from the training split shorten the text"


def test_hub_dataset_sources_go_through_datasets(tmp_path, monkeypatch):
    import datasets

    rows = [json.loads(l) for l in (ROOT / "specs/data/support-tickets.jsonl").read_text().splitlines()[:60]]
    calls = []

    def fake_load_dataset(name, subset=None, split=None, revision=None):
        calls.append((name, subset, split, revision))
        return datasets.Dataset.from_list(rows)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    body = BASE_BODY.replace("train: tickets.jsonl", "train: {hub: org/tickets, split: train, revision: abc123}")
    ctx, _ = run_job(write_job(tmp_path, body + "method: {kind: sft, adapter: full}\n", name="hub"),
                     "training.max_steps=1")
    assert calls == [("org/tickets", None, "train", "abc123")]
    assert json.loads((ctx.run_dir / "data/stats.json").read_text())["splits"]["train"]["rows"] == 48


def test_choices_outside_the_allowed_labels_stop_the_run(tmp_path):
    body = BASE_BODY.replace("eval: {max_new_tokens: 12, limit: 8, metrics: [accuracy]}",
                             "eval: {mode: choices, choices: [account, billing, returns, shipping, technical]}")
    spec = write_job(tmp_path, body + "method: {kind: sft, adapter: full}\n")
    rows = (tmp_path / "tickets.jsonl").read_text().splitlines()
    rows += rows[:100] + ['{"id": "Z", "text": "hello", "queue": "sales"}']
    (tmp_path / "tickets.jsonl").write_text("\n".join(rows) + "\n")
    plan, _ = compile_spec(spec)
    with pytest.raises(SpecError) as err:
        execute(plan, find_root(spec), echo=lambda _: None)
    assert err.value.issues[0].format() == (
        "tickets.jsonl:221: eval.choices: the answer 'sales' is not one of eval.choices "
        "(account, billing, returns, shipping, technical)")


def test_a_local_pretrained_model_trains_with_lora(tmp_path):
    from ftspec.plan.model import TinyModel
    from ftspec.runtime.models import build_tiny

    tiny = {"architecture": "llama", "hidden_size": 32, "num_layers": 2, "num_heads": 4, "num_kv_heads": 4,
            "intermediate_size": 64, "max_position_embeddings": 256, "tokenizer": {"kind": "byte"}, "init_seed": 3}
    build_tiny(TinyModel.model_validate({"kind": "tiny", **tiny}), [], tmp_path / "local-model")
    body = BASE_BODY.replace(TINY, "\nmodel: {base: ./local-model}\n")
    lora = "method: {kind: sft, adapter: {kind: lora, r: 2, target_modules: [q_proj, v_proj]}}\n"
    ctx, _ = run_job(write_job(tmp_path, body + lora, name="local"), "training.max_steps=1")
    assert ctx.plan.model.model_dump() == {"kind": "pretrained", "source": "local", "name_or_path": "local-model",
                                           "revision": None, "dtype": "auto", "trust_remote_code": False,
                                           "tokenizer": None}
    config = json.loads((ctx.run_dir / "model/adapter_config.json").read_text())
    assert sorted(config["target_modules"]) == ["q_proj", "v_proj"]


def test_a_split_left_empty_by_skipped_rows_is_an_error(tmp_path):
    body = BASE_BODY.replace("  split: {validation: 0.1, test: 0.1, seed: 1}\n",
                             "  split: {validation: 0.1, test: 0.1, seed: 1}\n  on_bad_row: skip\n"
                             "  derive: {code: \"{{ {'nothing': 1}[queue] }}\"}\n")
    spec = write_job(tmp_path, body + "method: {kind: sft, adapter: full}\n")
    plan, _ = compile_spec(spec)
    with pytest.raises(SpecError, match="the train split is empty after skipping bad rows"):
        execute(plan, find_root(spec), echo=lambda _: None)
    assert not (tmp_path / "runs/job/data").exists()


def test_a_run_time_error_at_a_key_points_at_its_line_in_the_spec(tmp_path):
    """compute.device: cuda on a machine without CUDA is found when the run starts;
    the error names the spec's FILE:LINE:COL of the key, not just the key."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    spec = write_job(tmp_path,
                     BASE_BODY.replace("compute: {device: cpu}",
                                       "compute:\n  device: cuda") + "method: {kind: sft, adapter: full}\n")
    line = spec.read_text().splitlines().index("  device: cuda") + 1
    out = run_cli(["run", str(spec)], cwd=tmp_path)
    errors = [l for l in out.stderr.splitlines() if "compute.device" in l]
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert errors and errors[0].startswith(f"job.yaml:{line}:11: compute.device: cuda was asked for"), out.stderr


def test_a_max_length_that_cuts_every_answer_is_an_error_at_its_key(tmp_path):
    """Rows cut before their answer carry no loss; trl drops them, and training all of none
    would 'succeed' doing nothing."""
    body = BASE_BODY.replace("max_length: 128", "max_length: 12") + "method: {kind: sft, adapter: full}\n"
    spec = write_job(tmp_path, body)
    plan, _ = compile_spec(spec)
    with pytest.raises(SpecError) as err:
        execute(plan, find_root(spec), echo=lambda _: None)
    [issue] = err.value.issues
    assert issue.key == "training.max_length"
    assert "no training row keeps a token of its answer within 12" in issue.message
    assert not (tmp_path / "runs/job/model").exists()


def test_a_plan_that_does_not_know_its_row_count_trains_its_epochs(tmp_path):
    """Rows of a hub dataset (or of a file past validate's budget) are unknown when the plan
    is made, and so is the step count: the trainer counts the epochs itself."""
    from ftspec.plan.keys import plan_steps
    from ftspec.plan.model import Plan

    body = BASE_BODY.replace("max_steps: 4, ", "epochs: 1, ") + "method: {kind: sft, adapter: full}\n"
    spec = write_job(tmp_path, body)
    known, _ = compile_spec(spec)
    doc = known.to_dict()
    doc.pop("id")
    doc["training"].update(total_steps=None, steps_per_epoch=None)
    doc["data"]["rows"]["train"] = None
    doc["steps"] = plan_steps({**doc, "steps": []})
    result = execute(Plan.build(doc), find_root(spec), echo=lambda _: None)
    trained = json.loads((result.step_dir("train") / "train.json").read_text())
    assert trained["steps"] == known.training.total_steps == 12  # 96 rows / batch 8, one epoch


def test_a_folder_that_shadows_a_hub_id_is_refused_at_run_time(tmp_path, monkeypatch):
    """transformers would load ./org/model over the hub's org/model: the plan named the hub."""
    from ftspec.plan.model import PretrainedModel
    from ftspec.runtime.models import base_model_path

    model = PretrainedModel(kind="pretrained", source="hub", name_or_path="org/model")
    monkeypatch.chdir(tmp_path)
    assert base_model_path(model, tmp_path, tmp_path) == "org/model"
    (tmp_path / "org" / "model").mkdir(parents=True)
    with pytest.raises(SpecError) as err:
        base_model_path(model, tmp_path, tmp_path)
    [issue] = err.value.issues
    assert issue.key == "model.base" and "would be loaded instead" in issue.message


def test_a_chat_template_trl_cannot_mark_for_assistant_loss_is_one_line(tmp_path):
    """SmolLM2's own template has no {% generation %} markers and trl has no training
    variant of it: the run stops at the template's line, saying what to do, not with
    trl's traceback."""
    folder = tmp_path / "chat"
    folder.mkdir()
    (folder / "plain.jinja").write_text(
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    body = TINY + """
data:
  train: tickets.jsonl
  split: {validation: 0.1, seed: 1}
format:
  kind: chat
  chat_template: {file: plain.jinja}
  messages:
    - {role: user, content: "{{ text }}"}
    - {role: assistant, content: "{{ queue }}"}
method: {kind: sft, adapter: full}
training: {max_steps: 1, batch_size: 4, max_length: 256}
compute: {device: cpu}
"""
    spec = write_job(folder, body)
    out = run_cli(["run", str(spec)], cwd=folder)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    line = next(l for l in out.stderr.splitlines() if "format.chat_template" in l)
    assert line.startswith("job.yaml:17:18: format.chat_template: "), line
    assert "no {% generation %} markers" in line and "{builtin: chatml}" in line, line
