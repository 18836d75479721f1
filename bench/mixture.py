"""Memory of a training mixture's preparation: the peak resident memory of prepare_data's
splitting (ftspec.runtime.training.splits.write_splits: format, split each source, draw,
interleave, write with .sources) at two sizes. Streamed, it should not grow with the rows.

    python bench/mixture.py [--rows 100000 1000000] [--quick]

Each size runs in a fresh process (two sources of tiny rows, 3:1 in rows, weights 0.5/0.5,
total every_row so the smaller source is drawn three times over, a 10%/10% held-out split)
and prints its rows, seconds and peak RSS. Last line: `mixture peak_rss_ratio=X.XX`, the
largest size's peak over the smallest's (about 1 is the aim: memory does not grow with rows).

--quick: 2,000 and 20,000 rows; the figures mean nothing (for CI: the script still runs).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _quick import add_quick, say_quick  # noqa: E402


def _template(text: str) -> dict:
    return {"source": "inline", "ref": "bench", "text": text, "sha256": hashlib.sha256(text.encode()).hexdigest()}


def _one(rows: int) -> None:
    """Prepare a mixture of ``rows`` rows in all (in this process) and print its figures as JSON."""
    from ftspec.data.sources import fingerprint
    from ftspec.plan.model import Data, TextFormat
    from ftspec.runtime.training.splits import write_splits

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sizes = {"big": rows * 3 // 4, "small": rows - rows * 3 // 4}
        parts = []
        for name, n in sizes.items():
            with open(root / f"{name}.jsonl", "w", encoding="utf-8") as fh:
                for i in range(n):
                    fh.write(json.dumps({"text": f"{name} {i}", "label": "ab"[i % 2]}) + "\n")
            source = {"kind": "file", "path": f"{name}.jsonl", "format": "jsonl", "rows": n,
                      "sha256": fingerprint(root / f"{name}.jsonl")}
            parts.append({"name": name, "source": source, "take": "weight", "amount": 0.5})
        data = Data.model_validate({
            "sources": {"train": {"kind": "mixture", "parts": parts, "total": "every_row", "seed": 1}},
            "rename": {}, "split": {"validation": 0.1, "test": 0.1, "seed": 3}, "on_bad_row": "error",
            "rows": {"train": None, "validation": None, "test": None}})
        fmt = TextFormat.model_validate({"kind": "prompt_completion", "loss": "completion", "templates": {
            "prompt": _template("Q: {{ text }}\nA:"), "completion": _template(" {{ label }}")}})
        out = root / "out"
        out.mkdir()
        started = time.perf_counter()
        made = write_splits(data, fmt, root, out)
        seconds = time.perf_counter() - started
    # ru_maxrss: KiB on Linux, bytes on macOS
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20 if sys.platform == "darwin" else 1 << 10)
    print(json.dumps({"rows": rows, "prepared": made.rows, "seconds": round(seconds, 2), "peak_mb": round(peak, 1)}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", help="rows in all, per size (default 100000 1000000)")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # the child process: one size
    add_quick(parser)
    args = parser.parse_args()
    if args.one:
        _one(args.one)
        return 0
    say_quick(args.quick)
    sizes = args.rows or ([2_000, 20_000] if args.quick else [100_000, 1_000_000])
    peaks = []
    for rows in sizes:
        done = subprocess.run([sys.executable, __file__, "--one", str(rows)], capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stdout + done.stderr)
            return 1
        figures = json.loads(done.stdout.strip().splitlines()[-1])
        peaks.append(figures["peak_mb"])
        print(f"{rows:>9} rows  prepared {figures['prepared']}  {figures['seconds']:.1f}s  "
              f"peak RSS {figures['peak_mb']:.0f} MB", flush=True)
    print(f"mixture peak_rss_ratio={peaks[-1] / peaks[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
