"""`ftspec chat`: talk to a chat-format spec's trained model, turn by turn."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TextIO

from ftspec.commands.trained import trained_plan
from ftspec.core.errors import Issue, Pos, SpecError
from ftspec.runtime.tools import generate as G


def chat(spec: Path, profiles: Iterable[str] = (), sets: Iterable[str] = (), allow: Iterable[str | Path] = (), *,
         use_base: bool = False, max_new_tokens: int | None = None, read: TextIO, write: Callable[[str], None],
         note: Callable[[str], None], interactive: bool = False) -> int:
    """Answer each line read from ``read`` as a user turn, rendered with the spec's turns and
    chat template as in training, through ``write``; ``/reset`` starts again, ``/quit`` or
    the end of input ends. ``note`` gets what is for a person at a terminal (with
    ``interactive``: a greeting and the prompts). How many lines were answered. Raises
    SpecError, each issue at its place."""
    trained = trained_plan(spec, profiles, sets, allow)
    plan = trained.plan
    if plan.method.objective == "reward_model":  # said before the format is (its pairs are no chat either)
        raise SpecError([trained.locate(Issue(Pos("method.kind"), "method.kind", "a reward model scores answers "
                                              "with its score head; it does not write them, so there is nothing to "
                                              "chat with"))])
    try:
        prompter = G.check_chat(plan, str(spec))
        G.prepare_runtime(plan)
        loaded = G.load(plan, trained.root, tuned=not use_base)
        if interactive:
            note(f"{plan.name}: the {'base' if use_base else 'trained'} model; /reset starts again, "
                 "/quit or Ctrl-D ends\n")
        return G.chat_loop(plan, prompter, loaded, read, write, note, max_new_tokens, interactive)
    except SpecError as exc:
        raise SpecError(trained.locate(i) for i in exc.issues) from None
