"""The spec, validation and plan of several processes (issue 14): compute.num_processes,
num_nodes, strategy, compute.fsdp / compute.deepspeed and qlora's quant_storage, as
validate reports them and as the plan's compute.launch hands them to transformers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from ftspec.catalog.architectures import ARCHITECTURES
from ftspec.checks import facts
from ftspec.checks.facts import decoder_layer, modeling_defines
from ftspec.cli import main
from ftspec.core.errors import SpecError
from ftspec.plan.compile import check_spec, compile_spec
from ftspec.plan.compute import resolve_quant_storage
from ftspec.plan.model import thaw

# 80 rows, 0.2 held out: 64 training rows (a multiple of 2 processes × batch 8).
# Lines: 14 training / 15 max_length / 16 batch_size / 17 compute / 18 device
SPEC = """\
ftspec: 1
name: demo
model:
  kind: tiny
  hidden_size: 64
  num_heads: 4
data:
  train: train.jsonl
  split: {validation: 0.2, seed: 1}
format:
  kind: prompt_completion
  prompt: "Request: {{ text }}"
  completion: " {{ queue }}"
training:
  max_length: 256
  batch_size: 8
compute:
  device: DEVICE
"""
HUB_MODEL = "model: {base: org/model, revision: " + "ab" * 20 + "}\n"


def _write(tmp_path: Path, compute: str = "", device: str = "cpu", rows: int = 80, spec: str = SPEC,
           extra: str = "") -> Path:
    lines = "".join(json.dumps({"id": f"T{i}", "text": f"ticket {i}", "queue": ["billing", "account"][i % 2]}) + "\n"
                    for i in range(rows))
    (tmp_path / "train.jsonl").write_text(lines)
    path = tmp_path / "spec.yaml"
    path.write_text(spec.replace("DEVICE", device) + "".join(f"  {line}\n" for line in compute.splitlines()) + extra)
    return path


def _issues(path: Path, monkeypatch=None) -> list:
    """Every issue validate reports (errors and warnings)."""
    try:
        return list(check_spec(path).warnings)
    except SpecError as err:
        return list(err.issues)


def _one(issues: list, key: str, words: str):
    found = [i for i in issues if i.key == key and words in i.message]
    assert len(found) == 1, [i.format() for i in issues]
    return found[0]


def _none_at(issues: list, key: str) -> None:
    assert not [i for i in issues if i.key == key and i.is_error], [i.format() for i in issues]


# --------------------------------------------------------------------------- validation


def test_several_processes_are_accepted_with_a_strategy(tmp_path):
    plan, warnings = compile_spec(_write(tmp_path, "num_processes: 2\nstrategy: ddp"))
    assert plan.compute.num_processes == 2 and plan.compute.strategy == "ddp"
    assert plan.training.effective_batch_size == 16
    assert not [w for w in warnings if w.key.startswith("compute")]


def test_several_processes_still_need_a_strategy(tmp_path):
    issue = _one(_issues(_write(tmp_path, "num_processes: 2")), "compute.num_processes", "2 processes need a strategy")
    assert issue.is_error


def test_a_strategy_on_one_process_is_allowed(tmp_path, monkeypatch):
    monkeypatch.setattr(facts, "has_package", lambda name: True)
    plan, _ = compile_spec(_write(tmp_path, "strategy: deepspeed\ndeepspeed: {zero_stage: 3, offload_params: true}",
                                  "cuda"))
    assert plan.compute.launch.world_size == 1 and plan.compute.deepspeed.offload_params


def test_fsdp_settings_without_strategy_fsdp_are_an_error_at_their_line(tmp_path):
    issue = _one(_issues(_write(tmp_path, "num_processes: 2\nstrategy: ddp\nfsdp: {cpu_offload: true}")),
                 "compute.fsdp", "strategy is 'ddp'")
    assert issue.is_error and issue.pos.line == 21 and "strategy: fsdp" in issue.hint


def test_deepspeed_settings_without_strategy_deepspeed_are_an_error_at_their_line(tmp_path):
    issue = _one(_issues(_write(tmp_path, "deepspeed: {zero_stage: 1}")), "compute.deepspeed", "strategy is 'none'")
    assert issue.is_error and issue.pos.line == 19


def test_fsdp_on_the_cpu_is_an_error_pointing_at_ddp(tmp_path):
    issue = _one(_issues(_write(tmp_path, "num_processes: 2\nstrategy: fsdp")), "compute.strategy",
                 "silently trains plain DDP")
    assert issue.is_error and issue.pos.line == 20 and "ddp" in issue.hint
    _none_at(_issues(_write(tmp_path, "num_processes: 2\nstrategy: ddp")), "compute.strategy")


def test_deepspeed_on_the_cpu_is_an_error(tmp_path):
    issue = _one(_issues(_write(tmp_path, "strategy: deepspeed")), "compute.strategy", "needs CUDA GPUs")
    assert issue.is_error and issue.pos.line == 19


@pytest.mark.parametrize("compute", ["num_processes: 2\nstrategy: ddp", "strategy: ddp"])
def test_distributed_training_on_mps_is_an_error(tmp_path, compute):
    issue = _one(_issues(_write(tmp_path, compute, "mps")), "compute.device", "no MPS backend")
    assert issue.is_error and issue.pos.line == 18


def test_a_missing_deepspeed_package_is_a_warning(tmp_path, monkeypatch):
    monkeypatch.setattr(facts, "has_package", lambda name: name != "deepspeed")
    issue = _one(_issues(_write(tmp_path, "num_processes: 2\nstrategy: deepspeed", "cuda")), "compute.strategy",
                 "deepspeed package is not installed")
    assert not issue.is_error
    monkeypatch.setattr(facts, "has_package", lambda name: True)
    assert not [i for i in _issues(_write(tmp_path, "num_processes: 2\nstrategy: deepspeed", "cuda"))
                if i.key == "compute.strategy"]


def test_offloading_parameters_needs_zero_stage_3(tmp_path, monkeypatch):
    monkeypatch.setattr(facts, "has_package", lambda name: True)
    compute = "num_processes: 2\nstrategy: deepspeed\ndeepspeed:\n  zero_stage: 2\n  offload_params: true"
    issue = _one(_issues(_write(tmp_path, compute, "cuda")), "compute.deepspeed.offload_params", "only at ZeRO stage 3")
    assert issue.is_error and issue.pos.line == 23
    _none_at(_issues(_write(tmp_path, compute.replace("zero_stage: 2", "zero_stage: 3"), "cuda")),
             "compute.deepspeed.offload_params")


def _qlora(tmp_path, compute: str, adapter: str, dtype: str = "") -> Path:
    spec = SPEC.replace("model:\n  kind: tiny\n  hidden_size: 64\n  num_heads: 4\n",
                        HUB_MODEL.rstrip("}\n") + (f", dtype: {dtype}" if dtype else "") + "}\n")
    return _write(tmp_path, compute, "cuda", spec=spec, extra=f"method:\n  kind: sft\n  adapter: {adapter}\n")


@pytest.mark.parametrize("compute", ["num_processes: 2\nstrategy: fsdp",
                                     "num_processes: 2\nstrategy: deepspeed\ndeepspeed: {zero_stage: 3}"])
def test_8_bit_qlora_cannot_be_sharded(tmp_path, monkeypatch, compute):
    monkeypatch.setattr(facts, "has_package", lambda name: True)
    issue = _one(_issues(_qlora(tmp_path, compute, "{kind: qlora, bits: 8}")), "method.adapter.bits",
                 "cannot be sharded")
    assert issue.is_error
    _none_at(_issues(_qlora(tmp_path, "num_processes: 2\nstrategy: ddp", "{kind: qlora, bits: 8}")),
             "method.adapter.bits")


def test_qlora_storage_other_than_the_load_dtype_is_an_error_under_sharding(tmp_path, monkeypatch):
    monkeypatch.setattr(facts, "has_package", lambda name: True)
    fsdp = "num_processes: 2\nstrategy: fsdp"
    issue = _one(_issues(_qlora(tmp_path, fsdp, "{kind: qlora, quant_storage: uint8}", "bfloat16")),
                 "method.adapter.quant_storage", "the dtype the base loads in (bfloat16)")
    assert issue.is_error
    for ok in ("{kind: qlora, quant_storage: bfloat16}", "{kind: qlora}"):
        _none_at(_issues(_qlora(tmp_path, fsdp, ok, "bfloat16")), "method.adapter.quant_storage")
    # Not sharded: any storage dtype.
    _none_at(_issues(_qlora(tmp_path, "num_processes: 2\nstrategy: ddp", "{kind: qlora, quant_storage: float16}")),
             "method.adapter.quant_storage")


def test_quant_storage_is_resolved_in_the_plan(tmp_path, monkeypatch):
    monkeypatch.setattr(facts, "has_package", lambda name: True)
    cases = [("num_processes: 2\nstrategy: fsdp", "bfloat16", "bfloat16"),
             ("num_processes: 2\nstrategy: fsdp", "", "float32"),  # dtype auto loads float32
             ("num_processes: 2\nstrategy: deepspeed\ndeepspeed: {zero_stage: 3}", "float16", "float16"),
             ("num_processes: 2\nstrategy: deepspeed", "bfloat16", "uint8"),  # ZeRO-2 does not shard parameters
             ("num_processes: 2\nstrategy: ddp", "bfloat16", "uint8"),
             ("", "bfloat16", "uint8")]
    for compute, dtype, expected in cases:
        plan, _ = compile_spec(_qlora(tmp_path, compute, "{kind: qlora}", dtype))
        assert plan.method.adapter.quant_storage == expected, (compute, dtype)
    plan, _ = compile_spec(_qlora(tmp_path, "", "{kind: qlora, quant_storage: float32}"))
    assert plan.method.adapter.quant_storage == "float32"


def test_gradient_checkpointing_under_fsdp_points_at_fsdps_own(tmp_path):
    path = _write(tmp_path, "num_processes: 2\nstrategy: fsdp", "cuda", extra="")
    path.write_text(path.read_text().replace("  batch_size: 8\n", "  batch_size: 8\n  gradient_checkpointing: true\n"))
    issue = _one(_issues(path), "training.gradient_checkpointing", "redundant all-gather")
    assert issue.is_error and issue.pos.line == 17 and "compute.fsdp.activation_checkpointing" in issue.hint
    path.write_text(path.read_text().replace("strategy: fsdp", "strategy: ddp"))
    _none_at(_issues(path), "training.gradient_checkpointing")


def test_flash_attention_without_cuda_still_fails_with_several_processes(tmp_path):
    issue = _one(_issues(_write(tmp_path, "num_processes: 2\nstrategy: ddp\nattention: flash_attention_2")),
                 "compute.attention", "needs a CUDA GPU")
    assert issue.is_error


def test_a_batch_per_process_larger_than_the_data_is_an_error(tmp_path):
    # 20 rows, 16 training rows; 4 processes × batch 8 = 32 at once.
    issue = _one(_issues(_write(tmp_path, "num_processes: 4\nstrategy: ddp", rows=20)), "training.batch_size",
                 "4 processes × batch 8 take 32 rows at once but there are only 16 training rows")
    assert issue.is_error and issue.pos.line == 16 and "4 or fewer" in issue.hint


def test_rows_that_do_not_divide_across_processes_are_a_warning_saying_how_many_repeat(tmp_path):
    # 50 rows, 40 training rows; 2 × 8 = 16 at once: 40 = 2 × 16 + 8, 8 rows repeated.
    issue = _one(_issues(_write(tmp_path, "num_processes: 2\nstrategy: ddp", rows=50)), "training.batch_size",
                 "completed with 8 repeated rows")
    assert not issue.is_error and "40 training rows" in issue.message
    assert not [i for i in _issues(_write(tmp_path, "num_processes: 2\nstrategy: ddp"))
                if i.key == "training.batch_size"]
    # One process: a short last batch, nothing repeated.
    assert not [i for i in _issues(_write(tmp_path, "", rows=50)) if i.key == "training.batch_size"]


def test_fsdp_wrap_without_the_decoder_layer_is_a_warning(tmp_path):
    compute = "num_processes: 2\nstrategy: fsdp\nfsdp:\n  wrap: [LlamaAttention]"
    issue = _one(_issues(_write(tmp_path, compute, "cuda")), "compute.fsdp.wrap", "does not name LlamaDecoderLayer")
    assert not issue.is_error and issue.pos.line == 22
    ok = _write(tmp_path, compute.replace("LlamaAttention", "LlamaDecoderLayer"), "cuda")
    assert not [i for i in _issues(ok) if i.key == "compute.fsdp.wrap"]


@pytest.mark.parametrize("name", ["transformers.LlamaDecoderLayer", "Llama Decoder", "1Layer", "<Layer>"])
def test_fsdp_wrap_names_classes_each_refused_at_its_item_when_not_a_class_name(tmp_path, name):
    compute = f"num_processes: 2\nstrategy: fsdp\nfsdp:\n  wrap: [LlamaDecoderLayer, {json.dumps(name)}]"
    issue = _one(_issues(_write(tmp_path, compute, "cuda")), "compute.fsdp.wrap.1", "is not a class name")
    assert issue.is_error and issue.pos.line == 22
    assert issue.message.startswith(f"{name!r} is not a class name")


# --------------------------------------------------------------------------- the plan


def test_the_decoder_layer_table_names_classes_of_the_installed_transformers():
    for model_type, layer in ((a.model_type, a.decoder_layer) for a in ARCHITECTURES if a.decoder_layer):
        assert modeling_defines(model_type, layer), (model_type, layer)


def test_wrap_inference():
    assert decoder_layer("llama") == "LlamaDecoderLayer"
    assert decoder_layer("gpt2") == "GPT2Block"
    # Not in the table: from the architecture's name, where transformers defines that class.
    assert decoder_layer("olmo", ["OlmoForCausalLM"]) == "OlmoDecoderLayer"
    assert decoder_layer("olmo", ["NotAModelForCausalLM"]) is None
    assert decoder_layer("unknown_type", ["UnknownForCausalLM"]) is None
    assert decoder_layer(None) is None


def test_the_plan_wraps_the_architectures_decoder_layer_or_leaves_it_to_transformers(tmp_path):
    plan, _ = compile_spec(_write(tmp_path, "num_processes: 2\nstrategy: fsdp", "cuda"))
    f = plan.compute.fsdp
    assert (f.wrap, f.wrap_from) == (("LlamaDecoderLayer",), "architecture")
    assert plan.compute.launch.trainer["fsdp_config"]["transformer_layer_cls_to_wrap"] == ["LlamaDecoderLayer"]
    # A local model of a type ftspec does not know: wrap is empty, and fsdp_config leaves it
    # to accelerate (the loaded model's _no_split_modules).
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "mystery", "architectures": ["MysteryForCausalLM"]}))
    (model / "model.safetensors").write_bytes(b"")
    spec = SPEC.replace("model:\n  kind: tiny\n  hidden_size: 64\n  num_heads: 4\n", "model: {base: ./m}\n")
    plan, _ = compile_spec(_write(tmp_path, "num_processes: 2\nstrategy: fsdp", "cuda", spec=spec))
    assert plan.compute.fsdp.wrap == () and plan.compute.fsdp.wrap_from == "architecture"
    assert "transformer_layer_cls_to_wrap" not in plan.compute.launch.trainer["fsdp_config"]
    # The spec's own list.
    plan, _ = compile_spec(_write(tmp_path,
                                  "num_processes: 2\nstrategy: fsdp\nfsdp: {wrap: [LlamaDecoderLayer, LlamaMLP]}",
                                  "cuda"))
    assert (plan.compute.fsdp.wrap, plan.compute.fsdp.wrap_from) == (("LlamaDecoderLayer", "LlamaMLP"), "spec")


def test_the_plans_launch_and_trainer_keywords(tmp_path, monkeypatch):
    plan, _ = compile_spec(_write(tmp_path, ""))
    assert plan.compute.launch is None and plan.compute.fsdp is None and plan.compute.deepspeed is None

    plan, _ = compile_spec(_write(tmp_path, "num_processes: 2\nstrategy: ddp"))
    launch = plan.compute.launch
    assert (launch.world_size, launch.processes_per_node, launch.nodes, launch.backend,
            launch.rendezvous) == (2, 2, 1, "gloo", "local")
    assert launch.trainer == {"ddp_find_unused_parameters": False}

    compute = ("num_processes: 4\nnum_nodes: 2\nstrategy: fsdp\nfsdp:\n  reshard_after_forward: false\n"
               "  cpu_offload: true\n"
               "  activation_checkpointing: true\n  state_dict: sharded")
    plan, _ = compile_spec(_write(tmp_path, compute, "cuda", rows=160))
    launch = plan.compute.launch
    assert (launch.world_size, launch.processes_per_node, launch.nodes, launch.backend,
            launch.rendezvous) == (8, 4, 2, "nccl", "environment")
    assert launch.trainer == {"fsdp": True, "fsdp_config": {
        "version": 2, "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "transformer_layer_cls_to_wrap": ["LlamaDecoderLayer"],
        "reshard_after_forward": False, "cpu_offload": True, "activation_checkpointing": True,
        "state_dict_type": "SHARDED_STATE_DICT"}}

    monkeypatch.setattr(facts, "has_package", lambda name: True)
    compute = ("num_processes: 2\nstrategy: deepspeed\n"
               "deepspeed: {zero_stage: 3, offload_optimizer: true, offload_params: true}")
    plan, _ = compile_spec(_write(tmp_path, compute, "auto"))
    assert plan.compute.launch.backend == "auto"
    assert plan.compute.launch.trainer == {"deepspeed": {
        "zero_optimization": {"stage": 3, "offload_optimizer": {"device": "cpu", "pin_memory": True},
                              "offload_param": {"device": "cpu", "pin_memory": True},
                              "stage3_gather_16bit_weights_on_model_save": True},
        "train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto", "gradient_clipping": "auto",
        "bf16": {"enabled": "auto"}, "fp16": {"enabled": "auto"}}}
    plan, _ = compile_spec(_write(tmp_path, "num_processes: 2\nstrategy: deepspeed", "cuda"))
    assert plan.compute.deepspeed.zero_stage == 2
    assert plan.compute.launch.trainer["deepspeed"]["zero_optimization"] == {"stage": 2}


def _training_arguments(tmp_path, trainer: dict):
    transformers = pytest.importorskip("transformers")
    try:
        return transformers.TrainingArguments(output_dir=str(tmp_path / "out"), report_to=[], **thaw(trainer))
    except (RuntimeError, ValueError) as exc:
        if re.search(r"cuda|gpu|distributed", str(exc), re.IGNORECASE):
            pytest.skip(f"TrainingArguments needs a GPU for these settings here: {exc}")
        raise


def test_transformers_takes_the_ddp_keywords_as_planned(tmp_path):
    plan, _ = compile_spec(_write(tmp_path, "num_processes: 2\nstrategy: ddp"))
    args = _training_arguments(tmp_path, plan.compute.launch.trainer)
    assert args.ddp_find_unused_parameters is False


def test_transformers_takes_the_fsdp_keywords_as_planned(tmp_path):
    compute = ("num_processes: 2\nstrategy: fsdp\n"
               "fsdp:\n  reshard_after_forward: false\n  cpu_offload: true\n  state_dict: sharded")
    plan, _ = compile_spec(_write(tmp_path, compute, "cuda"))
    args = _training_arguments(tmp_path, plan.compute.launch.trainer)
    plugin = args.fsdp_plugin_args
    assert plugin["fsdp_version"] == 2
    assert plugin["reshard_after_forward"] is False  # not overridden by a legacy sharding string
    assert plugin["cpu_offload"] is True
    assert plugin["state_dict_type"] == "SHARDED_STATE_DICT"
    assert plugin["transformer_cls_names_to_wrap"] == "LlamaDecoderLayer"
    assert plugin["activation_checkpointing"] is False


def test_only_the_train_step_changes_with_the_processes(tmp_path):
    one, _ = compile_spec(_write(tmp_path, ""))
    two, _ = compile_spec(_write(tmp_path, "num_processes: 2\nstrategy: ddp"))
    keys = lambda plan: {s.name: s.key for s in plan.steps}  # noqa: E731
    a, b = keys(one), keys(two)
    assert a["train"] != b["train"]
    for name in ("prepare_data", "generate_base", "eval_base"):
        assert a[name] == b[name], name


def test_the_summary_shows_the_launch(tmp_path):
    from ftspec.plan.describe import render_plan

    plan, _ = compile_spec(_write(tmp_path, "num_processes: 2\nstrategy: ddp"))
    assert "2 processes × 1 node, ddp over gloo (rendezvous: local)" in render_plan(plan)
    plan, _ = compile_spec(_write(tmp_path, "num_processes: 2\nstrategy: fsdp\nfsdp: {cpu_offload: true}", "cuda"))
    text = render_plan(plan)
    assert "2 processes × 1 node, fsdp over nccl (rendezvous: local)" in text
    assert "fsdp2: wrap LlamaDecoderLayer (from the architecture)" in text and "cpu_offload true" in text


def test_diff_shows_the_change_to_several_processes(tmp_path):
    old = _write(tmp_path, "")
    (tmp_path / "old.yaml").write_text(old.read_text())
    _write(tmp_path, "num_processes: 2\nstrategy: ddp")
    result = CliRunner().invoke(main, ["diff", str(tmp_path / "old.yaml"), str(tmp_path / "spec.yaml")])
    assert result.exit_code in (0, 1), result.output
    out = result.output
    assert "compute.num_processes" in out and "compute.strategy" in out
    assert "compute.launch: null → {backend: gloo" in out and "trainer: {ddp_find_unused_param" in out
    assert "train" in out


def test_resolve_quant_storage_directly():
    class C:
        strategy = "fsdp"
        deepspeed = None

    assert resolve_quant_storage("auto", C, "auto") == "float32"
    assert resolve_quant_storage("auto", C, "bfloat16") == "bfloat16"
    assert resolve_quant_storage("float16", C, "bfloat16") == "float16"
