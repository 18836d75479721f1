"""Training step time with the LM head at every position (TRL's own loss, the old path) and at the
supervised positions only (ftspec's default, ftspec.runtime.training.supervised), on the same
batches of SST-2-like rows: a ~60-token review prompt and a 2-token label answer.

Full mode builds a SmolLM2-135M-shaped llama from its config (576 hidden, 49,152 vocabulary,
9 heads / 3 KV heads, 1,536 MLP; 30 layers, fewer with --layers) with random weights: nothing is
downloaded, and the step time does not depend on the weights. --quick: a tiny model, in seconds.

    python bench/supervised_loss.py --quick
    python bench/supervised_loss.py --layers 30 --out bench/results/supervised-loss-cpu.txt
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from _quick import QUICK_LINE  # bench/ is on the path: this script's folder

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ftspec.runtime.models import byte_tokenizer  # noqa: E402
from ftspec.runtime.training.supervised import lm_head_share  # noqa: E402
from ftspec.runtime.training.trainer import TokensTrainer  # noqa: E402

SMOLLM2 = dict(hidden_size=576, intermediate_size=1536, num_attention_heads=9, num_key_value_heads=3,
               vocab_size=49152, max_position_embeddings=2048, tie_word_embeddings=True)
TINY = dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=4096, max_position_embeddings=256, tie_word_embeddings=True)


def model(dims: dict, layers: int):
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    config = AutoConfig.for_model("llama", num_hidden_layers=layers, bos_token_id=1, eos_token_id=2,
                                  pad_token_id=0, **dims)
    return AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")


def batches(n: int, batch: int, vocab: int, seed: int = 0) -> list[dict]:
    """SST-2-like rows: prompts of 40-80 tokens, answers of 2 (the label and EOS), right-padded."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        lengths = torch.randint(40, 81, (batch,), generator=g).tolist()
        width = max(lengths) + 2
        ids = torch.zeros(batch, width, dtype=torch.long)
        labels = torch.full((batch, width), -100)
        mask = torch.zeros(batch, width, dtype=torch.long)
        for i, n_prompt in enumerate(lengths):
            row = torch.randint(3, vocab, (n_prompt + 2,), generator=g)
            ids[i, :n_prompt + 2] = row
            labels[i, n_prompt:n_prompt + 2] = row[n_prompt:]
            mask[i, :n_prompt + 2] = 1
        out.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    return out


def trainer(dims: dict, layers: int, loss_positions: str, folder: str) -> TokensTrainer:
    from datasets import Dataset
    from trl import SFTConfig

    config = SFTConfig(output_dir=folder, use_cpu=True, report_to="none", completion_only_loss=False,
                       max_length=256, disable_tqdm=True)
    data = Dataset.from_dict({"input_ids": [[3, 4, 5]], "labels": [[-100, 4, 5]]})
    t = TokensTrainer(model=model(dims, layers), args=config, train_dataset=data, processing_class=byte_tokenizer(),
                      loss_positions=loss_positions)
    assert t.loss_positions == loss_positions
    t.model.train()
    return t


def step_times(t: TokensTrainer, data: list[dict], warmup: int) -> tuple[list[float], list[float]]:
    """Seconds per forward + backward of each batch (after ``warmup`` untimed ones), and each loss."""
    times, losses = [], []
    for i, b in enumerate(data):
        items = int((b["labels"][:, 1:] != -100).sum())
        t.model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        loss = t.compute_loss(t.model, dict(b), num_items_in_batch=items)
        loss.backward()
        if i >= warmup:
            times.append(time.perf_counter() - start)
        losses.append(loss.item())
    return times, losses


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    import transformers
    import trl

    return (f"{cpu}; {usable} usable CPUs, torch {torch.__version__} with {torch.get_num_threads()} threads, "
            f"transformers {transformers.__version__}, trl {trl.__version__}, python {platform.python_version()}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a tiny model: checks the script, measures little")
    ap.add_argument("--layers", type=int, default=30, help="decoder layers of the SmolLM2-shaped model (30 real)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=6, help="timed steps per path (after 2 untimed)")
    ap.add_argument("--out", type=Path, help="also write the result here")
    a = ap.parse_args()
    if a.quick:  # the line every benchmark's --quick prints (bench/_quick.py; tests/test_bench.py looks for it)
        print(QUICK_LINE)
    dims, layers = (TINY, 2) if a.quick else (SMOLLM2, a.layers)
    warmup = 2
    data = batches(a.steps + warmup, a.batch, dims["vocab_size"])
    tokens = sum(int(b["attention_mask"].sum()) for b in data[warmup:])
    supervised_tokens = sum(int((b["labels"][:, 1:] != -100).sum()) for b in data[warmup:])
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        # Alternated, so that the shared machine's load falls on both paths alike.
        for mode in ("all", "supervised", "all", "supervised"):
            times, losses = step_times(trainer(dims, layers, mode, folder), data, warmup)
            results.setdefault(mode, {"times": [], "losses": losses})["times"].extend(times)
    full, ours = results["all"], results["supervised"]
    loss_gap = max(abs(x - y) for x, y in zip(full["losses"], ours["losses"]))
    t_full, t_ours = statistics.median(full["times"]), statistics.median(ours["times"])
    share = lm_head_share(dims["hidden_size"], dims["vocab_size"], layers, dims["intermediate_size"])
    lines = [
        f"bench/supervised_loss.py {'--quick' if a.quick else f'--layers {layers}'} --batch {a.batch} "
        f"--steps {a.steps}",
        f"machine: {machine()}; shared with other jobs while measured",
        f"model: llama, {dims['hidden_size']} hidden, {dims['vocab_size']} vocabulary, {layers} layers "
        f"({'tiny' if a.quick else 'SmolLM2-135M-shaped'}, random weights); LM head ≈ {share:.0%} of a "
        "forward pass's matrix FLOPs per token",
        f"rows: SST-2-like, prompts 40-80 tokens + a 2-token answer; {a.batch} rows a batch; "
        f"{supervised_tokens} of {tokens} tokens supervised ({supervised_tokens / tokens:.1%})",
        f"step (forward + backward), median of {len(full['times'])}: every position (TRL's loss) "
        f"{t_full * 1000:.0f} ms, supervised positions only {t_ours * 1000:.0f} ms: {t_full / t_ours:.2f}× "
        f"({tokens / a.steps / t_full:.0f} → {tokens / a.steps / t_ours:.0f} tokens/s)",
        f"loss: largest difference between the paths over {len(full['losses'])} batches {loss_gap:.2e} "
        f"(first batch {full['losses'][0]:.5f} vs {ours['losses'][0]:.5f})",
    ]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text, encoding="utf-8")
    return 0 if loss_gap < 1e-3 else 1


if __name__ == "__main__":
    raise SystemExit(main())
