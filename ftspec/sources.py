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
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ftspec.errors import Issue, Pos, SpecError

EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet"}

csv.field_size_limit(1 << 28)


class RowError(Exception):
    """A row that cannot be read; ``pos`` names the file and row."""

    def __init__(self, pos: Pos, message: str):
        self.pos = pos
        self.message = message
        super().__init__(f"{pos}: {message}")

    def issue(self) -> Issue:
        return Issue(self.pos, "", self.message)


@dataclass(frozen=True)
class Row:
    number: int  # line number (jsonl, csv) or element number (json, parquet), 1-based
    values: dict


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
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


class _BadBytes(Exception):
    def __init__(self, line: int):
        self.line = line


def _text_lines(path: Path) -> Iterator[str]:
    """The file's lines as text, line endings kept, decoded one line at a time so that
    a bad byte is reported at its own line; a byte-order mark is dropped."""
    with _open_binary(path) as fh:
        for number, raw in enumerate(fh, 1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError:
                raise _BadBytes(number) from None


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
) -> Iterator[Row]:
    """Yield the rows of a file as dicts. Bad rows raise :class:`RowError`, or are
    appended to ``skipped`` when ``on_bad_row`` is ``skip``."""
    reader = {"jsonl": _jsonl, "json": _json, "csv": _delimited, "tsv": _delimited, "parquet": _parquet}[fmt]
    count = 0
    try:
        for item in reader(path, fmt, shown, columns, header, field):
            if isinstance(item, RowError):
                if on_bad_row == "skip" and skipped is not None:
                    skipped.append(item)
                    continue
                raise item
            yield item
            count += 1
            if limit is not None and count >= limit:
                return
    except gzip.BadGzipFile:
        raise RowError(Pos(shown), "not a valid gzip file") from None
    except EOFError:
        raise RowError(Pos(shown), "compressed file ends early (truncated?)") from None


def _decode_error(shown: str, line: int) -> RowError:
    return RowError(Pos(shown, line), "not valid UTF-8; save the file as UTF-8")


def _jsonl(path, fmt, shown, columns, header, field):
    with _open_binary(path) as fh:
        for line_no, raw in enumerate(fh, 1):
            if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                yield _decode_error(shown, line_no)
                continue
            if not line.strip():
                continue
            try:
                value = json.loads(line.rstrip("\r\n"))
            except json.JSONDecodeError as exc:
                yield RowError(Pos(shown, line_no), f"not valid JSON: {exc.msg} (column {exc.colno})")
                continue
            if not isinstance(value, dict):
                yield RowError(Pos(shown, line_no), f"expected a JSON object per line, found {_json_kind(value)}")
                continue
            yield Row(line_no, value)


def _json_kind(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", int: "a number", float: "a number", bool: "a boolean", type(None): "null"}.get(type(value), type(value).__name__)


def _json(path, fmt, shown, columns, header, field):
    try:
        with _open_binary(path) as fh:
            raw = fh.read()
        if raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        value = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        yield RowError(Pos(shown, line), "not valid UTF-8; save the file as UTF-8")
        return
    except json.JSONDecodeError as exc:
        yield RowError(Pos(shown, exc.lineno, exc.colno), f"not valid JSON: {exc.msg}")
        return
    if field is not None:
        if not isinstance(value, dict) or field not in value:
            yield RowError(Pos(shown), f"expected a JSON object with a key '{field}' holding the rows")
            return
        value = value[field]
    if not isinstance(value, list):
        hint = " (set `field:` to the key that holds the rows)" if isinstance(value, dict) else ""
        yield RowError(Pos(shown), f"expected a JSON list of rows, found {_json_kind(value)}{hint}")
        return
    for i, item in enumerate(value, 1):
        if not isinstance(item, dict):
            yield RowError(Pos(shown, i), f"row {i}: expected a JSON object, found {_json_kind(item)}")
            continue
        yield Row(i, item)


def _delimited(path, fmt, shown, columns, header, field):
    delimiter = "\t" if fmt == "tsv" else ","
    has_header = header if header is not None else columns is None
    # TSV files (SST-2 among them) often hold unbalanced quotes in the text itself.
    quoting = csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL
    lines = _text_lines(path)
    reader = csv.reader(lines, delimiter=delimiter, quoting=quoting)
    names = list(columns) if columns else None
    try:
        for record in reader:
            line_no = reader.line_num
            if not record or all(not cell.strip() for cell in record):
                continue
            if has_header:  # the first non-blank record
                header_names = [c.strip() for c in record]
                has_header = False
                if names is None:
                    names = header_names
                    dupes = sorted({n for n in names if names.count(n) > 1})
                    if dupes:
                        yield RowError(Pos(shown, line_no), f"header repeats column names: {', '.join(dupes)}")
                        return
                elif len(names) != len(header_names):
                    yield RowError(Pos(shown, line_no), f"header has {len(header_names)} columns, but `columns` names {len(names)}")
                    return
                continue
            if names is None:
                yield RowError(Pos(shown), "no header row and no `columns` to name the columns")
                return
            if len(record) != len(names):
                yield RowError(Pos(shown, line_no), f"expected {len(names)} columns ({', '.join(names)}), found {len(record)}")
                continue
            yield Row(line_no, dict(zip(names, record)))
    except _BadBytes as exc:
        yield _decode_error(shown, exc.line)
    except csv.Error as exc:
        yield RowError(Pos(shown, reader.line_num), f"CSV error: {exc}")


def _parquet(path, fmt, shown, columns, header, field):
    try:
        import pyarrow.parquet as pq  # only installed with the [train] extra
    except ImportError:
        raise SpecError.one(Pos(shown), "", "reading Parquet needs pyarrow (pip install 'ftspec[train]')") from None
    try:
        table = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises its own error types for a bad file
        yield RowError(Pos(shown), f"not a readable Parquet file: {exc}")
        return
    number = 0
    for batch in table.iter_batches(batch_size=1024):
        for record in batch.to_pylist():
            number += 1
            yield Row(number, record)


def parquet_rows(path: Path) -> int | None:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        return None
    return pq.ParquetFile(path).metadata.num_rows
