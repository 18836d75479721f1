"""`ftspec export` of the real model (SmolLM2-135M-Instruct, GGUF Q4_1, in ../shared/models):
a LoRA step, merged and exported with its GGUF file; both checked against the trained
model, and the exported chat model stops at <|im_end|>. Slow (minutes on a CPU); skipped,
with its reason, where ../shared/models is absent."""

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
name: smollm2-export
model: {{base: {MODEL_DIR}, gguf_file: {GGUF}}}
data:
  train: tickets.jsonl
  split: {{test: 0.2, validation: 0, seed: 1}}
format:
  kind: chat
  messages:
    - {{role: user, content: "Route to a queue: {{{{ text }}}}"}}
    - {{role: assistant, content: "{{{{ queue }}}}"}}
  chat_template: {{builtin: chatml}}
  loss: assistant
method: {{kind: sft, adapter: {{kind: lora, r: 4, target_modules: [q_proj, v_proj]}}}}
training: {{max_steps: 1, batch_size: 4, max_length: 96, learning_rate: 1.0e-3}}
eval: {{mode: choices, limit: 4, batch_size: 4, metrics: [accuracy]}}
compute: {{device: cpu}}
"""


def test_the_real_model_exports_merged_with_a_gguf_file_that_reads_back(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("gguf")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ftspec.backends.executor import execute
    from ftspec.plan.compile import compile_spec, find_root
    from ftspec.runtime.tools.export import export_model

    lines = (ROOT / "specs/data/support-tickets.jsonl").read_text(encoding="utf-8").splitlines()[:30]
    (tmp_path / "tickets.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    spec = tmp_path / "job.yaml"
    spec.write_text(SPEC, encoding="utf-8")
    plan, _ = compile_spec(spec, allow=[SHARED])
    execute(plan, find_root(spec), echo=lambda line: None)

    echoed: list[str] = []
    dest = tmp_path / "exported"
    result = export_model(plan, find_root(spec), dest, echo=echoed.append, gguf="F32")
    assert result.kind == "merged" and result.diff <= result.tolerance
    assert any(line.startswith("parity (GGUF)") for line in echoed), echoed

    tok = AutoTokenizer.from_pretrained(dest)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    gen = json.loads((dest / "generation_config.json").read_text())
    stops = gen["eos_token_id"] if isinstance(gen["eos_token_id"], list) else [gen["eos_token_id"]]
    assert im_end in stops
    read_tok = AutoTokenizer.from_pretrained(dest / "gguf", gguf_file="model.gguf")
    text = tok.apply_chat_template([{"role": "user", "content": 'Is this movie review positive or negative? '
                                     '"A gorgeous, witty, seductive movie." Answer with one word.'}],
                                   add_generation_prompt=True, tokenize=False)
    assert read_tok(text)["input_ids"] == tok(text)["input_ids"]
    assert read_tok.chat_template == tok.chat_template

    model = AutoModelForCausalLM.from_pretrained(dest)
    prompt = tok(text, return_tensors="pt")
    out = model.generate(**prompt, max_new_tokens=64, do_sample=False)
    new = out[0, prompt["input_ids"].shape[1]:].tolist()
    assert new[-1] in stops and len(new) < 64, f"did not stop: {tok.decode(new)!r}"
    print("\n".join(echoed), "\nanswer:", tok.decode(new))
