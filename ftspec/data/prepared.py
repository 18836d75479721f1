"""The prepared splits as prepare_data leaves them in its folder, and how later steps read
them without holding a split in memory (a training split may have millions of rows).

    <split>.jsonl          one formatted record per line (TRL's columns)
    <split>.origins        one JSON string per line, the same line's record's source, "FILE:ROW"
    <split>.sources        with a training mixture only: one JSON string per line, the name of the
                           mixture's source the same line's record came from ("validation" or
                           "test" for a record of a held-out split's own file)
    <split>-tokens/        the train and validation splits tokenized (Arrow, memory-mapped)
    stats.json             the statistics of every split, computed in one pass
"""

from __future__ import annotations

from itertools import chain, islice, repeat
from pathlib import Path
from typing import Iterable, Iterator

from ftspec.core.io import BadFileError, iter_jsonl
from ftspec.data.formatting import few_shot_indices


def split_file(data_dir: Path, split: str) -> Path:
    return Path(data_dir) / f"{split}.jsonl"


def origins_file(data_dir: Path, split: str) -> Path:
    return Path(data_dir) / f"{split}.origins"


def sources_file(data_dir: Path, split: str) -> Path:
    return Path(data_dir) / f"{split}.sources"


def iter_records(data_dir: Path, split: str, limit: int | None = None) -> Iterator[dict]:
    """The split's records in order (the first ``limit`` of them), read one line at a time."""
    rows = (row for _, _, row in iter_jsonl(split_file(data_dir, split)))
    return islice(rows, limit) if limit is not None else rows


def read_records(data_dir: Path, split: str, limit: int | None = None) -> list[dict]:
    """The split's records (the first ``limit``), as a list: for the evaluated split, which is
    bounded by eval.limit, never for a whole training split."""
    return list(iter_records(data_dir, split, limit))


def iter_origins(data_dir: Path, split: str) -> Iterator[str]:
    """Where each of the split's records came from ("FILE:ROW"), in the split's order; nothing
    when the folder has no origins for it."""
    path = origins_file(data_dir, split)
    if not path.exists():
        return iter(())
    return (str(value) for _, _, value in iter_jsonl(path))


def iter_sources(data_dir: Path, split: str) -> Iterator[str] | None:
    """The name of the mixture's source of each of the split's records, in the split's order;
    None when the folder has none (the training data is not a mixture). A line that holds no
    name (a non-empty JSON string) is an error at its FILE:LINE."""
    path = sources_file(data_dir, split)
    if not path.exists():
        return None
    return _names(path)


def _names(path: Path) -> Iterator[str]:
    for number, _, value in iter_jsonl(path):
        if not isinstance(value, str) or not value:
            raise BadFileError(path, "holds no source name (a JSON string)", number)
        yield value


def split_position(origin: str | None, split: str, index: int) -> tuple[str, int | None]:
    """(file, row) of an origin, for an error's position; the split and the record's number
    when the origin is unknown."""
    text = origin if origin is not None else f"{split} split:{index + 1}"
    file, _, row = text.rpartition(":")
    return file, int(row) if row.isdigit() else None


def has_split(data_dir: Path, split: str) -> bool:
    return split_file(data_dir, split).exists()


def iter_with_origins(data_dir: Path, split: str, limit: int | None = None) -> Iterator[tuple[int, dict, str | None]]:
    """(index, record, origin) of the split's records in order (the first ``limit``), the
    records and their origins read side by side; the origin is None where the folder has
    none for a record."""
    origins = chain(iter_origins(data_dir, split), repeat(None))
    records = iter_records(data_dir, split, limit)
    return ((i, record, origin) for i, (record, origin) in enumerate(zip(records, origins)))


def count_records(data_dir: Path, split: str) -> int:
    """How many records the split holds, counted in one pass (every line parsed, as it is read)."""
    return sum(1 for _ in iter_records(data_dir, split))


def records_at(data_dir: Path, split: str, indices: Iterable[int]) -> list[dict]:
    """The split's records at ``indices`` (0-based), in that order, read up to the last of
    them: only those records are kept."""
    wanted = list(indices)
    if not wanted:
        return []
    positions = set(wanted)
    found: dict[int, dict] = {}
    for i, record in enumerate(iter_records(data_dir, split, max(wanted) + 1)):
        if i in positions:
            found[i] = record
    missing = sorted(positions - found.keys())
    if missing:  # counted before, and the file has since been cut short
        raise IndexError(f"{split_file(data_dir, split)}: no record {missing[0] + 1}: the split has fewer records")
    return [found[i] for i in wanted]


def few_shot_records(data_dir: Path, split: str, k: int, seed: int) -> list[dict]:
    """ftspec.data.formatting.few_shot of the split's records, the same records in the same
    order, in two passes (one to count, one to fetch the k drawn) and never the whole split held."""
    if k <= 0:
        return []
    return records_at(data_dir, split, few_shot_indices(count_records(data_dir, split), k, seed))
