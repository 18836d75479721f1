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
import math
import os
import secrets
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable

from ftspec.core import jsonread
from ftspec.core.errors import Issue, Pos, SpecError
from ftspec.core.paths import TooLarge, describe_os_error, open_regular, read_regular

__all__ = ["BadFileError", "copy_atomic", "iter_jsonl", "read_json", "read_jsonl", "validated", "write_atomic",
           "write_json", "write_jsonl"]

_TYPE_NAMES = {dict: "a JSON object", list: "a JSON array", str: "a JSON string"}


class BadFileError(SpecError, ValueError):
    """A file ftspec reads exists but is not what it should be (not a regular file, too
    large, invalid JSON, the wrong type or shape): one line, ``FILE[:LINE]: what``."""

    def __init__(self, path: Path | str, message: str, line: int | None = None):
        self.path = Path(path)
        self.reason = message
        self.line = line
        super().__init__([Issue(Pos(str(path), line), "", message)])


# --------------------------------------------------------------------------- writing


def write_atomic(path: Path | str, data: str | bytes, encoding: str = "utf-8", *, mode: int | None = None) -> None:
    """Write ``data`` (text or bytes) to ``path`` whole or not at all; ``mode``: the file's
    permissions less the process's umask (default: what a plain open() would give it)."""
    path = Path(path)
    payload = data.encode(encoding) if isinstance(data, str) else bytes(data)
    _replace_with(path, lambda fh: fh.write(payload), mode)


def make_folder(folder: Path | str, fill: Callable[[Path], None]) -> bool:
    """A new folder, filled by ``fill`` under a temporary name beside it and then renamed into
    place, so that nobody ever sees it half made. False (and nothing left behind) when a folder
    was there first, or appeared meanwhile: the rename does not replace it."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    temporary = folder.parent / f".{folder.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    temporary.mkdir()
    try:
        fill(temporary)
        _sync_folder(temporary)
        os.rename(temporary, folder)
        _sync_folder(folder.parent)
        return True
    except OSError:
        if not folder.is_dir():
            raise
        return False
    finally:
        if temporary.exists():
            shutil.rmtree(temporary, ignore_errors=True)


def copy_atomic(src: Path | str, dst: Path | str) -> None:
    """Copy the file ``src`` to ``dst`` whole or not at all."""

    def copy(fh) -> None:
        with open(src, "rb") as source:
            for chunk in iter(lambda: source.read(1 << 20), b""):
                fh.write(chunk)

    _replace_with(Path(dst), copy)


def write_json(path: Path | str, value: Any, *, sort_keys: bool = True, indent: int | None = 2) -> None:
    """``value`` as JSON (indented, keys sorted unless told otherwise, a final newline), atomically."""
    write_atomic(path, dumps(value, indent=indent, sort_keys=sort_keys) + "\n")


def write_jsonl(path: Path | str, rows: Iterable[Any]) -> None:
    """One JSON value a line (UTF-8, not escaped to ASCII), atomically."""
    write_atomic(path, "".join(dumps(r) + "\n" for r in rows))


def dumps(value: Any, **kwargs) -> str:
    """Standard JSON, as ftspec's reader takes it back: a NaN or infinite float (a loss that
    diverged, a metric of no rows) is written as null, never as NaN or Infinity."""
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False, **kwargs)
    except ValueError:
        return json.dumps(_finite(value), ensure_ascii=False, allow_nan=False, **kwargs)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def append_durably(path: Path | str, data: str, encoding: str = "utf-8") -> None:
    """Append ``data`` to a file and sync it to disk before returning: a log of work done
    (a teacher's answers, batch by batch) keeps every append made before a crash."""
    with open(path, "a", encoding=encoding) as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def sync(fh) -> int:
    """Flush an open binary file and sync it to disk; returns its size (a checkpoint of a
    file written in a stream records it, and truncates back to it when resuming)."""
    fh.flush()
    os.fsync(fh.fileno())
    return fh.tell()


class AtomicFile:
    """A file written in a stream (millions of rows) that appears at ``path`` whole or not
    at all: written to a temporary name beside it, put in place by :meth:`commit`, removed
    by :meth:`abandon`. ``handle`` is the open binary file."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        mode = _mode_for(self.path)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        if mode is not None and hasattr(os, "fchmod"):
            os.fchmod(fd, mode)
        self.tmp = Path(tmp)
        self.handle = os.fdopen(fd, "wb")

    def commit(self) -> None:
        try:
            sync(self.handle)
            self.handle.close()
            os.replace(self.tmp, self.path)
        except BaseException:
            self.abandon()
            raise
        _sync_folder(self.path.parent)

    def abandon(self) -> None:
        try:
            self.handle.close()
        finally:
            self.tmp.unlink(missing_ok=True)


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
#
# Every file ftspec reads back — its own state files (plans, manifests, markers, locks,
# job records), logs, and JSON lines it is given — is read here: a regular file only
# (opened without blocking, so a FIFO or a device is refused at once rather than read
# without end), at most a known size, decoded strictly (ftspec.core.jsonread: no NaN or
# Infinity, no key twice, bounded nesting and integers), each problem one line at
# FILE:LINE, and, where the caller gives one, checked against the file's schema.

MAX_FILE_BYTES = 64 << 20  # a JSON file ftspec wrote (plan, manifest, report, marker, lock, record)
MAX_LINE_BYTES = 16 << 20  # one line of a JSON-lines file
MAX_FILE_DEPTH = 100  # nesting in a file ftspec wrote (a plan is ~7 deep; a spec's values at most 64 more)


def read_json(path: Path | str, expect: type | None = None, *, lenient: bool = False, schema: Any = None,
              limit: int = MAX_FILE_BYTES) -> Any:
    """The JSON value in ``path``, or None when there is no such file.

    A file that is not a regular file (a folder, a FIFO, a device), larger than
    ``limit`` bytes, not valid JSON or not JSON ftspec takes, or whose value is not of type
    ``expect`` (``dict``, ``list``…) raises :class:`BadFileError` at ``FILE:LINE``. With
    ``lenient`` (for a file a crash may have cut short, which the caller rewrites anyway),
    a regular file whose content cannot be used reads as None; a file that is not a
    regular file, or is too large, is refused all the same (no crash leaves one).
    ``schema``: a pydantic model the value must fit; the model's instance is returned
    (a file of the wrong shape is a :class:`BadFileError` naming the key).
    """
    path = Path(path)
    try:
        raw = read_regular(path, limit)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:  # even when lenient: no crash leaves a FIFO, a folder or a huge file here
        raise BadFileError(path, _os_problem(exc)) from None
    except ValueError:  # a NUL in the name
        raise BadFileError(path, "cannot be read: the name contains a NUL character") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _bad(path, "not valid JSON: not UTF-8 text", lenient, raw.count(b"\n", 0, exc.start) + 1)
    if not text.strip(jsonread.JSON_SPACE):
        return _bad(path, "empty, not JSON (cut short?)", lenient)
    try:
        value = jsonread.decode(text, max_depth=MAX_FILE_DEPTH, bounded_ints=True)
    except json.JSONDecodeError as exc:
        return _bad(path, f"not valid JSON: {exc.msg} (column {exc.colno})", lenient, exc.lineno)
    except jsonread.BadValue as exc:
        line = jsonread.where(text, exc.pos) if exc.pos is not None else (None, None)
        return _bad(path, exc.message + (f" (column {line[1]})" if line[1] else ""),
                    lenient, line[0])
    if expect is not None and not isinstance(value, expect):
        return _bad(path, f"should hold {_TYPE_NAMES.get(expect, expect.__name__)}, not {_json_type(value)}", lenient)
    if schema is not None:
        try:
            return validated(path, value, schema)
        except BadFileError:
            if lenient:
                return None
            raise
    return value


def validated(path: Path | str, value: Any, schema: Any) -> Any:
    """``value`` (read from ``path``) checked against ``schema``, a pydantic model: the
    model's instance, or :class:`BadFileError` naming the first key that is wrong."""
    try:
        return schema.model_validate(value)
    except ValueError as exc:  # pydantic's ValidationError is one
        raise BadFileError(path, shape_problem(exc, schema)) from None


def shape_problem(exc: Exception, schema: Any = None) -> str:
    """A pydantic ValidationError as one line: the first key that is wrong and what is wrong."""
    errors = exc.errors() if hasattr(exc, "errors") else []
    if not errors:
        return f"not a valid {getattr(schema, '__name__', 'file')}: {str(exc).splitlines()[0]}"
    err = errors[0]
    key = ".".join(str(p) for p in err.get("loc", ())) or "(top)"
    message = str(err.get("msg", "wrong value")).splitlines()[0]
    given = err.get("input")
    shown = "" if isinstance(given, (dict, list)) or key == "(top)" else f" (got {_json_type(given)} {_short(given)})"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{key}: {message}{shown}{more}"


def iter_jsonl(path: Path | str, *, lenient: bool = False, limit: int | None = None,
               line_limit: int = MAX_LINE_BYTES, max_depth: int = MAX_FILE_DEPTH):
    """(line number, line, value) for each line of a JSON-lines file that holds a value.

    Strict by default: a missing file, a broken line, a line longer than ``line_limit``
    or a file longer than ``limit`` bytes raises :class:`BadFileError` at ``FILE:LINE``.
    With ``lenient`` (a run cut short leaves a last line half written), a missing file
    yields nothing, and broken lines and values that are not JSON objects are skipped;
    a file that is not a regular file, or too large, is refused all the same."""
    path = Path(path)
    try:
        fh = open_regular(path)
    except (FileNotFoundError, NotADirectoryError):
        if lenient:
            return
        raise BadFileError(path, "missing") from None
    except OSError as exc:  # even when lenient: no crash leaves a FIFO or a folder here
        raise BadFileError(path, _os_problem(exc)) from None
    except ValueError:
        raise BadFileError(path, "cannot be read: the name contains a NUL character") from None
    total = 0
    with fh:
        for number, raw in enumerate(iter(lambda: fh.readline(line_limit + 1), b""), start=1):
            total += len(raw)
            if limit is not None and total > limit:
                raise BadFileError(path, f"is larger than {limit} bytes; refused", number)
            if len(raw) > line_limit and not raw.endswith(b"\n"):
                raise BadFileError(path, f"a line longer than {line_limit} bytes is refused", number)
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                if lenient:
                    continue
                raise BadFileError(path, "not valid JSON lines: not UTF-8 text", number) from None
            if not line.strip(jsonread.JSON_SPACE):
                continue
            try:
                row = jsonread.decode(line, max_depth=max_depth, bounded_ints=True)
            except json.JSONDecodeError as exc:
                if lenient:
                    continue
                raise BadFileError(path, f"not valid JSON: {exc.msg} (column {exc.colno})", number) from None
            except jsonread.BadValue as exc:
                if lenient:
                    continue
                column = f" (column {jsonread.where(line, exc.pos)[1]})" if exc.pos is not None else ""
                raise BadFileError(path, f"{exc.message}{column}", number) from None
            if lenient and not isinstance(row, dict):
                continue
            yield number, line, row


def read_jsonl(path: Path | str, *, lenient: bool = False, limit: int | None = None) -> list[Any]:
    """The values of a JSON-lines file, blank lines skipped (see :func:`iter_jsonl`)."""
    return [row for _, _, row in iter_jsonl(path, lenient=lenient, limit=limit)]


def _os_problem(exc: OSError) -> str:
    if isinstance(exc, TooLarge):
        return f"is larger than {exc.limit} bytes; refused"
    words = describe_os_error(exc)
    return words if words.startswith("cannot be read") else f"cannot be read: {words}"


def _bad(path: Path, message: str, lenient: bool, line: int | None = None) -> None:
    if lenient:
        return None
    raise BadFileError(path, message, line)


def _short(value: Any) -> str:
    text = repr(value) if isinstance(value, str) else json.dumps(value) if value is None or isinstance(
        value, (bool, int, float)) else type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return _TYPE_NAMES.get(type(value), type(value).__name__)
