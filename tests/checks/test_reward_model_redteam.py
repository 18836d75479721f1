"""Preference pairs a reward model cannot learn from: a chosen answer that renders the same as the
rejected one is refused at validate when every sampled pair is tied (its loss cannot move, and each
held-out tie counts as wrong in pair_accuracy), and a warning at the template when some are."""

from __future__ import annotations

import json
from pathlib import Path

from ftspec.core.errors import SpecError
from ftspec.plan.compile import compile_spec

SPEC = """\
ftspec: 1
name: r
model: {kind: tiny, hidden_size: 32, num_layers: 2, num_heads: 4, max_position_embeddings: 256, init_seed: 1}
data:
  train: rows.jsonl
  split: {validation: 0.1, test: 0.2, seed: 1}
format: {kind: preference, prompt: "{{ q }}", chosen: " {{ c }}", rejected: " {{ r }}"}
method: {kind: reward_model, adapter: full}
training: {max_steps: 2, batch_size: 2, max_length: 64}
"""


def issues(tmp_path: Path, rejected) -> tuple[list[str], list[str]]:
    (tmp_path / ".git").mkdir(parents=True, exist_ok=True)
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps({"q": f"q{i}", "c": f"a{i}", "r": rejected(i)}) + "\n"
                                                 for i in range(40)))
    spec = tmp_path / "job.yaml"
    spec.write_text(SPEC)
    try:
        _, found = compile_spec(spec)
    except SpecError as exc:
        found = exc.issues
    return [i.format() for i in found if i.is_error], [i.format() for i in found if not i.is_error]


def test_pairs_whose_chosen_is_their_rejected_are_refused_at_the_rejected_template(tmp_path):
    errors, _ = issues(tmp_path, lambda i: f"a{i}")
    assert any("job.yaml:7:" in e and "format.rejected" in e and "renders the same as format.chosen for 40 of 40" in e
               for e in errors), errors


def test_a_few_tied_pairs_are_a_warning_at_their_row_and_distinct_pairs_say_nothing(tmp_path):
    errors, warnings = issues(tmp_path, lambda i: f"a{i}" if i == 5 else f"b{i}")
    assert not errors and any("1 of 40 sampled training pairs" in w and "rows.jsonl row 6)" in w
                              for w in warnings), warnings
    errors, warnings = issues(tmp_path, lambda i: f"b{i}")
    assert not errors and not any("renders the same as format.chosen" in w for w in warnings), warnings
