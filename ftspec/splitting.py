"""Seeded, optionally stratified splitting of the training rows into train,
validation and test. Pure Python, so the compiler can count the rows of each
split exactly as the runtime will cut them."""

from __future__ import annotations

import random
from typing import Hashable, Sequence


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


def _apportion(total: int, sizes: list[int]) -> list[int]:
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
    val_share = _apportion(n_val, sizes)
    test_share = _apportion(n_test, [s - v for s, v in zip(sizes, val_share)])
    train: list[int] = []
    val: list[int] = []
    tst: list[int] = []
    for key, nv, nt in zip(keys, val_share, test_share):
        idx = groups[key]
        val.extend(idx[:nv])
        tst.extend(idx[nv:nv + nt])
        train.extend(idx[nv + nt:])
    return sorted(train), sorted(val), sorted(tst)
