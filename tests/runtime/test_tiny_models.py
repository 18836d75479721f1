"""model.kind tiny: every architecture the catalog offers as a tiny model builds, at the sizes
the spec gives, through the one generic path (ftspec.runtime.models.tiny_config)."""

from __future__ import annotations

import pytest

from ftspec.catalog.architectures import TINY, architecture
from ftspec.spec.schema import TinyModel


def test_the_spec_offers_exactly_the_catalogs_tiny_architectures():
    assert TinyModel.model_fields["architecture"].annotation.__args__ == TINY
    assert set(TINY) == {"gpt2", "llama", "mistral", "qwen2"}


@pytest.mark.parametrize("name", TINY)
def test_each_tiny_architecture_is_built_at_the_spec_sizes(name):
    pytest.importorskip("transformers")
    from ftspec.runtime.models import byte_tokenizer, tiny_config

    m = TinyModel(kind="tiny", architecture=name, hidden_size=48, num_layers=3, num_heads=4, num_kv_heads=2,
                  intermediate_size=96, max_position_embeddings=128)
    config = tiny_config(m, byte_tokenizer())
    assert config.model_type == name
    # transformers maps the generic names onto each architecture's own (n_embd, n_layer, … for gpt2)
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (48, 3, 4)
    assert config.max_position_embeddings == 128
    sizes = dict(architecture(name).tiny_sizes)
    assert getattr(config, sizes["intermediate_size"]) == 96
    if "num_kv_heads" in sizes:  # grouped-query attention, where the architecture has it
        assert config.num_key_value_heads == 2
