"""prepare_data's mixture (ftspec/runtime/training/splits.py) where validate could not know a
source's rows: the runtime refuses, at the source, a draw that would use each row more times
than `epochs:` allows, before it writes a row. Needs no torch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ftspec.core.errors import SpecError
from ftspec.plan.compile import compile_spec, find_root
from ftspec.runtime.training import splits as S

SPEC = """ftspec: 1
name: mix
model: {kind: tiny, hidden_size: 32, num_layers: 1, num_heads: 4, max_position_embeddings: 256}
data:
  train:
    - path: tickets.jsonl
    - path: mails.jsonl
      rows: 1700000
  filter: "{{ keep == 'yes' }}"
  split: {validation: 0.1, test: 0.1, seed: 5}
format:
  kind: prompt_completion
  prompt: "Request: {{ text }}\\nQueue:"
  completion: " {{ queue }}"
training: {max_steps: 2, batch_size: 8, max_length: 64}
compute: {device: cpu}
"""


def _rows(n: int, kept: int, word: str) -> str:
    return "".join(json.dumps({"text": f"{word} {i}", "queue": "billing", "keep": "yes" if i < kept else "no"}) + "\n"
                   for i in range(n))


def test_a_source_the_filter_thins_past_the_sample_is_refused_when_drawn_beyond_epochs_limit(tmp_path: Path):
    # validate tries data.filter on the first 200 rows of mails.jsonl: all kept, so it estimates 1000
    # (800 training rows: 1.7M rows is each x2125). Prepared, the filter keeps 200 (160 training rows):
    # each would be used 10625 times, more than epochs: allows. Refused at the source, nothing written.
    (tmp_path / ".git").mkdir()
    (tmp_path / "tickets.jsonl").write_text(_rows(300, 300, "ticket"))
    (tmp_path / "mails.jsonl").write_text(_rows(1000, 200, "mail"))
    spec = tmp_path / "mix.yaml"
    spec.write_text(SPEC)
    plan = compile_spec(spec)[0]
    part = plan.data.sources["train"].parts[1]
    assert part.available == 800 and part.drawn == 1_700_000  # an estimate within the limit
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(SpecError) as err:
        S.write_splits(plan.data, plan.format, find_root(spec), out)
    assert str(err.value) == ("data.train.1: source 'mails' would put 1700000 rows in the mixture from its 160 (each "
                              "row used 1.06e+04 times); a row may be used at most 10000 times (the most epochs: "
                              "allows)")
    assert not any(out.glob("*.jsonl"))  # nothing half-written
