"""A folder written whole, as ftspec.core.io writes a file: built beside its place under a
name of its own, then renamed into place; an existing folder (empty, or replaced with
``--force``) is moved aside first and removed only once the new one is in place. On any
failure the old folder is back where it was and nothing ftspec made is left beside it.
What the folder may be at all is ftspec.core.paths.target_problem's to say."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

from ftspec.core.errors import Pos, SpecError


def folder_problem(out: Path, force: bool) -> str | None:
    """Why ``out`` cannot be written as a new folder, or None: a symbolic link, something
    that is not a folder, a folder that is not empty (without ``force``), the current
    directory or one above it."""
    out = Path(out)
    if out.is_symlink():
        return "is a symbolic link; give a folder"
    if out.exists() and not out.is_dir():
        return "exists and is not a folder"
    real = out.resolve()
    cwd = Path.cwd().resolve()
    if real == cwd or real in cwd.parents:
        return "is the current directory or holds it; give a folder of its own"
    if out.is_dir() and not force and any(out.iterdir()):
        return "exists and is not empty"
    return None


def link_on_way(path: Path, top: Path) -> Path | None:
    """The first symbolic link among ``top``, the folders between it and ``path``, and
    ``path`` itself (looked at, never followed), or None. ``path`` must be ``top`` or lie
    under it as written (ValueError otherwise: a bug)."""
    top, path = Path(os.path.abspath(top)), Path(os.path.abspath(path))
    rest = path.relative_to(top).parts
    if ".." in rest:
        raise ValueError(f"{path} does not lie under {top}")
    for at in (top, *(top.joinpath(*rest[:i]) for i in range(1, len(rest) + 1))):
        if os.path.islink(at):
            return at
    return None


def refuse_links(path: Path, top: Path, doing: str = "writes and removes files there") -> None:
    """Raise SpecError (one line) when :func:`link_on_way` finds a link between ``top`` and
    ``path``, or something that is not a folder where ``path`` is: ftspec follows no link
    into a folder it keeps (a pull request can commit one pointing anywhere)."""
    link = link_on_way(path, top)
    if link is not None:
        raise SpecError.one(Pos(str(link)), "", f"is a symbolic link (to {os.readlink(link)}); ftspec {doing} "
                            "itself and follows no link there, so it wrote and removed nothing through it",
                            "remove the link (ftspec never makes one there)")
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(mode):
        raise SpecError.one(Pos(str(path)), "", f"is not a folder ftspec made (ftspec {doing}); it was left as it is",
                            "remove it if no ftspec run is using this folder")


def remove_own(path: Path, top: Path) -> None:
    """Remove the folder ``path`` that ftspec made under ``top`` (a step's ``.partial``, its
    checkpoints), with all it holds, following no link: a link anywhere from ``top`` down
    to ``path``, or a ``path`` that is not a folder, is refused (SpecError, one line) and
    nothing is removed; below ``path`` shutil.rmtree follows no link either. Missing: nothing to do."""
    refuse_links(path, top, "removes only the folders it made")
    if os.path.lexists(path):
        shutil.rmtree(path, ignore_errors=True)


def new_partial(out: Path) -> Path:
    """An empty folder beside ``out`` to build it in, with the mode mkdir gives a folder
    (mkdtemp makes it private; what is exported is the user's, under their umask)."""
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    partial.chmod(0o777 & ~current_umask())
    return partial


def current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def user_modes(folder: Path) -> None:
    """Every file and folder under ``folder`` with the mode the user's umask gives a new one:
    libraries write some files private (transformers' model.safetensors is 0600), but what
    ftspec hands the user is theirs to share. An executable keeps its execute bits."""
    umask = current_umask()
    for path in (Path(folder), *Path(folder).rglob("*")):
        if path.is_symlink():
            continue
        mode = path.stat().st_mode
        wide = 0o777 if path.is_dir() or mode & 0o111 else 0o666
        path.chmod(wide & ~umask)


def replace_folder(partial: Path, out: Path) -> None:
    """Rename ``partial`` to ``out`` (see the module's docstring), its files first given the
    user's modes (:func:`user_modes`). Raises OSError when it cannot: then ``partial`` is
    removed and ``out`` is as it was."""
    out = Path(out).resolve()
    try:
        user_modes(partial)
        if not out.exists():
            os.replace(partial, out)
            return
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    aside = old / out.name
    try:
        os.replace(out, aside)
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)
        old.rmdir()
        raise
    try:
        os.replace(partial, out)
    except OSError:
        os.replace(aside, out)
        shutil.rmtree(partial, ignore_errors=True)
        old.rmdir()
        raise
    shutil.rmtree(old, ignore_errors=True)
