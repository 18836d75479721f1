"""A Python reward from a pull request that misbehaves: sys.exit() (at load or when called) fails
the run in one line instead of ending it as a success; numpy's numbers and arrays count as
numbers, as TRL takes them; an int past float's range is refused in one line, not an
OverflowError; a function that changes its arguments changes neither the other rewards' inputs
nor what completions.jsonl records."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("torch")
pytest.importorskip("trl")
np = pytest.importorskip("numpy")

from click.testing import CliRunner  # noqa: E402

from ftspec.cli import main  # noqa: E402
from ftspec.core.errors import RunFailed  # noqa: E402
from ftspec.runtime.training.rewards import Samples, build_rewards  # noqa: E402


def rewards(tmp_path: Path, *codes: str, samples: Samples | None = None):
    entries = []
    for i, code in enumerate(codes):
        path = tmp_path / f"r{i}.py"
        path.write_text(code)
        entries.append(SimpleNamespace(kind="python", path=path.name, function="f", weight=1.0, missing=-2.0,
                                       sha256=hashlib.sha256(path.read_bytes()).hexdigest()))
    functions, _ = build_rewards(SimpleNamespace(rewards=entries, stop=[]), tmp_path, samples)
    return functions


def call(fn, completions=("a", "b"), references=("x", None)):
    return fn(prompts=["p", "q"], completions=list(completions), reference=list(references),
              trainer_state=SimpleNamespace(global_step=0))


def test_sys_exit_in_a_reward_fails_instead_of_ending_the_run(tmp_path):
    with pytest.raises(RunFailed, match=r"reward r0.py:f: loading the file raised SystemExit"):
        rewards(tmp_path, "import sys\nsys.exit(0)\ndef f(**kw):\n    return [1.0]\n")
    (fn,) = rewards(tmp_path, "def f(prompts, completions, references):\n    raise SystemExit(0)\n")
    with pytest.raises(RunFailed, match=r"reward r0.py:f raised SystemExit"):
        call(fn)


def test_numpy_numbers_and_arrays_are_rewards_as_in_trl(tmp_path):
    fns = rewards(tmp_path,
                  "import numpy as np\ndef f(prompts, completions, references):\n"
                  "    return [np.float32(0.5), None]\n",
                  "import numpy as np\ndef f(prompts, completions, references):\n"
                  "    return np.array([1, 3], dtype=np.int64)\n")
    assert call(fns[0]) == [0.5, -2.0]
    assert call(fns[1]) == [1.0, 3.0]


@pytest.mark.parametrize("value", ["10 ** 400", "True", "'1.0'", "float('inf')"])
def test_a_reward_that_is_no_finite_number_is_refused_in_one_line(tmp_path, value):
    (fn,) = rewards(tmp_path, f"def f(prompts, completions, references):\n    return [{value}, 1.0]\n")
    with pytest.raises(RunFailed, match=r"each reward is a finite number") as info:
        call(fn)
    assert "\n" not in str(info.value) and len(str(info.value)) < 300


def test_a_reward_that_changes_its_arguments_changes_nothing_else(tmp_path):
    samples = Samples(tmp_path / "completions.jsonl", 1, ["f", "f_2"])
    first, second = rewards(
        tmp_path,
        "def f(prompts, completions, references):\n"
        "    completions[:] = ['X'] * len(completions); references.clear(); prompts.append('P')\n"
        "    return [1.0, 1.0]\n",
        "def f(prompts, completions, references):\n"
        "    return [float(c == 'a') + (r == 'x') for c, r in zip(completions, references)]\n",
        samples=samples)
    completions, references = ["a", "b"], ["x", None]
    assert call(first, completions, references) == [1.0, 1.0]
    assert call(second, completions, references) == [2.0, 0.0]
    assert (completions, references) == (["a", "b"], ["x", None])
    written = [json.loads(line) for line in (tmp_path / "completions.jsonl").read_text().splitlines()]
    assert [(w["prompt"], w["completion"], w["reference"]) for w in written] == [("p", "a", "x"), ("q", "b", None)]


def test_a_run_whose_reward_calls_sys_exit_exits_1_not_0(tmp_path):
    (tmp_path / ".git").mkdir()
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps({"text": f"t {i}", "answer": "yes"}) + "\n"
                                                 for i in range(40)))
    (tmp_path / "exit.py").write_text("def f(prompts, completions, references):\n    raise SystemExit(0)\n")
    spec = tmp_path / "job.yaml"
    spec.write_text("""\
ftspec: 1
name: toy
model: {kind: tiny, hidden_size: 32, num_layers: 2, num_heads: 4, max_position_embeddings: 256, init_seed: 1}
data: {train: rows.jsonl, split: {validation: 0.1, test: 0.1, seed: 1}}
format: {kind: prompt_completion, prompt: "{{ text }}:", completion: " {{ answer }}"}
compute: {device: cpu}
training: {max_steps: 2, batch_size: 8, max_length: 64, logging_steps: 1}
eval: {max_new_tokens: 4, limit: 4, stop: []}
method:
  kind: grpo
  adapter: {kind: full}
  group_size: 4
  max_completion_tokens: 4
  rewards: [{python: "exit.py:f"}]
""")
    got = CliRunner().invoke(main, ["run", str(spec)])
    assert got.exit_code == 1, got.output
    assert "reward exit.py:f raised SystemExit" in got.output and "Traceback" not in got.output


def test_a_reward_file_replaced_by_a_fifo_after_planning_is_refused_not_waited_on(tmp_path):
    import os

    path = tmp_path / "r0.py"
    path.write_text("def f(**kw):\n    return [1.0]\n")
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    path.unlink()
    os.mkfifo(path)  # nothing ever writes to it: reading it would block forever
    entry = SimpleNamespace(kind="python", path="r0.py", function="f", weight=1.0, missing=0.0, sha256=sha)
    with pytest.raises(RunFailed, match=r"reward r0.py:f: cannot read the file"):
        build_rewards(SimpleNamespace(rewards=[entry], stop=[]), tmp_path)
