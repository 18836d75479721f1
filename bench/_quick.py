"""What every benchmark's `--quick` shares: the flag, the line its output carries, and
the stand-in rows used where the full mode reads ../shared/datasets.

`--quick` runs a benchmark's own code paths on tiny inputs (a tiny model built from a
config, a few rows, a step or two) so that CI sees it still runs; its figures mean
nothing. tests/test_bench.py runs every bench/*.py (except this one) that way.
"""

from __future__ import annotations

import argparse
import random

QUICK_LINE = "quick mode (--quick): tiny sizes, only to check that this script runs; the figures mean nothing"


def add_quick(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="run every code path on tiny inputs in seconds (for CI); the figures mean nothing")


def say_quick(quick: bool) -> None:
    if quick:
        print(QUICK_LINE, flush=True)


def stand_in_rows(name: str, n: int) -> list[dict]:
    """n prompt/completion rows of varied length, shaped like the shared dataset ``name``."""
    rnd = random.Random(name)
    words = ["great", "dull", "a", "film", "plot", "slow", "call", "tool", "search", "the", "answer", "is", "weather"]
    rows = []
    for i in range(n):  # at most about 100 bytes a row: --quick trains at max_length 128 on byte tokens
        text = " ".join(rnd.choice(words) for _ in range(rnd.randint(2, 10)))
        if name == "sst2":
            rows.append({"prompt": f"Review: {text}\nSentiment:", "completion": rnd.choice([" positive", " negative"])})
        else:
            rows.append({"prompt": f"Q{i}: {text}\nResponse:", "completion": f" [Tool({rnd.choice(words)})] done"})
    return rows
