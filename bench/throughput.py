"""Training throughput: ftspec against plain trl, on the same tiny model from config
and the same real, variable-length data, for the same number of examples.

    python bench/throughput.py [--examples 256] [--repeats 3] [--datasets sst2,toolformer] [--quick]

Configurations (each run in a fresh process, warm-up first, runs interleaved,
median of --repeats):
  ftspec          `ftspec`'s SFT recipe with the batching its compiler chooses (auto)
  ftspec-padded   the same with `training.batching: padded` (trl's batches, for the loss check)
  ftspec-packed   the same with `training.batching: packed`
  ftspec-grouped  the same with `training.batching: length_grouped`
  trl-default     a plain trl SFTTrainer script with trl's default settings
                  (only what a CPU needs to run, and the shared batch size, length and steps)
  trl-nockpt      trl without gradient checkpointing (trl turns it on by default)
  trl-grouped     trl-nockpt with transformers' length-grouped sampler
  trl-packed      trl-nockpt with padding-free bfd packing
"trl best" is whichever trl configuration is fastest on each dataset here.

Every configuration trains with the same settings: the same initial weights, learning
rate 1e-3, trl's defaults for the rest — linear schedule without warm-up and the fused
AdamW (ftspec's spec pins both: its own defaults are cosine with 3% warm-up and the
unfused AdamW), no weight decay, clipping at 1.0.
Repeat r uses seed 42 + r in every configuration, so the repeats are also seed
replicates: the loss table compares each configuration's mean loss curve with trl
default's, step by step, against the spread the seed alone makes (see `loss_check`).

Printed per dataset and configuration: real (non-padding) tokens per second, the
padding fraction, peak resident memory, the mean loss at the first step and over the
last four, and the loss check; with --curves every mean loss curve; then the time
from `ftspec run` to its first training step; last line:
`throughput ftspec/trl_default=X.XX ftspec/trl_best=Y.YY` (geometric mean over datasets).
Reads ../shared/datasets (SST-2, the tool-calling set); says so and stops if it is missing.

--quick: the same runs on generated stand-in rows (SST-2's shape only), a smaller
model, 8 examples in batches of 4, one repeat and no warm-up, every configuration in
one worker process; the figures mean nothing (for CI: the script still runs).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from _quick import add_quick, say_quick, stand_in_rows

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "datasets"
CONFIGS = ["ftspec", "ftspec-padded", "ftspec-packed", "ftspec-grouped",
           "trl-default", "trl-nockpt", "trl-grouped", "trl-packed"]
TRL = [c for c in CONFIGS if c.startswith("trl")]
MAX_LENGTH = 512


@dataclass(frozen=True)
class Sizes:
    """What --quick changes; everything else is the same code."""

    max_length: int
    batch: int
    model: dict
    examples: int
    repeats: int
    startup_rows: int


def _model(hidden: int, layers: int, heads: int, max_length: int) -> dict:
    return {"architecture": "llama", "hidden_size": hidden, "num_layers": layers, "num_heads": heads,
            "num_kv_heads": heads, "intermediate_size": 4 * hidden, "max_position_embeddings": max_length,
            "tokenizer": {"kind": "byte"}, "init_seed": 0}


FULL = Sizes(max_length=MAX_LENGTH, batch=16, model=_model(128, 2, 4, MAX_LENGTH), examples=256, repeats=3,
             startup_rows=64)
QUICK = Sizes(max_length=128, batch=4, model=_model(32, 1, 2, 128), examples=8, repeats=1, startup_rows=8)


def sizes(quick: bool) -> Sizes:
    return QUICK if quick else FULL


def tiny_model(model: dict):
    """The plan's typed tiny model for a model dict (what `build_tiny` takes)."""
    from ftspec.plan.model import TinyModel

    return TinyModel.model_validate({"kind": "tiny", **model})


def load_rows(name: str, n: int, quick: bool = False) -> list[dict]:
    """prompt/completion rows from a shared dataset, the first n after a fixed shuffle
    (with ``quick``, generated stand-in rows of the same shape)."""
    import random

    if quick:
        return stand_in_rows(name, n)
    if name == "sst2":
        rows = []
        for line in (SHARED / "sst2" / "train.tsv").read_text(encoding="utf-8").splitlines():
            text, _, label = line.rpartition("\t")
            rows.append({"prompt": f"Review: {text}\nSentiment:",
                         "completion": " positive" if label == "1" else " negative"})
    else:
        data = json.loads((SHARED / "toolformer" / "toolformer_alpaca.json").read_text(encoding="utf-8"))
        rows = [{"prompt": f"{r['instruction']}\n{r['input']}\nResponse:".replace("\n\n", "\n"),
                 "completion": " " + r["output"]}
                for r in data]
    random.Random(0).shuffle(rows)
    return rows[:n]


# --------------------------------------------------------------------------- one measured run (a worker process)

COUNTS = {"real": 0, "processed": 0}


def instrument() -> None:
    """Count the real and processed tokens of every batch trl's data loader gives (once per process)."""
    from trl import SFTTrainer

    if getattr(SFTTrainer.get_train_dataloader, "counting", False):
        return

    class Counting:
        def __init__(self, inner):
            self.inner = inner

        def __call__(self, features):
            batch = self.inner(features)
            ids = batch["input_ids"]
            COUNTS["processed"] += ids.numel()
            COUNTS["real"] += int(batch["attention_mask"].sum()) if "attention_mask" in batch else ids.numel()
            return batch

    real_loader = SFTTrainer.get_train_dataloader

    def counting_loader(self):
        if not isinstance(self.data_collator, Counting):
            self.data_collator = Counting(self.data_collator)
        return real_loader(self)

    counting_loader.counting = True
    SFTTrainer.get_train_dataloader = counting_loader


def worker(config: str, dataset: str, examples: int, seed: int, workdir: Path, size: Sizes) -> dict:
    from transformers import TrainerCallback

    import ftspec.runtime  # noqa: F401  (quiet library defaults)

    instrument()
    COUNTS.update(real=0, processed=0)
    timing = {}

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            timing.setdefault("first_step", time.perf_counter())

        def on_train_end(self, args, state, control, **kwargs):
            timing["end"] = time.perf_counter()

    rows = load_rows(dataset, examples, size is QUICK)
    steps = math.ceil(examples / size.batch)
    data_file = workdir / "rows.jsonl"
    data_file.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    losses = []

    if config.startswith("ftspec"):
        from ftspec.backends.executor import execute
        from ftspec.plan.compile import compile_spec, find_root

        mode = {"ftspec": "auto", "ftspec-padded": "padded", "ftspec-packed": "packed",
                "ftspec-grouped": "length_grouped"}[config]
        spec = workdir / "spec.yaml"
        spec.write_text(json.dumps({
            "ftspec": 1, "name": "bench", "model": {"kind": "tiny", **size.model},
            "data": {"train": "rows.jsonl"},
            "format": {"kind": "prompt_completion", "prompt": "{{ prompt }}", "completion": "{{ completion }}"},
            "method": {"kind": "sft", "adapter": "full"},
            "training": {"max_steps": steps, "batch_size": size.batch, "max_length": size.max_length,
                         "learning_rate": 1e-3, "lr_scheduler": "linear", "warmup_steps": 0, "seed": seed,
                         "optimizer": "adamw_torch_fused",
                         "batching": mode, "logging_steps": 1, "save_every": 10 * steps},
            "eval": {"baseline": False, "metrics": []}, "compute": {"device": "cpu"},
        }))
        plan, _ = compile_spec(spec)
        execute(plan, find_root(spec), echo=lambda _: None, callbacks=[Clock()])
        log = [json.loads(l) for l in (workdir / "runs/bench/metrics.jsonl").read_text().splitlines()]
        losses = [m["loss"] for m in log if "loss" in m]
        batching = plan.training.batching.mode
    else:
        from datasets import Dataset
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from trl import SFTConfig, SFTTrainer

        from ftspec.runtime.models import build_tiny

        build_tiny(tiny_model(size.model), [], workdir / "base")
        tokenizer = AutoTokenizer.from_pretrained(workdir / "base")
        model = AutoModelForCausalLM.from_pretrained(workdir / "base")
        extra = {
            "trl-default": {},
            "trl-nockpt": {"activation_checkpointing": False},
            "trl-grouped": {"activation_checkpointing": False, "train_sampling_strategy": "group_by_length"},
            "trl-packed": {"activation_checkpointing": False, "packing": True, "padding_free": True,
                           "packing_strategy": "bfd"},
        }[config]
        per_device = size.batch
        if config == "trl-packed":  # the same rows per step as the padded runs
            mean = statistics.mean(min(size.max_length, len(tokenizer(r["prompt"] + r["completion"])["input_ids"]) + 1)
                                   for r in rows)
            per_device = max(1, round(size.batch * mean / size.max_length))
            model.config.use_cache = False
        args = SFTConfig(output_dir=str(workdir / "out"), max_steps=steps, per_device_train_batch_size=per_device,
                         max_length=size.max_length, learning_rate=1e-3, use_cpu=True, bf16=False, report_to="none",
                         save_strategy="no", logging_steps=1, disable_tqdm=True, seed=seed, **extra)
        trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                             callbacks=[Clock()])
        trainer.train()
        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        batching = {"trl-packed": "packed", "trl-grouped": "length_grouped"}.get(config, "padded")

    seconds = timing["end"] - timing["first_step"]
    return {
        "config": config, "dataset": dataset, "batching": batching, "seconds": seconds,
        "real_tokens": COUNTS["real"], "processed_tokens": COUNTS["processed"],
        "tokens_per_second": COUNTS["real"] / seconds if seconds > 0 else 0.0,
        "padding_fraction": 1 - COUNTS["real"] / COUNTS["processed"] if COUNTS["processed"] else 0.0,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "losses": losses,
    }


def loss_check(curves: list[list[float]], reference: list[list[float]]) -> tuple[float, float, bool]:
    """Is a configuration's loss curve the reference's, within the noise the seed makes?

    Both are lists of per-step loss curves, one per seed. Per step t, the gap is the
    difference of the two seed-mean losses and the noise its standard error,
    sqrt(s_a²/n_a + s_b²/n_b) with s the spread over seeds. Returned: the root mean
    square over steps of the gap and of the noise, and whether the gap is at most twice
    the noise (about a 95% band: a difference the seed alone would make).
    """
    steps = min(len(c) for c in curves + reference)
    gaps, errors = [], []
    for t in range(steps):
        a = [c[t] for c in curves]
        b = [c[t] for c in reference]
        gaps.append(statistics.mean(a) - statistics.mean(b))
        var = ((statistics.variance(a) / len(a) if len(a) > 1 else 0.0)
               + (statistics.variance(b) / len(b) if len(b) > 1 else 0.0))
        errors.append(math.sqrt(var))
    gap = math.sqrt(statistics.mean(g * g for g in gaps))
    noise = math.sqrt(statistics.mean(e * e for e in errors))
    return gap, noise, gap <= 2 * noise


def startup(workdir: Path, size: Sizes) -> float:
    """Seconds from starting `ftspec run` to its first training step."""
    (workdir / ".git").mkdir(exist_ok=True)
    rows = load_rows("sst2", size.startup_rows, size is QUICK)
    (workdir / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (workdir / "spec.yaml").write_text(json.dumps({
        "ftspec": 1, "name": "startup", "model": {"kind": "tiny", **size.model}, "data": {"train": "rows.jsonl"},
        "format": {"kind": "prompt_completion", "prompt": "{{ prompt }}", "completion": "{{ completion }}"},
        "method": {"kind": "sft", "adapter": "full"},
        "training": {"max_steps": 2, "batch_size": 4, "max_length": min(256, size.max_length)},
        "eval": {"baseline": False, "metrics": []}, "compute": {"device": "cpu"}}))
    exe = [sys.executable, "-m", "ftspec", "run", "spec.yaml"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(exe, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    first = None
    tail = []
    for line in proc.stderr:
        tail = (tail + [line])[-40:]
        if line.strip().startswith("step 1/") and first is None:
            first = time.perf_counter() - t0
    if proc.wait() not in (0, 3):
        sys.exit(f"`ftspec run` for the start-up time failed ({proc.returncode}):\n{''.join(tail)}")
    return first if first is not None else float("nan")


RESULT = "bench-result: "  # a worker's result line, among what trl prints


def run_worker(configs: list[str], dataset: str, examples: int, seed: int, quick: bool) -> list[dict]:
    """Run ``configs`` on ``dataset`` in one fresh worker process; one result each."""
    out = subprocess.run([sys.executable, __file__, "--worker", ",".join(configs), dataset, "--examples",
                          str(examples), "--seed", str(seed)] + (["--quick"] if quick else []),
                         check=False, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    if out.returncode != 0:
        sys.exit(f"{','.join(configs)} on {dataset} failed:\n{out.stderr[-3000:]}")
    results = [json.loads(line[len(RESULT):]) for line in out.stdout.splitlines() if line.startswith(RESULT)]
    if [r["config"] for r in results] != configs:
        sys.exit(f"{','.join(configs)} on {dataset}: the worker gave {len(results)} results:\n{out.stdout[-3000:]}")
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, help="examples per run (default 256; --quick: 8)")
    parser.add_argument("--repeats", type=int, help="seed replicates (default 3; --quick: 1)")
    parser.add_argument("--datasets", help="default sst2,toolformer; --quick: sst2")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="a subset of the configurations (comma-separated)")
    parser.add_argument("--curves", action="store_true", help="also print every configuration's mean loss per step")
    add_quick(parser)
    parser.add_argument("--worker", nargs=2, metavar=("CONFIGS", "DATASET"), help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=42, help=argparse.SUPPRESS)
    args = parser.parse_args()
    size = sizes(args.quick)
    examples = args.examples or size.examples
    repeats = args.repeats or size.repeats
    datasets = (args.datasets or ("sst2" if args.quick else "sst2,toolformer")).split(",")

    if not args.quick and (not (SHARED / "sst2").is_dir() or not (SHARED / "toolformer").is_dir()):
        print(f"bench/throughput.py needs the shared datasets at {SHARED} (SST-2 and toolformer); "
              "they are missing here (--quick runs on generated stand-in rows).")
        return 2
    if args.worker:
        for config in args.worker[0].split(","):
            with tempfile.TemporaryDirectory() as tmp:
                (Path(tmp) / ".git").mkdir()
                result = worker(config, args.worker[1], examples, args.seed, Path(tmp), size)
                print(RESULT + json.dumps(result), flush=True)
        return 0

    configs = [c for c in CONFIGS if c in args.configs.split(",")]
    trl = [c for c in TRL if c in configs]
    if "trl-default" not in configs or "ftspec" not in configs:
        parser.error("--configs must include ftspec and trl-default")
    # Full: one fresh process per configuration and run, a warm-up first. Quick: every
    # configuration of a repeat in one process, no warm-up.
    batches = [configs] if args.quick else [[c] for c in configs]
    results: dict[tuple[str, str], list[dict]] = {}
    for dataset in datasets:
        if not args.quick:
            for config in configs:
                run_worker([config], dataset, examples, 42, False)  # warm-up: caches, first-touch of the files
        for r in range(repeats):
            for batch in batches:  # interleaved, so drift on a shared machine hits every configuration alike
                for result in run_worker(batch, dataset, examples, 42 + r, args.quick):
                    results.setdefault((result["config"], dataset), []).append(result)

    say_quick(args.quick)
    m = size.model
    print(f"machine: {os.cpu_count()} CPUs; tiny llama {m['num_layers']}x{m['hidden_size']} from config, byte "
          f"tokenizer; {examples} examples, batch {size.batch}, max_length {size.max_length}; median of {repeats} "
          f"(seeds 42..{41 + repeats})")
    speed: dict[tuple[str, str], float] = {}
    verdicts = []
    for dataset in datasets:
        print(f"\n{dataset}" + (" (generated stand-in rows)" if args.quick else ""))
        print(f"  {'config':<15} {'batching':<15} {'real tok/s':>10} {'padding':>8} {'peak MB':>8} "
              f"{'loss start→end':>15} {'curve gap':>9} {'noise':>7}  same curve as trl default?")
        reference = [r["losses"] for r in results[("trl-default", dataset)]]
        for config in configs:
            runs = results[(config, dataset)]
            tps = statistics.median(r["tokens_per_second"] for r in runs)
            speed[(config, dataset)] = tps
            pad = statistics.median(r["padding_fraction"] for r in runs)
            mem = max(r["peak_rss_mb"] for r in runs)
            curves = [r["losses"] for r in runs]
            gap, noise, same = loss_check(curves, reference)
            mean = [statistics.mean(c[t] for c in curves) for t in range(len(curves[0]))]
            ends = f"{mean[0]:.2f}→{statistics.mean(mean[-4:]):.2f}"
            verdict = "-" if config == "trl-default" else ("yes" if same else "NO")
            if config != "trl-default":
                verdicts.append(same)
            print(f"  {config:<15} {runs[0]['batching']:<15} {tps:>10.0f} {pad:>8.1%} {mem:>8.0f} "
                  f"{ends:>15} {gap:>9.3f} {noise:>7.3f}  {verdict}")
        if args.curves:
            for config in configs:
                curves = [r["losses"] for r in results[(config, dataset)]]
                print(f"    {config:<15} " + " ".join(f"{statistics.mean(c[t] for c in curves):.2f}"
                                                    for t in range(len(curves[0]))))
    with tempfile.TemporaryDirectory() as tmp:
        times = []
        for i in range(repeats):
            (Path(tmp) / f"s{i}").mkdir()
            times.append(startup(Path(tmp) / f"s{i}", size))
        first_step = statistics.median(times)
    print(f"\nstart-up: `ftspec run` to its first training step: {first_step:.2f} s (median of {repeats})")
    print(f"loss curves: {sum(verdicts)} of {len(verdicts)} configurations within seed noise of trl default")

    best = {d: max(trl, key=lambda c: speed[(c, d)]) for d in datasets}
    print("trl best here: " + ", ".join(f"{d}: {c}" for d, c in best.items()))

    def ratio(a: str, b) -> float:
        return math.exp(statistics.mean(math.log(speed[(a, d)] / speed[(b(d), d)]) for d in datasets))

    print(f"throughput ftspec/trl_default={ratio('ftspec', lambda d: 'trl-default'):.2f} "
          f"ftspec/trl_best={ratio('ftspec', lambda d: best[d]):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
