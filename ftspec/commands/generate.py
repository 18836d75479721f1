"""`ftspec generate`: answer inputs with a spec's trained model, formatted as in training."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from ftspec.commands.trained import trained_plan
from ftspec.core.errors import SpecError
from ftspec.runtime.tools import generate as G


def generate(spec: Path, profiles: Iterable[str] = (), sets: Iterable[str] = (), allow: Iterable[str | Path] = (), *,
             texts: Iterable[str] = (), columns: Mapping[str, str] | None = None, file: Path | None = None,
             with_base: bool = False, max_new_tokens: int | None = None) -> list[dict]:
    """One result per input row (input, prompt, tuned, and base with ``with_base``): rows
    from ``file`` (JSON lines), or one per text, each filled with ``columns``; formatted
    exactly as training formatted its rows. Raises SpecError, each issue at its place."""
    trained = trained_plan(spec, profiles, sets, allow)
    try:
        rows = G.rows_from_inputs(G.Prompter.from_plan(trained.plan), texts, dict(columns or {}), file)
        return G.generate_rows(trained.plan, trained.root, rows, with_base, max_new_tokens)
    except SpecError as exc:
        raise SpecError(trained.locate(i) for i in exc.issues) from None


def render_results(results: list[dict], as_json: bool = False, show_prompt: bool = False) -> str:
    """The results as `ftspec generate` prints them: a JSON line each, or text to read."""
    if as_json:
        return "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in results)
    return G.render_text(results, show_prompt)
