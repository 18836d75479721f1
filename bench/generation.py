"""Batched evaluation against one-example-at-a-time `generate()`: same model, same
prompts, examples per second for each, and the ratio, in one run.

    python bench/generation.py [--prompts 64] [--batch-size 32] [--max-new-tokens 16] [--repeats 3] [--quick]

The model is built from a config (llama, 4 layers x 256 wide, byte tokenizer) with
random weights: generation speed does not depend on what the weights say. Prompts
are the quickstart's support requests. Target: batched >= 5x on a CPU.

--quick: 4 prompts in batches of 2, 2 new tokens, one repeat, a 1 x 32 model; the
figures mean nothing (for CI: the script still runs).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _quick import add_quick, say_quick  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, help="default 64; --quick: 4")
    parser.add_argument("--batch-size", type=int, help="default 32; --quick: 2")
    parser.add_argument("--max-new-tokens", type=int, help="default 16; --quick: 2")
    parser.add_argument("--repeats", type=int, help="default 3; --quick: 1")
    add_quick(parser)
    args = parser.parse_args()
    for name, full, quick in (("prompts", 64, 4), ("batch_size", 32, 2), ("max_new_tokens", 16, 2), ("repeats", 3, 1)):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    hidden, layers = (32, 1) if args.quick else (256, 4)

    import torch
    from transformers import AutoModelForCausalLM

    import ftspec.runtime  # noqa: F401  (quiet library defaults)
    from ftspec.plan.model import TinyModel
    from ftspec.runtime.evaluation.evaluate import generate, stop_token_ids
    from ftspec.runtime.models import byte_tokenizer, tiny_config

    torch.manual_seed(0)
    tokenizer = byte_tokenizer()
    spec = TinyModel.model_validate({
        "kind": "tiny", "architecture": "llama", "hidden_size": hidden, "num_layers": layers, "num_heads": 8,
        "num_kv_heads": 8, "intermediate_size": 4 * hidden, "max_position_embeddings": 512,
        "tokenizer": {"kind": "byte"}, "init_seed": 0})
    model = AutoModelForCausalLM.from_config(tiny_config(spec, tokenizer)).eval()
    rows = [json.loads(l) for l in (ROOT / "specs/data/support-tickets.jsonl").read_text().splitlines()[: args.prompts]]
    prompts = [f"Route this support request to one queue.\nRequest: {r['text']}\nQueue:" for r in rows]

    def one_at_a_time() -> list[str]:
        out = []
        with torch.no_grad():
            for p in prompts:
                enc = tokenizer(p, return_tensors="pt")
                ids = model.generate(**enc, max_new_tokens=args.max_new_tokens, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id, eos_token_id=stop_token_ids(tokenizer))
                out.append(tokenizer.decode(ids[0, enc["input_ids"].shape[1]:], skip_special_tokens=True))
        return out

    def batched() -> list[str]:
        return generate(model, tokenizer, prompts, args.max_new_tokens, args.batch_size)

    def timed(fn):
        t0 = time.perf_counter()
        result = fn()
        return time.perf_counter() - t0, result

    timed(batched)  # warm-up: first calls allocate and pick kernels
    timed(one_at_a_time)
    single_times, batch_times = [], []
    single_out = batch_out = None
    for _ in range(args.repeats):
        t, single_out = timed(one_at_a_time)
        single_times.append(t)
        t, batch_out = timed(batched)
        batch_times.append(t)
    s, b = statistics.median(single_times), statistics.median(batch_times)
    n = len(prompts)
    same = sum(x == y for x, y in zip(single_out, batch_out))
    say_quick(args.quick)
    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, threads {torch.get_num_threads()}")
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"model: llama {layers}x{hidden} from config, {params:.1f}M parameters; "
          f"{n} prompts, {args.max_new_tokens} new tokens each, median of {args.repeats}")
    print(f"one at a time: {s:.2f} s  ({n / s:.1f} examples/s)")
    print(f"batched (batch {args.batch_size}): {b:.2f} s  ({n / b:.1f} examples/s)")
    print(f"identical answers: {same}/{n}")
    print(f"speedup batched/one-at-a-time = {s / b:.2f}x  (target >= 5x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
