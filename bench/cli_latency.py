"""How long `ftspec validate` takes, next to the time it takes just to import the
training stack: the light commands must answer in a fraction of it.

    python bench/cli_latency.py [--runs 9] [--baseline REV] [--quick]

Runs both commands interleaved, in fresh processes, after one warm-up each, and
prints the median wall times and their ratio. Targets: validate <= 0.25 s and
<= 0.05 x the import. With ``--baseline REV``, the ftspec of git revision REV
(extracted into a temporary folder) runs `validate` and `plan` interleaved with this
checkout's, on the same spec, so a regression shows as a ratio measured in one run.

--quick: one run of each, no warm-up; the figures mean nothing (for CI:
the script still runs).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _quick import add_quick, say_quick  # noqa: E402


def timed(cmd: list[str], env: dict | None = None) -> float:
    start = time.perf_counter()
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"command failed ({result.returncode}): {' '.join(cmd)}\n{result.stderr}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, help="default 9; --quick: 1")
    parser.add_argument("--baseline", metavar="REV", help="Also time the light commands of git revision "
                                                          "REV, side by side.")
    add_quick(parser)
    args = parser.parse_args()
    args.runs = args.runs or (1 if args.quick else 9)

    largest = max((ROOT / "specs").glob("*.yaml"), key=lambda p: p.stat().st_size)
    spec = str(largest.relative_to(ROOT))
    exe = shutil.which("ftspec", path=str(Path(sys.executable).parent))
    validate = [exe, "validate", "-q", spec] if exe else [sys.executable, "-m", "ftspec", "validate", "-q", spec]
    imports = [sys.executable, "-c", "import torch, transformers"]
    try:
        import importlib.util

        if importlib.util.find_spec("torch") is None or importlib.util.find_spec("transformers") is None:
            raise ImportError
    except ImportError:
        sys.exit("torch and transformers are not installed here: pip install -e '.[train]'")

    if not args.quick:  # warm-up
        timed(validate)
        timed(imports)
    v_times, i_times = [], []
    for _ in range(args.runs):
        v_times.append(timed(validate))
        i_times.append(timed(imports))
    v, i = statistics.median(v_times), statistics.median(i_times)
    say_quick(args.quick)
    print(f"machine: {os.cpu_count()} CPUs, python {sys.version.split()[0]}")
    print(f"ftspec validate {spec}: median {v:.3f} s over {args.runs} runs (min {min(v_times):.3f}, max "
          f"{max(v_times):.3f})")
    print(f"python -c 'import torch, transformers': median {i:.3f} s (min {min(i_times):.3f}, max {max(i_times):.3f})")
    print(f"ratio validate/import = {v / i:.3f}  (target <= 0.05; validate target <= 0.25 s: "
          f"{'met' if v <= 0.25 else 'NOT met'})")
    if args.baseline:
        compare(args.baseline, spec, args.runs)
    return 0


def compare(rev: str, spec: str, runs: int) -> None:
    """This checkout's `validate` and `plan` against REV's, interleaved, in fresh processes."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="ftspec-baseline-") as tmp:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "ftspec", "templates"],
                                 capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        envs = {"this checkout": dict(os.environ, PYTHONPATH=str(ROOT)), rev: dict(os.environ, PYTHONPATH=tmp)}
        for command in ("validate", "plan"):
            cmd = [sys.executable, "-m", "ftspec", command, spec] + (["-q"] if command == "validate" else ["--json"])
            times: dict[str, list[float]] = {name: [] for name in envs}
            for env in envs.values():
                timed(cmd, env)  # warm-up
            for _ in range(runs):
                for name, env in envs.items():
                    times[name].append(timed(cmd, env))
            now, then = statistics.median(times["this checkout"]), statistics.median(times[rev])
            print(f"ftspec {command} {spec}: this checkout {now:.3f} s, {rev} {then:.3f} s (medians of {runs}); "
                  f"ratio {now / then:.2f}")


if __name__ == "__main__":
    sys.exit(main())
