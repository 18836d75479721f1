"""Peak resident memory of `ftspec run`, step by step: which step holds the run's peak, and
whether what one step allocated is given back before the next.

    python bench/step_memory.py [--repo DIR …] [--quick] [-- RUN ARGS]

Each `--repo` (default: this checkout) runs `python -m ftspec run` in its own folder (a git
clone of another commit, to compare side by side), with RUN ARGS (default: the SST-2 spec on
the real model, `specs/real/smollm2-sst2.yaml --allow-path ../shared --profile smoke`). The
process's VmRSS is sampled from /proc every 0.1 s and attributed to the step the run last
said it is running. Linux only.

--quick: the quickstart's smoke profile in this checkout; the figures mean nothing (for CI).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _quick import add_quick, say_quick  # noqa: E402

HERE = Path(__file__).resolve().parent.parent
REAL = ["specs/real/smollm2-sst2.yaml", "--allow-path", "../shared", "--profile", "smoke"]


def measure(repo: Path, args: list[str]) -> tuple[int, dict[str, int], float]:
    """(exit status, peak MB by step, seconds) of one run in ``repo``."""
    env = {**os.environ, "PYTHONPATH": str(repo)}
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "ftspec", "run", *args], cwd=repo, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    step, peak = ["start"], {}

    def sample() -> None:
        while proc.poll() is None:
            try:
                status = Path(f"/proc/{proc.pid}/status").read_text()
            except OSError:
                return
            found = re.search(r"VmRSS:\s+(\d+)", status)
            if found:
                peak[step[0]] = max(peak.get(step[0], 0), int(found.group(1)) // 1024)
            time.sleep(0.1)

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    assert proc.stdout is not None
    for line in proc.stdout:
        m = re.match(r"(\w+): running", line)
        if m:
            step[0] = m.group(1)
    proc.wait()
    watcher.join()
    return proc.returncode, peak, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", action="append", type=Path, help="a checkout to run in (repeatable)")
    add_quick(parser)
    parser.add_argument("run_args", nargs="*", help="what follows `ftspec run` (after --)")
    args = parser.parse_args()
    say_quick(args.quick)
    if not Path("/proc/self/status").exists():
        print("no /proc here: Linux only; skipped")
        return 0
    run_args = args.run_args or (["specs/quickstart.yaml", "--profile", "smoke"] if args.quick else REAL)
    repos = [HERE] if args.quick or not args.repo else args.repo
    if args.quick:  # not in the checkout: the quick run's folders are a temporary copy's
        import shutil
        import tempfile

        tmp = Path(tempfile.mkdtemp(prefix="ftspec-memory-"))
        for rel in ("specs/quickstart.yaml", "specs/data/support-tickets.jsonl"):
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(HERE / rel, tmp / rel)
        shutil.copytree(HERE / "templates", tmp / "templates")
        (tmp / ".git").mkdir()
        repos = [tmp]
    rows = []
    for repo in repos:
        code, peak, seconds = measure(repo.resolve(), run_args)
        if code != 0:
            raise SystemExit(f"ftspec run exited {code} in {repo}")
        rows.append((repo, peak, seconds))
    steps = list(dict.fromkeys(s for _, peak, _ in rows for s in peak))
    print(f"ftspec run {' '.join(run_args)}: peak resident memory (MB) while each step ran")
    print(f"  {'step':<16}" + "".join(f"{str(r)[-24:]:>26}" for r, _, _ in rows))
    for s in steps:
        print(f"  {s:<16}" + "".join(f"{peak.get(s, 0):>26}" for _, peak, _ in rows))
    print(f"  {'seconds':<16}" + "".join(f"{sec:>26.0f}" for _, _, sec in rows))
    for repo, peak, _ in rows:
        print(f"step_memory repo={repo} peak_mb={max(peak.values())} after_train_mb="
              f"{max((v for k, v in peak.items() if k in ('generate_tuned', 'eval_tuned', 'report')), default=0)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
