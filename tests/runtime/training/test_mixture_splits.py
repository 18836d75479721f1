"""prepare_data's splits of a training mixture (``data.train`` as a list,
ftspec/runtime/training/splits.py and mixing.py): the rows drawn from each source, as
each split's ``.sources`` file names them; held-out rows per source that a weight does not
move; the same bytes under the same seed, resumed or not. Needs no torch."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from ftspec.core.errors import SpecError
from ftspec.data import prepared
from ftspec.data.sources import fingerprint
from ftspec.data.splitting import split_sizes
from ftspec.plan.compile import compile_spec, find_root
from ftspec.runtime.training import splits as S

SPEC = """ftspec: 1
name: mix
model: {{kind: tiny, hidden_size: 32, num_layers: 1, num_heads: 4, max_position_embeddings: 256}}
data:
  train:
    - path: tickets.jsonl
      weight: {w_tickets}
    - path: mails.jsonl
      name: mails
      rename: {{body: text}}
      derive: {{queue: "{{{{ team | lower }}}}"}}
      weight: {w_mails}
  mix: {{total: {total}, seed: {seed}}}
{extra}format:
  kind: prompt_completion
  prompt: "Request: {{{{ text }}}}\\nQueue:"
  completion: " {{{{ queue }}}}"
training: {{max_steps: 2, batch_size: 8, max_length: 64}}
eval: {{max_new_tokens: 4, limit: 4, metrics: [accuracy]}}
compute: {{device: cpu}}
"""
QUEUES = ["billing", "shipping", "returns"]
SPLIT = "  split: {validation: 0.1, test: 0.1, seed: 5}\n"


def _repo(folder: Path, tickets: int = 300, mails: int = 60, w_tickets: float = 0.5, w_mails: float = 0.5,
          total: str = "no_repeats", seed: int = 7, extra: str = SPLIT) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".git").mkdir(exist_ok=True)
    (folder / "tickets.jsonl").write_text("".join(
        json.dumps({"text": f"ticket {i}", "queue": QUEUES[i % 3]}) + "\n" for i in range(tickets)))
    (folder / "mails.jsonl").write_text("".join(
        json.dumps({"body": f"mail {i}", "team": QUEUES[i % 3].upper()}) + "\n" for i in range(mails)))
    spec = folder / "mix.yaml"
    spec.write_text(SPEC.format(w_tickets=w_tickets, w_mails=w_mails, total=total, seed=seed, extra=extra))
    return spec


def _write(spec: Path, plan=None, **kwargs) -> tuple[S.Prepared, Path, object]:
    plan = plan if plan is not None else compile_spec(spec)[0]
    out = spec.parent / "out"
    out.mkdir(exist_ok=True)
    return S.write_splits(plan.data, plan.format, find_root(spec), out, **kwargs), out, plan


def _sources(out: Path, split: str) -> list[str]:
    names = prepared.iter_sources(out, split)
    assert names is not None
    return list(names)


def _bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}


@pytest.mark.parametrize("total, drawn", [("no_repeats", {"tickets": 48, "mails": 48}),
                                          ("every_row", {"tickets": 240, "mails": 240})])
def test_each_source_gives_the_documented_rows_and_the_plans_count(tmp_path, total, drawn):
    # Each source is split on its own: 300 -> 240 training rows, 60 -> 48. Equal weights:
    # no_repeats stops where the mails run out (48 + 48); every_row uses every ticket (240 + 240, mails x5).
    made, out, plan = _write(_repo(tmp_path, total=total))
    assert Counter(_sources(out, "train")) == drawn
    assert made.rows == {"train": sum(drawn.values()), "validation": 30 + 6, "test": 30 + 6}
    assert made.rows == {s: getattr(plan.data.rows, s) for s in made.rows}  # prepare_data finds what the plan said
    assert made.sources == {
        "tickets": {"available": 240, "drawn": drawn["tickets"], "held_out": {"validation": 30, "test": 30}},
        "mails": {"available": 48, "drawn": drawn["mails"], "held_out": {"validation": 6, "test": 6}}}
    # Records, origins and sources line up; the mails' rows went through their own rename and derive.
    records = prepared.read_records(out, "train")
    origins = list(prepared.iter_origins(out, "train"))
    for record, origin, name in zip(records, origins, _sources(out, "train"), strict=True):
        assert origin.startswith("tickets.jsonl:" if name == "tickets" else "mails.jsonl:")
        assert record["prompt"].startswith("Request: ticket" if name == "tickets" else "Request: mail")
        assert record["completion"].strip() in QUEUES
    mail_rows = Counter(o for o, n in zip(origins, _sources(out, "train")) if n == "mails")
    assert set(mail_rows.values()) == {drawn["mails"] // 48}  # every row the same number of times


def test_the_draw_is_the_same_under_the_same_seed_and_differs_under_another(tmp_path):
    first = _write(_repo(tmp_path / "a", seed=7))[1]
    again = _write(_repo(tmp_path / "b", seed=7))[1]
    other = _write(_repo(tmp_path / "c", seed=8))[1]
    assert _bytes(first) == _bytes(again)
    assert _bytes(first)["train.origins"] != _bytes(other)["train.origins"]
    # The mixture's seed draws the training rows only: the held-out splits stay.
    for name in ("validation.jsonl", "validation.sources", "test.jsonl", "test.origins", "test.sources"):
        assert _bytes(first)[name] == _bytes(other)[name]


def test_held_out_rows_are_per_source_and_a_weight_change_does_not_move_them(tmp_path):
    even = _write(_repo(tmp_path / "a", w_tickets=0.5, w_mails=0.5, total="every_row"))[1]
    heavy = _write(_repo(tmp_path / "b", w_tickets=0.9, w_mails=0.1, total="every_row"))[1]
    assert Counter(_sources(even, "train")) != Counter(_sources(heavy, "train"))
    # The base evaluation reuses its results across a weight change: its split must be byte-identical.
    for name in ("test.jsonl", "test.origins", "test.sources", "validation.jsonl", "validation.sources"):
        assert (even / name).read_bytes() == (heavy / name).read_bytes()
    # Held out of each source in its share, and interleaved: a first few test rows have both sources.
    assert Counter(_sources(even, "test")) == {"tickets": split_sizes(300, 0.1, 0.1)[2],
                                               "mails": split_sizes(60, 0.1, 0.1)[2]}
    assert set(_sources(even, "test")[:6]) == {"tickets", "mails"}


def test_data_limit_on_train_keeps_the_mixtures_proportions(tmp_path):
    made, out, _ = _write(_repo(tmp_path, w_tickets=0.75, w_mails=0.25, total=200,
                                extra=SPLIT + "  limit: {train: 40}\n"))
    assert made.rows["train"] == 40
    assert Counter(_sources(out, "train")) == {"tickets": 30, "mails": 10}


def test_a_prepare_cut_off_in_the_second_source_resumes_to_the_same_bytes(tmp_path, monkeypatch):
    whole = _write(_repo(tmp_path / "whole"))[1]
    spec = _repo(tmp_path / "cut")
    plan = compile_spec(spec)[0]
    work = tmp_path / "cut/work"
    monkeypatch.setattr(S, "CHECKPOINT_ROWS", 20)
    real = S.RowFormatter.render
    seen = {"mails": 0}

    def render(self, row, answer=True):
        if self.pre_rename:  # the second source (the only one with renames of its own)
            seen["mails"] += 1
            if seen["mails"] == 45:
                raise KeyboardInterrupt  # cut off past its second checkpoint
        return real(self, row, answer)

    monkeypatch.setattr(S.RowFormatter, "render", render)
    with pytest.raises(KeyboardInterrupt):
        _write(spec, plan, work=work)
    state = json.loads((work / "train.1.state.json").read_text())
    assert json.loads((work / "train.0.state.json").read_text())["done"] and state["last"] == 40
    assert not (tmp_path / "cut/out/train.jsonl").exists()  # nothing half-written
    monkeypatch.setattr(S.RowFormatter, "render", real)
    seen["mails"] = 0
    resumed = _write(spec, plan, work=work)[1]
    assert _bytes(resumed) == _bytes(whole)


def test_a_source_with_no_rows_is_an_error_at_its_place_naming_it(tmp_path):
    spec = _repo(tmp_path)
    plan = compile_spec(spec)[0]
    (tmp_path / "mails.jsonl").write_text("")  # emptied since (with a plan of its new content)
    mix = plan.data.sources["train"]
    part = mix.parts[1].model_copy(update={"source": mix.parts[1].source.model_copy(
        update={"sha256": fingerprint(tmp_path / "mails.jsonl")})})
    data = plan.data.model_copy(update={"sources": {**plan.data.sources, "train": mix.model_copy(
        update={"parts": (mix.parts[0], part)})}})
    with pytest.raises(SpecError) as err:
        _write(spec, plan.model_copy(update={"data": data}))
    assert str(err.value) == "data.train.1: source 'mails' has no rows; nothing to draw from it"
    assert not (tmp_path / "out/train.jsonl").exists()


def test_a_changed_source_file_is_refused_at_its_place(tmp_path):
    spec = _repo(tmp_path)
    plan = compile_spec(spec)[0]
    (tmp_path / "mails.jsonl").write_text(json.dumps({"body": "new", "team": "BILLING"}) + "\n")
    with pytest.raises(SpecError) as err:
        _write(spec, plan)
    assert str(err.value).startswith("mails.jsonl: data.train.1: data file changed since the plan was made")


def test_a_held_out_file_of_its_own_is_named_after_its_split(tmp_path):
    spec = _repo(tmp_path, extra="  validation: tickets.jsonl\n")
    made, out, _ = _write(spec)
    assert set(_sources(out, "validation")) == {"validation"} and made.rows["validation"] == 300
    assert Counter(_sources(out, "train")) == {"tickets": 60, "mails": 60}  # no split: every row is a training row


def test_a_single_source_writes_no_sources_files(tmp_path):
    spec = _repo(tmp_path)
    text = spec.read_text()
    spec.write_text(text[:text.index("  train:")] + "  train: tickets.jsonl\n" + SPLIT + text[text.index("format:"):])
    made, out, _ = _write(spec)
    assert made.sources is None and prepared.iter_sources(out, "train") is None
    assert not prepared.sources_file(out, "test").exists()


def test_prepare_data_states_each_sources_rows_and_agrees_with_the_plan(tmp_path):
    pytest.importorskip("torch")
    from ftspec.backends.local.steps import prepare_data
    from ftspec.catalog import steps
    from ftspec.plan import keys
    from ftspec.runtime.context import StepContext

    spec = _repo(tmp_path, total="every_row")
    plan = compile_spec(spec)[0]
    out = tmp_path / "run/data"
    out.mkdir(parents=True)
    lines: list[str] = []
    ctx = StepContext(find_root(spec), out.parent, plan.step("prepare_data").key, lines.append)
    prepare_data(keys.view(plan, steps.PREPARE_DATA), ctx, out)
    stats = json.loads((out / "stats.json").read_text())
    tokens = {name: v.pop("tokens") for name, v in stats["sources"].items()}
    assert stats["sources"] == {
        "tickets": {"available": 240, "drawn": 240, "held_out": {"validation": 30, "test": 30}},
        "mails": {"available": 48, "drawn": 240, "held_out": {"validation": 6, "test": 6}}}
    # Each source's training tokens (cut to max_length) add up to the split's, counted from its length histogram.
    shard = json.loads((out / "train-tokens" / "shard-00000.json").read_text())
    cut = plan.training.max_length
    assert all(n > 0 for n in tokens.values())
    assert sum(tokens.values()) == sum(min(int(k), cut) * v for k, v in shard["lengths"].items())
    assert "by_source" not in stats["splits"]["train"]
    assert "rows_differ_from_plan" not in stats
    assert "  train rows by source: tickets 240 of 240 · mails 240 of 48 (x5.00)" in lines, lines
    assert len(_sources(out, "validation")) == stats["splits"]["validation"]["rows"] == 36


def test_a_sources_line_that_is_not_a_name_is_an_error_at_its_line(tmp_path):
    prepared.sources_file(tmp_path, "test").write_text('"a"\n7\n')
    with pytest.raises(SpecError) as err:
        list(prepared.iter_sources(tmp_path, "test"))
    assert str(err.value) == f"{prepared.sources_file(tmp_path, 'test')}:2: holds no source name (a JSON string)"


def test_a_mixture_runs_end_to_end_scores_each_source_and_exports_with_each_source_named(tmp_path):
    """The whole pipeline on a two-source mixture: the report's per-source metrics add up to the
    overall one over the evaluated rows, and the exported model card names each source."""
    pytest.importorskip("torch")
    from ftspec.commands.export import export
    from ftspec.commands.run import run

    spec = _repo(tmp_path / "repo", extra="  split: {validation: 0.1, test: 0.2, seed: 5}\n")
    sets = ["eval.limit=24"]  # rows of both sources (the held-out rows interleave them: 1 mail in 6)
    result = run(spec, sets=sets, echo=lambda line: None)
    report = result.report
    by_source = report["by_source"]
    assert set(by_source["sources"]) == {"tickets", "mails"}
    scored = [r for r in read_jsonl_rows(result.step_dir("eval_tuned"))]
    names = list(prepared.iter_sources(result.step_dir("prepare_data"), report["split"]))[:len(scored)]
    rows = {name: by_source["sources"][name]["rows"] for name in by_source["sources"]}
    assert rows == dict(Counter(names)) and sum(rows.values()) == report["rows"]
    overall = report["tuned"]["accuracy"]
    weighted = sum(by_source["sources"][n]["tuned"]["accuracy"] * rows[n] for n in rows) / report["rows"]
    assert weighted == pytest.approx(overall)
    out = tmp_path / "exported"
    export(spec, sets=sets, output=out)
    card = (out / "README.md").read_text(encoding="utf-8")
    assert "| train.tickets | `tickets.jsonl` |" in card and "| train.mails | `mails.jsonl` |" in card


def read_jsonl_rows(folder: Path) -> list[dict]:
    """The scored rows an eval step wrote (one JSON object a line)."""
    found = sorted(folder.glob("*.jsonl"))
    assert found, f"no scored rows in {folder}"
    return [json.loads(line) for line in found[0].read_text(encoding="utf-8").splitlines() if line.strip()]
