"""`ftspec runs` and `gc` print what a run directory's files and names say (ftspec/commands/runs.py):
a pull request chooses those, so each control character is shown escaped, never sent to the terminal."""

from __future__ import annotations

import json

from ftspec.commands.runs import render_runs, runs
from ftspec.core.text import printable


def test_runs_shows_hostile_names_and_values_escaped(tmp_path):
    run = tmp_path / "runs" / "evil\x1b[2J"
    run.mkdir(parents=True)
    (run / "manifest.json").write_text(json.dumps({
        "plan_id": "\x1b]0;title\x07abc", "status": "done\x1b[1A\x1b[2K\nfaked  gates ok", "started_at": "\u202ex"}))
    (run / "metrics.json").write_text(json.dumps({"headline": "acc\x1b[8m", "tuned": {"acc\x1b[8m": 0.5},
                                                  "gates_passed": True}))
    listing = runs(tmp_path / "runs")
    lines = render_runs(listing)
    assert len(lines) == 1
    text = lines[0] + "".join(p for r in listing.runs for p in r.problems)
    assert all(c.isprintable() for c in text)
    assert "evil\\x1b[2J" in text and "done\\x1b[1A\\x1b[2K\\nfaked" in text and "\\u202ex" in text


def test_printable_escapes_only_what_is_not_printable():
    assert printable("plain ✓ text") == "plain ✓ text"
    assert printable("a\x1b[31mb\r\n\u2028\u202e") == "a\\x1b[31mb\\r\\n\\u2028\\u202e"


def _run(folder, name: str, plan_id: str, profiles=(), overrides=()):
    run = folder / name
    run.mkdir(parents=True)
    (run / "manifest.json").write_text(json.dumps({"plan_id": plan_id, "status": "finished", "spec": {
        "path": "job.yaml", "profiles": list(profiles), "overrides": list(overrides)}}))


def _record(root, name: str, run_dir: str, plan_id: str, forced: bool = False):
    (root / "promoted").mkdir(exist_ok=True)
    (root / "promoted" / f"{name}.json").write_text(json.dumps({
        "promotion_version": 1, "name": name, "spec": "job.yaml", "variant": {"profiles": [], "sets": []},
        "plan_id": plan_id, "run_dir": run_dir, "train_key": "b" * 64, "model_sha256": "c" * 64, "bedrock": None,
        "gates": [], "gates_passed": not forced, "failed_gates": ["accuracy"] if forced else [], "forced": forced,
        "promoted_at": "2025-01-01T00:00:00+00:00", "ftspec_version": "0"}))


def test_runs_explains_a_variant_named_by_a_hash_and_what_is_promoted(tmp_path):
    runs_dir = tmp_path / "runs"
    _run(runs_dir, "job", "a" * 64)
    _run(runs_dir, "job@smoke", "d" * 64, profiles=["smoke"])  # its name says it all: no line
    _run(runs_dir, "job@set-c56f94ea4f", "e" * 64, profiles=["smoke"],
         overrides=['eval.gates.accuracy=">= 0.99"', "data.limit=[1, 2]\x1b[2J"])
    _record(tmp_path, "prod", "runs/job", "a" * 64)
    _record(tmp_path, "dev", "runs/job@set-c56f94ea4f", "e" * 64, forced=True)
    _record(tmp_path, "old", "runs/job@smoke", "f" * 64)
    lines = render_runs(runs(runs_dir))
    assert ("variant job@set-c56f94ea4f: made with --profile smoke --set 'eval.gates.accuracy=\">= 0.99\"' "
            "--set 'data.limit=[1, 2]\\x1b[2J'") in lines
    assert not any(line.startswith("variant job@smoke") for line in lines)
    assert "promoted prod: job (plan aaaaaaaaaaaa)" in lines
    assert "promoted dev: job@set-c56f94ea4f (plan eeeeeeeeeeee); forced past failed gates: accuracy" in lines
    assert "promoted old: plan ffffffffffff of runs/job@smoke, which holds plan dddddddddddd now" in lines
    assert all(line.isprintable() for line in lines)


def test_runs_lists_without_a_promotion_record_it_cannot_read(tmp_path):
    _run(tmp_path / "runs", "job", "a" * 64)
    (tmp_path / "promoted").mkdir()
    (tmp_path / "promoted" / "prod.json").write_text("{not json")
    listing = runs(tmp_path / "runs")
    assert [r.name for r in listing.runs] == ["job"]
    assert any("prod.json" in p and "not shown" in p for p in listing.problems)
