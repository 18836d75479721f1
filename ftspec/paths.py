"""Which files a spec may name.

A spec can come from someone the repository owner does not fully trust (a pull
request), and CI runs it. So every path in a spec — data, templates, schemas, a
local model, a base spec, the output directory — must resolve, symlinks followed,
inside the spec's repository. Only the person running ftspec can allow more, with
``--allow-path DIR`` or the ``FTSPEC_ALLOW_PATHS`` environment variable (folders
separated by the OS path separator); a spec can never widen this itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

ENV = "FTSPEC_ALLOW_PATHS"


def find_root(spec_path: Path) -> Path:
    """The spec's repository root (the nearest folder above it with ``.git``), else its folder."""
    start = Path(spec_path).resolve().parent
    for folder in (start, *start.parents):
        if (folder / ".git").exists():
            return folder
    return start


@dataclass(frozen=True)
class PathPolicy:
    root: Path
    allowed: tuple[Path, ...] = ()

    @classmethod
    def for_spec(cls, spec_path: Path, allow: Iterable[str | Path] = ()) -> "PathPolicy":
        extra = [p for p in os.environ.get(ENV, "").split(os.pathsep) if p.strip()]
        return cls(find_root(spec_path), tuple(Path(p).expanduser().resolve() for p in [*allow, *extra]))

    def outside(self, path: Path, shown: str) -> str | None:
        """A one-line refusal when ``path`` leaves the places a spec may name, else None."""
        real = Path(path).resolve()
        for base in (self.root, *self.allowed):
            if real == base or base in real.parents:
                return None
        return (f"'{shown}' resolves outside the spec's repository ({self.root}); a spec may only name files inside it"
                f" (whoever runs ftspec can allow a folder with --allow-path DIR or {ENV})")
