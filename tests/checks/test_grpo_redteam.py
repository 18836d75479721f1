"""GRPO rewards a hostile or mistaken pull request might bring, refused at validate (exit 2, one
line, at the reward's line): an async reward function, and a reward schema that is JSON but not a
JSON Schema (it would fail the run at its first evaluation, with a traceback)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from ftspec.cli import main

SPEC = """\
ftspec: 1
name: g
model: {kind: tiny, hidden_size: 32, num_layers: 2, num_heads: 4, max_position_embeddings: 256, init_seed: 1}
data:
  train: rows.jsonl
  split: {validation: 0.1, test: 0.1, seed: 1}
format:
  kind: prompt_completion
  prompt: "Q: {{ q }}\\nA:"
  completion: " {{ a }}"
training: {max_steps: 4, batch_size: 8, max_length: 128}
method:
  kind: grpo
  group_size: 4
  rewards:
    - REWARD
"""


def validate(tmp_path: Path, reward: str) -> tuple[int, str, int]:
    (tmp_path / ".git").mkdir(parents=True, exist_ok=True)
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps({"q": f"what is {i}+{i}", "a": str(2 * i)}) + "\n"
                                                 for i in range(60)))
    spec = tmp_path / "job.yaml"
    spec.write_text(SPEC.replace("REWARD", reward))
    got = CliRunner().invoke(main, ["validate", str(spec)])
    line = next(n for n, text in enumerate(spec.read_text().splitlines(), 1) if reward in text)
    return got.exit_code, got.output, line


def test_an_async_reward_function_is_refused_at_validate(tmp_path):
    (tmp_path / "rewards.py").write_text("async def score(prompts, completions, references):\n    return [1.0]\n")
    code, output, line = validate(tmp_path, '{python: "rewards.py:score"}')
    assert code == 2, output
    assert f"job.yaml:{line}:" in output and "'score' in 'rewards.py' is an async function" in output
    assert "Traceback" not in output


def test_a_reward_schema_that_is_not_a_json_schema_is_refused_at_validate(tmp_path):
    (tmp_path / "bad.json").write_text('{"type": 12}')  # JSON, but no JSON Schema
    code, output, line = validate(tmp_path, "{name: json_schema, schema: bad.json}")
    assert code == 2, output
    assert f"job.yaml:{line}:" in output and "schema file 'bad.json' is not a valid JSON Schema" in output
    assert "Traceback" not in output


def test_a_valid_reward_schema_still_passes(tmp_path):
    (tmp_path / "good.json").write_text('{"type": "object", "required": ["a"]}')
    code, output, _ = validate(tmp_path, "{name: json_schema, schema: good.json}")
    assert code == 0, output


def test_completions_longer_than_max_length_are_refused_at_validate(tmp_path):
    (tmp_path / ".git").mkdir(parents=True, exist_ok=True)
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps({"q": f"what is {i}", "a": str(i)}) + "\n"
                                                 for i in range(60)))
    spec = tmp_path / "job.yaml"
    spec.write_text(SPEC.replace("REWARD", "exact_match").replace("group_size: 4", "group_size: 4\n"
                                                                   "  max_completion_tokens: 128"))
    got = CliRunner().invoke(main, ["validate", str(spec)])
    assert got.exit_code == 2, got.output
    line = next(n for n, text in enumerate(spec.read_text().splitlines(), 1) if "max_completion_tokens" in text)
    assert f"job.yaml:{line}:" in got.output and "leave no room for a prompt" in got.output
