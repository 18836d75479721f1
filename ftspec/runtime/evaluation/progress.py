"""Progress of a long evaluation step: rows done of the total, rows per second, time left.

The same mechanism as training's progress bar (``ftspec.runtime.training.callbacks``):
on a terminal a tqdm bar redrawn in place; elsewhere (CI logs) plain lines, only when a
quarter of the rows is crossed and then at most one per ``every`` seconds, and none at all
for a step that ends within ``quiet`` seconds. Either way the step ends with one line that
says how many rows it did, in how long, how fast — the figure the run records.
"""

from __future__ import annotations

import sys
import time
from typing import Callable, TextIO


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds >= 60 else f"{seconds}s"


class Progress:
    """Counts rows of one step (``label``, e.g. "choices") towards ``total``.

    ``advance(n)`` after each batch; ``close()`` at the end returns
    ``{"rows", "seconds", "rows_per_second"}``. ``scale`` turns what the caller counts into
    rows (choices mode counts (row, label) pairs: ``1 / labels``).
    """

    def __init__(self, label: str, total: int, *, stream: TextIO | None = None, scale: float = 1.0,
                 every: float = 30.0, quiet: float = 5.0, clock: Callable[[], float] = time.monotonic,
                 brief: bool = False):
        self.label, self.total, self.scale = label, total, scale
        self.brief = brief  # no closing line for a part that took less than `quiet` seconds
        self.stream = stream or sys.stderr
        self.every, self.quiet, self.clock = every, quiet, clock
        self.started = self.last_line = clock()
        self.done = 0.0
        self.quarter = 0
        self.bar = None
        isatty = getattr(self.stream, "isatty", None)
        if total > 0 and isatty is not None and isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=label, unit="row", dynamic_ncols=True, file=self.stream, leave=False)

    def advance(self, n: float) -> None:
        rows = n * self.scale
        self.done = min(float(self.total), self.done + rows)
        if self.bar is not None:
            self.bar.update(rows)
            return
        if self.total <= 0:
            return
        now = self.clock()
        quarter = int(4 * self.done // self.total)
        if (quarter > self.quarter and quarter < 4 and now - self.started >= self.quiet
                and now - self.last_line >= self.every):
            self.quarter, self.last_line = quarter, now
            rate = self.done / max(now - self.started, 1e-9)
            left = (self.total - self.done) / rate if rate > 0 else 0.0
            print(f"  {self.label}: {int(self.done)}/{self.total} rows ({25 * quarter}%), {rate:.1f} rows/s, "
                  f"about {_duration(left)} left", file=self.stream, flush=True)

    def close(self) -> dict:
        seconds = self.clock() - self.started
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        rows = int(round(self.done))
        rate = rows / seconds if seconds > 0 else None
        if self.total > 0 and not (self.brief and seconds < self.quiet):
            speed = f", {rate:.1f} rows/s" if rate is not None else ""
            print(f"  {self.label}: {rows} rows in {seconds:.1f}s{speed}", file=self.stream, flush=True)
        return {"rows": rows, "seconds": round(seconds, 2), "rows_per_second": round(rate, 2) if rate else None}
