"""What ftspec knows of each model architecture without loading a model: one row per
architecture, under transformers' name for it (a config's ``model_type``).

A row says the decoder layer (the unit FSDP shards and gathers at once), the linear
modules LoRA can target, whether packed sequences stay apart in its attention, and
whether transformers can de-quantise and load it from a GGUF file, and — for the few a
spec may build as a tiny model from a config (``model.kind: tiny``) — the config's names
for the model's sizes. What a row leaves
empty is not known offline, and the checks say so instead of guessing. Adding an
architecture is adding its row.

Each fact is a copy of what the installed libraries define, checked against them:
the decoder layers by tests/checks/test_distributed_spec.py, the linear modules and packing
by tests/catalog/test_library_lists.py (tests/runtime/training/test_packing.py too), the GGUF architectures
(transformers' GGUF_SUPPORTED_ARCHITECTURES) by tests/data/test_gguf.py.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Architecture:
    model_type: str  # transformers' name (config.json's model_type)
    decoder_layer: str | None = None  # its decoder-layer class, as transformers 5.x names it
    linear_modules: tuple[str, ...] = ()  # the linear layers LoRA can target; (): not known offline
    # Whether attention keeps packed sequences apart by their position ids (transformers
    # builds a block-diagonal mask when there is no attention mask and the KV cache is off).
    packs: bool = False
    gguf: bool = False  # transformers can de-quantise and load it from a GGUF file
    # model.kind tiny: the config's name for each size of the tiny model (the spec's names on
    # the left); (): not offered as a tiny model.
    tiny_sizes: tuple[tuple[str, str], ...] = ()


_LLAMA_SIZES = (("hidden_size", "hidden_size"), ("num_layers", "num_hidden_layers"),
                ("num_heads", "num_attention_heads"), ("num_kv_heads", "num_key_value_heads"),
                ("intermediate_size", "intermediate_size"), ("max_position_embeddings", "max_position_embeddings"))
# GPT-2 has no grouped-query attention: its heads are all the heads there are.
_GPT2_SIZES = (("hidden_size", "n_embd"), ("num_layers", "n_layer"), ("num_heads", "n_head"),
               ("intermediate_size", "n_inner"), ("max_position_embeddings", "n_positions"))


_LLAMA_LIKE = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

ARCHITECTURES: tuple[Architecture, ...] = (
    Architecture("bloom", gguf=True),
    Architecture("deci", gguf=True),
    Architecture("falcon", "FalconDecoderLayer", gguf=True),
    Architecture("gemma", "GemmaDecoderLayer", _LLAMA_LIKE, packs=True),
    Architecture("gemma2", "Gemma2DecoderLayer", _LLAMA_LIKE, packs=True, gguf=True),
    Architecture("gemma3", "Gemma3DecoderLayer", gguf=True),
    Architecture("gemma3_text", "Gemma3DecoderLayer"),
    Architecture("gemma4", gguf=True),
    Architecture("gpt2", "GPT2Block", ("c_attn", "c_proj", "c_fc"), packs=True, gguf=True, tiny_sizes=_GPT2_SIZES),
    Architecture("gpt_neox", "GPTNeoXLayer"),
    Architecture("gpt_oss", gguf=True),
    Architecture("lfm2", gguf=True),
    Architecture("llama", "LlamaDecoderLayer", _LLAMA_LIKE, packs=True, gguf=True, tiny_sizes=_LLAMA_SIZES),
    Architecture("mamba", gguf=True),
    Architecture("minimax_m2", gguf=True),
    Architecture("mistral", "MistralDecoderLayer", _LLAMA_LIKE, packs=True, gguf=True, tiny_sizes=_LLAMA_SIZES),
    Architecture("mixtral", "MixtralDecoderLayer"),
    Architecture("nemotron", gguf=True),
    Architecture("opt", "OPTDecoderLayer"),
    Architecture("phi", "PhiDecoderLayer"),
    Architecture("phi3", "Phi3DecoderLayer", packs=True, gguf=True),
    Architecture("qwen2", "Qwen2DecoderLayer", _LLAMA_LIKE, packs=True, gguf=True, tiny_sizes=_LLAMA_SIZES),
    Architecture("qwen2_moe", "Qwen2MoeDecoderLayer", gguf=True),
    Architecture("qwen3", "Qwen3DecoderLayer", _LLAMA_LIKE, packs=True, gguf=True),
    Architecture("qwen3_moe", gguf=True),
    Architecture("stablelm", gguf=True),
    Architecture("starcoder2", "Starcoder2DecoderLayer", gguf=True),
    Architecture("t5", gguf=True),
    Architecture("umt5", gguf=True),
)

_BY_TYPE = {a.model_type: a for a in ARCHITECTURES}
if len(_BY_TYPE) != len(ARCHITECTURES):  # two rows for one architecture: which would be meant?
    raise ValueError("ftspec.catalog.architectures: an architecture has two rows")

# The architectures a spec may build as a tiny model (model.kind tiny), in order.
TINY: tuple[str, ...] = tuple(sorted(a.model_type for a in ARCHITECTURES if a.tiny_sizes))

# The architectures transformers loads from GGUF, in order (messages list them).
GGUF_LOADABLE: tuple[str, ...] = tuple(sorted(a.model_type for a in ARCHITECTURES if a.gguf))


def architecture(model_type: str | None) -> Architecture | None:
    """The row of an architecture, or None where ftspec knows nothing of it."""
    return _BY_TYPE.get(model_type) if model_type else None
