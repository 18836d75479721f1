"""Which rows go into which split: ``data.filter``'s verdict on a row, the seeded,
optionally stratified splitting of the training rows into train, validation and
test, and ``data.limit``. Pure Python, so the compiler can count the rows of each
split exactly as the runtime will cut them."""

from __future__ import annotations

import random
from typing import Any, Hashable, Mapping, Sequence

SPLITS = ("train", "validation", "test")

# What a filter may render, after stripping and lower-casing: a row is kept on the first,
# dropped on the second; anything else is an error (a filter that renders a label or a
# number by mistake would otherwise keep or drop rows silently).
KEEP = ("true", "1", "yes")
DROP = ("false", "0", "no", "")


def filter_verdict(text: str) -> bool | None:
    """Whether ``data.filter``'s rendering keeps the row; None when it is neither true nor false."""
    value = text.strip().lower()
    if value in KEEP:
        return True
    if value in DROP:
        return False
    return None


def verdict_problem(text: str) -> str:
    """What is wrong with a filter's rendering that is neither true nor false."""
    shown = text.strip()
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    return (f"rendered {shown!r}; a filter must render true (true, 1, yes) to keep a row "
            "or false (false, 0, no, nothing) to drop it")


def split_limits(limit: Any) -> dict[str, int | None]:
    """The limit of each split from ``data.limit``: a number (every split), a per-split
    mapping or model (the splits it names), or None (no limit)."""
    if limit is None:
        return {s: None for s in SPLITS}
    if isinstance(limit, int) and not isinstance(limit, bool):
        return {s: limit for s in SPLITS}
    if isinstance(limit, Mapping):
        return {s: limit.get(s) for s in SPLITS}
    return {s: getattr(limit, s, None) for s in SPLITS}


def split_counts(sources: Mapping[str, int | None], split: Any, limit: Any) -> dict[str, int | None]:
    """Rows of each split: ``sources`` holds the rows each source gives (after the
    filter; a split with no source is absent), ``split`` the plan's or spec's
    ``data.split`` (or None), ``limit`` its ``data.limit``. None where a count is unknown."""
    counts: dict[str, int | None] = {s: (sources[s] if s in sources else 0) for s in SPLITS}
    if split is not None:
        n = counts["train"]
        n_train, n_val, n_test = split_sizes(n, split.validation, split.test) if n is not None else (None, None, None)
        counts["train"] = n_train
        # Held out of rows not counted yet, a split is not counted either (unless none is held out).
        if "validation" not in sources:
            counts["validation"] = n_val if split.validation else 0
        if "test" not in sources:
            counts["test"] = n_test if split.test else 0
    for s, cut in split_limits(limit).items():
        if cut is not None and counts[s] is not None:
            counts[s] = min(counts[s], cut)
    return counts


def _held_out(n: int, fraction: float) -> int:
    if fraction <= 0 or n == 0:
        return 0
    return max(1, round(n * fraction))


def split_sizes(n: int, validation: float, test: float) -> tuple[int, int, int]:
    """(train, validation, test) row counts for ``n`` rows, without stratification."""
    n_val = _held_out(n, validation)
    n_test = _held_out(n, test)
    n_val, n_test = min(n_val, n), min(n_test, max(0, n - n_val))
    return n - n_val - n_test, n_val, n_test


def apportion(total: int, sizes: list[int]) -> list[int]:
    """Share ``total`` among groups in proportion to ``sizes`` (largest remainder), exactly."""
    whole = sum(sizes)
    if whole == 0 or total == 0:
        return [0] * len(sizes)
    quotas = [total * s / whole for s in sizes]
    shares = [int(q) for q in quotas]
    order = sorted(range(len(sizes)), key=lambda i: (-(quotas[i] - shares[i]), i))
    for i in order[: total - sum(shares)]:
        shares[i] += 1
    return shares


def split_indices(
    n: int,
    validation: float,
    test: float,
    seed: int,
    labels: Sequence[Hashable] | None = None,
) -> tuple[list[int], list[int], list[int]]:
    """Indices of the train, validation and test rows, each in ascending order.

    With ``labels``, each label's rows are held out in proportion to its share
    (stratified); either way the sizes are exactly :func:`split_sizes`, so the plan
    can state them without reading the labels.
    """
    _, n_val, n_test = split_sizes(n, validation, test)
    rng = random.Random(seed)
    groups: dict = {}
    for i in range(n):
        groups.setdefault(None if labels is None else labels[i], []).append(i)
    # Sorted by repr so that the order of labels (and so the shuffle) never depends on hashing.
    keys = sorted(groups, key=repr)
    for key in keys:
        rng.shuffle(groups[key])
    sizes = [len(groups[k]) for k in keys]
    val_share = apportion(n_val, sizes)
    test_share = apportion(n_test, [s - v for s, v in zip(sizes, val_share)])
    train: list[int] = []
    val: list[int] = []
    tst: list[int] = []
    for key, nv, nt in zip(keys, val_share, test_share):
        idx = groups[key]
        val.extend(idx[:nv])
        tst.extend(idx[nv:nv + nt])
        train.extend(idx[nv + nt:])
    return sorted(train), sorted(val), sorted(tst)
