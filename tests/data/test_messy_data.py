"""Messy data: a byte-order mark, CRLF line ends, blank lines, bytes that are not
UTF-8, a very long row, missing and extra fields, wrong JSON types. Each is a
row-numbered error, or with `data.on_bad_row: skip` skipped and counted in the
data statistics and the report. Never a traceback."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from ftspec.cli import main

GOOD = [{"text": f"request number {i}", "queue": ["billing", "shipping"][i % 2]} for i in range(40)]

# (line content, expected problem or None) — the file's line number is the index + 1.
LINES: list[tuple[bytes, str | None]] = [(b"\xef\xbb\xbf" + json.dumps(GOOD[0]).encode(), None)]
LINES += [(json.dumps(r).encode(), None) for r in GOOD[1:20]]
LINES += [
    (b"", None),  # a blank line
    (b'{"text": "caf\xe9 au lait", "queue": "billing"}', "not valid UTF-8; save the file as UTF-8"),
    (json.dumps({"text": "x" * 200_000, "queue": "billing"}).encode(), None),  # long: truncated at max_length
    (json.dumps({"queue": "billing"}).encode(), "format.prompt: template error: 'text' is undefined"),
    (json.dumps({"text": "extra fields are fine", "queue": "billing", "note": {"a": 1}}).encode(), None),
    (json.dumps({"text": ["not", "text"], "queue": "billing"}).encode(),
     "format.prompt: template error: a value printed by the template is a list, not text"),
    (json.dumps({"text": None, "queue": "billing"}).encode(),
     "format.prompt: template error: a value printed by the template is null"),
    (b'["a", "row", "that is a list"]', "expected a JSON object per line, found a list"),
    (b'{"text": "cut off', "not valid JSON: Unterminated string"),
]
LINES += [(json.dumps(r).encode(), None) for r in GOOD[20:]]
BAD = {i + 1: msg for i, (_, msg) in enumerate(LINES) if msg}


def _setup(tmp_path, on_bad_row: str):
    (tmp_path / ".git").mkdir()
    (tmp_path / "messy.jsonl").write_bytes(b"\r\n".join(line for line, _ in LINES) + b"\r\n")
    (tmp_path / "spec.yaml").write_text(
        "ftspec: 1\nname: messy\n"
        "model: {kind: tiny, hidden_size: 32, num_layers: 1, num_heads: 4, max_position_embeddings: 256}\n"
        f"data: {{train: messy.jsonl, split: {{validation: 0.2, test: 0.2, seed: 1}}, on_bad_row: {on_bad_row}}}\n"
        "format: {kind: prompt_completion, prompt: 'Request: {{ text }}\\nQueue:', completion: ' {{ queue }}'}\n"
        "method: {kind: sft, adapter: full}\n"
        "training: {max_steps: 1, batch_size: 4, max_length: 128}\n"
        "eval: {max_new_tokens: 4, metrics: [accuracy], baseline: false}\n"
        "compute: {device: cpu}\n")


def test_each_bad_row_is_named_by_validate(tmp_path, monkeypatch):
    _setup(tmp_path, "error")
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["validate", "spec.yaml"])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    # Reading stops at the first unreadable row; the sample is the rows before it.
    assert f"messy.jsonl:{min(BAD)}: {BAD[min(BAD)]}" in result.output


def test_skipped_rows_are_counted_in_the_statistics_and_the_report(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    _setup(tmp_path, "skip")
    monkeypatch.chdir(tmp_path)
    assert CliRunner().invoke(main, ["validate", "spec.yaml"]).exit_code == 0
    result = CliRunner().invoke(main, ["run", "spec.yaml"])
    assert result.exit_code == 0, result.output
    stats = json.loads((tmp_path / "runs/messy/data/stats.json").read_text())
    assert stats["skipped_rows"] == len(BAD)
    for line, msg in BAD.items():
        assert any(e.startswith(f"messy.jsonl:{line}: ") and msg.split(":")[-1].strip()[:20] in e
                   for e in stats["skipped_examples"]), (line, msg, stats["skipped_examples"])
    total = sum(s["rows"] for s in stats["splits"].values())
    assert total == len(GOOD) + 2, "the good rows, the long row and the row with extra fields"
    assert stats["splits"]["train"]["truncated_rows"] + stats["splits"]["validation"]["truncated_rows"] + \
        stats["splits"]["test"]["truncated_rows"] == 1
    assert f"Skipped rows: {len(BAD)}" in (tmp_path / "runs/messy/report.md").read_text()
