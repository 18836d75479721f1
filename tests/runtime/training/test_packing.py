"""Packed rows never see each other: each sequence's logits and loss are the same
packed and alone (with the KV cache off, the known pitfall); the compiler's
batching choice reaches the trainer."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from helpers import BASE_BODY, run_job, write_job  # noqa: E402
from transformers import AutoModelForCausalLM, TrainerCallback  # noqa: E402

from ftspec.core.errors import SpecError  # noqa: E402
from ftspec.plan.compile import compile_spec  # noqa: E402
from ftspec.runtime.models import byte_tokenizer, tiny_config  # noqa: E402

TEXTS = ["Request: my card was charged twice\nQueue: billing", "hi", "Request: where is order 12?\nQueue: shipping"]


def _model(arch, attention="sdpa"):
    tok = byte_tokenizer()
    spec = {"architecture": arch, "hidden_size": 32, "num_layers": 2, "num_heads": 4,
            "num_kv_heads": 2 if arch != "gpt2" else 4,
            "intermediate_size": 64, "max_position_embeddings": 256}
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config(SimpleNamespace(**spec), tok),
                                             attn_implementation=attention).eval()
    assert model.config._attn_implementation == attention
    return model, tok


def _packed(tok):
    seqs = [torch.tensor(tok(t)["input_ids"]) for t in TEXTS]
    ids = torch.cat(seqs)[None]
    pos = torch.cat([torch.arange(len(s)) for s in seqs])[None]
    return seqs, ids, pos


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral", "gpt2"])
def test_packed_sequences_do_not_see_each_other(arch, attention):
    model, tok = _model(arch, attention)
    seqs, ids, pos = _packed(tok)
    with torch.no_grad():
        packed = model(input_ids=ids, position_ids=pos, use_cache=False).logits[0]
        start = 0
        for s in seqs:
            alone = model(input_ids=s[None]).logits[0]
            assert torch.allclose(packed[start:start + len(s)], alone, atol=1e-5), f"{arch}: logits differ when packed"
            loss_packed = torch.nn.functional.cross_entropy(packed[start:start + len(s) - 1], s[1:])
            loss_alone = torch.nn.functional.cross_entropy(alone[:-1], s[1:])
            assert loss_packed.item() == pytest.approx(loss_alone.item(), abs=1e-5)
            start += len(s)


def test_with_the_kv_cache_on_packed_sequences_leak():
    """Why training with packing turns the KV cache off."""
    model, tok = _model("llama")
    seqs, ids, pos = _packed(tok)
    with torch.no_grad():
        packed = model(input_ids=ids, position_ids=pos, use_cache=True).logits[0]
        alone = model(input_ids=seqs[1][None]).logits[0]
    assert not torch.allclose(packed[len(seqs[0]):len(seqs[0]) + len(seqs[1])], alone, atol=1e-3)


class _Capture(TrainerCallback):
    def on_train_begin(self, args, state, control, model=None, train_dataloader=None, **kwargs):
        self.args, self.use_cache = args, model.config.use_cache
        batches = train_dataloader.batch_sampler
        self.sampler = getattr(batches, "sampler", None) or getattr(batches.batch_sampler, "sampler", None)


@pytest.mark.parametrize("mode", ["packed", "length_grouped", "padded"])
def test_the_batching_mode_reaches_the_trainer(tmp_path, mode):
    body = BASE_BODY.replace("max_steps: 4", "max_steps: 2").replace(
        "logging_steps: 1}", f"logging_steps: 1, batching: {mode}}}")
    spec = write_job(tmp_path, body + "method: {kind: sft, adapter: full}\n")
    capture = _Capture()
    ctx, _ = run_job(spec, callbacks=[capture])
    assert ctx.plan.training.batching.model_dump() == {"mode": mode, "reason": "set in the spec"}
    assert getattr(capture.args, "packing", False) is (mode == "packed")
    assert getattr(capture.args, "padding_free", False) is (mode == "packed")
    assert capture.args.train_sampling_strategy == ("group_by_length" if mode == "length_grouped" else "random")
    assert (type(capture.sampler).__name__ == "LengthBuckets") is (mode == "length_grouped"), type(capture.sampler)
    assert capture.use_cache is False


def test_auto_batching_is_explained_in_the_plan(tmp_path):
    spec = write_job(tmp_path, BASE_BODY + "method: {kind: sft, adapter: full}\n")
    batching = compile_spec(spec)[0].training.batching.model_dump()
    assert batching["mode"] == "padded" and "row length follows the label" in batching["reason"]


def test_dpo_cannot_pack(tmp_path):
    body = BASE_BODY.replace("logging_steps: 1}", "logging_steps: 1, batching: packed}").replace(
        "format:\n  kind: prompt_completion", "format:\n  kind: preference").replace(
        '  completion: " {{ queue }}"', '  chosen: " {{ queue }}"\n  rejected: " no"')
    spec = write_job(tmp_path, body + "method: {kind: dpo}\n")
    with pytest.raises(SpecError, match="DPO batches preference pairs itself; packed is for SFT"):
        compile_spec(spec)


def _balanced_spec(tmp_path, rows):
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "rows.jsonl").write_text("".join(__import__("json").dumps(r) + "\n" for r in rows))
    spec = tmp_path / "s.yaml"
    spec.write_text("ftspec: 1\nname: s\nmodel: {kind: tiny, hidden_size: 32, num_heads: 4}\n"
                    "data: {train: rows.jsonl, split: {validation: 0.1}}\n"
                    "format: {kind: prompt_completion, prompt: '{{ text }}', completion: ' {{ label }}'}\n"
                    "training: {max_length: 256}\n")
    return spec


def test_auto_groups_by_length_only_when_length_says_little_about_the_label(tmp_path):
    import random

    rng = random.Random(0)
    # Lengths drawn independently of the label: grouping by length keeps batches mixed.
    mixed = [{"text": "w " * rng.randint(2, 60), "label": rng.choice(["yes", "no"])} for _ in range(200)]
    batching = compile_spec(_balanced_spec(tmp_path / "mixed", mixed))[0].training.batching.model_dump()
    assert batching["mode"] == "length_grouped" and "eta²" in batching["reason"]
    # Long rows are "yes", short ones "no": grouping by length would make one-label batches.
    tied = [{"text": "w " * (rng.randint(40, 60) if i % 2 else rng.randint(2, 20)), "label": "yes" if i % 2 else "no"}
            for i in range(200)]
    batching = compile_spec(_balanced_spec(tmp_path / "tied", tied))[0].training.batching.model_dump()
    assert batching["mode"] == "padded" and "row length follows the label" in batching["reason"]
    # Free-text answers are not labels: group by length.
    free = [{"text": "w " * rng.randint(2, 60), "label": f"answer {i}"} for i in range(200)]
    assert compile_spec(_balanced_spec(tmp_path / "free", free))[0].training.batching.mode == "length_grouped"


def test_with_flash_attention_auto_packs(tmp_path):
    rows = [{"text": "w " * (i % 50 + 2), "label": "yes" if i % 2 else "no"} for i in range(200)]
    spec = _balanced_spec(tmp_path, rows)
    spec.write_text(spec.read_text() + "compute: {device: cuda, attention: flash_attention_2}\n")
    plan = compile_spec(spec)[0]
    assert plan.compute.attention == "flash_attention_2"
    batching = plan.training.batching.model_dump()
    assert batching["mode"] == "packed" and "FlashAttention" in batching["reason"]


@pytest.mark.parametrize("compute, message", [
    ("{device: cpu, attention: flash_attention_2}", "compute.attention: flash_attention_2 needs a CUDA GPU"),
    ("{device: cuda, precision: fp32, attention: flash_attention_2}",
     "compute.attention: flash_attention_2 needs bf16 or fp16"),
])
def test_flash_attention_needs_a_gpu_and_half_precision(tmp_path, compute, message):
    rows = [{"text": "w " * (i % 50 + 2), "label": "yes" if i % 2 else "no"} for i in range(200)]
    spec = _balanced_spec(tmp_path, rows)
    spec.write_text(spec.read_text() + f"compute: {compute}\n")
    with pytest.raises(SpecError, match=message.replace(".", r"\.")):
        compile_spec(spec)


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_the_attention_implementation_reaches_the_model(tmp_path, attention):
    class Attention(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self.seen = model.config._attn_implementation

    body = BASE_BODY.replace("max_steps: 4", "max_steps: 1").replace(
        "compute: {device: cpu}", f"compute: {{device: cpu, attention: {attention}}}")
    spec = write_job(tmp_path, body + "method: {kind: sft, adapter: full}\n")
    seen = Attention()
    ctx, _ = run_job(spec, callbacks=[seen])
    assert ctx.plan.compute.attention == attention and seen.seen == attention


def test_flash_attention_without_its_package_is_one_line_naming_the_field(tmp_path, monkeypatch):
    from ftspec.runtime import models

    spec = write_job(tmp_path, BASE_BODY + "method: {kind: sft, adapter: full}\n")
    plan = compile_spec(spec)[0]
    models.build_tiny(plan.model, TEXTS * 10, tmp_path / "data" / "base-model")
    with pytest.raises(SpecError) as err:
        models.load_model(plan.model, tmp_path, tmp_path / "data", torch.float32, "cpu", attention="flash_attention_2")
    text = str(err.value)
    assert text.count("compute.attention") == 1 and "\n" not in text.strip(), text
