"""The last pass of prepare_data for a training mixture (``data.train`` as a list;
docs/use-cases/mixtures.md), after ftspec.runtime.training.splits has formatted each source
into its work files and dealt its held-out rows: each source's rows drawn, the sources'
rows interleaved, and every split written with its ``.sources`` file (ftspec.data.prepared).

Everything streams: a source's drawn rows are its work file read pass by pass (every row
``q`` times, then the ``m`` rows chosen, in file order: ftspec.data.mixture.draw_passes), and
the interleaving holds a few entries per source. Memory does not grow with the rows.
"""

from __future__ import annotations

from itertools import islice
from pathlib import Path
from typing import Callable, Iterator, Sequence

from ftspec.core import io
from ftspec.data.mixture import choose, draw_passes, interleave

# (record line, origin line): a formatted row as its work files hold it
Line = tuple[bytes, bytes]


def work_lines(records: Path, origins: Path, keep: Iterator[bool] | None = None) -> Iterator[Line]:
    """A work file's (record, origin) lines in order (those ``keep`` says yes to, when given)."""
    with open(records, "rb") as rec, open(origins, "rb") as org:
        for line in rec:
            where = org.readline()
            if keep is None or next(keep):
                yield line, where


def drawn_lines(records: Path, origins: Path, n: int, r: int, seed: int) -> Iterator[Line]:
    """``r`` rows of a source's ``n`` training rows (its work files): every row once per whole
    pass, then the rows ftspec.data.mixture.choose picks under ``seed``, each pass in file order."""
    q, m = draw_passes(r, n)
    for _ in range(q):
        yield from work_lines(records, origins)
    if m:
        yield from work_lines(records, origins, choose(m, n, seed))


def source_line(name: str) -> bytes:
    """A line of a ``.sources`` file: the source's name as a JSON string."""
    return (io.dumps(name) + "\n").encode("utf-8")


def merge(streams: Sequence[Iterator[Line]], counts: Sequence[int], names: Sequence[str], seed: int,
          write: Callable[[bytes, bytes, bytes], None], limit: int | None = None) -> None:
    """Write ``counts[i]`` rows of ``streams[i]`` for each source, interleaved under ``seed``
    (ftspec.data.mixture.interleave), each with its source's name; only the first ``limit``
    rows of that order when given (data.limit: the rest are never read)."""
    tags = [source_line(name) for name in names]
    try:
        for i in islice(interleave(counts, seed), limit):
            line, where = next(streams[i])
            write(line, where, tags[i])
    finally:
        for stream in streams:  # their files close (a drawn source's last pass stops part-way)
            close = getattr(stream, "close", None)
            if close is not None:
                close()
