"""Training in one process or in two (DDP over gloo) on the CPU, as `ftspec run` launches them, side by side.

    python bench/distributed.py [--steps 30] [--rounds 2] [--variants 1,2] [--hidden 128 --layers 4] [--quick]

A tiny llama (hidden 128, 4 layers, byte tokenizer) is fine-tuned (SFT, full) on the
quickstart's support tickets with the same global batch both ways: 1 process x batch 16,
and `compute: {num_processes: 2, strategy: ddp}` x batch 8. `compute.threads` is left at
`auto` (1 thread per process), so two processes use two cores where one process uses one.

Each measured run is a fresh `python -m ftspec run SPEC --set …` (a user's command),
read line by line as it prints, each line stamped when it arrives. A first run prepares
the data and scores the base model once; every measured run then changes only the
learning rate, so prepare_data is reused and only train (and the short evaluation of
the tuned model) runs again. The rounds interleave the variants (1, 2, 1, 2, …) so that
a change in the machine's load falls on both alike; a variant's figure is the median of
its rounds.

Measured, from the stamps:
  start-up   seconds from the command's start to the first training step's line
             ("  step 1/N"), and from "train: running" to it (what launching the
             workers, their imports, the process group and the trainer cost);
  throughput train tokens per second over steps 2..N: (num_tokens at step N - at step 1)
             from the run's metrics.jsonl (TRL sums them over the processes), divided by
             the time between the "step 1/" and "step N/" lines.
Last line: `distributed startup 2/1=X.XX tokens/s 2/1=Y.YY`.

--quick: 2 steps, one round of the two-process variant alone, a 1 x 32 model, 48 rows,
and nothing written to bench/results/; the figures mean nothing (for CI: both launches still run).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _quick import add_quick, say_quick  # noqa: E402

DATA = ROOT / "specs" / "data" / "support-tickets.jsonl"
RESULTS = ROOT / "bench" / "results" / "distributed-cpu.txt"
GLOBAL_BATCH = 16
FULL = {"steps": 30, "rounds": 2, "hidden": 128, "layers": 4, "rows": 400, "variants": "1,2"}
# One process is the same `ftspec run` as the first run's; quick measures the two-process launch alone.
QUICK = {"steps": 2, "rounds": 1, "hidden": 32, "layers": 1, "rows": 48, "variants": "2"}

SPEC = """ftspec: 1
name: bench
model:
  kind: tiny
  hidden_size: {hidden}
  num_layers: {layers}
  num_heads: 4
  max_position_embeddings: 256
  init_seed: 1
data:
  train: tickets.jsonl
  split: {{validation: 0.05, test: 0.05, seed: 1}}
format:
  kind: prompt_completion
  prompt: "Request: {{{{ text }}}}\\nQueue:"
  completion: " {{{{ queue }}}}"
training: {{max_steps: {steps}, batch_size: {batch}, learning_rate: 1.0e-3, max_length: 128, logging_steps: 1}}
eval: {{baseline: false, max_new_tokens: 4, limit: 4, metrics: [accuracy]}}
compute: {{device: cpu}}
"""

TWO = ("compute.num_processes=2", "compute.strategy=ddp", f"training.batch_size={GLOBAL_BATCH // 2}")
VARIANTS = {"1": ((), "1 process"), "2": (TWO, "2 processes"),
            "1t2": (("compute.threads=2",), "1 proc 2 threads")}  # the same 2 cores, in one process


def ftspec(spec: Path, sets: list[str]) -> tuple[float, list[tuple[float, str]]]:
    """Run `ftspec run`; return its wall time and its output lines, each with the seconds since the start."""
    cmd = [sys.executable, "-m", "ftspec", "run", str(spec)] + [a for s in sets for a in ("--set", s)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1)
    lines = [(time.perf_counter() - t0, line.rstrip("\n")) for line in proc.stdout]
    proc.wait()
    elapsed = time.perf_counter() - t0
    if proc.returncode not in (0, 3):
        sys.exit(f"ftspec run {' '.join(sets)} failed ({proc.returncode}):\n" + "\n".join(l for _, l in lines[-40:]))
    return elapsed, lines


def stamp(lines: list[tuple[float, str]], pattern: str) -> float:
    for t, line in lines:
        if re.search(pattern, line):
            return t
    sys.exit(f"no line matching {pattern!r} in:\n" + "\n".join(l for _, l in lines[-40:]))


def measure(spec: Path, run_dir: Path, sets: list[str], steps: int) -> dict:
    wall, lines = ftspec(spec, sets)
    ran = re.findall(r"^(\w+): running", "\n".join(l for _, l in lines), re.MULTILINE)
    if "prepare_data" in ran or "train" not in ran:
        sys.exit(f"expected train alone to run again, ran: {ran}")
    train_at = stamp(lines, r"^train: running")
    first = stamp(lines, r"^\s+step 1/")
    last = stamp(lines, rf"^\s+step {steps}/")
    rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    tokens = {r["step"]: r["num_tokens"] for r in rows if "num_tokens" in r}
    return {"wall": wall, "to_first_step": first, "train_to_first_step": first - train_at,
            "steps_seconds": last - first, "tokens": tokens[steps] - tokens[1],
            "tokens_per_s": (tokens[steps] - tokens[1]) / (last - first),
            "started": any("starting 2 processes" in l for _, l in lines)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, help="default 30; --quick: 2")
    parser.add_argument("--rounds", type=int, help="default 2; --quick: 1")
    parser.add_argument("--hidden", type=int, help="default 128; --quick: 32")
    parser.add_argument("--layers", type=int, help="default 4; --quick: 1")
    parser.add_argument("--rows", type=int, help="the first rows of the tickets (default 400; --quick: 48)")
    parser.add_argument("--variants", help="of 1, 2 and 1t2 (one process, compute.threads=2), "
                        "the first the baseline of the ratios (default 1,2; --quick: 2)")
    parser.add_argument("--no-save", action="store_true", help=f"do not write {RESULTS.relative_to(ROOT)}")
    add_quick(parser)
    args = parser.parse_args()
    for name, value in (QUICK if args.quick else FULL).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.quick:
        args.no_save = True

    import torch  # only for its version, in the header

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    exe = Path(sys.executable)
    exe = exe.relative_to(ROOT) if exe.is_relative_to(ROOT) else exe
    command = f"{exe} bench/distributed.py " + " ".join(sys.argv[1:])
    out: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        out.append(text)

    folder = Path(tempfile.mkdtemp(prefix="ftspec-bench-distributed-"))
    try:
        rows = DATA.read_text(encoding="utf-8").splitlines()[:args.rows]
        (folder / "tickets.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
        spec = folder / "bench.yaml"
        spec.write_text(SPEC.format(hidden=args.hidden, layers=args.layers, steps=args.steps, batch=GLOBAL_BATCH),
                        encoding="utf-8")
        run_dir = folder / "runs" / "bench"
        load_before = os.getloadavg()
        t0 = time.perf_counter()
        prepare, _ = ftspec(spec, [])  # prepares the data and scores nothing but the tuned model's few rows
        stats = json.loads((run_dir / "data" / "stats.json").read_text())["splits"]["train"]
        names = args.variants.split(",")
        variants: dict[str, list[dict]] = {v: [] for v in names}
        lr = iter(f"training.learning_rate={1e-3 * (1 + 0.01 * i):.6g}" for i in range(1, 100))
        for _ in range(args.rounds):
            for v in names:
                variants[v].append(measure(spec, run_dir, [next(lr), *VARIANTS[v][0]], args.steps))
        total = time.perf_counter() - t0
        load_after = os.getloadavg()
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    assert all(m["started"] == (v == "2") for v, ms in variants.items() for m in ms)
    say_quick(args.quick)
    say(f"# {command}")
    say(f"# {datetime.date.today().isoformat()}; {cpus} CPUs usable "
        f"(nproc; os.cpu_count {os.cpu_count()}); torch {torch.__version__}; python {platform.python_version()}")
    say(f"# load average before {' '.join(f'{x:.2f}' for x in load_before)}, after "
        f"{' '.join(f'{x:.2f}' for x in load_after)} (a shared machine: other work runs beside this)")
    say(f"tiny llama hidden {args.hidden} x {args.layers} layers, SFT full, {args.steps} steps, global batch "
        f"{GLOBAL_BATCH} ({stats['rows']} train rows, {stats['tokens']['mean']:.0f} tokens a row on average); "
        f"compute.threads auto = 1 per process")
    say(f"1 = 1 process x batch {GLOBAL_BATCH}; 2 = 2 processes (ddp, gloo) x batch {GLOBAL_BATCH // 2}; "
        f"{'1 process x batch 16 with compute.threads=2; ' if '1t2' in names else ''}{args.rounds} interleaved "
        f"rounds, median (range); first run (prepare + eval) {prepare:.1f} s")
    say("")
    keys = [("to_first_step", "start to step 1 (s)", "{:.2f}"),
            ("train_to_first_step", "train: running to step 1 (s)", "{:.2f}"),
            ("steps_seconds", f"steps 2..{args.steps} (s)", "{:.2f}"), ("tokens_per_s", "train tokens/s", "{:.0f}"),
            ("wall", "whole command (s)", "{:.2f}")]
    base = names[0]
    others = names[1:]
    med = {v: {k: statistics.median(m[k] for m in ms) for k, *_ in keys} for v, ms in variants.items()}
    say(f"{'':32}" + "".join(f"{VARIANTS[v][1]:>24}" for v in names) + "".join(f"{v + '/' + base:>8}" for v in others))
    for key, label, fmt in keys:
        cells = []
        for v in names:
            xs = [m[key] for m in variants[v]]
            cells.append(f"{fmt.format(med[v][key])} ({fmt.format(min(xs))}-{fmt.format(max(xs))})")
        say(f"{label:32}" + "".join(f"{c:>24}" for c in cells)
            + "".join(f"{med[v][key] / med[base][key]:>8.2f}" for v in others))
    say(f"train tokens over steps 2..{args.steps}: " + ", ".join(
        f"{statistics.median(m['tokens'] for m in variants[v]):.0f} ({VARIANTS[v][1]})" for v in names))
    spread = max((max(m[k] for m in ms) - min(m[k] for m in ms)) / statistics.median(m[k] for m in ms)
                 for ms in variants.values() for k in ("to_first_step", "tokens_per_s"))
    say(f"noise: the widest range of a figure across its rounds is {spread * 100:.0f}% of its median; "
        f"bench wall time {total:.0f} s")
    say("distributed " + " ".join(f"startup {v}/{base}={med[v]['to_first_step'] / med[base]['to_first_step']:.2f} "
                                  f"tokens/s {v}/{base}={med[v]['tokens_per_s'] / med[base]['tokens_per_s']:.2f}"
                                  for v in others))
    if not args.no_save:
        RESULTS.write_text("\n".join(out) + "\n", encoding="utf-8")
        print(f"written to {RESULTS.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
