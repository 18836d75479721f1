"""The real model (SmolLM2-135M-Instruct, GGUF Q4_1, in ../shared/models): a few LoRA
steps end to end, through the prepare step's one-time conversion. Slow (a few minutes
on a CPU); skipped, with its reason, where ../shared/models is absent."""

from __future__ import annotations

import json

import pytest
from conftest import ROOT, SHARED

MODEL_DIR = SHARED / "models" / "smollm2-135m-instruct"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (MODEL_DIR / GGUF).is_file(), reason=f"the real model is not here ({MODEL_DIR / GGUF})"),
]

SPEC = f"""\
ftspec: 1
name: smollm2-few-steps
model: {{base: {MODEL_DIR}, gguf_file: {GGUF}}}
data:
  train: tickets.jsonl
  split: {{validation: 0.2, test: 0.2, seed: 1, stratify: queue}}
format:
  kind: chat
  messages:
    - {{role: system, content: "Route the support request to one queue: account, billing, returns, shipping or \
technical."}}
    - {{role: user, content: "{{{{ text }}}}"}}
    - {{role: assistant, content: "{{{{ queue }}}}"}}
  chat_template: {{builtin: chatml}}
  loss: assistant
method: {{kind: sft, adapter: {{kind: lora, r: 4, target_modules: [q_proj, v_proj]}}}}
training: {{max_steps: 2, batch_size: 4, max_length: 96, learning_rate: 1.0e-3, eval_every: 2, logging_steps: 1}}
eval: {{mode: choices, limit: 6, batch_size: 6, metrics: [accuracy]}}
compute: {{device: cpu}}
"""


def test_a_few_lora_steps_on_the_real_gguf_model(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file

    from ftspec.backends.executor import execute
    from ftspec.plan.compile import compile_spec, find_root

    lines = (ROOT / "specs/data/support-tickets.jsonl").read_text(encoding="utf-8").splitlines()[:40]
    (tmp_path / "tickets.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    spec = tmp_path / "job.yaml"
    spec.write_text(SPEC, encoding="utf-8")
    plan, _ = compile_spec(spec, allow=[SHARED])
    assert plan.model.gguf_file == GGUF and len(plan.model.gguf_sha256) == 64

    echoed: list[str] = []
    ctx = execute(plan, find_root(spec), echo=echoed.append)
    run = ctx.run_dir
    base = run / "data" / "base-model"
    assert (base / "model.safetensors").is_file() and (base / "tokenizer.json").is_file()
    assert json.loads((base / "config.json").read_text())["model_type"] == "llama"
    assert any("converted " + GGUF in line for line in echoed)
    adapter = load_file(run / "model" / "adapter_model.safetensors")
    assert [k for k in adapter if "lora_B" in k] and all(v.abs().sum() > 0 for k, v in adapter.items() if "lora_B" in k)
    metrics = json.loads((run / "report" / "metrics.json").read_text())
    assert metrics  # base and tuned were scored

    # The model's own chat template (from the GGUF file) renders these conversations to
    # the same text as the built-in ChatML the spec names for its generation markers.
    from transformers import AutoTokenizer

    own = AutoTokenizer.from_pretrained(base)
    rows = [json.loads(line) for line in (run / "data" / "test.jsonl").read_text().splitlines()]
    template = (ROOT / "templates" / "chatml.jinja").read_text()
    for row in rows:
        assert own.apply_chat_template(row["messages"], tokenize=False) == \
            own.apply_chat_template(row["messages"], tokenize=False, chat_template=template)

    # A second run converts nothing: every step, the conversion included, is reused.
    again: list[str] = []
    execute(plan, find_root(spec), echo=again.append)
    assert not any("converted" in line for line in again)
    del torch
