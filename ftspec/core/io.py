"""Reading and writing ftspec's own files: one atomic writer, one JSON and one
JSON-lines reader and writer, used by every command.

A file is written whole or not at all: into a temporary file in the same folder,
flushed and fsynced, then renamed over the target; the temporary file is removed
on any failure, so a crash or a full disk never leaves a half-written file under
the real name.

A file that exists but cannot be used (not JSON, cut short, the wrong type) is a
:class:`BadFileError`: one line naming the file and what is wrong with it, which
the CLI prints without a traceback (it is a :class:`~ftspec.core.errors.SpecError`).

Light on purpose: the light commands import it, so it never imports torch.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, Iterable

from ftspec.core.errors import Issue, Pos, SpecError

__all__ = ["BadFileError", "copy_atomic", "read_json", "read_jsonl", "write_atomic", "write_json", "write_jsonl"]

_TYPE_NAMES = {dict: "a JSON object", list: "a JSON array", str: "a JSON string"}


class BadFileError(SpecError, ValueError):
    """A file ftspec reads exists but is not what it should be (invalid JSON, the wrong type)."""

    def __init__(self, path: Path | str, message: str):
        self.path = Path(path)
        self.reason = message
        super().__init__([Issue(Pos(str(path)), "", message)])


# --------------------------------------------------------------------------- writing


def write_atomic(path: Path | str, data: str | bytes, encoding: str = "utf-8", *, mode: int | None = None) -> None:
    """Write ``data`` (text or bytes) to ``path`` whole or not at all; ``mode``: the file's
    permissions less the process's umask (default: what a plain open() would give it)."""
    path = Path(path)
    payload = data.encode(encoding) if isinstance(data, str) else bytes(data)
    _replace_with(path, lambda fh: fh.write(payload), mode)


def copy_atomic(src: Path | str, dst: Path | str) -> None:
    """Copy the file ``src`` to ``dst`` whole or not at all."""

    def copy(fh) -> None:
        with open(src, "rb") as source:
            for chunk in iter(lambda: source.read(1 << 20), b""):
                fh.write(chunk)

    _replace_with(Path(dst), copy)


def write_json(path: Path | str, value: Any, *, sort_keys: bool = True, indent: int | None = 2) -> None:
    """``value`` as JSON (indented, keys sorted unless told otherwise, a final newline), atomically."""
    write_atomic(path, json.dumps(value, indent=indent, sort_keys=sort_keys, ensure_ascii=False) + "\n")


def write_jsonl(path: Path | str, rows: Iterable[Any]) -> None:
    """One JSON value a line (UTF-8, not escaped to ASCII), atomically."""
    write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def append_durably(path: Path | str, data: str, encoding: str = "utf-8") -> None:
    """Append ``data`` to a file and sync it to disk before returning: a log of work done
    (a teacher's answers, batch by batch) keeps every append made before a crash."""
    with open(path, "a", encoding=encoding) as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _replace_with(path: Path, write, mode: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = _mode_for(path) if mode is None else (mode & ~_umask() if os.name == "posix" else None)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if mode is not None and hasattr(os, "fchmod"):
            os.fchmod(fd, mode)  # mkstemp makes 0600; the file gets what open() would give it
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _sync_folder(path.parent)


def _mode_for(path: Path) -> int | None:
    """The permissions a plain ``open(path, "w")`` would leave: an existing file keeps
    its own, a new one gets 0666 less the process's umask. None off POSIX."""
    if os.name != "posix":
        return None
    try:
        st = os.stat(path)
    except OSError:
        st = None
    if st is not None and stat.S_ISREG(st.st_mode):
        return stat.S_IMODE(st.st_mode)
    return 0o666 & ~_umask()


def _umask() -> int:
    """The process's umask, read without changing it where Linux shows it (setting and
    restoring it would race with another thread creating a file)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable where the platform allows it (best effort)."""
    if os.name != "posix":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- reading


def read_json(path: Path | str, expect: type | None = None, *, lenient: bool = False) -> Any:
    """The JSON value in ``path``, or None when there is no such file.

    A file that is not valid JSON, or whose value is not of type ``expect`` (``dict``,
    ``list``…), raises :class:`BadFileError`; with ``lenient`` it reads as None instead
    (for callers that rewrite the file anyway). A file that exists but cannot be read
    (a folder, no permission) is a :class:`BadFileError` too.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return _bad(path, f"cannot be read: {exc.strerror or exc}", lenient)
    try:
        value = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return _bad(path, "not valid JSON: not UTF-8 text", lenient)
    except ValueError as exc:
        where = f" (line {exc.lineno}, column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
        detail = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        message = "empty, not JSON (cut short?)" if not raw.strip() else f"not valid JSON{where}: {detail}"
        return _bad(path, message, lenient)
    if expect is not None and not isinstance(value, expect):
        return _bad(path, f"should hold {_TYPE_NAMES.get(expect, expect.__name__)}, not {_json_type(value)}", lenient)
    return value


def read_jsonl(path: Path | str, *, lenient: bool = False) -> list[Any]:
    """The values of a JSON-lines file, blank lines skipped.

    Strict by default: a missing file or a broken line raises :class:`BadFileError`
    naming the line. With ``lenient`` (a run cut short leaves a last line half
    written), a missing file reads as ``[]`` and broken lines and values that are not
    JSON objects are skipped.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8", errors="replace" if lenient else "strict")
    except FileNotFoundError:
        if lenient:
            return []
        raise BadFileError(path, "missing") from None
    except OSError as exc:
        if lenient:
            return []
        raise BadFileError(path, f"cannot be read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise BadFileError(path, "not valid JSON lines: not UTF-8 text") from None
    rows = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            if lenient:
                continue
            detail = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
            raise BadFileError(path, f"line {number} is not valid JSON: {detail}") from None
        if lenient and not isinstance(row, dict):
            continue
        rows.append(row)
    return rows


def _bad(path: Path, message: str, lenient: bool) -> None:
    if lenient:
        return None
    raise BadFileError(path, message)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return _TYPE_NAMES.get(type(value), type(value).__name__)
