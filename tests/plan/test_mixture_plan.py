"""The plan of a training mixture (ftspec/plan/mixture.py): each source's rows available and
drawn as documented, the same plan for the same seed, a weight change re-keying prepare_data and
training but not the base model's evaluation, what `ftspec plan` shows, and each source's file
fingerprinted and locked on its own."""

from __future__ import annotations

import json

from ftspec.commands import lock
from ftspec.plan.compile import compile_spec
from ftspec.plan.describe import render_plan
from ftspec.plan.inputs import plan_inputs

SPEC = """\
ftspec: 1
name: mixed
model: {kind: tiny}
data:
  train:
    - path: tickets.jsonl
      weight: 0.7
    - path: mail.csv
      rename: {body: text}
      derive: {queue: "{{ team }}"}
      weight: 0.3
  split: {validation: 0.1, test: 0.1, seed: 3}
format:
  kind: prompt_completion
  prompt: "Request: {{ text }}"
  completion: " {{ queue }}"
eval: {metrics: [accuracy]}
compute: {device: cpu}
"""


def _repo(tmp_path, spec: str = SPEC):
    (tmp_path / ".git").mkdir(exist_ok=True)
    (tmp_path / "tickets.jsonl").write_text("".join(
        json.dumps({"text": f"ticket {i}", "queue": ["billing", "account"][i % 2]}) + "\n" for i in range(1000)))
    (tmp_path / "mail.csv").write_text("body,team\n" + "".join(f"a longer mail number {i},returns\n"
                                                               for i in range(500)))
    (tmp_path / "spec.yaml").write_text(spec)
    return tmp_path / "spec.yaml"


def _plan(tmp_path, monkeypatch, spec: str = SPEC):
    monkeypatch.chdir(tmp_path)
    return compile_spec(_repo(tmp_path, spec))[0]


def test_the_plan_states_each_sources_rows_as_documented(tmp_path, monkeypatch):
    plan = _plan(tmp_path, monkeypatch)
    train = plan.data.sources["train"]
    assert train.kind == "mixture" and train.total == "no_repeats" and train.seed == 3  # data.split.seed
    # Each source split on its own: 800 and 400 training rows; T = floor(min(800 / 0.7, 400 / 0.3)) = 1142.
    assert [(p.name, p.take, p.amount, p.available, p.drawn) for p in train.parts] == [
        ("tickets", "weight", 0.7, 800, 799), ("mail", "weight", 0.3, 400, 343)]
    assert train.rows == plan.data.rows.train == 1142
    assert (plan.data.rows.validation, plan.data.rows.test) == (150, 150)
    assert [p.source.sha256 for p in train.parts] == [p.source.sha256 for p in train.parts if len(p.source.sha256)
                                                      == 64]
    assert train.parts[1].rename == {"body": "text"} and train.parts[1].derive[0].template.text == "{{ team }}"
    assert plan.training.steps_per_epoch is not None and plan.data.rows_estimated == ()


def test_every_row_and_a_number_and_limit(tmp_path, monkeypatch):
    every = _plan(tmp_path, monkeypatch, SPEC.replace("  split:", "  mix: {total: every_row}\n  split:"))
    assert [p.drawn for p in every.data.sources["train"].parts] == [934, 400]  # T = ceil(400 / 0.3) = 1334
    limited = _plan(tmp_path, monkeypatch, SPEC.replace("  split:", "  mix: {total: 100}\n  limit: {train: 50}\n"
                                                                     "  split:"))
    assert [p.drawn for p in limited.data.sources["train"].parts] == [70, 30]
    assert limited.data.sources["train"].rows == 100 and limited.data.rows.train == 50


def test_the_same_seed_makes_the_same_plan_and_another_seed_another(tmp_path, monkeypatch):
    first = _plan(tmp_path, monkeypatch)
    again = _plan(tmp_path, monkeypatch)
    other = _plan(tmp_path, monkeypatch, SPEC.replace("  split:", "  mix: {seed: 4}\n  split:"))
    assert first.to_dict() == again.to_dict() and first.id == again.id
    assert other.data.sources["train"].seed == 4 and other.id != first.id
    keys = {s.name: s.key for s in first.steps}
    assert {s.name: s.key for s in other.steps}["prepare_data"] != keys["prepare_data"]


def test_a_weight_change_rekeys_prepare_data_and_train_but_not_the_base_evaluation(tmp_path, monkeypatch):
    before = {s.name: s.key for s in _plan(tmp_path, monkeypatch).steps}
    after = {s.name: s.key for s in _plan(tmp_path, monkeypatch, SPEC.replace("weight: 0.7", "weight: 0.5")
                                          .replace("weight: 0.3", "weight: 0.5")).steps}
    assert {"prepare_data", "train", "generate_base", "eval_base"} <= set(before)
    assert after["prepare_data"] != before["prepare_data"] and after["train"] != before["train"]
    assert after["generate_base"] == before["generate_base"] and after["eval_base"] == before["eval_base"]
    # A source's own derive changes what every split holds: the base evaluation too.
    derived = {s.name: s.key for s in _plan(tmp_path, monkeypatch, SPEC.replace("{{ team }}", "{{ team|upper }}"))
               .steps}
    assert derived["generate_base"] != before["generate_base"]


def test_plan_shows_each_source_drawn_repeated_and_its_shares(tmp_path, monkeypatch):
    text = render_plan(_plan(tmp_path, monkeypatch, SPEC.replace("weight: 0.3", "epochs: 2")))
    assert "train: a mixture of 2 sources, 1600 rows (total no_repeats, seed 3):" in text
    assert "epochs 2: 800 of 400 rows (each row x2.00), 50.0% of rows, ~" in text
    assert "weight 1: 800 of 800 rows (each row x1.00), 50.0% of rows, ~" in text
    tokens = [float(line.rsplit("~", 1)[1].split("%")[0]) for line in text.splitlines() if "of tokens" in line]
    assert len(tokens) == 2 and tokens[1] > tokens[0]  # the mails' texts are longer
    sampled = render_plan(_plan(tmp_path, monkeypatch, SPEC.replace("weight: 0.3", "rows: 100")))
    assert "rows 100: 100 of 400 rows (25% of them, none twice)" in sampled  # a share of a source: no row twice


def test_each_sources_file_is_fingerprinted_locked_and_an_input(tmp_path, monkeypatch):
    plan = _plan(tmp_path, monkeypatch)
    pinned = lock.build(plan, tmp_path, resolve=None)
    assert set(pinned["data"]) == {"train.tickets", "train.mail"}
    assert pinned["data"]["train.mail"]["sha256"] == plan.data.sources["train"].parts[1].source.sha256
    assert "data.sources.train.parts.1.derive.0.template" in pinned["templates"]
    inputs = {p.name for p in plan_inputs(plan, tmp_path)}
    assert {"tickets.jsonl", "mail.csv"} <= inputs
    (tmp_path / "mail.csv").write_text((tmp_path / "mail.csv").read_text() + "one more,returns\n")
    changed = compile_spec(tmp_path / "spec.yaml")[0]
    assert lock.drift(pinned, lock.build(changed, tmp_path, resolve=None))[0][0] == "data.train.mail.sha256"
