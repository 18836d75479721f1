"""`ftspec templates`: the built-in prompt templates a spec can name."""

from __future__ import annotations

from ftspec.data.templates import builtin_names


def template_names() -> list[str]:
    """The built-in templates' names, as a spec names them in ``{builtin: NAME}``."""
    return list(builtin_names())
