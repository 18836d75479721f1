"""Data preparation speed: rows per second to turn text rows into what the SFT trainer
trains on (token ids and loss labels), ftspec against TRL's own preparation.

    python bench/prepare.py [--rows 5000] [--repeats 3] [--quick]

On the same prompt/completion rows (SST-2 and the tool-calling set from
../shared/datasets) and the same tokenizer (a byte-level BPE trained on the rows):
  ftspec batched      ftspec's prepare_data tokenization (batches of 512 rows) and the
                      save of the tokens, plus what TRL still does to pre-tokenized rows
                      when training starts (truncation, dropping rows without loss)
  ftspec row by row   the same, one row per tokenizer call (how ftspec did it before)
  trl                 SFTTrainer's own preparation of the text rows (EOS, tokenize,
                      labels, truncation), as a plain trl script pays it on every run
Median of --repeats, interleaved. ftspec pays this once per dataset: the result is
cached under prepare_data's step key, and a later run with other training settings
reads the tokens (bench/rerun.py, tests/runtime/training/test_runtime.py). Last line:
`prepare ftspec/trl=X.XX`.

--quick: 20 generated stand-in rows per dataset, a 300-token BPE, one repeat; the
figures mean nothing (for CI: the script still runs, and its outputs still agree).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _quick import add_quick, say_quick  # noqa: E402
from throughput import MAX_LENGTH, SHARED, load_rows, tiny_model  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, help="rows per dataset (default 5000; --quick: 20)")
    parser.add_argument("--repeats", type=int, help="default 3; --quick: 1")
    add_quick(parser)
    args = parser.parse_args()
    n_rows, repeats = args.rows or (20 if args.quick else 5000), args.repeats or (1 if args.quick else 3)
    vocab = 300 if args.quick else 4000
    if not args.quick and (not (SHARED / "sst2").is_dir() or not (SHARED / "toolformer").is_dir()):
        print(f"bench/prepare.py needs the shared datasets at {SHARED} (SST-2 and toolformer); they are missing here "
              "(--quick runs on generated stand-in rows).")
        return 2

    from datasets import Dataset, disable_progress_bars
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    import ftspec.runtime  # noqa: F401  (quiet library defaults)
    from ftspec.runtime.models import bpe_tokenizer, tiny_config
    from ftspec.runtime.training import data as D

    disable_progress_bars()
    rows = load_rows("sst2", n_rows, args.quick) + load_rows("toolformer", n_rows, args.quick)
    tokenizer = bpe_tokenizer((r["prompt"] + r["completion"] for r in rows[::10]), vocab)
    model = AutoModelForCausalLM.from_config(tiny_config(tiny_model({
        "architecture": "llama", "hidden_size": 16, "num_layers": 1, "num_heads": 2, "num_kv_heads": 2,
        "intermediate_size": 32, "max_position_embeddings": MAX_LENGTH,
        "tokenizer": {"kind": "bpe", "vocab_size": vocab}, "init_seed": 0}), tokenizer))
    config = SFTConfig(output_dir=tempfile.mkdtemp(), use_cpu=True, bf16=False, report_to="none", max_length=MAX_LENGTH,
                       completion_only_loss=True)
    trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows[:8]),
                         processing_class=tokenizer)

    def trl_prepare(dataset):
        return trainer._prepare_dataset(dataset, tokenizer, config, False, None, "train")

    def ftspec(batch: int):
        def go():
            D.TOKENIZE_BATCH = batch
            with tempfile.TemporaryDirectory() as tmp:
                ids, labels = D.tokenize(rows, "prompt_completion", tokenizer, "completion")
                D.save_tokens(Path(tmp) / "train-tokens", ids, labels)
                trl_prepare(D.load_tokens(Path(tmp) / "train-tokens"))
            return ids, labels
        return go

    def trl():
        prepared = trl_prepare(Dataset.from_list(rows))
        return prepared["input_ids"], prepared["labels"]

    configs = {"ftspec batched": ftspec(512), "ftspec row by row": ftspec(1), "trl": trl}
    outputs = {name: fn() for name, fn in configs.items()}  # warm-up, and the outputs to compare
    same = all(out == outputs["trl"] for out in outputs.values())
    seconds: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(repeats):
        for name, fn in configs.items():
            t0 = time.perf_counter()
            fn()
            seconds[name].append(time.perf_counter() - t0)

    say_quick(args.quick)
    print(f"machine: {os.cpu_count()} CPUs; {len(rows)} prompt/completion rows (SST-2 + tool calling"
          f"{', generated stand-ins' if args.quick else ''}), byte-level BPE ({vocab}), max_length {MAX_LENGTH}; "
          f"median of {repeats}")
    print(f"  {'config':<18} {'seconds':>8} {'rows/s':>9}")
    speed = {}
    for name in configs:
        s = statistics.median(seconds[name])
        speed[name] = len(rows) / s
        print(f"  {name:<18} {s:>8.2f} {speed[name]:>9.0f}")
    print(f"identical ids and labels in all three: {'yes' if same else 'NO'}")
    print(f"prepare ftspec/trl={speed['ftspec batched'] / speed['trl']:.2f}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
