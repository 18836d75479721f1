"""A real sweep: SmolLM2-135M-Instruct (../shared/models) with LoRA on SST-2, learning rate ×
LoRA rank, every trial chosen on validation and the winner scored once on test.

    python bench/sweep.py [--quick] [--fresh]

Runs `ftspec sweep specs/real/smollm2-sst2.yaml --profile sweep-cpu --allow-path ../shared`
(a 2×2 grid, 24 steps of 8 rows each, 128 validation rows, 256 test rows) in this checkout,
timed from outside, then reads what each trial's run did from its manifest: which steps ran and
which were reused, and how long each ran. It prints the sweep's table (sweep.md), the winner,
the steps every trial shared (prepare_data, and the base model's evaluation on validation:
computed by the first trial, reused by the others), and what that sharing saved: the seconds
those steps took once, times the trials that reused them. Last line:
`sweep trials=T trainings=N prepare_data_runs=P base_eval_runs=B wall_s=W shared_saved_s=S`.

--fresh: a sweep folder and run directories of an earlier bench run are moved aside first
(renamed, never deleted), so every step is computed; without it, an earlier run's steps are reused.
--quick: a tiny model on the repository's support tickets (a 2×1 grid); the figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _quick import add_quick, say_quick  # noqa: E402

HERE = Path(__file__).resolve().parent.parent
SPEC = "specs/real/smollm2-sst2.yaml"
PROFILE = "sweep-cpu"

QUICK_SPEC = """\
ftspec: 1
name: sweep-quick
model: {kind: tiny, hidden_size: 32, num_layers: 1, num_heads: 2, max_position_embeddings: 256, init_seed: 1}
data:
  train: data/tickets.jsonl
  split: {validation: 0.2, test: 0.2, seed: 1}
format:
  kind: prompt_completion
  prompt: "Request: {{ text }}\\nQueue:"
  completion: " {{ queue }}"
method: {kind: sft, adapter: full}
training: {max_steps: 2, batch_size: 4, max_length: 128, learning_rate: 1.0e-3}
eval: {metrics: [accuracy], max_new_tokens: 4, limit: 8}
compute: {device: cpu}
sweep:
  fields:
    training.learning_rate: [1.0e-3, 3.0e-3]
"""


def quick_repo(folder: Path) -> tuple[Path, list[str]]:
    (folder / "data").mkdir(parents=True)
    lines = (HERE / "specs" / "data" / "support-tickets.jsonl").read_text(encoding="utf-8").splitlines()[:80]
    (folder / "data" / "tickets.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "job.yaml").write_text(QUICK_SPEC, encoding="utf-8")
    subprocess.run(["git", "init", "-q"], cwd=folder, check=True)
    return folder, ["job.yaml"]


def step_states(run_dir: Path) -> dict[str, tuple[str, float | None]]:
    """Each step of a run directory's manifest: (state, seconds it ran)."""
    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    return {s["name"]: (s.get("state") or s.get("status") or "?", s.get("seconds")) for s in manifest["steps"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_quick(parser)
    parser.add_argument("--fresh", action="store_true", help="move an earlier bench run's folders aside first")
    args = parser.parse_args()
    say_quick(args.quick)
    tmp = None
    if args.quick:
        tmp = tempfile.TemporaryDirectory(prefix="ftspec-sweep-")
        root, words = quick_repo(Path(tmp.name))
    else:
        if not (HERE.parent / "shared" / "models").is_dir():
            raise SystemExit("needs ../shared/models (the real SmolLM2 model) beside this checkout")
        root, words = HERE, [SPEC, "--profile", PROFILE, "--allow-path", "../shared"]
    try:
        if args.fresh and not args.quick:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            for old in (root / "runs").glob(f"smollm2-sst2@{PROFILE}*"):
                old.rename(old.with_name(f"{old.name}.before-{stamp}"))
            store = root / "runs" / ".ftspec-store"
            if store.exists():
                store.rename(store.with_name(f".ftspec-store.before-{stamp}"))
        started = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "ftspec", "sweep", *words], cwd=root, capture_output=True,
                             text=True, env={**__import__("os").environ, "PYTHONPATH": str(HERE)})
        wall = time.perf_counter() - started
        if out.returncode != 0:
            raise SystemExit(f"ftspec sweep exited {out.returncode}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
        folder = next((root / "runs").glob("*.sweep"))
        print(f"machine: {__import__('os').cpu_count()} CPUs; `ftspec sweep {' '.join(words)}` in {wall:.1f} s")
        print((folder / "sweep.md").read_text(encoding="utf-8"))
        rows = list(__import__("csv").DictReader((folder / "results.csv").open(encoding="utf-8")))
        ran: dict[str, int] = {}
        seconds: dict[str, float] = {}
        reused: dict[str, int] = {}
        print("steps of each trial (ran / reused, seconds of what ran):")
        for row in rows:
            run_dir = root / row["run_dir"] if row.get("run_dir") else None
            if run_dir is None or not (run_dir / "manifest.json").exists():
                continue
            states = step_states(run_dir)
            shown = []
            for name, (state, secs) in states.items():
                if state == "ran":
                    ran[name] = ran.get(name, 0) + 1
                    seconds[name] = seconds.get(name, 0.0) + (secs or 0.0)
                    shown.append(f"{name} {secs or 0:.0f}s")
                else:
                    reused[name] = reused.get(name, 0) + 1
                    shown.append(f"{name} {state}")
            print(f"  trial {row.get('trial', '?')}: " + ", ".join(shown))
        shared = ("prepare_data", "generate_base", "eval_base")
        saved = sum(seconds.get(n, 0.0) / max(1, ran.get(n, 0)) * reused.get(n, 0) for n in shared)
        print("shared steps computed once and reused by the other trials: "
              + ", ".join(f"{n} ran {ran.get(n, 0)}× reused {reused.get(n, 0)}×" for n in shared))
        print(f"what sharing saved: {saved:.0f} s (each shared step's measured seconds × the trials that reused it)")
        print(f"sweep trials={len(rows)} trainings={ran.get('train', 0)} "
              f"prepare_data_runs={ran.get('prepare_data', 0)} base_eval_runs={ran.get('generate_base', 0)} "
              f"wall_s={wall:.1f} shared_saved_s={saved:.0f}")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp.name, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
