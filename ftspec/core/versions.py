"""The installed versions of ftspec and the libraries a run depends on, read from the
packages' metadata without importing them (a lockfile pins them; a run's manifest records them)."""

from __future__ import annotations

from importlib import metadata

from ftspec import __version__

# What a lockfile pins: the libraries that change what training computes.
LIBRARIES = ("torch", "transformers", "peft", "trl", "datasets")


def versions(names: tuple[str, ...] = LIBRARIES) -> dict[str, str | None]:
    """Installed versions of ftspec and the named libraries (None: not installed)."""
    out: dict[str, str | None] = {"ftspec": __version__}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out
