"""Where a command's output goes: a file written whole, or the standard output."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ftspec.core.errors import Pos, SpecError
from ftspec.core.io import write_atomic
from ftspec.core.paths import Protected, target_problem

# Names of the standard output itself: writing to them atomically would replace the
# terminal's device node (or fail), so their text is echoed instead.
STDOUT_NAMES = ("-", "/dev/stdout", "/dev/fd/1", "/proc/self/fd/1")


def is_stdout(output: Path | str | None) -> bool:
    """Whether ``output`` names the standard output (``None`` does too: no file was given)."""
    return output is None or str(output) in STDOUT_NAMES


def file_problem(output: Path) -> str | None:
    """Why ``output`` cannot be replaced by a regular file, or None when it can."""
    if output.is_symlink():
        return "is a symbolic link; give the file it points to"
    if output.exists() and not output.is_file():
        return "is a directory" if output.is_dir() else "is not a regular file (a FIFO or a device)"
    if output.parent.exists() and not output.parent.is_dir():
        return f"{output.parent} is not a directory"
    return None


def write_file(output: Path, text: str, protected: Protected | None = None) -> None:
    """Write ``text`` to the regular file ``output`` whole (atomically). A target that is not
    a regular file (a FIFO, a device, a folder, a symbolic link), that ``protected`` keeps (a
    plan's inputs, its run directories: ftspec.store.protect.protected) or that cannot be
    written raises SpecError at ``--output``: nothing is replaced."""
    problem = file_problem(output) or (target_problem(output, protected) if protected is not None else None)
    if problem is None:
        try:
            write_atomic(output, text)
            return
        except OSError as exc:
            problem = f"cannot be written: {exc.strerror or exc}"
    raise SpecError.one(Pos(str(output)), "--output", problem)


def write_output(output: Path, text: str, echo: Callable[[str], None], protected: Protected | None = None) -> bool:
    """Write a command's output file (:func:`write_file`), or hand ``text`` to ``echo`` for
    ``-`` and ``/dev/stdout``. Returns whether a file was written."""
    if is_stdout(output):
        echo(text)
        return False
    write_file(output, text, protected)
    return True
