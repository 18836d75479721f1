"""The local backend's generation steps: the line each prints says how fast each part of the
evaluation went (rows per second), the figures outputs.json's `speed` records."""

from __future__ import annotations

import json

import pytest
from helpers import BASE_BODY, run_job, write_job

pytest.importorskip("torch")
pytest.importorskip("trl")


def test_the_generate_line_shows_the_rows_per_second_of_each_part(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    body = (BASE_BODY.replace("max_steps: 4", "max_steps: 1").replace("limit: 8", "limit: 3")
            .replace("metrics: [accuracy]", "metrics: [accuracy, perplexity]"))
    ctx, lines = run_job(write_job(tmp_path, body + "method: {kind: sft, adapter: full}\n"))
    for model, folder in (("base", "generate-base"), ("tuned", "generate-tuned")):
        speed = json.loads((ctx.run_dir / folder / "outputs.json").read_text(encoding="utf-8"))["speed"]
        assert len(speed) == 2 and "perplexity" in speed  # and the answers: choices or generate
        line = next(l for l in lines if l.startswith(f"  {model} model, 3 test rows: "))
        for part, s in speed.items():
            rate = s["rows_per_second"]
            shown = f"{rate:.1f}" if rate >= 1 else f"{rate:.2g}"
            took = f"{s['seconds']:.0f}" if s["seconds"] >= 10 else f"{s['seconds']:.1f}"
            assert f"{part} 3 rows in {took} s, {shown} rows/s" in line, line
