"""`ftspec export` on tiny models, offline: full and LoRA (merged, or kept with --adapter),
the parity check (a tampered weight fails the export and leaves nothing), the refusal
of an untrained spec, the model card, and a generation config that stops generation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("trl")

from conftest import run_cli  # noqa: E402
from helpers import BASE_BODY, TINY, run_job, write_job  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from ftspec.core.errors import SpecError  # noqa: E402
from ftspec.plan.compile import find_root  # noqa: E402
from ftspec.runtime.tools import export as X  # noqa: E402


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Two finished runs: a full fine-tune and a LoRA one (4 steps each)."""
    root = tmp_path_factory.mktemp("export")
    out = {}
    for name, method in (("full", "{kind: sft, adapter: full}"), ("lora", "{kind: sft, adapter: {kind: lora, r: 4}}")):
        spec = write_job(root / name, BASE_BODY + f"method: {method}\n")
        ctx, _ = run_job(spec)
        out[name] = (spec, ctx.plan, ctx.run_dir)
    return out


def _export(entry, dest: Path, **kw):
    spec, plan, _ = entry
    lines: list[str] = []
    result = X.export_model(plan, find_root(spec), dest, echo=lines.append, **kw)
    return result, lines


def _held_out_ids(run_dir: Path, tok) -> torch.Tensor:
    row = json.loads((run_dir / "data/test.jsonl").read_text().splitlines()[0])
    return torch.tensor([tok(row["prompt"] + row["completion"])["input_ids"]])


def test_a_full_fine_tune_is_exported_with_the_trained_weights_and_a_model_card(trained, tmp_path):
    spec, plan, run_dir = trained["full"]
    dest = tmp_path / "exported"
    result, lines = _export(trained["full"], dest)
    assert result.kind == "full" and result.dtype == "float32"
    assert any(line.startswith("parity: max |Δ logit|") for line in lines)
    assert result.max_abs_diff <= 1e-3

    model = AutoModelForCausalLM.from_pretrained(dest)
    tok = AutoTokenizer.from_pretrained(dest)
    trained_model = AutoModelForCausalLM.from_pretrained(run_dir / "model")
    ids = _held_out_ids(run_dir, tok)
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, trained_model(input_ids=ids).logits, atol=1e-5)
    assert model.config.use_cache is True, "training turns the KV cache off; an exported model needs it"
    assert tok.eos_token == "</s>" and tok.pad_token == "<pad>"
    assert not (dest / "training_args.bin").exists()

    card = (dest / "README.md").read_text(encoding="utf-8")
    assert plan.id in card
    assert plan.data.sources["train"].sha256 in card
    assert "name: job" in card and "adapter: full" in card  # the spec's text
    report = json.loads((run_dir / "metrics.json").read_text())
    tuned = f"{report['tuned']['accuracy']:.3f}"
    assert f"| accuracy | {report['majority']['accuracy']:.3f}" in card and tuned in card
    assert "AutoModelForCausalLM.from_pretrained" in card
    # Nothing else was written beside the folder.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exported"]


def test_a_lora_adapter_is_merged_into_its_base(trained, tmp_path):
    spec, plan, run_dir = trained["lora"]
    dest = tmp_path / "merged"
    result, _ = _export(trained["lora"], dest)
    assert result.kind == "merged"
    assert not (dest / "adapter_config.json").exists() and (dest / "model.safetensors").is_file()

    from peft import PeftModel

    model = AutoModelForCausalLM.from_pretrained(dest)
    tok = AutoTokenizer.from_pretrained(dest)
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(run_dir / "data/base-model"),
                                          run_dir / "model")
    base = AutoModelForCausalLM.from_pretrained(run_dir / "data/base-model")
    ids = _held_out_ids(run_dir, tok)
    with torch.no_grad():
        got, want, before = (m(input_ids=ids).logits for m in (model, reference, base))
    assert (got - want).abs().max().item() <= 1e-4
    assert (got - before).abs().max().item() > 1e-4, "the merged model must differ from the base"
    assert not any("lora" in k for k in model.state_dict())


def test_adapter_keeps_the_adapter_with_a_base_it_can_load(trained, tmp_path):
    spec, plan, run_dir = trained["lora"]
    dest = tmp_path / "adapter"
    result, _ = _export(trained["lora"], dest, adapter=True)
    assert result.kind == "adapter"
    config = json.loads((dest / "adapter_config.json").read_text())
    # The tiny base exists only in the step store: it goes with the adapter.
    assert config["base_model_name_or_path"] == "base-model"
    assert (dest / "base-model/model.safetensors").is_file()
    assert (dest / "adapter_model.safetensors").is_file() and not (dest / "model.safetensors").exists()

    from peft import PeftModel

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(dest / "base-model"), dest)
    merged_dest = tmp_path / "merged"
    _export(trained["lora"], merged_dest)
    merged = AutoModelForCausalLM.from_pretrained(merged_dest)
    tok = AutoTokenizer.from_pretrained(dest)
    ids = _held_out_ids(run_dir, tok)
    with torch.no_grad():
        assert (model(input_ids=ids).logits - merged(input_ids=ids).logits).abs().max().item() <= 1e-4
    assert "PeftModel.from_pretrained" in (dest / "README.md").read_text()


def test_adapter_of_a_full_fine_tune_is_refused(trained, tmp_path):
    with pytest.raises(SpecError, match="no adapter to keep"):
        _export(trained["full"], tmp_path / "x", adapter=True)
    assert not (tmp_path / "x").exists()


def test_a_tampered_weight_fails_the_parity_check_and_nothing_is_written(trained, tmp_path):
    def tampered(*args):
        model = X.build_model(*args)
        with torch.no_grad():
            model.model.layers[0].mlp.down_proj.weight.add_(0.05)
        return model

    dest = tmp_path / "out"
    with pytest.raises(X.ParityError,
                       match=r"does not match the trained one: max \|Δ logit\| 1\.\d+e-0[12] over 4 held-out rows, "
                             r"float32 export \(tolerance 1e-03\)"):
        _export(trained["lora"], dest, builder=tampered)
    assert list(tmp_path.iterdir()) == [], "no partial folder, no DIR"


def test_a_non_empty_folder_is_refused_without_force_and_replaced_with_it(trained, tmp_path):
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine")
    with pytest.raises(SpecError, match="exists and is not empty"):
        _export(trained["full"], dest)
    assert (dest / "keep.txt").read_text() == "mine"
    _export(trained["full"], dest, force=True)
    assert not (dest / "keep.txt").exists() and (dest / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    empty = tmp_path / "empty"
    empty.mkdir()
    _export(trained["full"], empty)  # an empty folder is fine
    assert (empty / "config.json").is_file()


def test_every_exported_file_has_the_users_umask(trained, tmp_path):
    """transformers writes model.safetensors private (0600); what ftspec exports is the user's."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        _export(trained["full"], tmp_path / "out")
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "out").rglob("*") if p.is_file()}
    assert modes["model.safetensors"] == 0o644 and set(modes.values()) == {0o644}, modes
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o755


def test_export_of_a_spec_not_trained_is_refused_with_the_command_to_run(trained, tmp_path):
    spec, _, _ = trained["lora"]
    # Another learning rate: another train key, never trained.
    proc = run_cli(["export", str(spec), "--set", "training.learning_rate=0.002", "-o", str(tmp_path / "out")],
                   cwd=spec.parent)
    assert proc.returncode == 2, proc.stderr
    assert "ftspec run" in proc.stderr and "learning_rate=0.002" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_the_cli_exports_and_prints_the_parity(trained, tmp_path):
    spec, _, _ = trained["full"]
    proc = run_cli(["export", str(spec), "-o", str(tmp_path / "out")], cwd=spec.parent)
    assert proc.returncode == 0, proc.stderr
    assert "parity: max |Δ logit| 0.00e+00" in proc.stdout
    assert (tmp_path / "out/generation_config.json").is_file()


CHAT_BODY = TINY + """
data:
  train: tickets.jsonl
  split: {validation: 0.1, test: 0.1, seed: 1}
format:
  kind: chat
  chat_template: {file: qwen2_5.jinja}
  messages:
    - {role: user, content: "{{ text }}"}
    - {role: assistant, content: "{{ queue }}"}
method: {kind: sft, adapter: {kind: lora, r: 2}}
training: {max_steps: 1, batch_size: 4, max_length: 256}
eval: {baseline: false, limit: 2, max_new_tokens: 4}
compute: {device: cpu}
"""


def test_a_chat_model_stops_at_the_end_of_its_turn(tmp_path):
    import trl
    from transformers import LogitsProcessor, LogitsProcessorList

    folder = tmp_path / "chat"
    folder.mkdir()
    shutil.copy(Path(trl.__file__).parent / "chat_templates" / "qwen2_5.jinja", folder / "qwen2_5.jinja")
    spec = write_job(folder, CHAT_BODY)
    ctx, _ = run_job(spec)
    dest = tmp_path / "out"
    result, _ = _export((spec, ctx.plan, ctx.run_dir), dest)

    tok = AutoTokenizer.from_pretrained(dest)
    assert tok.chat_template and "<|im_start|>" in tok.chat_template
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    gen = json.loads((dest / "generation_config.json").read_text())
    assert im_end in gen["eos_token_id"] and tok.eos_token_id in gen["eos_token_id"]
    assert result.eos_token_ids == gen["eos_token_id"]

    class EndTurnAt(LogitsProcessor):
        """Writes <|im_end|> as the 3rd new token, as a trained model ends its answer."""

        def __init__(self, start: int):
            self.start = start

        def __call__(self, input_ids, scores):
            if input_ids.shape[1] - self.start == 2:
                scores[:] = -float("inf")
                scores[:, im_end] = 0.0
            return scores

    model = AutoModelForCausalLM.from_pretrained(dest)
    prompt = tok.apply_chat_template([{"role": "user", "content": "my parcel is late"}], add_generation_prompt=True,
                                     return_dict=True, return_tensors="pt")
    start = prompt["input_ids"].shape[1]
    out = model.generate(**prompt, max_new_tokens=20, do_sample=False,
                         logits_processor=LogitsProcessorList([EndTurnAt(start)]))
    new = out[0, start:].tolist()
    assert new[-1] == im_end and len(new) == 3, "generate() stops at the end of the turn, not at max_new_tokens"


def test_gguf_round_trips_through_transformers_with_the_same_tokens_and_logits(trained, tmp_path):
    pytest.importorskip("gguf")
    spec, plan, run_dir = trained["lora"]
    dest = tmp_path / "out"
    _, lines = _export(trained["lora"], dest, gguf="F32")
    assert any(line.startswith("parity (GGUF): max |Δ logit|") for line in lines)
    merged = AutoModelForCausalLM.from_pretrained(dest)
    tok = AutoTokenizer.from_pretrained(dest)
    read = AutoModelForCausalLM.from_pretrained(dest / "gguf", gguf_file="model.gguf", dtype=torch.float32)
    read_tok = AutoTokenizer.from_pretrained(dest / "gguf", gguf_file="model.gguf")
    text = json.loads((run_dir / "data/test.jsonl").read_text().splitlines()[0])["prompt"]
    assert read_tok(text)["input_ids"] == tok(text)["input_ids"]
    assert read_tok.eos_token == tok.eos_token and read_tok.pad_token == tok.pad_token
    ids = _held_out_ids(run_dir, tok)
    with torch.no_grad():
        assert (read(input_ids=ids).logits - merged(input_ids=ids).logits).abs().max().item() <= 1e-4
    card = (dest / "README.md").read_text()
    assert "`gguf/model.gguf` (F32" in card
    assert json.loads((dest / "ftspec-export.json").read_text())["gguf"]["type"] == "F32"


def test_gguf_of_another_architecture_or_of_an_adapter_is_refused(tmp_path, trained):
    with pytest.raises(SpecError, match="without --adapter"):
        _export(trained["lora"], tmp_path / "a", adapter=True, gguf="F32")
    spec = write_job(tmp_path / "gpt2", BASE_BODY.replace("  kind: tiny\n", "  kind: tiny\n  architecture: gpt2\n")
                     + "method: {kind: sft, adapter: full}\n", name="g")
    ctx, _ = run_job(spec, "training.max_steps=1")
    with pytest.raises(SpecError, match="llama architecture only"):
        _export((spec, ctx.plan, ctx.run_dir), tmp_path / "b", gguf="F32")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no partial folder left"


def test_the_export_is_in_the_base_models_dtype(tmp_path):
    from safetensors import safe_open

    from ftspec.plan.model import TinyModel
    from ftspec.runtime.models import build_tiny

    tiny = {"architecture": "llama", "hidden_size": 32, "num_layers": 2, "num_heads": 4, "num_kv_heads": 4,
            "intermediate_size": 64, "max_position_embeddings": 256, "tokenizer": {"kind": "byte"}, "init_seed": 3}
    folder = tmp_path / "local-model"
    build_tiny(TinyModel.model_validate({"kind": "tiny", **tiny}), [], folder)
    AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16).save_pretrained(folder)  # a bfloat16 checkpoint
    body = BASE_BODY.replace(TINY, "\nmodel: {base: ./local-model}\n")
    spec = write_job(tmp_path, body + "method: {kind: sft, adapter: {kind: lora, r: 2}}\n", name="local")
    ctx, _ = run_job(spec, "training.max_steps=2")
    dest = tmp_path / "out"
    result, lines = _export((spec, ctx.plan, ctx.run_dir), dest)
    assert result.dtype == "bfloat16" and result.measure == "relative" and result.diff <= 2e-2
    assert "parity: max |Δ logit| / max |logit|" in lines[0]
    with safe_open(str(dest / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}
