"""A LoRA model is evaluated with its adapter merged into the base's weights (one matrix
product a layer instead of three): its scores are those of the adapter kept apart."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from helpers import BASE_BODY, run_job, write_job  # noqa: E402

from ftspec.plan.compile import compile_spec, find_root  # noqa: E402
from ftspec.runtime import models  # noqa: E402
from ftspec.runtime.training import builders  # noqa: E402


def test_the_evaluated_lora_model_is_merged_and_scores_the_same(tmp_path):
    body = BASE_BODY.replace("learning_rate: 1.0e-3", "learning_rate: 3.0e-2") + \
        "method: {kind: sft, adapter: {kind: lora, r: 4, dropout: 0.0}}\ncompute: {device: cpu, precision: fp32}\n"
    spec = write_job(tmp_path, body.replace("compute: {device: cpu}\n", ""))
    ctx, _ = run_job(spec)
    plan, _ = compile_spec(spec)
    data_dir, model_dir = ctx.run_dir / "data", ctx.run_dir / "model"
    merged, tokenizer = models.load_evaluated(plan, find_root(spec), data_dir, model_dir)
    assert not any("lora" in name for name, _ in merged.named_parameters())  # no adapter layer left
    apart = models.load_tuned(plan.model, "lora", plan.compute.attention, find_root(spec), data_dir, model_dir,
                              builders.model_dtype(plan.model, "fp32"), "cpu")
    assert any("lora" in name for name, _ in apart.named_parameters())
    base = models.load_model(plan.model, find_root(spec), data_dir, torch.float32, "cpu")
    ids = tokenizer(["Request: my parcel never arrived\nQueue: shipping"], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        a, b, c = (m(input_ids=ids).logits for m in (merged, apart, base))
    assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()
    assert (b - c).abs().max() > 1e-3  # the adapter changed the answers: the comparison is not of two bases
