"""CPU precision and threads: matmul GFLOP/s in fp32 and bf16, training tokens/s of a
SmolLM2-shaped model in fp32 and under bf16 autocast, and the fraction of the measured
matmul peak that training reaches (MFU).

    python bench/precision.py [--quick] [--layers 4] [--seq 256] [--batch 4] [--steps 4]

1. Matmul: a 1024×576 @ 576×1536 product (SmolLM2-135M's MLP shape, issue 24), repeated
   for about a second, on 1 thread and on every CPU this process may use, in fp32 and
   bf16. GFLOP/s = 2·M·K·N·repeats / seconds.
2. Training: a llama built from a config with SmolLM2-135M's widths (hidden 576, 9 heads,
   3 KV heads, MLP 1536, vocabulary 49152, tied embeddings) and --layers layers, trained
   with AdamW on random tokens (--batch × --seq per step), fp32 weights, in fp32 and under
   torch.autocast("cpu", bfloat16) — what ftspec's `precision: bf16` does on the CPU — on
   every usable CPU, after one warm-up step. Printed: ms per step, tokens/s, the losses of
   both (their largest relative difference), and
       MFU = 6 × parameters × tokens/s / the matmul GFLOP/s of the same precision and threads,
   where parameters counts the tied embedding once (it is the output layer's matmul) and the
   attention's own QKᵀ and AV products are left out (small at this length): the usual
   estimate of a training step's FLOPs (2 forward, 4 backward per parameter and token).

--quick: a smaller matmul, 2 layers, 64 tokens × 2, 2 steps: seconds, to check the script.
The machine is described first (CPU model, flags, usable CPUs, load average): on a shared
machine the load of other processes lowers every figure.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

from _quick import QUICK_LINE  # bench/ is on the path: this script's folder

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def matmul_gflops(torch, dtype, m: int, k: int, n: int, seconds: float) -> float:
    a = torch.randn(m, k).to(dtype)
    b = torch.randn(k, n).to(dtype)
    for _ in range(3):
        a @ b
    reps, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds:
        a @ b
        reps += 1
    return 2 * m * k * n * reps / elapsed / 1e9


def train(torch, layers: int, seq: int, batch: int, steps: int, bf16: bool) -> tuple[float, list[float], int]:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=layers,
                         num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=max(seq, 256),
                         tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    model.train()
    params = sum(p.numel() for p in model.parameters())  # tied: the embedding counted once
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(1)
    data = [torch.randint(0, 49152, (batch, seq), generator=gen) for _ in range(steps + 1)]
    losses: list[float] = []

    def step(ids) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())

    step(data[0])  # warm-up
    t0 = time.perf_counter()
    for ids in data[1:]:
        step(ids)
    return (time.perf_counter() - t0) / steps, losses[1:], params


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="seconds: a small check of the script")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=4)
    args = ap.parse_args()
    if args.quick:
        args.layers, args.seq, args.batch, args.steps = 2, 64, 2, 2
        print(QUICK_LINE)  # the line every benchmark's --quick prints (bench/_quick.py; tests/test_bench.py)
    shape, seconds = ((256, 576, 512), 0.2) if args.quick else ((1024, 576, 1536), 1.0)

    import torch

    from ftspec.plan.compute import cpu_bf16_flags, usable_cpus

    usable = usable_cpus()
    print(f"machine: {cpu_model()}; {usable} usable CPUs of {os.cpu_count()}; bf16 flags: "
          f"{', '.join(cpu_bf16_flags()) or 'none'}; torch {torch.__version__}; load average before "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    peak: dict[tuple[str, int], float] = {}
    for threads in sorted({1, usable}):
        torch.set_num_threads(threads)
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            peak[name, threads] = matmul_gflops(torch, dtype, *shape, seconds)
        print(f"matmul {shape[0]}×{shape[1]} @ {shape[1]}×{shape[2]}, {threads} thread{'s' if threads > 1 else ''}: "
              f"fp32 {peak['fp32', threads]:.1f} GFLOP/s, bf16 {peak['bf16', threads]:.1f} GFLOP/s "
              f"({peak['bf16', threads] / peak['fp32', threads]:.2f}×)")

    torch.set_num_threads(usable)
    tokens = args.batch * args.seq
    results = {}
    for name in ("fp32", "bf16"):
        per_step, losses, params = train(torch, args.layers, args.seq, args.batch, args.steps, name == "bf16")
        rate = tokens / per_step
        mfu = 6 * params * rate / (peak[name, usable] * 1e9)
        results[name] = (per_step, rate, losses)
        print(f"train {name}{' autocast' if name == 'bf16' else ''}: {params / 1e6:.1f}M parameters, "
              f"{args.layers} layers, {tokens} tokens/step, {usable} threads: {per_step * 1000:.0f} ms/step, "
              f"{rate:.0f} tokens/s, MFU {100 * mfu:.1f}% of the measured {name} matmul peak")
    f32, b16 = results["fp32"][2], results["bf16"][2]
    rel = max(abs(a - b) / abs(a) for a, b in zip(f32, b16))
    print(f"losses fp32 {', '.join(f'{x:.4f}' for x in f32)}; bf16 {', '.join(f'{x:.4f}' for x in b16)}; "
          f"largest relative difference {rel:.2e}")
    print(f"load average after {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"precision bf16/fp32 matmul={peak['bf16', usable] / peak['fp32', usable]:.2f} "
          f"train={results['fp32'][0] / results['bf16'][0]:.2f}")


if __name__ == "__main__":
    main()
