"""The lists ftspec copies from its libraries are checked against the installed ones.

ftspec validates a spec without importing torch, so it carries its own copies of
names the libraries define: the LoRA-targetable linear modules of each architecture
and the architectures that keep packed rows apart (ftspec/catalog/architectures.py), the tiny
model architectures, the DPO loss types, the optimizers, the learning-rate schedulers, the
attention implementations and LoRA's bias choices (ftspec/spec/schema.py). Each name ftspec
lists is checked here, one test per name, against what the installed transformers / peft /
trl accept; a library upgrade that drops or renames one fails its test. The last tests feed
each check a name no library knows, to show that every check can fail.
"""

from __future__ import annotations

import dataclasses
import re
import typing
import warnings

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")
trl = pytest.importorskip("trl")

from ftspec.catalog.architectures import ARCHITECTURES  # noqa: E402
from ftspec.spec import schema as S  # noqa: E402

VOCAB = 128


# --------------------------------------------------------------------------- what ftspec lists


def literal_choices(model: type, field: str) -> tuple:
    """The choices of a ``Literal[...]`` field of a spec section."""
    annotation = model.model_fields[field].annotation
    assert typing.get_origin(annotation) is typing.Literal, f"{model.__name__}.{field} is not a Literal"
    return typing.get_args(annotation)


OPTIMIZERS = literal_choices(S.Training, "optimizer")
SCHEDULERS = literal_choices(S.Training, "lr_scheduler")
DPO_LOSSES = literal_choices(S.DPOMethod, "loss_type")
TINY_ARCHITECTURES = literal_choices(S.TinyModel, "architecture")
ATTENTION = [a for a in literal_choices(S.Compute, "attention") if a != "auto"]  # auto is ftspec's own
LORA_BIAS = literal_choices(S.LoraAdapter, "bias")
LINEAR_MODULES = {a.model_type: a.linear_modules for a in ARCHITECTURES if a.linear_modules}
LINEAR = sorted((arch, name) for arch, names in LINEAR_MODULES.items() for name in names)
PACKABLE = sorted(a.model_type for a in ARCHITECTURES if a.packs)


# --------------------------------------------------------------------------- what the libraries know


def unknown_optimizers(names) -> list[str]:
    from transformers.training_args import OptimizerNames

    known = {o.value for o in OptimizerNames}
    return [n for n in names if n not in known]


def unknown_schedulers(names) -> list[str]:
    from transformers import SchedulerType
    from transformers.optimization import TYPE_TO_SCHEDULER_FUNCTION

    known = {s.value for s in SchedulerType} & {getattr(k, "value", k) for k in TYPE_TO_SCHEDULER_FUNCTION}
    return [n for n in names if n not in known]


def unknown_dpo_losses(names) -> list[str]:
    """Known to TRL: listed among DPOConfig.loss_type's possible values, and handled by
    the DPO trainer's loss (a branch on ``loss_type == "…"``)."""
    import inspect

    from trl import DPOConfig
    from trl.trainer import dpo_trainer

    field = next(f for f in dataclasses.fields(DPOConfig) if f.name == "loss_type")
    listed = set(re.findall(r"`'([a-z_0-9]+)'`", field.metadata.get("help", "")))
    handled = set(re.findall(r"""loss_type\s*==\s*["']([a-z_0-9]+)["']""", inspect.getsource(dpo_trainer)))
    return [n for n in names if not (n in listed and n in handled)]


def unknown_attention(names) -> list[str]:
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    known = {"eager"} | set(ALL_ATTENTION_FUNCTIONS.keys())  # eager is the models' own code, not registered
    return [n for n in names if n not in known]


def unknown_lora_bias(names) -> list[str]:
    from peft import LoraConfig

    annotation = next(f for f in dataclasses.fields(LoraConfig) if f.name == "bias").type
    known = set(typing.get_args(annotation)) if typing.get_origin(annotation) is typing.Literal else \
        set(re.findall(r"'([a-z_]+)'", str(annotation)))
    return [n for n in names if n not in known]


def unknown_model_types(names) -> list[str]:
    from transformers import CONFIG_MAPPING

    return [n for n in names if n not in CONFIG_MAPPING]


def tiny_model(arch: str, attention: str = "eager"):
    """A two-layer model of the architecture, built from its config (nothing downloaded)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    ids = dict(vocab_size=VOCAB, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    if arch == "gpt2":
        config = AutoConfig.for_model("gpt2", n_embd=32, n_layer=2, n_head=4, n_inner=64, n_positions=128, **ids)
    else:
        config = AutoConfig.for_model(arch, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, head_dim=8, intermediate_size=64,
                                      max_position_embeddings=128, **ids)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return AutoModelForCausalLM.from_config(config, attn_implementation=attention).eval()


def linear_module_names(arch: str) -> set[str]:
    """The last names of the model's linear layers (what LoRA targets), its output head aside."""
    from transformers.pytorch_utils import Conv1D

    model = tiny_model(arch)
    return {name.rsplit(".", 1)[-1] for name, module in model.named_modules()
            if isinstance(module, (torch.nn.Linear, Conv1D))} - {"lm_head"}


def packed_rows_stay_apart(arch: str, attention: str) -> bool:
    """Three rows packed into one, told apart by their position ids alone (no attention
    mask, no KV cache), give each row the logits it has alone."""
    model = tiny_model(arch, attention)
    generator = torch.Generator().manual_seed(0)
    rows = [torch.randint(3, VOCAB, (n,), generator=generator) for n in (7, 3, 9)]
    ids = torch.cat(rows)[None]
    positions = torch.cat([torch.arange(len(r)) for r in rows])[None]
    with torch.no_grad():
        packed = model(input_ids=ids, position_ids=positions, use_cache=False).logits[0]
        start = 0
        for row in rows:
            alone = model(input_ids=row[None], use_cache=False).logits[0]
            if not torch.allclose(packed[start:start + len(row)], alone, atol=1e-5):
                return False
            start += len(row)
    return True


# --------------------------------------------------------------------------- each name ftspec lists


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimizer_is_known_to_transformers(name):
    assert unknown_optimizers([name]) == [], f"training.optimizer '{name}' is not in transformers' OptimizerNames"


@pytest.mark.parametrize("name", SCHEDULERS)
def test_lr_scheduler_is_known_to_transformers(name):
    assert unknown_schedulers([name]) == [], f"training.lr_scheduler '{name}' is not a transformers SchedulerType"


@pytest.mark.parametrize("name", DPO_LOSSES)
def test_dpo_loss_type_is_known_to_trl(name):
    assert unknown_dpo_losses([name]) == [], (
        f"method.loss_type '{name}' is not a loss_type of trl's DPOConfig/DPOTrainer")


@pytest.mark.parametrize("name", ATTENTION)
def test_attention_implementation_is_known_to_transformers(name):
    assert unknown_attention([name]) == [], (
        f"compute.attention '{name}' is not an attention implementation of transformers")


@pytest.mark.parametrize("name", LORA_BIAS)
def test_lora_bias_is_known_to_peft(name):
    assert unknown_lora_bias([name]) == [], f"method.adapter.bias '{name}' is not a bias choice of peft's LoraConfig"


def test_the_dpo_loss_list_is_one_list():
    assert tuple(DPO_LOSSES) == tuple(S.DPO_LOSSES)


@pytest.mark.parametrize("arch", sorted(set(TINY_ARCHITECTURES) | set(LINEAR_MODULES) | set(PACKABLE)))
def test_architecture_is_a_transformers_model_type(arch):
    assert unknown_model_types([arch]) == [], f"'{arch}' is not a model type of the installed transformers"


@pytest.mark.parametrize("arch", sorted(LINEAR_MODULES))
def test_linear_modules_are_those_of_the_architecture(arch):
    """ftspec's list is exactly the model's linear layers: a name it lists that the model
    lacks would pass a wrong target; one it lacks would refuse a valid one."""
    assert sorted(LINEAR_MODULES[arch]) == sorted(linear_module_names(arch))


@pytest.mark.parametrize("arch", sorted(LINEAR_MODULES))
def test_peft_default_lora_targets_are_among_the_linear_modules(arch):
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

    defaults = DEFAULTS.get(arch)
    if defaults is None:
        pytest.skip(f"peft has no default LoRA targets for {arch}")
    assert set(defaults) <= set(LINEAR_MODULES[arch])


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
@pytest.mark.parametrize("arch", PACKABLE)
def test_packable_architecture_keeps_packed_rows_apart(arch, attention):
    try:
        model_ok = packed_rows_stay_apart(arch, attention)
    except ValueError as exc:
        if attention == "sdpa" and "scaled_dot_product_attention" in str(exc):
            pytest.skip(f"{arch} has no sdpa attention")
        raise
    assert model_ok, (f"{arch} ({attention}): packed rows see each other; "
                      "set packs=False in its row of ftspec/catalog/architectures.py")


# --------------------------------------------------------------------------- every check can fail


def test_each_check_reports_a_name_the_library_does_not_know():
    assert unknown_optimizers(["adamw_torch", "adamw_ftspec"]) == ["adamw_ftspec"]
    assert unknown_schedulers(["cosine", "cosine_ftspec"]) == ["cosine_ftspec"]
    assert unknown_dpo_losses(["sigmoid", "sigmoid_ftspec"]) == ["sigmoid_ftspec"]
    assert unknown_model_types(["llama", "llama_ftspec"]) == ["llama_ftspec"]
    assert unknown_attention(["sdpa", "sdpa_ftspec"]) == ["sdpa_ftspec"]
    assert unknown_lora_bias(["none", "none_ftspec"]) == ["none_ftspec"]
    assert "qkv_ftspec" not in linear_module_names("llama")
