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
