"""Re-runs do only the work a change requires: the first full run of a spec, a
second run of the unchanged spec, and a run after an eval-only change, timed side
by side in one run of this script.

    python bench/rerun.py [--spec specs/quickstart.yaml]

Every `ftspec run` is a fresh process, as a user would start it. The runs write to
a scratch run directory (removed afterwards). Targets: the unchanged re-run under
3 seconds, and the eval-only change skipping training.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def ftspec(*args: str) -> tuple[float, str]:
    exe = shutil.which("ftspec", path=str(Path(sys.executable).parent))
    cmd = [exe, *args] if exe else [sys.executable, "-m", "ftspec", *args]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if out.returncode not in (0, 3):
        sys.exit(f"ftspec {' '.join(args)} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return elapsed, out.stdout


def ran(stdout: str) -> list[str]:
    return re.findall(r"^(\w+): running", stdout, re.M)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="specs/quickstart.yaml")
    args = parser.parse_args()

    scratch = f"runs/.bench-rerun-{os.getpid()}"
    where = f"output.dir={scratch}"
    try:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        python_start = time.perf_counter() - t0

        first, out1 = ftspec("run", args.spec, "--set", where)
        again, out2 = ftspec("run", args.spec, "--set", where)
        changed, out3 = ftspec("run", args.spec, "--set", where, "--set", "eval.max_new_tokens=24")
    finally:
        shutil.rmtree(ROOT / scratch, ignore_errors=True)

    print(f"machine: {os.cpu_count()} CPUs; spec {args.spec}")
    print(f"python start (python -c pass):   {python_start:6.2f} s")
    print(f"first full run:                  {first:6.2f} s  ran: {', '.join(ran(out1))}")
    print(f"unchanged re-run:                {again:6.2f} s  ran: {', '.join(ran(out2)) or 'nothing'}  "
          f"({again / first:.3f} of the first run; target < 3 s: {'met' if again < 3 else 'NOT met'})")
    skipped = "train" not in ran(out3)
    print(f"eval-only change (max_new_tokens): {changed:6.2f} s  ran: {', '.join(ran(out3))}  "
          f"({changed / first:.3f} of the first run; training skipped: {'yes' if skipped else 'NO'})")
    return 0 if again < 3 and skipped else 1


if __name__ == "__main__":
    sys.exit(main())
