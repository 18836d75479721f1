"""A training mixture's arithmetic (``data.train`` as a list; docs/use-cases/mixtures.md):
how many rows each source puts in the training split, which of its rows, and in what order
the sources' rows follow one another. Pure Python, so the plan counts the rows exactly as
the runtime draws them, and every choice streams: nothing here holds a source's rows.

- :func:`draw_counts` — the rows drawn from each source (``rows``, ``epochs`` or a share of
  the weighted sources' total).
- :func:`draw_passes` / :func:`choose` — drawing ``r`` rows of ``n``: every row ``r // n``
  times, then ``r % n`` rows chosen without replacement by sequential selection (each row in
  turn, with probability rows-still-wanted / rows-still-left), so every row is used once
  before any row twice and every subset of that size is equally likely.
- :func:`interleave` — the order of the training split: each source's rows spread evenly
  through it from a seeded starting phase, so any first N rows (``data.limit.train``) keep
  the mixture's proportions to within a row or two.
- :func:`source_seed` — a seed of its own for each source, from a seed and the source's
  name (not its position): a source's held-out rows do not move when another source is
  added, removed or reordered.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import random
from fractions import Fraction
from typing import Iterator, Sequence

TAKES = ("weight", "rows", "epochs")
TOTALS = ("no_repeats", "every_row")
# Amounts are floats in the plan; each is read back as the nearest fraction with a denominator
# up to this, so 1/3 normalised to 0.333… is a third again and n / w is exact.
_DENOMINATOR = 10**9
# The smallest share of the weights' sum a weight may have (validate refuses less): a smaller one
# draws no row of any mixture a disk holds, and its share is no fraction of _DENOMINATOR.
MIN_SHARE = 1 / _DENOMINATOR
# The most times a source's rows are used, on average (rows drawn / rows available): the most
# `epochs` may ask for. More (`rows: 10**12` of a five-row file, `every_row` beside a weight of
# 1e-9) only writes the same rows again and again, for days, until the disk is full.
MAX_TIMES = 10_000


def _exact(amount: float) -> Fraction:
    # A positive amount stays positive (a share under 1/_DENOMINATOR would round to none).
    return Fraction(amount).limit_denominator(_DENOMINATOR) or Fraction(amount)


def repeats_problem(name: str, drawn: int | None, available: int | None) -> str | None:
    """Why a source cannot be drawn ``drawn`` times from its ``available`` rows (None: it can, or
    a count is unknown): each of its rows would be used more than :data:`MAX_TIMES` times."""
    if drawn is None or not available or drawn <= MAX_TIMES * available:
        return None
    return (f"source '{name}' would put {drawn} rows in the mixture from its {available} (each row used "
            f"{drawn / available:.3g} times); a row may be used at most {MAX_TIMES} times (the most epochs: allows)")


def _round_half_up(x: Fraction) -> int:
    return math.floor(x + Fraction(1, 2))


def draw_counts(parts: Sequence[tuple[str, float, int | None]], total: str | int) -> list[int | None]:
    """The rows each source puts in the training mixture, in the order of ``parts``.

    Each part is ``(take, amount, available)``: ``take`` ``rows`` draws ``amount`` rows;
    ``epochs`` draws round(amount × available) (halves round up); ``weight`` draws a share
    of the weighted parts' total T (their amounts normalised to sum to 1), shared by
    largest remainder (exact: the shares sum to T). T is ``total``: ``no_repeats`` the most
    rows that repeat none, floor(min available / weight); ``every_row`` the fewest that use
    every row, ceil(max available / weight); a number, that number. ``available`` is the
    part's training rows (None: unknown until the data is read); a count that depends on
    an unknown one is None.
    """
    counts: list[int | None] = [None] * len(parts)
    weighted: list[int] = []
    for i, (take, amount, available) in enumerate(parts):
        if take not in TAKES:
            raise ValueError(f"unknown draw {take!r}: one of {', '.join(TAKES)}")
        if not amount > 0:
            raise ValueError(f"part {i}: the amount must be positive, got {amount!r}")
        if take == "rows":
            if amount != int(amount):
                raise ValueError(f"part {i}: rows must be a whole number, got {amount!r}")
            counts[i] = int(amount)
        elif take == "epochs":
            counts[i] = None if available is None else _round_half_up(_exact(amount) * available)
        else:
            weighted.append(i)
    if not weighted:
        return counts
    weights = [_exact(parts[i][1]) for i in weighted]
    whole = sum(weights)
    weights = [w / whole for w in weights]
    rows = [parts[i][2] for i in weighted]
    if isinstance(total, bool) or not (isinstance(total, int) or total in TOTALS):
        raise ValueError(f"unknown total {total!r}: no_repeats, every_row or a number of rows")
    if isinstance(total, int):
        t = total
    elif any(n is None for n in rows):
        return counts
    elif total == "no_repeats":
        t = math.floor(min(Fraction(n) / w for n, w in zip(rows, weights)))
    else:
        t = math.ceil(max(Fraction(n) / w for n, w in zip(rows, weights)))
    for i, share in zip(weighted, shares(t, weights)):
        counts[i] = share
    return counts


def shares(total: int, weights: Sequence[Fraction]) -> list[int]:
    """``total`` shared in proportion to ``weights`` (which sum to 1) by largest remainder:
    each gets the whole part of its quota, and the rows left go one each to the largest
    remainders (the earlier part first on a tie). Exact: the shares sum to ``total``."""
    quotas = [total * w for w in weights]
    out = [math.floor(q) for q in quotas]
    order = sorted(range(len(weights)), key=lambda i: (-(quotas[i] - out[i]), i))
    for i in order[: total - sum(out)]:
        out[i] += 1
    return out


def source_seed(seed: int, name: str, purpose: str = "") -> int:
    """A seed for one source from ``seed`` and the source's name (and what it seeds: the held-out
    split has none, the draw ``draw``), stable across Python versions and runs."""
    text = f"{seed}:{name}" if not purpose else f"{seed}:{purpose}:{name}"
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def choose(m: int, n: int, seed: int) -> Iterator[bool]:
    """For each of ``n`` rows in order, whether it is one of the ``m`` chosen (without
    replacement): chosen with probability (rows still wanted) / (rows still left), one draw of
    a ``random.Random(seed)`` per row. Exactly ``m`` are chosen and every subset of ``m`` rows
    is equally likely; only two counters are held."""
    if not 0 <= m <= n:
        raise ValueError(f"cannot choose {m} of {n} rows")
    rng = random.Random(seed)
    wanted = m
    for left in range(n, 0, -1):
        take = wanted > 0 and rng.random() * left < wanted
        wanted -= take
        yield take


def draw_passes(r: int, n: int) -> tuple[int, int]:
    """(q, m) for drawing ``r`` rows of ``n``: q whole passes over every row, then m rows chosen."""
    if n <= 0:
        if r:
            raise ValueError(f"cannot draw {r} rows of none")
        return 0, 0
    return divmod(r, n)


def drawn_rows(r: int, n: int, seed: int) -> Iterator[int]:
    """The 0-based indices of the rows drawn, in the order they are placed: every row ``q``
    times (pass by pass, each in order), then the ``m`` chosen ones in order (q, m =
    :func:`draw_passes`). For tests and small sources: the runtime reads its work file the
    same way, pass by pass."""
    q, m = draw_passes(r, n)
    for _ in range(q):
        yield from range(n)
    for i, chosen in enumerate(choose(m, n, seed)):
        if chosen:
            yield i


def interleave(counts: Sequence[int], seed: int) -> Iterator[int]:
    """The source of each row of the mixture, in order: ``counts[i]`` times source ``i``.

    Of R rows in all, source i's k-th row (from 0) may be placed once k/counts[i] of the
    mixture is placed, and is due when (k+1)/counts[i] of it is; each position takes, of
    the rows that may be placed, the one due first (ties in an order drawn from ``seed``).
    So in any first N rows (``data.limit.train``) each source has its share of N to within
    one row, whatever N. Holds two entries per source."""
    rng = random.Random(seed)
    total = sum(counts)
    waiting = [(0.0, i) for i, c in enumerate(counts) if c > 0]  # (when it may be placed, source)
    placed = [0] * len(counts)
    ready: list[tuple[float, float, int]] = []  # (when it is due, tie-break, source)
    for t in range(1, total + 1):
        # Row k of source i may be placed at position t once k / counts[i] < t / total.
        # (Each source has one row waiting or ready at a time: its row number is placed[i].)
        while waiting and placed[waiting[0][1]] * total < t * counts[waiting[0][1]]:
            _, i = heapq.heappop(waiting)
            heapq.heappush(ready, ((placed[i] + 1) / counts[i], rng.random(), i))
        _, _, i = heapq.heappop(ready)
        yield i
        placed[i] += 1
        if placed[i] < counts[i]:
            heapq.heappush(waiting, (placed[i] / counts[i], i))
