"""`ftspec diff` of a training mixture (``data.train`` as a list): a change to a source's weight,
rows or epochs, or to ``data.mix.total``, is shown as what it does, the rows drawn from each
source and from all of them, besides the raw field changes. The readable outputs of the weight
change are checked against reviewed golden files (tests/golden/diff/mixture-*)."""

from __future__ import annotations

import json
import os

import pytest
import yaml
from conftest import ROOT

from ftspec.plan.compile import compile_sourced
from ftspec.plan.diff import MISSING, diff_plans
from ftspec.plan.diff_render import render_json, render_markdown, render_text

GOLDEN = ROOT / "tests" / "golden" / "diff"
TICKETS = (ROOT / "specs" / "data" / "support-tickets.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)


@pytest.fixture(autouse=True)
def _offline_hub(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path_factory.mktemp("hf-cache")))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def mixture_spec(parts: list[dict], mix: dict | None = None) -> dict:
    doc = yaml.safe_load((ROOT / "specs/quickstart.yaml").read_text(encoding="utf-8"))
    doc["name"] = "mixture"
    doc["data"]["train"] = parts
    if mix is not None:
        doc["data"]["mix"] = mix
    return doc


def make_repo(root, spec: dict):
    """A repository with specs/mix.yaml and two sources of the shipped tickets: a (300 rows), b (200 rows)."""
    (root / ".git").mkdir(parents=True, exist_ok=True)
    (root / "specs/data").mkdir(parents=True, exist_ok=True)
    (root / "specs/data/a.jsonl").write_text("".join(TICKETS[:300]), encoding="utf-8")
    (root / "specs/data/b.jsonl").write_text("".join(TICKETS[-200:]), encoding="utf-8")
    path = root / "specs/mix.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def diff_of(tmp_path, old_spec: dict, new_spec: dict):
    old_path, new_path = make_repo(tmp_path / "old", old_spec), make_repo(tmp_path / "new", new_spec)
    here = os.getcwd()
    os.chdir(tmp_path)
    try:
        (old, old_origin), (new, new_origin) = compile_sourced(old_path), compile_sourced(new_path)
    finally:
        os.chdir(here)
    return diff_plans(old, new, old_origin, new_origin)


A, B = {"path": "data/a.jsonl"}, {"path": "data/b.jsonl"}
WEIGHTS_70_30 = [A | {"weight": 0.7}, B | {"weight": 0.3}]
WEIGHTS_80_20 = [A | {"weight": 0.8}, B | {"weight": 0.2}]


def drawn(d) -> list[tuple]:
    return [(r.source, r.old, r.new) for r in d.mixture]


def test_a_weight_change_is_shown_as_rows_per_source(tmp_path, update_golden):
    d = diff_of(tmp_path, mixture_spec(WEIGHTS_70_30), mixture_spec(WEIGHTS_80_20))
    # 240 and 160 training rows (a 10%/10% held-out split of 300 and 200). no_repeats: the most rows
    # that repeat none: 70/30 -> floor(min(240/0.7, 160/0.3)) = 342 (239.4 + 102.6 -> 239 + 103);
    # 80/20 -> floor(min(240/0.8, 160/0.2)) = 300 (240 + 60).
    assert drawn(d) == [("a", 239, 240), ("b", 103, 60), (None, 342, 300)]
    assert "data.sources.train.parts[0].amount" in {c.path for c in d.changes}  # the raw change is still shown
    text, md = render_text(d), render_markdown(d)
    assert ("  the mixture's draw (rows per source, before data.limit):\n    rows from a: 239 → 240\n"
            "    rows from b: 103 → 60\n    rows of the mixture: 342 → 300\n") in text
    assert "- rows from `a`: 239 → 240" in md and "- rows of the mixture: 342 → 300" in md
    assert json.loads(render_json(d))["mixture"] == [
        {"source": "a", "old": 239, "new": 240, "estimated": False},
        {"source": "b", "old": 103, "new": 60, "estimated": False},
        {"source": None, "old": 342, "new": 300, "estimated": False}]
    for filename, out in (("mixture-weight.txt", text), ("mixture-weight.md", md)):
        out = out.replace(d.old_id[:12], "<old-id>").replace(d.new_id[:12], "<new-id>")
        assert str(tmp_path) not in out
        path = GOLDEN / filename
        if update_golden:
            path.write_text(out, encoding="utf-8")
        assert path.exists(), f"no golden diff {path.name}; run pytest --update-golden and review it"
        assert out == path.read_text(encoding="utf-8"), f"{filename} changed; review, then pytest --update-golden"


def test_rows_epochs_and_the_total_are_shown_as_rows_per_source(tmp_path):
    d = diff_of(tmp_path, mixture_spec([A | {"rows": 100}, B | {"epochs": 1}]),
                mixture_spec([A | {"rows": 120}, B | {"epochs": 1.5}]))
    assert drawn(d) == [("a", 100, 120), ("b", 160, 240), (None, 260, 360)]
    d = diff_of(tmp_path / "total", mixture_spec(WEIGHTS_70_30), mixture_spec(WEIGHTS_70_30, {"total": "every_row"}))
    # every_row: the fewest rows that use every row: ceil(max(240/0.7, 160/0.3)) = 534 (373.8 + 160.2)
    assert drawn(d) == [("a", 239, 374), ("b", 103, 160), (None, 342, 534)]
    assert "rows of the mixture: 342 → 534" in render_text(d)


def test_a_source_added_shows_on_its_own_side_only(tmp_path):
    d = diff_of(tmp_path, mixture_spec([A | {"rows": 100}]), mixture_spec([A | {"rows": 100}, B | {"rows": 50}]))
    assert drawn(d) == [("a", 100, 100), ("b", MISSING, 50), (None, 100, 150)]
    assert "rows from b: — → 50 (a new source)" in render_text(d)
    d = diff_of(tmp_path / "removed", mixture_spec([A | {"rows": 100}, B | {"rows": 50}]),
                mixture_spec([A | {"rows": 100}]))
    assert "rows from b: 50 → — (source removed)" in render_text(d)


def test_a_change_that_draws_the_same_rows_shows_no_draw(tmp_path):
    old = mixture_spec(WEIGHTS_70_30)
    new = mixture_spec(WEIGHTS_70_30)
    new["training"]["learning_rate"] = 2.0e-3
    d = diff_of(tmp_path, old, new)
    assert d.mixture == [] and d.changes
    assert "the mixture's draw" not in render_text(d) + render_markdown(d)
    assert "mixture" not in json.loads(render_json(d))
