"""How the plan batches training rows (``training.batching``): what ``auto`` becomes for a
spec, and why, from its method, its attention and its sample rows."""

from __future__ import annotations

from ftspec.checks.facts import Context
from ftspec.data.formatting import FormatError, reference

# Length grouping is the measured CPU win (bench/throughput.py: ~1.5x padded on SST-2
# and tool-calling data), but sorting rows by length also sorts them by label when
# length follows the label, and batches of one label train worse: on the quickstart
# (eta² 0.09) test accuracy fell from 0.91 to 0.71. So auto groups by length only when
# length explains little of the label (eta² below this), judged on the sample rows.
LABEL_LENGTH_ETA2 = 0.05
MAX_LABELS = 20


def _length_label_eta2(ctx: Context) -> float | None:
    """How much of the spread of prompt lengths the answer explains (eta squared) over
    the sample rows, when the answers are a small set of labels; None otherwise."""
    info = ctx.sources.get("train")
    if ctx.formatter is None or info is None or not info.readable:
        return None
    kind = ctx.spec.format.kind
    groups: dict[str, list[int]] = {}
    for row in info.sample:
        try:
            record = ctx.formatter(row.values)
        except FormatError:
            continue
        text = record["prompt"] if kind != "chat" else "".join(m["content"] for m in record["messages"][:-1])
        groups.setdefault(reference(kind, record), []).append(len(text))
    lengths = [n for g in groups.values() for n in g]
    if len(groups) > MAX_LABELS or len(groups) < 2 or len(lengths) < 20:
        return None
    mean = sum(lengths) / len(lengths)
    total = sum((n - mean) ** 2 for n in lengths)
    between = sum(len(g) * (sum(g) / len(g) - mean) ** 2 for g in groups.values())
    return between / total if total else 0.0


def batching(ctx: Context) -> dict:
    """The plan's ``training.batching``: its mode and why."""
    wanted = ctx.spec.training.batching
    if wanted != "auto":
        return {"mode": wanted, "reason": "set in the spec"}
    if ctx.spec.method.kind == "dpo":
        return {"mode": "padded",
                "reason": "trl's DPO trainer pads each batch of chosen/rejected pairs; it cannot pack them"}
    if ctx.spec.method.kind == "kto":
        return {"mode": "padded", "reason": "trl's KTO trainer pads each batch of feedback rows, taken in their order "
                "(its KL term pairs each row with its neighbour's completion)"}
    if ctx.spec.method.kind == "grpo":
        return {"mode": "padded", "reason": "trl's GRPO trainer samples each step's completions and pads them"}
    if ctx.spec.method.kind == "reward_model":
        return {"mode": "padded", "reason": "trl's reward trainer pads each batch of chosen/rejected pairs"}
    if ctx.spec.compute.attention == "flash_attention_2":
        return {"mode": "packed", "reason": "FlashAttention keeps rows packed into one sequence apart by their lengths "
                "(no mask), so no compute goes to padding"}
    eta2 = _length_label_eta2(ctx)
    if eta2 is not None and eta2 >= LABEL_LENGTH_ETA2:
        return {"mode": "padded", "reason": f"row length follows the label (eta² {eta2:.2f} over the sample): batches "
                "grouped by length would hold one label each, which trains worse; each batch is padded instead"}
    # Packing measured slower than padding on CPUs (block-diagonal attention costs more than
    # the padding it saves), so without FlashAttention it is chosen only on request.
    return {"mode": "length_grouped", "reason": "rows of similar length are batched together, so little compute "
            "goes to padding"
            + (f" (row length says little about the label: eta² {eta2:.2f})" if eta2 is not None else "")}
