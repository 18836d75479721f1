"""How the held-out evaluation answers, decided from the sampled rows: the checks judge
the eval section by it, and the compiler writes it into the plan.

``eval.mode: auto`` (the default) becomes ``choices`` when the answers form a small
closed set of short labels, and ``generate`` otherwise; ``eval.stop`` left unset
becomes a newline when every sampled answer is one short line, so that a model that
has not learnt to stop after its label is not read for ``max_new_tokens`` tokens.
The plan keeps the outcome and the reason (``eval.mode``, ``eval.stop``,
``eval.mode_reason``).

The rule for a closed set of labels, over the rows ``validate`` samples (the first
rows of each split, rendered through the format):

- at most :data:`MAX_LABELS` distinct training answers, each one line of at most
  :data:`MAX_LABEL_CHARS` characters;
- the answers repeat: at least :data:`MIN_ROWS_PER_LABEL` sampled training rows per
  distinct answer on average (twenty rows with twenty answers are not labels);
- every sampled answer of the evaluated split is one of the training answers (an
  answer the model could never pick would be scored wrong whatever it says).

Light: no torch, and nothing here reads a file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from ftspec.checks.derived import answered_by_teacher, has_test, has_validation
from ftspec.data.formatting import reference
from ftspec.spec.schema import FEEDBACK_METRICS, PREFERENCE_METRICS, REWARD_MODEL_METRICS

MAX_LABELS = 20
MAX_LABEL_CHARS = 40
MIN_ROWS_PER_LABEL = 3
MAX_LINE_CHARS = 200  # an answer this short, on one line, ends at the first newline
NEWLINE = "\n"


@dataclass(frozen=True)
class Resolved:
    mode: str  # generate | choices
    stop: tuple[str, ...]
    reason: str  # why, in words (no ": " in it: the plan's compact JSON stays free of it)


def sampled_answers(ctx: Any, splits: Iterable[str]) -> dict[str, list[str]] | None:
    """The reference answer of each sampled row of the named splits, through the
    spec's format (as evaluation compares them); None where the rows could not be read
    or rendered offline (a hub dataset, a template that fails)."""
    formatter = getattr(ctx, "formatter", None)
    if formatter is None:
        return None
    kind = ctx.spec.format.kind
    out: dict[str, list[str]] = {}
    for split in splits:
        info = ctx.sources.get(split)
        if info is None:
            continue
        if not info.readable:
            return None
        answers = []
        for row in info.sample:
            try:
                record = formatter(row.values)
            except Exception:  # a bad row is reported by the checks; it says nothing about the answers
                continue
            if isinstance(record, dict) and record:
                answers.append(reference(kind, record))
        out[split] = answers
    return out


def _listing(labels: list[str], most: int = 6) -> str:
    shown = ", ".join(repr(x) for x in labels[:most])
    return shown + (f" and {len(labels) - most} more" if len(labels) > most else "")


def resolve(mode: str, stop: list[str] | None, choices: list[str] | None, kind: str,
            train: list[str] | None, held_out: list[str] | None, samples: bool = False) -> Resolved:
    """The evaluation's mode and stop strings, and why.

    ``mode``, ``stop`` and ``choices`` are as the spec writes them (``stop`` None when
    unset); ``train`` and ``held_out`` are the sampled answers of the training split
    and of the evaluated split (None when they could not be sampled; for a split cut
    from the training file, the same sample)."""
    if kind == "preference":
        return Resolved("generate", tuple(stop or ()),
                        "preference pairs are scored by log-probability (the chosen against the rejected answer), "
                        "and a generation metric compares a generated answer with the chosen one")
    if kind == "feedback":
        return Resolved("generate", tuple(stop or ()),
                        "feedback rows are scored by the log-probability of their completion (the desirable rows' "
                        "against the undesirable rows'), not by a generated answer")
    reasons: list[str] = []
    if mode != "auto":
        resolved_mode = mode
        reasons.append("the spec says so")
    elif samples:
        resolved_mode = "generate"
        reasons.append("GRPO trains on the answers the model samples, so its evaluation scores generated answers")
    elif choices:
        resolved_mode = "choices"
        reasons.append(f"eval.choices lists the {len(choices)} allowed labels")
    elif train is None:
        resolved_mode = "generate"
        reasons.append("the answers could not be sampled offline to tell whether they are labels")
    else:
        resolved_mode, why = _closed_set(train, held_out if held_out is not None else train)
        reasons.append(why)

    if stop is not None:
        resolved_stop = tuple(stop)
    elif resolved_mode == "generate" and train and all(_one_short_line(a) for a in train + (held_out or [])):
        resolved_stop = (NEWLINE,)
        end = " or at the end of the turn" if kind == "chat" else ""
        reasons.append(f"generation stops at a newline{end}, since every sampled answer is one short line")
    else:
        resolved_stop = ()
    return Resolved(resolved_mode, resolved_stop, "; ".join(reasons))


def _one_short_line(answer: str) -> bool:
    return NEWLINE not in answer and "\r" not in answer and 0 < len(answer) <= MAX_LINE_CHARS


def _closed_set(train: list[str], held_out: list[str]) -> tuple[str, str]:
    if not train:
        return "generate", "no training answer was sampled"
    labels = sorted(set(train))
    if len(labels) > MAX_LABELS:
        return "generate", (f"{len(labels)} distinct answers in {len(train)} sampled training rows "
                            f"(at most {MAX_LABELS} make a set of labels)")
    long = [a for a in labels if not a or len(a) > MAX_LABEL_CHARS or NEWLINE in a]
    if long:
        return "generate", (f"the answer {long[0][:60]!r} is not a short label "
                            f"(one line of at most {MAX_LABEL_CHARS} characters)")
    if len(train) < MIN_ROWS_PER_LABEL * len(labels):
        return "generate", (f"{len(labels)} distinct answers in {len(train)} sampled training rows: they do not repeat "
                            f"enough to be a closed set of labels")
    unseen = sorted(set(held_out) - set(labels))
    if unseen:
        return "generate", (f"the held-out answer {unseen[0][:60]!r} is not among the training answers "
                            f"({_listing(labels)})")
    return "choices", (f"the answers form a closed set of {len(labels)} labels ({_listing(labels)}) "
                       f"in {len(train)} sampled training rows; each label is scored by its likelihood")


def resolve_for(ctx: Any, split: str | None) -> Resolved:
    """:func:`resolve` for a checked spec: its eval section and its sampled answers
    (``split``: the evaluated split, None without one)."""
    e = ctx.spec.eval
    kind = ctx.spec.format.kind
    if kind in ("preference", "feedback"):
        return resolve(e.mode, e.stop, e.choices, kind, None, None)
    wanted = ["train"] + ([split] if split and split in ctx.sources else [])
    answers = sampled_answers(ctx, wanted)
    train = answers.get("train") if answers is not None else None
    # A held-out split cut from the training file (data.split) is in the training sample.
    held_out = answers.get(split) if answers is not None and split in answers else train
    if "train" in answered_by_teacher(ctx.spec):  # its rows carry no answers: the held-out rows' say what answers are
        train = held_out if split in (answers or {}) else None
    return resolve(e.mode, e.stop, e.choices, kind, train, held_out, samples=ctx.spec.method.kind == "grpo")


def default_metrics(spec: Any, mode: str | None = None) -> list[str]:
    """The metrics of an evaluation whose spec lists none (``mode``: the resolved eval
    mode; the spec's eval.mode when not given)."""
    if spec.method.kind == "reward_model":  # pairs scored by the reward model itself, against chance
        return list(REWARD_MODEL_METRICS)
    if spec.format.kind == "preference":
        return [m for m in PREFERENCE_METRICS if spec.eval.baseline or not m.startswith("reward_")]
    if spec.format.kind == "feedback":
        return list(FEEDBACK_METRICS)
    return ["accuracy"] if (mode or spec.eval.mode) == "choices" else ["exact_match"]


def eval_split(spec: Any) -> str | None:
    """The split the evaluation scores: eval.split, or for `auto` test, else validation, else none."""
    split = spec.eval.split
    if split == "auto":
        split = "test" if has_test(spec) else ("validation" if has_validation(spec) else None)
    return split
