"""`ftspec plan SPEC -o FILE` then `ftspec run --plan FILE` (ftspec/commands/apply.py): the plan
file runs exactly as reviewed, or not at all, each difference named on its own line."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import ROOT
from helpers import BASE_BODY, HEAVY, PROBE, TINY, write_job

from ftspec.cli import main
from ftspec.commands import apply as A
from ftspec.core.errors import Pos
from ftspec.plan.model import Plan

BODY = BASE_BODY.replace("max_steps: 4", "max_steps: 2") + "method: {kind: sft, adapter: full}\n"


def invoke(folder: Path, *args: str):
    """`ftspec ARGS` in-process, from ``folder`` (the spec's repository)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        return CliRunner().invoke(main, list(args))


def made_plan(folder: Path, body: str = BODY) -> Path:
    write_job(folder, body, "spec")
    result = invoke(folder, "plan", "spec.yaml", "-o", "plan.json")
    assert result.exit_code == 0, result.output
    return folder / "plan.json"


def refused(folder: Path, plan_file: str = "plan.json") -> list[str]:
    """The lines of a refused `run --plan`; nothing ran."""
    result = invoke(folder, "run", "--plan", plan_file)
    assert result.exit_code == 2, result.output
    assert not (folder / "runs").exists()
    return [line for line in result.output.splitlines() if not line.startswith("ftspec: ")]


def edit_made_with(plan_file: Path, change) -> None:
    data = json.loads(plan_file.read_text())
    change(data["made_with"])
    plan_file.write_text(json.dumps(data, indent=2))


def test_an_unchanged_repository_runs_the_plan_file_and_reuses_every_step(tmp_path):
    write_job(tmp_path, BODY, "spec")
    assert invoke(tmp_path, "run", "spec.yaml").exit_code == 0
    plan_file = made_plan(tmp_path)
    result = invoke(tmp_path, "run", "--plan", "plan.json")
    assert result.exit_code == 0, result.output
    plan = Plan.from_json(json.dumps({k: v for k, v in json.loads(plan_file.read_text()).items() if k != "made_with"}))
    for step in plan.steps:
        assert f"{step.name}: up to date (key {step.key[:8]})" in result.output
    assert " ran " not in result.output and "warning: made" not in result.output
    # The spec given too must be the plan's own.
    assert invoke(tmp_path, "run", "spec.yaml", "--plan", "plan.json").exit_code == 0


def test_a_changed_data_byte_is_refused_naming_the_field_and_the_file(tmp_path):
    made_plan(tmp_path)
    data = tmp_path / "tickets.jsonl"
    text = data.read_text()
    data.write_text(text.replace("a", "b", 1))
    assert refused(tmp_path) == [
        "plan.json: data.sources.train.sha256: changed: tickets.jsonl is not the file the plan was made from"]


def test_a_pinned_library_at_another_version_is_refused_as_run_locked_refuses_it(tmp_path):
    plan_file = made_plan(tmp_path)
    edit_made_with(plan_file, lambda m: m["versions"].update(transformers="0.0.1"))
    [line] = refused(tmp_path)
    assert line.startswith("plan.json: made_with.versions.transformers: made with transformers 0.0.1, here ")
    assert "refused" in line and "install transformers==0.0.1, or make the plan again here" in line


def test_what_does_not_change_the_computation_is_a_warning_that_says_why(tmp_path):
    plan_file = made_plan(tmp_path)
    edit_made_with(plan_file, lambda m: (m["versions"].update(tokenizers="0.0.1"),
                                         m.update(device={"kind": "cuda", "gpus": ["NVIDIA H100 80GB HBM3"]})))
    applied = A.read_plan_file(plan_file)
    issues = A.made_with_differences(applied, applied.plan, tmp_path)
    assert [(i.key, i.is_error) for i in issues] == [("made_with.versions.tokenizers", False),
                                                     ("made_with.device", False)]
    assert "made on cuda (NVIDIA H100 80GB HBM3), applied on " in issues[1].message
    assert "compute.precision `auto` may resolve differently here" in issues[1].message


def test_a_changed_template_file_is_refused_naming_the_template_and_its_file(tmp_path):
    (tmp_path / "prompt.j2").write_text("Request: {{ text }}\nQueue:")
    made_plan(tmp_path, BODY.replace('prompt: "Request: {{ text }}\\nQueue:"', "prompt: {file: prompt.j2}"))
    (tmp_path / "prompt.j2").write_text("Ticket: {{ text }}\nQueue:")
    lines = refused(tmp_path)
    assert ('plan.json: format.templates.prompt: changed: the text of prompt.j2 is not the text the plan was made '
            'from: planned "Request: {{ text }}\\nQueue:", now "Ticket: {{ text }}\\nQueue:"') in lines


def test_a_changed_byte_of_the_gguf_file_is_refused(tmp_path):
    pytest.importorskip("gguf")
    (tmp_path / "model").mkdir()
    write_gguf(tmp_path / "model" / "tiny.gguf")
    made_plan(tmp_path, BODY.replace(TINY, "\nmodel: {base: ./model, gguf_file: tiny.gguf}\n").replace(
        "adapter: full", "adapter: {kind: lora, r: 2}"))
    gguf_file = tmp_path / "model" / "tiny.gguf"
    data = bytearray(gguf_file.read_bytes())
    data[-1] ^= 1  # a weight, past the header validate reads
    gguf_file.write_bytes(bytes(data))
    assert refused(tmp_path) == [
        "plan.json: model.gguf_sha256: changed: model/tiny.gguf is not the file the plan was made from"]


def test_a_local_model_folder_is_hashed_into_the_plan_file_and_a_change_refused(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps({
        "model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": 32, "num_hidden_layers": 1,
        "num_attention_heads": 4, "intermediate_size": 64, "max_position_embeddings": 256, "vocab_size": 300}))
    (tmp_path / "m" / "model.safetensors").write_bytes(b"weights")
    plan_file = made_plan(tmp_path, BODY.replace(TINY, "\nmodel: {base: ./m}\n"))
    assert list(json.loads(plan_file.read_text())["made_with"]["models"]) == ["m"]
    (tmp_path / "m" / "model.safetensors").write_bytes(b"Weights")  # not in the plan: only the folder's hash sees it
    [line] = refused(tmp_path)
    assert line.startswith("plan.json: made_with.models.m: changed: the local model folder m is not the folder the "
                           "plan was made from")


def test_a_hand_edited_plan_file_is_refused(tmp_path):
    plan_file = made_plan(tmp_path)
    data = json.loads(plan_file.read_text())
    data["training"]["learning_rate"] = 0.5
    plan_file.write_text(json.dumps(data))
    [line] = refused(tmp_path)
    assert line.startswith("plan.json: not a readable plan file: plan id ") and line.endswith("the file was edited")


def test_made_with_is_outside_the_plan_and_its_id(tmp_path):
    plan_file = made_plan(tmp_path)
    printed = json.loads(invoke(tmp_path, "plan", "spec.yaml", "--json").stdout)
    written = json.loads(plan_file.read_text())
    made = written.pop("made_with")
    assert written == printed and Plan.from_json(json.dumps(written)).id == printed["id"]
    assert made["plan_file"] == 1 and made["device"]["kind"] in ("cpu", "cuda", "mps", "unknown")
    assert {"ftspec", "python", "torch", "transformers", "peft", "trl", "datasets", "accelerate",
            "tokenizers"} <= set(made["versions"])
    # A plain plan (plan --json) is a plan file too, without what it was made with: said, not hidden.
    (tmp_path / "plain.json").write_text(json.dumps(printed))
    applied = A.read_plan_file(tmp_path / "plain.json")
    assert applied.made_with is None and applied.plan.id == printed["id"]
    [note] = A.made_with_differences(applied, applied.plan, tmp_path)
    assert not note.is_error and "records nothing of what it was made with" in note.message
    # made_with of the wrong shape is one line naming the key.
    edit_made_with(plan_file, lambda m: m["versions"].update(torch=3))
    [line] = refused(tmp_path)
    assert re.fullmatch(r"plan\.json:\d+: not a readable plan file: made_with\.versions\.torch: Input should be a "
                        r"valid string", line), line


def test_a_plan_file_names_its_spec_and_its_choices(tmp_path):
    made_plan(tmp_path)
    write_job(tmp_path, BODY, "other")
    for args, said in [(["run", "other.yaml", "--plan", "plan.json"], "the plan was made from 'spec.yaml', not from"),
                       (["run", "--plan", "plan.json", "--set", "training.epochs=2"], "--plan runs the plan as it was"),
                       (["run", "--plan", "plan.json", "--profile", "x"], "--plan runs the plan as it was"),
                       (["run", "--plan", "plan.json", "--locked"], "--plan and --locked cannot be combined"),
                       (["run"], "give SPEC, or --plan FILE")]:
        result = invoke(tmp_path, *args)
        assert result.exit_code == 2 and said in result.output, (args, result.output)
    assert not (tmp_path / "runs").exists()
    # Elsewhere, the plan's spec is not found where the working directory is: one line, naming both ways.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / ".git").mkdir()
    result = invoke(elsewhere, "run", "--plan", str(tmp_path / "plan.json"))
    assert result.exit_code == 2 and "the plan's spec 'spec.yaml' is not in" in result.output
    data = json.loads((tmp_path / "plan.json").read_text())
    data["spec"]["path"] = "../spec.yaml"
    del data["id"]  # a plan file with a matching id: made, not edited
    (tmp_path / "escape.json").write_text(json.dumps(data))
    result = invoke(tmp_path, "run", "--plan", "escape.json", "--allow-path", str(tmp_path))
    assert result.exit_code == 2 and "outside its repository" in result.output


def test_plan_output_keeps_the_write_guard_and_stays_light(tmp_path):
    write_job(tmp_path, BODY, "spec")
    before = (tmp_path / "tickets.jsonl").read_bytes()
    result = invoke(tmp_path, "plan", "spec.yaml", "-o", "tickets.jsonl")
    assert result.exit_code == 2 and "an input of this spec" in result.output
    assert (tmp_path / "tickets.jsonl").read_bytes() == before
    code = PROBE.format(args=["plan", str(tmp_path / "spec.yaml"), "-o", str(tmp_path / "plan.json")], heavy=HEAVY)
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert [line for line in out.stdout.splitlines() if line.startswith("HEAVY:")][-1] == "HEAVY:"
    assert "made_with" in json.loads((tmp_path / "plan.json").read_text())


def write_gguf(path: Path) -> None:
    """A tiny llama-layout GGUF model (float32 tensors) with a byte-level BPE vocabulary."""
    import gguf
    import numpy as np
    from tokenizers import pre_tokenizers

    rng = np.random.default_rng(0)
    vocab = ["<|im_start|>", "<|im_end|>"] + sorted(pre_tokenizers.ByteLevel.alphabet()) + ["Ġt"]
    hidden, heads, ffn = 32, 4, 64
    w = gguf.GGUFWriter(str(path), "llama")
    for add, value in [(w.add_context_length, 256), (w.add_block_count, 1), (w.add_embedding_length, hidden),
                       (w.add_feed_forward_length, ffn), (w.add_head_count, heads), (w.add_head_count_kv, heads),
                       (w.add_layer_norm_rms_eps, 1e-5), (w.add_rope_freq_base, 10000.0),
                       (w.add_rope_dimension_count, hidden // heads), (w.add_tokenizer_model, "gpt2"),
                       (w.add_tokenizer_pre, "default"), (w.add_token_list, vocab),
                       (w.add_token_types, [3, 3] + [1] * (len(vocab) - 2)), (w.add_token_merges, ["Ġ t"]),
                       (w.add_bos_token_id, 0), (w.add_eos_token_id, 1)]:
        add(value)

    def t(*shape):
        return (rng.standard_normal(shape) * 0.05).astype(np.float32)

    w.add_tensor("token_embd.weight", t(len(vocab), hidden))
    w.add_tensor("output_norm.weight", np.ones(hidden, np.float32))
    w.add_tensor("blk.0.attn_norm.weight", np.ones(hidden, np.float32))
    w.add_tensor("blk.0.ffn_norm.weight", np.ones(hidden, np.float32))
    for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
        w.add_tensor(f"blk.0.{name}.weight", t(hidden, hidden))
    w.add_tensor("blk.0.ffn_gate.weight", t(ffn, hidden))
    w.add_tensor("blk.0.ffn_up.weight", t(ffn, hidden))
    w.add_tensor("blk.0.ffn_down.weight", t(hidden, ffn))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_what_validate_could_check_is_a_warning_and_the_reviewed_plan_runs(tmp_path):
    # A hub model in one machine's cache and not in another's changes what validate could look
    # at (the plan's checks), never what a step computes: said, and the file's plan (its id) is run.
    plan_file = made_plan(tmp_path)
    applied = A.read_plan_file(plan_file)
    body = applied.plan.to_dict()
    body["checks"]["not_checked"] = ["model.base: 'org/model' is not in the local cache"]
    other = Plan.build(body)
    [note] = A.plan_differences(other, applied.plan, Pos("plan.json"))
    assert note.key == "checks" and not note.is_error and "no step reads it, so the plan runs" in note.message
    assert A.check_applied(A.PlanFile(plan_file, other, applied.made_with), applied.plan, tmp_path) is other
