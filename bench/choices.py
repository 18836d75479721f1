"""Choices-mode scoring, side by side: a plain transformers loop that scores every (row, label)
with a full forward pass over prompt + label — the computation ftspec used until the prefix
cache — against ftspec's path (ftspec.runtime.evaluation.evaluate.choose). Same rows, same
model, same token ids, same batch size; it reports rows/s of each and their ratio, and fails
unless both pick the same label for every row.

    python bench/choices.py            # SmolLM2-135M-Instruct (its GGUF in ../shared) on SST-2 dev
    python bench/choices.py --quick    # a tiny model built from a config: seconds

The full mode loads the model as `specs/real/smollm2-sst2.yaml` has ftspec load it (the GGUF
de-quantised by ftspec's own converter, kept in --model-dir so a second run skips the
conversion), and builds each row's prompt from that spec's chat messages and template.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from _quick import QUICK_LINE  # bench/ is on the path: this script's folder

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ftspec.runtime.evaluation import evaluate as E  # noqa: E402
from ftspec.runtime.evaluation.likelihood import cut_to_length  # noqa: E402

SPEC = ROOT / "specs" / "real" / "smollm2-sst2.yaml"
SHARED = ROOT.parent / "shared"


@torch.no_grad()
def full_forward_choose(model, tokenizer, pairs, n_labels: int, batch_size: int) -> tuple[list[int], list[float]]:
    """The plain loop: each (prompt, label) its own row of a right-padded batch, logits over the
    whole vocabulary at every position, the label's tokens summed. Returns each row's best label
    index and every pair's sum."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    sums: list[float] = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        seqs = [p + c for p, c in chunk]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
            mask[i, : len(s)] = 1
        logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float()[:, :-1], dim=-1)
        token = logp.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        for i, (p, c) in enumerate(chunk):
            sums.append(float(token[i, len(p) - 1:len(p) + len(c) - 1].sum()))
    best = [max(range(n_labels), key=lambda j: sums[r * n_labels + j]) for r in range(len(pairs) // n_labels)]
    return best, sums


def tiny_setup(rows: int):
    from transformers import AutoModelForCausalLM

    from ftspec.runtime.models import byte_tokenizer, tiny_config

    torch.manual_seed(0)
    tokenizer = byte_tokenizer()
    sizes = SimpleNamespace(architecture="llama", hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=4,
                            intermediate_size=128, max_position_embeddings=512)
    model = AutoModelForCausalLM.from_config(tiny_config(sizes, tokenizer)).eval()
    words = "the film is a bold and moving portrait of grief yet its pacing drags badly".split()
    records = [{"prompt": f"Review: {' '.join(words[: 3 + (i * 7) % len(words)])}\nSentiment:",
                "completion": " positive"} for i in range(rows)]
    examples = E.build_examples(records, "prompt_completion", tokenizer)
    return model, tokenizer, examples, ["negative", "positive"], "prompt_completion", 16, 128, "tiny llama (64 wide)"


def smollm2_setup(rows: int, model_dir: Path):
    from ftspec.plan.compile import compile_spec
    from ftspec.plan.model import chat_template_text
    from ftspec.runtime.models import convert_gguf, load_model, load_tokenizer

    plan, _ = compile_spec(SPEC, allow=[SHARED])
    if not (model_dir / "base-model" / "config.json").exists():
        started = time.perf_counter()
        convert_gguf(plan.model, SPEC.parent, model_dir / "base-model")
        print(f"converted the GGUF model in {time.perf_counter() - started:.0f}s", file=sys.stderr)
    tokenizer = load_tokenizer(plan.model, SPEC.parent, model_dir, chat_template_text(plan.format))
    model = load_model(plan.model, SPEC.parent, model_dir, torch.float32, "cpu").eval()
    system = plan.format.messages[0].content.text
    with open(SHARED / "datasets" / "sst2" / "dev.tsv", encoding="utf-8", newline="") as fh:
        table = list(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))[:rows]
    records = [{"messages": [{"role": "system", "content": system}, {"role": "user", "content": sentence},
                             {"role": "assistant", "content": "positive" if label == "1" else "negative"}]}
               for sentence, label in table]
    examples = E.build_examples(records, "chat", tokenizer)
    labels = sorted(plan.eval.choices or ("negative", "positive"))
    return (model, tokenizer, examples, labels, "chat", plan.eval.batch_size, plan.training.max_length,
            "SmolLM2-135M-Instruct (GGUF Q4_1, de-quantised, fp32)")


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{platform.machine()}, nproc {os.cpu_count()}, {cpu}; torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads; load average {load} (a machine shared with other jobs)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a tiny model built from a config, in seconds")
    ap.add_argument("--rows", type=int, help="rows scored (default: 872, all of SST-2 dev; --quick: 64)")
    ap.add_argument("--model-dir", type=Path, default=Path("/tmp/ftspec-bench-choices"),
                    help="where the de-quantised SmolLM2 is kept between runs")
    ap.add_argument("--batch-size", type=int, help="rows per batch, both paths (default: the spec's eval.batch_size)")
    args = ap.parse_args(argv)
    if args.quick:  # the line every benchmark's --quick prints (bench/_quick.py; tests/test_bench.py looks for it)
        print(QUICK_LINE)
    rows = args.rows or (64 if args.quick else 872)
    setup = tiny_setup(rows) if args.quick else smollm2_setup(rows, args.model_dir)
    model, tokenizer, examples, labels, kind, batch_size, max_length, described = setup
    batch_size = args.batch_size or batch_size
    pairs = cut_to_length(E.choice_pairs(tokenizer, examples, labels, kind), max_length)

    # Warm both paths up (first-call allocations and kernels), so neither pays for them in its time.
    full_forward_choose(model, tokenizer, pairs[: 2 * len(labels)], len(labels), batch_size)
    E.choose(model, tokenizer, examples[:2], labels, kind, batch_size, max_length)

    before = machine()
    started = time.perf_counter()
    best, sums = full_forward_choose(model, tokenizer, pairs, len(labels), batch_size)
    slow = time.perf_counter() - started
    started = time.perf_counter()
    picked = E.choose(model, tokenizer, examples, labels, kind, batch_size, max_length)
    fast = time.perf_counter() - started
    got = E.continuation_logprobs(model, tokenizer, pairs, batch_size)
    after = machine()

    reference = [labels[j] for j in best]
    same = sum(a == b for a, b in zip(reference, picked))
    drift = max(abs(a - b) for a, (b, _) in zip(sums, got))
    lengths = sorted(len(p) for p, _ in pairs[::len(labels)])
    print(f"model:   {described}; {len(examples)} rows x {len(labels)} labels ({', '.join(labels)}), "
          f"batch {batch_size}, prompts {lengths[0]}-{lengths[-1]} tokens (median {lengths[len(lengths) // 2]})")
    print(f"machine: before: {before}")
    print(f"         after:  {after}")
    print(f"full forward per (row, label): {slow:8.1f}s  {len(examples) / slow:7.2f} rows/s")
    print(f"ftspec (prompt once, cache):   {fast:8.1f}s  {len(examples) / fast:7.2f} rows/s")
    print(f"speed-up: {slow / fast:.1f}x; same label on {same}/{len(examples)} rows; "
          f"largest log-likelihood difference {drift:.2e}")
    if same != len(examples):
        print("FAIL: the two paths picked different labels", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
