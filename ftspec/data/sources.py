"""Read rows from local data files with the standard library (Parquet through
pyarrow when it is installed), naming the file and row of every problem.

The same reader serves ``validate`` (a sample of rows), ``plan`` (row counts and
fingerprints) and the runtime's data preparation (every row), so a file is read
the same way everywhere.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import re
import sys
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ftspec.core.errors import Issue, Pos, SpecError
from ftspec.core.paths import describe_os_error, open_regular
from ftspec.data.jsonrows import (
    JSON_SPACE,
    MAX_ROW_DEPTH,
    MAX_ROW_VALUES,
    BadValue,
    decode_json,
    json_kind,
    scan_value,
    shape_problem,
)

EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv",
              ".parquet": "parquet"}

csv.field_size_limit(1 << 24)  # MAX_LINE_BYTES: a field cannot be longer than a line may


class RowError(Exception):
    """A row that cannot be read; ``pos`` names the file and row."""

    def __init__(self, pos: Pos, message: str, fatal: bool = False):
        self.pos = pos
        self.message = message
        # The rest of the file cannot be read either: never skipped (on_bad_row: skip).
        self.fatal = fatal or pos.line is None
        super().__init__(f"{pos}: {message}")

    def issue(self) -> Issue:
        return Issue(self.pos, "", self.message)


@dataclass(frozen=True)
class Row:
    number: int  # line number (jsonl, csv) or element number (json, parquet), 1-based
    values: dict
    size: int = 0  # bytes it took in the file (about), where the reader knows


def infer_format(path: str) -> str | None:
    name = path.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    for ext, fmt in EXTENSIONS.items():
        if name.endswith(ext):
            return fmt
    return None


def fingerprint(path: Path) -> str:
    digest = hashlib.sha256()
    with open_regular(path) as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# Limits on what one data file may cost to read, whatever it holds. A row is a line
# (JSON Lines, CSV) or an element (JSON); a spec's data may come from someone the
# repository owner does not fully trust, like the spec itself. (The nesting and size of
# one row are bounded in ftspec.data.jsonrows, for every format.)
MAX_LINE_BYTES = 16 << 20  # one line of a JSON Lines or CSV file
MAX_JSON_BYTES = 256 << 20  # a whole .json document (parsed at once)
MAX_EXPANSION = 64  # a .gz file may expand to this many times its size ...
EXPANSION_SLACK = 32 << 20  # ... plus this much (small files compress well)
MAX_COLUMNS = 10_000  # columns (keys) of one row


class ScanBudget:
    """How many rows and bytes all the reads that share it may parse together (validate
    parses every row of every local file, up to this; the rest is counted)."""

    def __init__(self, rows: int, nbytes: int):
        self.rows = rows
        self.bytes = nbytes

    @property
    def spent(self) -> bool:
        return self.rows <= 0 or self.bytes <= 0


class _Stop(Exception):
    """Reading a file cannot go on (a compression bomb, a corrupt stream)."""

    def __init__(self, message: str, line: int | None = None):
        super().__init__(message)
        self.message = message
        self.line = line


class _Reader:
    """A data file's bytes, decompressed when it ends in .gz, read in bounded lines.

    Opening refuses what is not a regular file (a FIFO, a device) without blocking;
    a compressed file that expands more than :data:`MAX_EXPANSION` times is refused as
    it is read, so a small file cannot make ftspec read gigabytes."""

    def __init__(self, path: Path, meter: ScanBudget | None = None):
        self.meter = meter
        self.raw = open_regular(path)
        self.compressed = path.name.lower().endswith(".gz")
        self.stream = gzip.GzipFile(fileobj=self.raw, mode="rb") if self.compressed else self.raw
        # The expansion is checked against what has been read of the compressed file so
        # far, so a bomb is found after megabytes, not after the gigabytes it holds.
        self.budget = EXPANSION_SLACK if self.compressed else None
        self.total = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        try:
            if self.stream is not self.raw:
                self.stream.close()
        finally:
            self.raw.close()

    def _count(self, n: int) -> None:
        self.total += n
        if self.meter is not None:
            self.meter.bytes -= n
        if self.budget is not None and self.total > self.budget:
            read = self.raw.tell()
            if self.total > read * MAX_EXPANSION + EXPANSION_SLACK:
                raise _Stop(f"compressed file expands more than {MAX_EXPANSION} times ({self.total >> 20} MiB from the "
                            f"first {max(read >> 10, 1)} KiB); refused as a possible compression bomb")
            self.budget = self.total + (1 << 20)

    def read(self, limit: int) -> bytes:
        data = self.stream.read(limit + 1)
        self._count(len(data))
        return data

    def lines(self) -> Iterator[tuple[int, bytes | None]]:
        """(line number, bytes) for each line, line ending kept; a line longer than
        :data:`MAX_LINE_BYTES` is skipped over in bounded chunks and given as None."""
        number = 0
        readline = self.stream.readline
        counted = self.budget is not None or self.meter is not None
        while True:
            raw = readline(MAX_LINE_BYTES + 1)
            if not raw:
                return
            if counted:
                self._count(len(raw))
            number += 1
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                while True:  # the rest of the long line, without holding it
                    rest = self.stream.readline(1 << 20)
                    self._count(len(rest))
                    if not rest or rest.endswith(b"\n"):
                        break
                yield number, None
                continue
            yield number, raw


def _too_long(shown: str, line: int) -> RowError:
    return RowError(Pos(shown, line), f"line longer than {MAX_LINE_BYTES >> 20} MiB; rows this long are refused")


class _LongLine(Exception):
    def __init__(self, line: int):
        self.line = line


def _text_lines(reader: _Reader, bad: set[int]) -> Iterator[str]:
    """The file's lines as text, line endings kept, decoded one line at a time so that
    a bad byte is reported at its own line (its number goes into ``bad``, and the line
    goes on, its bad bytes escaped); a byte-order mark is dropped."""
    for number, raw in reader.lines():
        if raw is None:
            raise _LongLine(number)
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError:
            bad.add(number)
            yield raw.decode("utf-8", "surrogateescape")


def _whole_file_error(exc: BaseException, shown: str) -> "RowError":
    """What stops reading a whole file, as one line at the file (or at its row)."""
    if isinstance(exc, _Stop):
        return RowError(Pos(shown, exc.line), exc.message)
    if isinstance(exc, gzip.BadGzipFile):
        return RowError(Pos(shown), "not a valid gzip file")
    if isinstance(exc, EOFError):
        return RowError(Pos(shown), "compressed file ends early (truncated?)")
    if isinstance(exc, zlib.error):
        return RowError(Pos(shown), "compressed data is corrupt (not a valid gzip stream)")
    return RowError(Pos(shown), f"data file {describe_os_error(exc)}")


def read_rows(
    path: Path,
    fmt: str,
    shown: str,
    columns: list[str] | None = None,
    header: bool | None = None,
    field: str | None = None,
    limit: int | None = None,
    on_bad_row: str = "error",
    skipped: list[RowError] | None = None,
    budget: ScanBudget | None = None,
) -> Iterator[Row]:
    """Yield the rows of a file as dicts. Bad rows raise :class:`RowError`, or are
    appended to ``skipped`` when ``on_bad_row`` is ``skip``. What stops the whole file
    (not a regular file, a corrupt or exploding compressed stream) always raises.
    With ``budget``, reading stops (quietly) once the budget is spent."""
    reader = {"jsonl": _jsonl, "json": _json, "csv": _delimited, "tsv": _delimited, "parquet": _parquet}[fmt]
    count = 0
    try:
        for item in reader(path, fmt, shown, columns, header, field, meter=budget):
            if isinstance(item, RowError):
                if on_bad_row == "skip" and skipped is not None and not item.fatal:
                    skipped.append(item)
                    continue
                raise item
            yield item
            count += 1
            if limit is not None and count >= limit:
                return
            if budget is not None:
                budget.rows -= 1
                if budget.spent:
                    return
    except (_Stop, gzip.BadGzipFile, EOFError, zlib.error, OSError) as exc:
        raise _whole_file_error(exc, shown) from None


def _decode_error(shown: str, line: int) -> RowError:
    return RowError(Pos(shown, line), "not valid UTF-8; save the file as UTF-8")


def _jsonl(path, fmt, shown, columns, header, field, meter=None):
    with _Reader(path, meter) as reader:
        for line_no, raw in reader.lines():
            if raw is None:
                yield _too_long(shown, line_no)
                continue
            if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                yield _decode_error(shown, line_no)
                continue
            # The common row, at the scanner's speed; anything else takes the long way,
            # which names the problem.
            try:
                value, end = scan_value(line, 0)
            except Exception:  # noqa: BLE001 (any failure: the long way below says which)
                value = end = None
            if (end is None or not isinstance(value, dict) or line[end:].strip(JSON_SPACE)
                    or line.count("[") + line.count("{") > MAX_ROW_DEPTH or len(line) > MAX_ROW_VALUES):
                if not line.strip():
                    continue
                try:
                    value = decode_json(line.rstrip("\r\n"))
                except json.JSONDecodeError as exc:
                    yield RowError(Pos(shown, line_no), f"not valid JSON: {exc.msg} (column {exc.colno})")
                    continue
                except ValueError as exc:
                    yield RowError(Pos(shown, line_no), f"not a usable JSON row: {exc}")
                    continue
                if not isinstance(value, dict):
                    yield RowError(Pos(shown, line_no), f"expected a JSON object per line, found {json_kind(value)}")
                    continue
            if len(value) > MAX_COLUMNS:
                yield RowError(Pos(shown, line_no), f"a row with more than {MAX_COLUMNS} keys is refused")
                continue
            yield Row(line_no, value, len(raw))


def _json(path, fmt, shown, columns, header, field, meter=None):
    with _Reader(path) as reader:
        raw = reader.read(MAX_JSON_BYTES)
    if len(raw) > MAX_JSON_BYTES:
        yield RowError(Pos(shown), f"a JSON document larger than {MAX_JSON_BYTES >> 20} MiB is refused; "
                                   "write the rows as JSON Lines (.jsonl), one per line")
        return
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        yield RowError(Pos(shown, line), "not valid UTF-8; save the file as UTF-8")
        return
    if field is None and text.lstrip(JSON_SPACE).startswith("["):
        yield from _json_array(text, shown)
        return
    try:
        value = decode_json(text, whole=True)
    except json.JSONDecodeError as exc:
        yield RowError(Pos(shown, exc.lineno, exc.colno), f"not valid JSON: {exc.msg}", fatal=True)
        return
    except ValueError as exc:
        yield RowError(Pos(shown), f"not usable JSON: {exc}")
        return
    if field is not None:
        if not isinstance(value, dict) or field not in value:
            yield RowError(Pos(shown), f"expected a JSON object with a key '{field}' holding the rows")
            return
        value = value[field]
    if not isinstance(value, list):
        hint = " (set `field:` to the key that holds the rows)" if isinstance(value, dict) else ""
        yield RowError(Pos(shown), f"expected a JSON list of rows, found {json_kind(value)}{hint}")
        return
    for i, item in enumerate(value, 1):
        if not isinstance(item, dict):
            yield RowError(Pos(shown, i), f"row {i}: expected a JSON object, found {json_kind(item)}")
            continue
        problem = shape_problem(item)
        if not problem and len(item) > MAX_COLUMNS:
            problem = f"a row with more than {MAX_COLUMNS} keys is refused"
        if problem:
            yield RowError(Pos(shown, i), f"row {i}: {problem}")
            continue
        yield Row(i, item)


_WS = re.compile(r"[ \t\n\r]*")
_PLAIN_SCAN = json.JSONDecoder().scan_once


def _json_array(text: str, shown: str) -> Iterator[Row | RowError]:
    """The elements of a JSON document that is a list, parsed one at a time, so that a
    row JSON readers would take differently (NaN, a key twice, a huge number) is
    named by its number, as a bad row, and the rows after it are still read."""
    idx = _WS.match(text, 0).end() + 1
    n = len(text)
    number = 0

    def syntax(message: str, at: int) -> RowError:
        exc = json.JSONDecodeError(message, text, at)
        return RowError(Pos(shown, exc.lineno, exc.colno), f"not valid JSON: {exc.msg}", fatal=True)

    idx = _WS.match(text, idx).end()
    if text.startswith("]", idx):
        idx = _WS.match(text, idx + 1).end()
        if idx != n:
            yield syntax("Extra data", idx)
        return
    while True:
        number += 1
        try:
            item, end = scan_value(text, idx)
        except StopIteration as err:
            yield syntax("Expecting value", err.value)
            return
        except json.JSONDecodeError as exc:
            yield RowError(Pos(shown, exc.lineno, exc.colno), f"not valid JSON: {exc.msg}", fatal=True)
            return
        except (ValueError, RecursionError) as exc:  # BadValue, digits, nesting
            if isinstance(exc, RecursionError):
                message = f"nests lists and objects more than {MAX_ROW_DEPTH} levels deep"
            elif isinstance(exc, BadValue):
                message = str(exc)
            else:
                message = f"a number with more than {sys.get_int_max_str_digits() or 4300} digits"
            yield RowError(Pos(shown, number), f"row {number}: {message}")
            try:  # where the bad row ends, to go on after it
                _, end = _PLAIN_SCAN(text, idx)
            except (StopIteration, ValueError, RecursionError):
                return
        else:
            if not isinstance(item, dict):
                yield RowError(Pos(shown, number), f"row {number}: expected a JSON object, found {json_kind(item)}")
            else:
                problem = shape_problem(item)
                if not problem and len(item) > MAX_COLUMNS:
                    problem = f"a row with more than {MAX_COLUMNS} keys is refused"
                yield (RowError(Pos(shown, number), f"row {number}: {problem}") if problem
                       else Row(number, item, end - idx))
        idx = _WS.match(text, end).end()
        if text.startswith(",", idx):
            idx = _WS.match(text, idx + 1).end()
            continue
        if text.startswith("]", idx):
            idx = _WS.match(text, idx + 1).end()
            if idx != n:
                yield syntax("Extra data", idx)
            return
        yield syntax("Expecting ',' delimiter", idx)
        return


def _delimited(path, fmt, shown, columns, header, field, meter=None):
    delimiter = "\t" if fmt == "tsv" else ","
    has_header = header if header is not None else columns is None
    # TSV files (SST-2 among them) often hold unbalanced quotes in the text itself.
    quoting = csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL
    source = _Reader(path, meter)
    bad: set[int] = set()
    reader = csv.reader(_text_lines(source, bad), delimiter=delimiter, quoting=quoting)
    names = list(columns) if columns else None
    end = 0  # the last line of the previous record
    try:
        for record in reader:
            line_no, first = reader.line_num, end + 1
            end = line_no
            if bad and any(n in bad for n in range(first, line_no + 1)):
                yield RowError(_decode_error(shown, min(n for n in bad if n >= first)).pos,
                               "not valid UTF-8; save the file as UTF-8", fatal=has_header)
                bad.clear()
                if has_header:
                    return
                continue
            if not record or all(not cell.strip() for cell in record):
                continue
            if has_header:  # the first non-blank record
                header_names = [c.strip() for c in record]
                has_header = False
                if len(header_names) > MAX_COLUMNS:
                    yield RowError(Pos(shown, line_no), f"a header of more than {MAX_COLUMNS} columns is refused",
                                   fatal=True)
                    return
                if names is None:
                    names = header_names
                    dupes = sorted(n for n, k in Counter(names).items() if k > 1)
                    if dupes:
                        yield RowError(Pos(shown, line_no), f"header repeats column names: {', '.join(dupes)}",
                                       fatal=True)
                        return
                elif len(names) != len(header_names):
                    yield RowError(Pos(shown, line_no),
                                   f"header has {len(header_names)} columns, but `columns` names {len(names)}",
                                   fatal=True)
                    return
                continue
            if names is None:
                yield RowError(Pos(shown), "no header row and no `columns` to name the columns")
                return
            if len(record) != len(names):
                yield RowError(Pos(shown, line_no),
                               f"expected {len(names)} columns ({', '.join(names)}), found {len(record)}")
                continue
            yield Row(line_no, dict(zip(names, record)), sum(map(len, record)) + len(record))
    except _LongLine as exc:  # the reader cannot go on past a line it did not read
        yield RowError(_too_long(shown, exc.line).pos, _too_long(shown, exc.line).message, fatal=True)
    except csv.Error as exc:
        yield RowError(Pos(shown, reader.line_num), f"CSV error: {exc}", fatal=True)
    finally:
        source.close()


def _parquet(path, fmt, shown, columns, header, field, meter=None):
    try:
        import pyarrow.parquet as pq  # only installed with the [train] extra
    except ImportError:
        raise SpecError.one(Pos(shown), "", "reading Parquet needs pyarrow (pip install 'ftspec[train]')") from None
    try:
        table = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises its own error types for a bad file
        yield RowError(Pos(shown), f"not a readable Parquet file: {exc}")
        return
    if table.metadata.num_columns > MAX_COLUMNS:
        yield RowError(Pos(shown), f"a table of more than {MAX_COLUMNS} columns is refused")
        return
    number = 0
    for batch in table.iter_batches(batch_size=64):
        for record in batch.to_pylist():
            number += 1
            problem = shape_problem(record)  # nested lists and structs, bounded as JSON rows are
            yield RowError(Pos(shown, number), f"row {number}: {problem}") if problem else Row(number, record)


def parquet_rows(path: Path) -> int | None:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        return None
    return pq.ParquetFile(path).metadata.num_rows


def count_lines(path: Path, shown: str) -> int:
    """Non-blank lines of a file (the rows of a JSON Lines file), counted in large
    chunks without parsing: fast, and bounded like reading (line length, expansion)."""
    count = 0
    carry = b""
    try:
        with _Reader(path) as reader:
            while True:
                chunk = reader.stream.read(1 << 20)
                reader._count(len(chunk))
                if not chunk:
                    break
                data = carry + chunk
                cut = data.rfind(b"\n") + 1
                # Without the other white space, a blank line is a newline after a newline.
                lines = data[:cut].translate(None, b" \t\r\f\v")
                while b"\n\n" in lines:
                    lines = lines.replace(b"\n\n", b"\n")
                count += lines.count(b"\n") - lines.startswith(b"\n")
                carry = data[cut:]
                if len(carry) > MAX_LINE_BYTES:
                    raise _Stop(f"a line longer than {MAX_LINE_BYTES >> 20} MiB; rows this long are refused")
            if carry.strip():
                count += 1
    except (_Stop, gzip.BadGzipFile, EOFError, zlib.error, OSError) as exc:
        raise _whole_file_error(exc, shown) from None
    return count
