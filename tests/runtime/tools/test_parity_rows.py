"""The export's parity check tokenizes a few held-out rows: only those are read, however
large the prepared split."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

pytest.importorskip("torch")

from ftspec.runtime.models import byte_tokenizer  # noqa: E402
from ftspec.runtime.tools.export import parity_prompts  # noqa: E402


def test_parity_reads_only_the_first_rows_of_the_held_out_split(tmp_path):
    rows = [{"prompt": f"Q{i}:", "completion": f" a{i}"} for i in range(3)]
    # Past the rows it takes the split is not read: a broken line there changes nothing.
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + "{not json\n",
                                         encoding="utf-8")
    (tmp_path / "train.jsonl").write_text(json.dumps({"prompt": "T:", "completion": " t"}) + "\n", encoding="utf-8")
    tok = byte_tokenizer()
    plan = SimpleNamespace(training=SimpleNamespace(max_length=64))
    ids = parity_prompts(plan, tmp_path, tok, limit=2)
    assert ids == [list(tok(r["prompt"] + r["completion"])["input_ids"]) for r in rows[:2]]
