"""CPU threads for quickstart-sized training: 1 thread, 2 threads and torch's default, side by side.

    python bench/threads.py [--steps 12] [--rounds 3] [--threads 1,2,default] [--hidden 128 --layers 2] [--quick]

Each configuration trains the quickstart's model (a tiny llama, hidden 128, 2 layers,
byte tokenizer) on the quickstart's rows (specs/data/support-tickets.jsonl, batches of
16, the prompt and completion as the quickstart formats them) for --steps optimizer
steps with AdamW, in a fresh process (torch's inter-op threads can only be set before
any parallel work), after two warm-up steps. The rounds interleave the configurations
(1, 2, default, 1, 2, default, …) so that a change in the machine's load falls on all
of them alike; each configuration's figure is the median of its rounds.

Printed: the CPUs this process may use, the load average before and after, torch's
default thread count, then per configuration the milliseconds per step (median and
range over the rounds) and the ratio to 1 thread; whether the losses are bit-identical
across thread counts (if not, threads change the result, and a step's key must cover
them); last line: `threads default/1=X.XX 2/1=Y.YY`.

--quick: one step of 4 rows, one round, threads 1 and default, a 1 x 32 model; the figures mean nothing (for
CI: the script still runs).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _quick import add_quick, say_quick  # noqa: E402

DATA = ROOT / "specs" / "data" / "support-tickets.jsonl"
PROMPT = ("Route this support request to one queue: account, billing, returns, shipping or technical.\n"
          "Request: {text}\nQueue:")
BATCH = 16
QUICK = {"steps": 1, "rounds": 1, "hidden": 32, "layers": 1, "batch": 4, "threads": "1,default"}

WORKER = r"""
import json, sys, time
import torch
threads, steps, path, batch = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
hidden, layers = int(sys.argv[5]), int(sys.argv[6])
default = torch.get_num_threads()
if threads != "default":
    torch.set_num_threads(int(threads))
    torch.set_num_interop_threads(int(threads))
from transformers import LlamaConfig, LlamaForCausalLM
rows = [json.loads(line) for line in open(path, encoding="utf-8")]
prompt = PROMPT
texts = [(prompt.format(text=r["text"]) + " " + r["queue"]).encode("utf-8") for r in rows]
torch.manual_seed(0)
config = LlamaConfig(vocab_size=259, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                     num_key_value_heads=4, intermediate_size=4 * hidden, max_position_embeddings=320,
                     pad_token_id=256, bos_token_id=257, eos_token_id=258)
model = LlamaForCausalLM(config)
model.train()
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

def batch_at(i):
    chunk = [texts[(i * batch + j) % len(texts)] for j in range(batch)]
    n = max(len(t) for t in chunk) + 1
    ids = torch.full((batch, n), 256)
    mask = torch.zeros((batch, n), dtype=torch.long)
    for k, t in enumerate(chunk):
        ids[k, :len(t) + 1] = torch.tensor(list(t) + [258])
        mask[k, :len(t) + 1] = 1
    labels = ids.masked_fill(mask == 0, -100)
    return ids, mask, labels

losses = []
def step(i):
    ids, mask, labels = batch_at(i)
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    out.loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad()
    losses.append(out.loss.item())

for i in range(2):
    step(i)
t0 = time.perf_counter()
for i in range(2, 2 + steps):
    step(i)
seconds = time.perf_counter() - t0
print(json.dumps({"threads": torch.get_num_threads(), "interop": torch.get_num_interop_threads(),
                  "default": default, "seconds": seconds, "losses": losses}))
""".replace("PROMPT", repr(PROMPT))


def run_one(threads: str, steps: int, hidden: int = 128, layers: int = 2, batch: int = BATCH) -> dict:
    out = subprocess.run([sys.executable, "-c", WORKER, threads, str(steps), str(DATA), str(batch), str(hidden),
                          str(layers)], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"the worker for threads {threads} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, help="default 12; --quick: 1")
    parser.add_argument("--rounds", type=int, help="default 3; --quick: 1")
    parser.add_argument("--threads", help="default 1,2,default; --quick: 1,default")
    parser.add_argument("--hidden", type=int, help="model width (default the quickstart's: 128; --quick: 32)")
    parser.add_argument("--layers", type=int, help="transformer blocks (default the quickstart's: 2; --quick: 1)")
    add_quick(parser)
    args = parser.parse_args()
    full = {"steps": 12, "rounds": 3, "hidden": 128, "layers": 2, "batch": BATCH, "threads": "1,2,default"}
    for name, value in (QUICK if args.quick else full).items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    say_quick(args.quick)
    configs = args.threads.split(",")
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"CPUs usable {cpus} (os.cpu_count {os.cpu_count()}); load average before "
          + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    results: dict[str, list[dict]] = {c: [] for c in configs}
    for _ in range(args.rounds):
        for c in configs:
            results[c].append(run_one(c, args.steps, args.hidden, args.layers, args.batch))
    default = results[configs[0]][0]["default"]
    print(f"torch's default: {default} threads; llama {args.layers} layers x {args.hidden} wide; "
          f"{args.steps} steps of {args.batch} rows after 2 warm-up steps, "
          f"{args.rounds} interleaved rounds")
    per_step = {c: [r["seconds"] / args.steps * 1000 for r in rs] for c, rs in results.items()}
    base = statistics.median(per_step[configs[0]])
    for c in configs:
        ms = per_step[c]
        shown = f"{c} ({results[c][0]['threads']})" if c == "default" else c
        print(f"  threads {shown:<12} {statistics.median(ms):8.1f} ms/step  (range {min(ms):.1f}-{max(ms):.1f})  "
              f"x{statistics.median(ms) / base:.2f} of {configs[0]} thread(s)")
    first = {c: rs[0]["losses"] for c, rs in results.items()}
    same = all(first[c] == first[configs[0]] for c in configs)
    diff = max(abs(a - b) for c in configs for a, b in zip(first[c], first[configs[0]]))
    print(f"losses bit-identical across thread counts: {'yes' if same else f'no (largest difference {diff:.2e})'}")
    print("load average after " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    ratios = " ".join(f"{c}/{configs[0]}={statistics.median(per_step[c]) / base:.2f}" for c in configs[1:])
    print(f"threads {ratios}")


if __name__ == "__main__":
    main()
