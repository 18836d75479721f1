"""The report's building blocks: plain data (headings, paragraphs, tables, charts…) holding
plain text, and how numbers read in them. The sections are laid out in
:mod:`ftspec.runtime.report.document`; :mod:`ftspec.runtime.report.render` renders the blocks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Union

from ftspec.runtime.report.results import num

# --------------------------------------------------------------------------- blocks


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Paragraph:
    text: str
    strong: bool = False  # the verdict


@dataclass(frozen=True)
class Alert:
    """A warning set apart from the text (the overfitting signal)."""

    text: str


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    numeric: frozenset[int]  # the right-aligned columns

    @classmethod
    def of(cls, header: Iterable[str], rows: Iterable[Iterable[Any]], numeric: Iterable[int] | None = None) -> "Table":
        """``numeric`` defaults to every column but the first."""
        header = tuple(str(h) for h in header)
        cells = tuple(tuple("" if c is None else str(c) for c in row) for row in rows)
        return cls(header, cells, frozenset(range(1, len(header)) if numeric is None else numeric))


@dataclass(frozen=True)
class Fields:
    """Named values, one a line (a key-value list)."""

    pairs: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Chart:
    """A chart drawn beside the report as a PNG file (inlined in the HTML)."""

    caption: str
    filename: str


Block = Union[Heading, Paragraph, Alert, Table, Fields, Chart]


@dataclass
class Document:
    title: str
    blocks: list[Block] = field(default_factory=list)


# --------------------------------------------------------------------------- text of numbers


def fmt(value: Any, digits: int = 3) -> str:
    v = num(value)
    return "—" if v is None else f"{v:.{digits}f}"


def signed(value: Any, digits: int = 3) -> str:
    v = num(value)
    return "—" if v is None else f"{v:+.{digits}f}"


def pct(value: Any) -> str:
    v = num(value)
    return "—" if v is None else f"{v:.1%}"


def count(value: Any) -> str:
    v = num(value)
    if v is None:
        return "—"
    return str(int(v)) if v == int(v) else f"{v:.1f}"


def rows_text(value: Any) -> str:
    return "1 row" if num(value) == 1 else f"{count(value)} rows"


def clip(value: Any, limit: int, keep_end: bool = False) -> str:
    """Text cut to ``limit`` characters; with ``keep_end`` the middle goes (a prompt's end is what the
    model answers)."""
    text = "" if value is None else str(value)
    if len(text) <= limit:
        return text
    if keep_end:
        head = limit // 3
        tail = limit - head - 3
        return text[:head] + " … " + text[-tail:]
    return text[: limit - 1] + "…"
