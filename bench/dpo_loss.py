"""DPO training step time with TRL's own head (every position of prompt + chosen and prompt +
rejected, where Triton is missing) and with ftspec's (the answers' tokens only, for the policy and
the reference: ftspec.runtime.training.dpo_trainer), on the same batches of preference pairs: a
40-80-token prompt and two answers of 4-16 tokens each.

Full mode builds a SmolLM2-135M-shaped llama from its config (576 hidden, 49,152 vocabulary,
9 heads / 3 KV heads, 1,536 MLP; 30 layers, fewer with --layers) with random weights, and a
reference of the same shape (full fine-tuning): nothing is downloaded, and the step time does not
depend on the weights. fp32, no gradient checkpointing (ftspec's defaults bar `precision: auto`).
--quick: a tiny model, in seconds.

    python bench/dpo_loss.py --quick
    python bench/dpo_loss.py --layers 30 --out bench/results/dpo-loss-cpu.txt
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from _quick import QUICK_LINE  # bench/ is on the path: this script's folder
from supervised_loss import SMOLLM2, TINY, machine, model

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ftspec.runtime.models import byte_tokenizer  # noqa: E402
from ftspec.runtime.training.dpo_trainer import PreferenceTrainer  # noqa: E402
from ftspec.runtime.training.supervised import lm_head_share  # noqa: E402


def pairs(n: int, batch: int, vocab: int, answers: tuple[int, int], seed: int = 0) -> list[list[dict]]:
    """``n`` batches of ``batch`` tokenized pairs: prompts of 40-80 tokens, chosen and rejected
    answers of ``answers`` (low, high) tokens each, as TRL's DPO trainer holds them."""
    g = torch.Generator().manual_seed(seed)

    def ids(low: int, high: int) -> list[int]:
        length = int(torch.randint(low, high + 1, (1,), generator=g))
        return torch.randint(3, vocab, (length,), generator=g).tolist()

    return [[{"prompt_ids": ids(40, 80), "chosen_ids": ids(*answers), "rejected_ids": ids(*answers)}
             for _ in range(batch)] for _ in range(n)]


def trainer(dims: dict, layers: int, loss_positions: str, folder: str) -> PreferenceTrainer:
    from datasets import Dataset
    from trl import DPOConfig

    config = DPOConfig(output_dir=folder, use_cpu=True, bf16=False, activation_checkpointing=False,
                       report_to="none", max_length=256, disable_tqdm=True)
    data = Dataset.from_list([{"prompt": "Q:", "chosen": " yes", "rejected": " no"}])
    t = PreferenceTrainer(model=model(dims, layers), ref_model=reference(dims, layers), args=config,
                          train_dataset=data, processing_class=byte_tokenizer(), loss_positions=loss_positions)
    assert t.loss_positions == loss_positions, t.loss_positions_reason
    t.model.train()
    return t


def reference(dims: dict, layers: int):
    """The policy's initialisation moved a little: a reference the policy has moved away from, so
    that the losses compared are not all log 2."""
    ref = model(dims, layers)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
    return ref


def step_times(t: PreferenceTrainer, data: list[list[dict]], warmup: int):
    """Seconds per forward (policy and reference) + backward of each batch (after ``warmup``
    untimed ones), and each batch's loss and chosen reward."""
    times, losses, rewards = [], [], []
    for i, rows in enumerate(data):
        batch = t.data_collator(rows)
        t.model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        loss = t.compute_loss(t.model, batch)
        loss.backward()
        if i >= warmup:
            times.append(time.perf_counter() - start)
        losses.append(loss.item())
        rewards.append(t._metrics["train"]["rewards/chosen"][-1])
    return times, losses, rewards


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a tiny model: checks the script, measures little")
    ap.add_argument("--layers", type=int, default=30, help="decoder layers of the SmolLM2-shaped model (30 real)")
    ap.add_argument("--batch", type=int, default=4, help="pairs a batch (twice as many sequences)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per path and round (after 1 untimed)")
    ap.add_argument("--out", type=Path, help="also write the result here")
    a = ap.parse_args()
    if a.quick:  # the line every benchmark's --quick prints (bench/_quick.py; tests/test_bench.py looks for it)
        print(QUICK_LINE)
    dims, layers = (TINY, 2) if a.quick else (SMOLLM2, a.layers)
    warmup, answers = 1, (4, 16)
    data = pairs(a.steps + warmup, a.batch, dims["vocab_size"], answers)
    timed = data[warmup:]
    tokens = sum(2 * len(r["prompt_ids"]) + len(r["chosen_ids"]) + len(r["rejected_ids"]) for b in timed for r in b)
    answer_tokens = sum(len(r["chosen_ids"]) + len(r["rejected_ids"]) for b in timed for r in b)
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        # Alternated, so that the shared machine's load falls on both paths alike.
        for mode in ("all", "supervised", "all", "supervised"):
            times, losses, rewards = step_times(trainer(dims, layers, mode, folder), data, warmup)
            entry = results.setdefault(mode, {"times": [], "losses": losses, "rewards": rewards})
            entry["times"].extend(times)
    trl, ours = results["all"], results["supervised"]
    loss_gap = max(abs(x - y) for x, y in zip(trl["losses"], ours["losses"]))
    reward_gap = max(abs(x - y) for x, y in zip(trl["rewards"], ours["rewards"]))
    t_trl, t_ours = statistics.median(trl["times"]), statistics.median(ours["times"])
    share = lm_head_share(dims["hidden_size"], dims["vocab_size"], layers, dims["intermediate_size"])
    per_step = tokens / a.steps
    lines = [
        f"bench/dpo_loss.py {'--quick' if a.quick else f'--layers {layers}'} --batch {a.batch} --steps {a.steps}",
        f"machine: {machine()}; shared with other jobs while measured",
        f"model: llama, {dims['hidden_size']} hidden, {dims['vocab_size']} vocabulary, {layers} layers "
        f"({'tiny' if a.quick else 'SmolLM2-135M-shaped'}, random weights), and a reference of the same shape "
        f"(full fine-tuning); fp32, no gradient checkpointing; LM head ≈ {share:.0%} of a forward pass's matrix "
        "FLOPs per token",
        f"pairs: prompts 40-80 tokens, chosen and rejected answers {answers[0]}-{answers[1]} tokens each; "
        f"{a.batch} pairs a batch ({2 * a.batch} sequences); {answer_tokens} of {tokens} tokens are answer "
        f"({answer_tokens / tokens:.1%})",
        f"step (policy forward + backward, reference forward), median of {len(trl['times'])}: "
        f"TRL's head (every position) {t_trl * 1000:.0f} ms, ftspec's (answer tokens only) {t_ours * 1000:.0f} ms: "
        f"{t_trl / t_ours:.2f}× ({per_step / t_trl:.0f} → {per_step / t_ours:.0f} tokens/s)",
        f"loss: largest difference between the paths over {len(trl['losses'])} batches {loss_gap:.2e} "
        f"(first batch {trl['losses'][0]:.6f} vs {ours['losses'][0]:.6f}); chosen reward: {reward_gap:.2e}",
    ]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text, encoding="utf-8")
    return 0 if loss_gap < 1e-3 else 1


if __name__ == "__main__":
    raise SystemExit(main())
