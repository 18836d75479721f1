"""Keys that travel: a plan names every file by its path from the repository root
(``../shared/…`` outside it), never where the repository sits on disk, so the plan id and
every step key are the same on every machine (ftspec.checks.facts.rel)."""

from __future__ import annotations

import shutil
from pathlib import Path

from conftest import ROOT

from ftspec.core.paths import target_problem
from ftspec.plan.compile import compile_spec, find_root
from ftspec.plan.inputs import plan_inputs
from ftspec.plan.model import Plan
from ftspec.store.protect import protected

TICKETS = (ROOT / "specs" / "data" / "support-tickets.jsonl").read_text(encoding="utf-8").splitlines()[:60]

SPEC = """\
ftspec: 1
name: travel
model: {kind: tiny, hidden_size: 32, num_layers: 1, num_heads: 2, max_position_embeddings: 256}
data:
  train: ../shared/data/tickets.jsonl
  split: {validation: 0.1, test: 0.1, seed: 1}
format:
  kind: prompt_completion
  prompt: {file: prompt.j2}
  completion: " {{ queue }}"
method: {kind: sft, adapter: full}
training: {max_steps: 2, batch_size: 4, max_length: 128}
eval: {metrics: [accuracy], max_new_tokens: 4}
compute: {device: cpu}
"""


def layout(top: Path) -> Path:
    """A repository (top/repo) whose spec reads its data from top/shared, outside it."""
    (top / "repo" / ".git").mkdir(parents=True)
    (top / "repo" / "spec.yaml").write_text(SPEC, encoding="utf-8")
    (top / "repo" / "prompt.j2").write_text("Request: {{ text }}\nQueue:", encoding="utf-8")
    (top / "shared" / "data").mkdir(parents=True)
    (top / "shared" / "data" / "tickets.jsonl").write_text("\n".join(TICKETS) + "\n", encoding="utf-8")
    return top / "repo" / "spec.yaml"


def test_the_same_repository_and_data_elsewhere_on_disk_make_the_same_plan(tmp_path):
    first = layout(tmp_path / "a")
    moved = tmp_path / "b" / "deeper" / "place"
    moved.parent.mkdir(parents=True)
    shutil.copytree(tmp_path / "a", moved)
    second = moved / "repo" / "spec.yaml"
    one, _ = compile_spec(first, allow=[tmp_path / "a" / "shared"])
    two, _ = compile_spec(second, allow=[moved / "shared"])
    assert one.data.sources["train"].path == "../shared/data/tickets.jsonl"
    assert one.id == two.id and [s.key for s in one.steps] == [s.key for s in two.steps]
    assert str(tmp_path) not in one.to_json() and str(tmp_path) not in two.to_json()


def test_a_plan_read_back_finds_and_guards_the_file_outside_the_repository(tmp_path):
    spec = layout(tmp_path)
    plan, _ = compile_spec(spec, allow=[tmp_path / "shared"])
    back = Plan.from_json(plan.to_json())
    root = find_root(spec)
    data = tmp_path / "shared" / "data" / "tickets.jsonl"
    found = [p for p in plan_inputs(back, root) if p.resolve() == data.resolve()]
    assert found and found[0].is_file()  # root / "../shared/…" is the file
    assert "an input of this spec" in target_problem(data, protected(back, root))


def test_a_folder_of_the_repository_linked_elsewhere_keeps_its_name_in_the_plan(tmp_path):
    spec = layout(tmp_path)
    (tmp_path / "repo" / "data").symlink_to(tmp_path / "shared" / "data", target_is_directory=True)
    spec.write_text(SPEC.replace("../shared/data/tickets.jsonl", "data/tickets.jsonl"), encoding="utf-8")
    plan, _ = compile_spec(spec, allow=[tmp_path / "shared"])
    assert plan.data.sources["train"].path == "data/tickets.jsonl"


def test_a_name_through_a_link_and_back_is_recorded_as_the_way_to_the_file_it_reads(tmp_path):
    # data/ links to ../shared/data: "data/../tickets.jsonl" reads shared/tickets.jsonl, not the
    # repository's own tickets.jsonl that the name, read as text, seems to mean.
    spec = layout(tmp_path)
    (tmp_path / "repo" / "data").symlink_to(tmp_path / "shared" / "data", target_is_directory=True)
    (tmp_path / "shared" / "tickets.jsonl").write_text("\n".join(TICKETS) + "\n", encoding="utf-8")
    (tmp_path / "repo" / "tickets.jsonl").write_text("\n".join(TICKETS[:30]) + "\n", encoding="utf-8")  # a decoy
    spec.write_text(SPEC.replace("../shared/data/tickets.jsonl", "data/../tickets.jsonl"), encoding="utf-8")
    plan, _ = compile_spec(spec, allow=[tmp_path / "shared"])
    recorded = plan.data.sources["train"].path
    assert recorded == "../shared/tickets.jsonl"
    assert (find_root(spec) / recorded).resolve() == (tmp_path / "shared" / "tickets.jsonl").resolve()
