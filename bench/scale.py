"""Data at scale: `ftspec run` on a large training file in the quickstart's format, with a
few training steps, measuring wall time, prepare_data's rows/s and the run's peak memory.

    python bench/scale.py [--rows 100000,1000000,10000000] [--steps 5] [--quick]

Each size is a fresh repository in a temporary folder holding one JSON Lines file of
support tickets (the quickstart's generator, streamed: id, text, queue) and the
quickstart's spec with `training.max_steps` set and the evaluation cut to 200 test rows
(`eval.limit`), so that the figures are about the data, not about scoring. Every run is a
separate `python -m ftspec run` process; its peak resident memory is the kernel's
(`wait4` rusage, ru_maxrss), its seconds are wall time. Last line: `scale rows=N seconds=S
peak_mb=M` for the largest size.

--quick: 2,000 rows and 2 steps; the figures mean nothing (for CI: the script still runs).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _quick import add_quick, say_quick  # noqa: E402

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE / "examples"))
import make_support_tickets as tickets  # noqa: E402


def write_rows(path: Path, rows: int, seed: int = 7) -> int:
    """``rows`` tickets in the quickstart's format, streamed to ``path``; returns its bytes."""
    rng = random.Random(seed)
    queues = sorted(tickets.QUEUES)
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        chunk = []
        for i in range(rows):
            queue = queues[rng.randrange(len(queues))]
            text = (rng.choice(tickets.OPENERS) + tickets._fill(rng.choice(tickets.QUEUES[queue]), rng)
                    + rng.choice(tickets.CLOSERS))
            chunk.append(json.dumps({"id": f"T{i + 1:08d}", "text": text, "queue": queue}) + "\n")
            if len(chunk) >= 10_000:
                fh.write("".join(chunk))
                chunk = []
        fh.write("".join(chunk))
    return path.stat().st_size


def make_repo(folder: Path, rows: int, steps: int) -> Path:
    (folder / "data").mkdir(parents=True)
    size = write_rows(folder / "data" / "tickets.jsonl", rows)
    spec = (HERE / "specs" / "quickstart.yaml").read_text(encoding="utf-8")
    spec = spec.replace("data/support-tickets.jsonl", "data/tickets.jsonl")
    spec = spec.replace("# yaml-language-server: $schema=../schema/ftspec-v1.schema.json\n", "")
    spec = spec.replace("  warmup_ratio: 0.05\n", f"  warmup_ratio: 0.05\n  max_steps: {steps}\n")
    spec = spec.replace("  max_new_tokens: 16\n", "  max_new_tokens: 16\n  limit: 200\n")
    spec = spec.replace("  gates:\n    accuracy: \">= 0.8\"\n    improvement.accuracy: \">= 0.3\"\n", "")
    (folder / "spec.yaml").write_text(spec, encoding="utf-8")
    subprocess.run(["git", "init", "-q"], cwd=folder, check=True)
    return folder / "spec.yaml", size


def run(spec: Path) -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "ftspec", "run", str(spec)], cwd=spec.parent,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    output = proc.stdout.read().decode("utf-8", "replace")
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        print(output[-4000:])
        raise SystemExit(f"ftspec run exited {code}")
    run_dir = next(p for p in (spec.parent / "runs").iterdir() if p.is_dir() and not p.name.startswith("."))
    manifest = json.loads((run_dir / "manifest.json").read_text())
    step_seconds = {s["name"]: s.get("seconds") for s in manifest["steps"]}
    stats = json.loads((run_dir / "data" / "stats.json").read_text())
    return {"seconds": seconds, "peak_mb": usage.ru_maxrss / 1024, "steps": step_seconds,
            "prepare_rows_per_second": stats["preparation"]["rows_per_second"],
            "rows": {k: v["rows"] for k, v in stats["splits"].items()}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", help="comma-separated sizes (default 100000,1000000,10000000; --quick: 2000)")
    parser.add_argument("--steps", type=int, help="training steps (default 5; --quick: 2)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary repositories")
    add_quick(parser)
    args = parser.parse_args()
    sizes = [int(x) for x in (args.rows or ("2000" if args.quick else "100000,1000000,10000000")).split(",")]
    steps = args.steps or (2 if args.quick else 5)
    print(f"machine: {os.cpu_count()} CPUs; quickstart format, {steps} training steps, eval.limit 200")
    print(f"  {'rows':>10}  {'file MB':>8}  {'prepare s':>9}  {'rows/s':>8}  {'train s':>7}  {'run s':>7}  "
          f"{'peak MB':>8}")
    last = None
    for n in sizes:
        folder = Path(tempfile.mkdtemp(prefix=f"ftspec-scale-{n}-"))
        try:
            spec, size = make_repo(folder, n, steps)
            got = run(spec)
        finally:
            if not args.keep:
                shutil.rmtree(folder, ignore_errors=True)
        s = got["steps"]
        print(f"  {n:>10}  {size / 1e6:>8.0f}  {s.get('prepare_data') or 0:>9.1f}  "
              f"{got['prepare_rows_per_second'] or 0:>8.0f}  {s.get('train') or 0:>7.1f}  {got['seconds']:>7.1f}  "
              f"{got['peak_mb']:>8.0f}", flush=True)
        last = (n, got)
    n, got = last
    say_quick(args.quick)
    print(f"scale rows={n} seconds={got['seconds']:.1f} peak_mb={got['peak_mb']:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
