"""Re-runs do only the work a change requires: the first full run of a spec, a
second run of the unchanged spec, and a run after an eval-only change, timed side
by side in one run of this script.

    python bench/rerun.py [--spec specs/quickstart.yaml] [--quick]

Every `ftspec run` is a fresh process, as a user would start it. The runs work in a
scratch copy of the spec's folder (removed afterwards; the checkout is not written).
Targets: the unchanged re-run under 3 seconds, and the eval-only change skipping
training.

--quick: the same three runs of the spec's smoke profile shrunk further (a 1 x 32
model, 2 steps, 32 rows, 4 new tokens); the figures mean nothing, and the time target
does not decide the exit status (for CI: the script still runs, and an eval-only change
still skips training).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _quick import add_quick, say_quick  # noqa: E402

QUICK_SETS = ("model.hidden_size=32", "model.num_layers=1", "training.max_steps=2", "data.limit=32",
              "eval.max_new_tokens=4")


def ftspec(cwd: Path, *args: str) -> tuple[float, str]:
    exe = shutil.which("ftspec", path=str(Path(sys.executable).parent))
    cmd = [exe, *args] if exe else [sys.executable, "-m", "ftspec", *args]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
                             str(ROOT), os.environ.get("PYTHONPATH")]))})
    elapsed = time.perf_counter() - t0
    if out.returncode not in (0, 3):
        sys.exit(f"ftspec {' '.join(args)} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return elapsed, out.stdout


def ran(stdout: str) -> list[str]:
    return re.findall(r"^(\w+): running", stdout, re.M)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default="specs/quickstart.yaml")
    add_quick(parser)
    args = parser.parse_args()
    spec = (ROOT / args.spec).resolve()
    sets = [a for s in QUICK_SETS for a in ("--set", s)] + ["--profile", "smoke"] if args.quick else []
    tokens = 6 if args.quick else 24

    with tempfile.TemporaryDirectory(prefix="ftspec-bench-rerun-") as tmp:
        repo = Path(tmp)
        (repo / ".git").mkdir()
        shutil.copytree(spec.parent, repo / spec.parent.name, ignore=shutil.ignore_patterns("runs", ".ftspec"))
        where = str(Path(spec.parent.name) / spec.name)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        python_start = time.perf_counter() - t0

        first, out1 = ftspec(repo, "run", where, *sets)
        again, out2 = ftspec(repo, "run", where, *sets)
        changed, out3 = ftspec(repo, "run", where, *sets, "--set", f"eval.max_new_tokens={tokens}")

    say_quick(args.quick)
    print(f"machine: {os.cpu_count()} CPUs; spec {args.spec}" + (" (--quick sizes)" if args.quick else ""))
    print(f"python start (python -c pass):   {python_start:6.2f} s")
    print(f"first full run:                  {first:6.2f} s  ran: {', '.join(ran(out1))}")
    print(f"unchanged re-run:                {again:6.2f} s  ran: {', '.join(ran(out2)) or 'nothing'}  "
          f"({again / first:.3f} of the first run; target < 3 s: {'met' if again < 3 else 'NOT met'})")
    skipped = "train" not in ran(out3)
    print(f"eval-only change (max_new_tokens): {changed:6.2f} s  ran: {', '.join(ran(out3))}  "
          f"({changed / first:.3f} of the first run; training skipped: {'yes' if skipped else 'NO'})")
    nothing_again = not ran(out2)
    return 0 if skipped and nothing_again and (again < 3 or args.quick) else 1


if __name__ == "__main__":
    sys.exit(main())
