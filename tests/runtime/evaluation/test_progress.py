"""A long evaluation step is visible: rows done, rows/s and time left, redrawn on a terminal
and a few plain lines in a log; its speed ends up in the step's outputs.json."""

from __future__ import annotations

import io
import json
from types import SimpleNamespace

import pytest

from ftspec.runtime.evaluation.progress import Progress


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_log_gets_a_line_per_quarter_at_most_every_n_seconds_and_the_speed_at_the_end():
    out, clock = io.StringIO(), Clock()
    progress = Progress("choices", 100, stream=out, every=30, clock=clock)
    for _ in range(10):
        clock.now += 10
        progress.advance(10)
    summary = progress.close()
    lines = out.getvalue().splitlines()
    assert lines == [
        "  choices: 30/100 rows (25%), 1.0 rows/s, about 1:10 left",
        "  choices: 60/100 rows (50%), 1.0 rows/s, about 40s left",
        "  choices: 90/100 rows (75%), 1.0 rows/s, about 10s left",
        "  choices: 100 rows in 100.0s, 1.0 rows/s",
    ]
    assert summary == {"rows": 100, "seconds": 100.0, "rows_per_second": 1.0}


def test_a_quick_step_prints_only_its_closing_line():
    out, clock = io.StringIO(), Clock()
    progress = Progress("generate", 8, stream=out, clock=clock)
    for _ in range(8):
        clock.now += 0.25
        progress.advance(1)
    progress.close()
    assert out.getvalue().splitlines() == ["  generate: 8 rows in 2.0s, 4.0 rows/s"]


def test_pairs_count_as_rows_through_the_scale():
    out, clock = io.StringIO(), Clock()
    progress = Progress("choices", 4, stream=out, scale=0.5, clock=clock)
    progress.advance(6)
    clock.now = 2.0
    progress.advance(2)
    assert progress.close() == {"rows": 4, "seconds": 2.0, "rows_per_second": 2.0}


def test_a_terminal_gets_a_bar_redrawn_in_place_not_lines():
    out, clock = Terminal(), Clock()
    progress = Progress("choices", 100, stream=out, every=0, quiet=0, clock=clock)
    for _ in range(4):
        clock.now += 30
        progress.advance(25)
    progress.close()
    text = out.getvalue()
    assert "\r" in text and "choices" in text  # tqdm's bar, redrawn
    assert "(25%)" not in text  # no log lines
    assert text.rstrip().endswith("choices: 100 rows in 120.0s, 0.8 rows/s")


def test_the_generation_step_records_rows_per_second_per_part(tmp_path, capsys):
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM

    from ftspec.runtime.evaluation.evaluate import generate_outputs
    from ftspec.runtime.models import byte_tokenizer, tiny_config

    torch.manual_seed(0)
    tok = byte_tokenizer()
    sizes = SimpleNamespace(architecture="llama", hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=2,
                            intermediate_size=64, max_position_embeddings=256)
    model = AutoModelForCausalLM.from_config(tiny_config(sizes, tok)).eval()
    rows = [{"prompt": f"Request {i}:", "completion": " yes" if i % 2 else " no"} for i in range(6)]
    for split in ("train", "test"):
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    e = SimpleNamespace(split="test", limit=None, outputs=("answers", "perplexity"), few_shot=0, few_shot_seed=0,
                        choices=("no", "yes"), mode="choices", batch_size=4, max_new_tokens=3, stop=())
    summary, _ = generate_outputs(model, tok, e, "prompt_completion", 64, tmp_path, baseline=True)
    assert set(summary["speed"]) == {"choices", "perplexity"}
    for part in summary["speed"].values():
        assert part["rows"] == 6 and part["seconds"] >= 0
    err = capsys.readouterr().err
    assert "choices: 6 rows in" in err and "perplexity: 6 rows in" in err
    summary, _ = generate_outputs(model, tok, SimpleNamespace(**{**vars(e), "mode": "generate"}),
                                  "prompt_completion", 64, tmp_path, baseline=True)
    assert set(summary["speed"]) == {"generate", "perplexity"}
    json.dumps(summary)  # outputs.json holds it as it is
