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

A real model instead of the tiny one (the datasets default to sst2 then):

    python bench/throughput.py --model DIR [--lora R] [--precision fp32|bf16] [--max-length N] [--batch B]

--model DIR: a local transformers model folder with its tokenizer (for SmolLM2, the
safetensors folder `ftspec run specs/real/smollm2-sst2.yaml --allow-path ../shared`
leaves at runs/.ftspec-store/prepare_data/<key>/base-model). ftspec's spec names it
through a link in its temporary repository, allowed as `--allow-path DIR` allows it;
trl loads it with AutoModelForCausalLM in fp32, as ftspec does (autocast does the rest).
--lora R: LoRA of rank R, alpha 2R, dropout 0, on the q, k, v, o, gate, up and down
projections, on both sides (ftspec's `method.adapter`; a peft LoraConfig given to
trl's SFTTrainer); without it, full fine-tuning. --precision: ftspec's
`compute.precision` and trl's `bf16` (autocast on the CPU, with `use_cpu`), the same on
both sides (default fp32: ftspec's own default, `auto`, would pick bf16 on a CPU with
AVX512-BF16 while trl's stays fp32, which compares two precisions, not two recipes).
--max-length, --batch, --lr: the same on every side (defaults 512, 16, 1e-3). With
--model, the loss of each configuration at its first and last step is printed too, per seed.
"""

from __future__ import annotations

import argparse
import dataclasses
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
    stand_in: bool = False  # generated stand-in rows instead of ../shared/datasets
    base: str | None = None  # a local model folder (absolute) instead of the tiny model
    lora: int | None = None  # LoRA rank on both sides; None: full fine-tuning
    precision: str | None = None  # fp32 | bf16 on both sides; None: ftspec's auto, trl's fp32 (as before)
    learning_rate: float = 1e-3


def _model(hidden: int, layers: int, heads: int, max_length: int) -> dict:
    return {"architecture": "llama", "hidden_size": hidden, "num_layers": layers, "num_heads": heads,
            "num_kv_heads": heads, "intermediate_size": 4 * hidden, "max_position_embeddings": max_length,
            "tokenizer": {"kind": "byte"}, "init_seed": 0}


FULL = Sizes(max_length=MAX_LENGTH, batch=16, model=_model(128, 2, 4, MAX_LENGTH), examples=256, repeats=3,
             startup_rows=64)
QUICK = Sizes(max_length=128, batch=4, model=_model(32, 1, 2, 128), examples=8, repeats=1, startup_rows=8,
              stand_in=True)


def sizes(quick: bool) -> Sizes:
    return QUICK if quick else FULL


LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
MODE_FLAGS = {"model": "--model", "lora": "--lora", "precision": "--precision", "max_length": "--max-length",
              "batch": "--batch", "lr": "--lr"}


def configure(args: argparse.Namespace) -> Sizes:
    """--quick's or the full sizes, with the model-mode flags given applied."""
    size = sizes(args.quick)
    changes: dict = {}
    if args.model:
        changes["base"] = str(Path(args.model).resolve())
    if args.lora:
        changes["lora"] = args.lora
    if args.precision:
        changes["precision"] = args.precision
    if args.max_length:
        changes["max_length"] = args.max_length
        if size.model["max_position_embeddings"] < args.max_length:  # the tiny model must reach that far
            changes["model"] = {**size.model, "max_position_embeddings": args.max_length}
    if args.batch:
        changes["batch"] = args.batch
    if args.lr:
        changes["learning_rate"] = args.lr
    return dataclasses.replace(size, **changes)


def mode_args(args: argparse.Namespace) -> list[str]:
    """The model-mode flags given, as a worker process takes them again."""
    out = []
    for name, flag in MODE_FLAGS.items():
        value = getattr(args, name)
        if value:
            out += [flag, str(Path(value).resolve()) if name == "model" else str(value)]
    return out


def check_mode(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """One line and exit status 2 for a model-mode flag that cannot work."""
    for name in ("lora", "max_length", "batch"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"{MODE_FLAGS[name]} must be a positive integer, not {getattr(args, name)}")
    if args.lr is not None and not (math.isfinite(args.lr) and args.lr > 0):
        parser.error(f"--lr must be a positive number, not {args.lr}")
    if args.model:
        folder = Path(args.model)
        if not (folder / "config.json").is_file():
            parser.error(f"--model {args.model}: not a transformers model folder (no config.json in it)")


def spec_model(size: Sizes, workdir: Path) -> dict:
    """The spec's `model`: the tiny model, or the local folder through a link ./model in
    ``workdir`` (the spec's repository), which the caller allows as --allow-path does."""
    if size.base is None:
        return {"kind": "tiny", **size.model}
    (workdir / "model").symlink_to(size.base, target_is_directory=True)
    return {"base": "./model"}


def spec_method(size: Sizes) -> dict:
    if size.lora is None:
        return {"kind": "sft", "adapter": "full"}
    return {"kind": "sft", "adapter": {"kind": "lora", "r": size.lora, "alpha": 2 * size.lora, "dropout": 0.0,
                                       "target_modules": LORA_TARGETS}}


def spec_compute(size: Sizes) -> dict:
    return {"device": "cpu", **({"precision": size.precision} if size.precision else {})}


def allowed(size: Sizes) -> list[str]:
    return [size.base] if size.base else []


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

    rows = load_rows(dataset, examples, size.stand_in)
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
            "ftspec": 1, "name": "bench", "model": spec_model(size, workdir),
            "data": {"train": "rows.jsonl"},
            "format": {"kind": "prompt_completion", "prompt": "{{ prompt }}", "completion": "{{ completion }}"},
            "method": spec_method(size),
            "training": {"max_steps": steps, "batch_size": size.batch, "max_length": size.max_length,
                         "learning_rate": size.learning_rate, "lr_scheduler": "linear", "warmup_steps": 0,
                         "seed": seed, "optimizer": "adamw_torch_fused",
                         "batching": mode, "logging_steps": 1, "save_every": 10 * steps},
            "eval": {"baseline": False, "metrics": []}, "compute": spec_compute(size),
        }))
        plan, _ = compile_spec(spec, allow=allowed(size))
        execute(plan, find_root(spec), echo=lambda _: None, callbacks=[Clock()])
        log = [json.loads(l) for l in (workdir / "runs/bench/metrics.jsonl").read_text().splitlines()]
        losses = [m["loss"] for m in log if "loss" in m]
        batching = plan.training.batching.mode
    else:
        import torch
        from datasets import Dataset
        from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
        from trl import SFTConfig, SFTTrainer

        from ftspec.runtime.models import build_tiny

        if size.base is None:
            build_tiny(tiny_model(size.model), [], workdir / "base")
            tokenizer = AutoTokenizer.from_pretrained(workdir / "base")
            model = AutoModelForCausalLM.from_pretrained(workdir / "base")
        else:  # fp32 weights, as ftspec loads them for every precision (bf16 is autocast)
            tokenizer = AutoTokenizer.from_pretrained(size.base)
            model = AutoModelForCausalLM.from_pretrained(size.base, dtype=torch.float32)
        peft_config = None
        if size.lora is not None:
            from peft import LoraConfig

            peft_config = LoraConfig(r=size.lora, lora_alpha=2 * size.lora, lora_dropout=0.0,
                                     target_modules=LORA_TARGETS, bias="none", task_type="CAUSAL_LM")
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
                         max_length=size.max_length, learning_rate=size.learning_rate, use_cpu=True,
                         bf16=size.precision == "bf16", report_to="none",
                         save_strategy="no", logging_steps=1, disable_tqdm=True, seed=seed, **extra)
        set_seed(seed)  # the LoRA weights are drawn in SFTTrainer's constructor, before the Trainer seeds
        trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                             callbacks=[Clock()], peft_config=peft_config)
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
    rows = load_rows("sst2", size.startup_rows, size.stand_in)
    (workdir / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (workdir / "spec.yaml").write_text(json.dumps({
        "ftspec": 1, "name": "startup", "model": spec_model(size, workdir), "data": {"train": "rows.jsonl"},
        "format": {"kind": "prompt_completion", "prompt": "{{ prompt }}", "completion": "{{ completion }}"},
        "method": spec_method(size),
        "training": {"max_steps": 2, "batch_size": 4, "max_length": min(256, size.max_length)},
        "eval": {"baseline": False, "metrics": []}, "compute": spec_compute(size)}))
    exe = [sys.executable, "-m", "ftspec", "run", "spec.yaml"] + [a for p in allowed(size) for a in ("--allow-path", p)]
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


def run_worker(configs: list[str], dataset: str, examples: int, seed: int, quick: bool,
               mode: list[str] = ()) -> list[dict]:
    """Run ``configs`` on ``dataset`` in one fresh worker process; one result each
    (``mode``: the model-mode flags, passed on)."""
    out = subprocess.run([sys.executable, __file__, "--worker", ",".join(configs), dataset, "--examples",
                          str(examples), "--seed", str(seed)] + (["--quick"] if quick else []) + list(mode),
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
    parser.add_argument("--model", metavar="DIR", help="a local transformers model folder (with its tokenizer) "
                        "instead of the tiny model; datasets then default to sst2")
    parser.add_argument("--lora", type=int, metavar="R", help="LoRA rank R (alpha 2R, dropout 0, q/k/v/o/gate/up/down "
                        "projections) on both sides; default: full fine-tuning")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                        help="the same precision on both sides (default fp32)")
    parser.add_argument("--max-length", type=int, metavar="N", help=f"max_length (default {MAX_LENGTH}; --quick: 128)")
    parser.add_argument("--batch", type=int, metavar="B", help="batch size in rows (default 16; --quick: 4)")
    parser.add_argument("--lr", type=float, help="learning rate (default 1e-3)")
    add_quick(parser)
    parser.add_argument("--worker", nargs=2, metavar=("CONFIGS", "DATASET"), help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=42, help=argparse.SUPPRESS)
    args = parser.parse_args()
    check_mode(parser, args)
    size = configure(args)
    mode = mode_args(args)
    examples = args.examples or size.examples
    repeats = args.repeats or size.repeats
    datasets = (args.datasets or ("sst2" if args.quick or args.model else "sst2,toolformer")).split(",")
    if unknown := [d for d in datasets if d not in ("sst2", "toolformer")]:
        parser.error(f"--datasets: unknown {', '.join(unknown)} (sst2, toolformer)")

    if not args.quick and not all((SHARED / d).is_dir() for d in datasets):
        print(f"bench/throughput.py needs the shared datasets at {SHARED} ({', '.join(datasets)}); "
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
                run_worker([config], dataset, examples, 42, False, mode)  # warm-up: caches, first-touch of the files
        for r in range(repeats):
            for batch in batches:  # interleaved, so drift on a shared machine hits every configuration alike
                for result in run_worker(batch, dataset, examples, 42 + r, args.quick, mode):
                    results.setdefault((result["config"], dataset), []).append(result)

    say_quick(args.quick)
    m = size.model
    if size.base is None:
        model_text = f"tiny llama {m['num_layers']}x{m['hidden_size']} from config, byte tokenizer"
    else:
        model_text = f"model {size.base}"
    if size.lora is not None:
        model_text += f", LoRA r={size.lora} alpha={2 * size.lora} dropout 0 on {','.join(LORA_TARGETS)}"
    elif size.base is not None:
        model_text += ", full fine-tuning"
    if size.precision is not None:
        model_text += f", {size.precision} on both sides"
    if size.learning_rate != 1e-3:
        model_text += f", learning rate {size.learning_rate:g}"
    print(f"machine: {os.cpu_count()} CPUs; {model_text}; {examples} examples, batch {size.batch}, "
          f"max_length {size.max_length}; median of {repeats} (seeds 42..{41 + repeats})")
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
        if size.base is not None:
            print("  loss at the first and the last step, mean over seeds [each seed]:")
            for config in configs:
                curves = [r["losses"] for r in results[(config, dataset)]]
                firsts, lasts = [c[0] for c in curves], [c[-1] for c in curves]
                print(f"    {config:<15} first {statistics.mean(firsts):.4f} [{' '.join(f'{x:.4f}' for x in firsts)}]"
                      f"  last (step {len(curves[0])}) {statistics.mean(lasts):.4f} "
                      f"[{' '.join(f'{x:.4f}' for x in lasts)}]")
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
