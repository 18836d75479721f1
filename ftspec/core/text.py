"""Text from a file shown on a terminal or in a log: every character that is not
printable is written as its escape, so a run directory's name or a value in a file a
pull request carries cannot move the cursor, clear the screen, set the window's
title, reorder text (bidi controls) or start a line that ftspec did not write."""

from __future__ import annotations


def printable(text: str) -> str:
    """``text`` with each control, format or separator character (``\\x1b``, ``\\n``,
    ``\\u202e``…) shown as its Python escape; printable text is returned as it is."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
