"""Which files a spec may name.

A spec can come from someone the repository owner does not fully trust (a pull
request), and CI runs it. So every path in a spec — data, templates, schemas, a
local model, a base spec, the output directory — must resolve, symlinks followed,
inside the spec's repository. Only the person running ftspec can allow more, with
``--allow-path DIR`` or the ``FTSPEC_ALLOW_PATHS`` environment variable (folders
separated by the OS path separator); a spec can never widen this itself.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

ENV = "FTSPEC_ALLOW_PATHS"


def find_root(spec_path: Path) -> Path:
    """The spec's repository root (the nearest folder above it with ``.git``), else its folder.
    Found from where the spec file is named, not where a link there points: a spec that is a
    link out of its repository is then refused by the path policy, not given the link's target
    folder as its repository."""
    start = Path(spec_path).absolute().parent.resolve()
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
        """A one-line refusal when ``path`` leaves the places a spec may name (or cannot
        be resolved at all), else None."""
        real, problem = resolved(path)
        if real is None:
            return f"'{shown}' {problem}"
        for base in (self.root, *self.allowed):
            if real == base or base in real.parents:
                return None
        return (f"'{shown}' resolves outside the spec's repository ({self.root}); a spec may only name files inside it"
                f" (whoever runs ftspec can allow a folder with --allow-path DIR or {ENV})")


def resolved(path: Path) -> tuple[Path | None, str | None]:
    """``path`` with every symlink followed, or None and why it cannot be."""
    try:
        return Path(path).resolve(), None
    except RuntimeError:  # Python 3.11 and before: a symlink loop
        return None, "is a loop of symbolic links"
    except ValueError:
        return None, "contains a NUL character"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return None, "is a loop of symbolic links"
        return None, f"cannot be resolved: {exc.strerror or exc}"


# --------------------------------------------------------------------------- regular files


class NotRegularFile(OSError):
    """A path that names something other than a regular file (a FIFO, a device, a socket);
    ``strerror`` says what it is."""

    def __init__(self, what: str):
        super().__init__(errno.EINVAL, what)


def file_kind(mode: int) -> str | None:
    """What a file of this ``st_mode`` is, in words, when it is not a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a directory"
    if stat.S_ISFIFO(mode):
        return "is a FIFO (named pipe), not a regular file"
    if stat.S_ISCHR(mode):
        return "is a character device, not a regular file"
    if stat.S_ISBLK(mode):
        return "is a block device, not a regular file"
    if stat.S_ISSOCK(mode):
        return "is a socket, not a regular file"
    return "is not a regular file"


def file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be read as a regular file ('not found', 'is a directory',
    'is a FIFO …'), or None. Looks without opening, so a FIFO never blocks."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return "not found"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "is a loop of symbolic links"
        return f"cannot be read: {exc.strerror or exc}"
    except ValueError:  # a NUL byte in the name
        return "contains a NUL character"
    return file_kind(mode)


def open_regular(path: Path):
    """Open a regular file for reading in binary, refusing anything else at once: the
    open itself does not block on a FIFO (O_NONBLOCK), and what was opened is checked
    (fstat), so a file swapped for a FIFO or a device between a check and the open is
    refused too. Raises FileNotFoundError, IsADirectoryError or NotRegularFile."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    try:
        mode = os.fstat(fd).st_mode
        kind = file_kind(mode)
        if kind is not None:
            if stat.S_ISDIR(mode):
                raise IsADirectoryError(21, "Is a directory", str(path))
            raise NotRegularFile(kind)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: Path, limit: int) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes; raises :class:`TooLarge`
    past it (without reading more than ``limit + 1`` bytes)."""
    with open_regular(path) as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(limit)
    return data


class TooLarge(OSError):
    def __init__(self, limit: int):
        super().__init__(errno.EFBIG, f"is larger than {limit} bytes")
        self.limit = limit


def describe_os_error(exc: OSError) -> str:
    """An OSError from opening or reading a file, as the end of a sentence about it."""
    if isinstance(exc, FileNotFoundError):
        return "not found"
    if exc.errno == errno.ELOOP:
        return "is a loop of symbolic links"
    if isinstance(exc, IsADirectoryError):
        return "is a directory"
    if isinstance(exc, (NotRegularFile, TooLarge)):
        return exc.strerror
    return f"cannot be read: {exc.strerror or exc}"


# --------------------------------------------------------------------------- hub names

# A hub repository id: an optional owner and a name, each of letters, digits, '-',
# '_' and '.', not starting with '.' or '-', with no '..' or '--' (the hub's own rules).
_HUB_PART = r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?"
HUB_ID = re.compile(rf"^(?:{_HUB_PART}/)?{_HUB_PART}$")
# A revision: a commit hash, tag or branch (git ref names; '/' allowed, never '..').
REVISION = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_./+-]{0,254}$")


def hub_id_problem(value: str) -> str | None:
    """Why ``value`` is not a hub repository id, or None."""
    if not HUB_ID.match(value) or ".." in value or "--" in value:
        return (f"'{value}' is not a hub id (OWNER/NAME: letters, digits, '-', '_' and '.'); "
                "a local folder starts with ./ or ../")
    return None


def revision_problem(value: str) -> str | None:
    """Why ``value`` is not a revision (a commit hash, tag or branch), or None."""
    parts = value.split("/")
    if (not REVISION.match(value)
            or any(p in ("", ".", "..") or p.startswith(".") or p.endswith(".lock") for p in parts)
            or ".." in value):
        return (f"'{value}' is not a revision: a commit hash, tag or branch name "
                "(letters, digits, '.', '_', '-', '+' and '/', no '..')")
    return None


def looks_local(value: str) -> bool:
    """Whether a model or tokenizer name is written as a local path."""
    return value.startswith((".", "/", "~", "\\")) or "\\" in value or (len(value) > 1 and value[1] == ":")


def local_shadow(value: str, *folders: Path) -> Path | None:
    """A local file or folder that a hub id would load instead of the hub repository
    (transformers and datasets try a local path of that name first): relative to
    each of ``folders`` and to the working directory."""
    for folder in (*folders, Path.cwd()):
        try:
            candidate = Path(folder) / value
            if candidate.exists():
                return candidate
        except (OSError, ValueError):
            continue
    return None


# --------------------------------------------------------------------------- what ftspec writes


@dataclass(frozen=True)
class Protected:
    """What no file or folder ftspec writes may replace, remove or write into, each path
    resolved (symlinks followed): the repository ``root`` and its ``.git``; ``folders``
    ftspec keeps, each with what it is ("the run directory 'runs/x'", "the step store …");
    and the ``inputs`` of a plan — spec files, data, templates, schemas, local models."""

    root: Path
    folders: tuple[tuple[Path, str], ...] = ()
    inputs: tuple[Path, ...] = ()

    @classmethod
    def of(cls, root: Path, folders: Iterable[tuple[Path, str]] = (), inputs: Iterable[Path] = ()) -> "Protected":
        """The paths resolved; one that cannot be resolved (a loop) is left out, as nothing can be written there."""
        real_folders = {r: what for path, what in folders if (r := resolved(path)[0]) is not None}
        real_root = Path(root).resolve()
        real_inputs = (resolved(p)[0] for p in inputs)
        # An "input" that is the root or above it (data.train: .) is an error of its own key;
        # the root is guarded here as the root (inside it is where run directories belong).
        return cls(real_root, tuple(real_folders.items()),
                   tuple(dict.fromkeys(p for p in real_inputs
                                       if p is not None and p != real_root and p not in real_root.parents)))

    def shown(self, path: Path) -> str:
        """A path as the user wrote it: relative to the repository root where it is inside."""
        try:
            return path.relative_to(self.root).as_posix() or "."
        except ValueError:
            return str(path)


def target_problem(target: Path, protected: Protected, folder: bool = False) -> str | None:
    """Why ftspec may not write ``target`` (symlinks followed), or None: the end of a
    sentence about it. A ``folder`` target (replaced whole, e.g. ``export -o DIR``) may not
    be, hold or lie inside the repository root's .git, a kept folder or an input, nor be or
    hold the root itself; a file target may not be an input nor lie inside any of them.
    Every command that writes a path it was given asks this first, ``--force`` or not."""
    real, problem = resolved(target)
    if real is None:
        return problem
    root = protected.root
    if real == root:
        return "is the repository root"
    if real in root.parents:
        return f"holds the repository root ({root})"
    git = root / ".git"
    if real == git or git in real.parents:
        return "is inside .git"
    for path, what in protected.folders:
        if real == path:
            return f"is {what}"
        if path in real.parents:
            return f"is inside {what}"
        if folder and real in path.parents:
            return f"holds {what}"
    for path in protected.inputs:
        shown = protected.shown(path)
        if real == path:
            return f"is '{shown}', an input of this spec"
        if path in real.parents:
            return f"is inside '{shown}', an input of this spec"
        if folder and real in path.parents:
            return f"holds '{shown}', an input of this spec"
    return None


# --------------------------------------------------------------------------- the run directory


def output_problem(out: Path, root: Path, inputs: Iterable[Path]) -> str | None:
    """Why ``out`` cannot be the run directory, or None: a run renames and removes
    files inside it, so it must hold none of the spec's inputs and none of the
    repository's own files (``.git``), and it cannot be the repository itself
    (:func:`target_problem`, the one guard of what ftspec writes)."""
    problem = target_problem(out, Protected.of(root, inputs=inputs), folder=True)
    if problem is None:
        return None
    return problem + ("; a run writes and removes files in its run directory: use a folder of its own, "
                      "e.g. runs/{name}")
