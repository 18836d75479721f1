"""Every model of every stage on the held-out rows, side by side: the ``compare_stages`` step.

    compare(plan, store, step_dir, out) -> comparison.json

One row per evaluated model, in order: for each earlier stage's plan and then this
plan, its base model (where the stage starts from a model of its own, not from an
earlier stage), its tuned model, and for a distillation stage its teacher. Each row
holds the model's metrics (from its eval step's ``metrics.json``), the split and row
count it was evaluated on, and its parameter count, read from the safetensors headers
of its weights (no tensor is loaded, torch is not imported). A row evaluated on
another split, another number of rows or other held-out rows than this plan's is kept
but flagged ``not_comparable``, with the reason. For distillation one line answers
"how close did the student get to the teacher, at what size".

The report shows the comparison as its "Stages" section (:func:`load_comparison`).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any, Callable

from ftspec.catalog.steps import COMPARE_STAGES, EVAL_BASE, EVAL_TEACHER, EVAL_TUNED, PREPARE_DATA, TEACH, TRAIN
from ftspec.catalog.steps import folder as step_folder
from ftspec.core import jsonread
from ftspec.core.io import read_json, read_jsonl, write_json
from ftspec.core.paths import open_regular
from ftspec.runtime.report.results import LOWER_IS_BETTER, metric_values, num

COMPARISON = "comparison.json"
COMPARISON_VERSION = 1
_HEADER_LIMIT = 100 * 2 ** 20  # a safetensors header longer than this is not one


# --------------------------------------------------------------------------- parameters


def safetensors_parameters(path: Path) -> int:
    """The number of parameters in a safetensors file, from its header alone: 8 bytes of
    little-endian header length, then a JSON object of tensor name -> dtype, shape, offsets."""
    with open_regular(path) as fh:  # a FIFO where a weights file belongs is refused, not waited on
        head = fh.read(8)
        if len(head) != 8:
            raise ValueError(f"{path}: not a safetensors file (shorter than 8 bytes)")
        (length,) = struct.unpack("<Q", head)
        if length > _HEADER_LIMIT:
            raise ValueError(f"{path}: not a safetensors file (header of {length} bytes)")
        header = jsonread.decode(fh.read(length).decode("utf-8"), bounded_ints=True)
    if not isinstance(header, dict):
        raise ValueError(f"{path}: not a safetensors file (its header is not a JSON object)")
    total = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        n = 1
        for dim in info["shape"]:
            if not isinstance(dim, int) or isinstance(dim, bool) or dim < 0:
                raise ValueError(f"{path}: not a safetensors file (a shape of {dim!r})")
            n *= dim
        total += n
    return total


def folder_parameters(folder: Path, adapter: bool = False) -> int | None:
    """Parameters of the model (or, with ``adapter``, of the peft adapter) whose
    safetensors files are in ``folder``; None when there are none or one is unreadable."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    files = sorted(p for p in folder.glob("*.safetensors") if p.name.startswith("adapter_model") == adapter)
    if not files:
        return None
    try:
        return sum(safetensors_parameters(p) for p in files)
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError):
        return None


def trained_parameters(folder: Path, base: int | None) -> tuple[int | None, int | None]:
    """(parameters, adapter parameters) of what a train step saved: whole weights, or a
    LoRA adapter, which counts as its base model's parameters plus its own (None for the
    adapter of whole weights; None for the total where the base is unknown)."""
    adapter = folder_parameters(folder, adapter=True)
    if adapter is not None:
        return (base + adapter if base is not None else None), adapter
    return folder_parameters(folder), None


def start_parameters(model: Any, data_dir: Path | None, store: Any, root: Path | None = None) -> int | None:
    """Parameters of the model a stage starts from: the base model prepare_data saved
    (a tiny model, a converted GGUF file, an earlier stage's merged model), else an
    earlier stage's trained weights, else a local model folder; None for a hub model."""
    if data_dir is not None:
        n = folder_parameters(Path(data_dir) / "base-model")
        if n is not None:
            return n
    kind = getattr(model, "kind", None)
    if kind == "stage":
        base = start_parameters(model.base, store.path(PREPARE_DATA.name, model.data), store, root)
        return trained_parameters(store.path(TRAIN.name, model.train), base)[0]
    if kind == "pretrained" and model.source == "local" and not model.gguf_file and root is not None:
        return folder_parameters(Path(root) / model.name_or_path)
    return None


# --------------------------------------------------------------------------- labels


def model_name(model: Any) -> str:
    """A model in a few words (for a teacher's label)."""
    kind = getattr(model, "kind", None)
    if kind == "stage":
        return f"stage {model.stage}"
    if kind == "tiny":
        return f"tiny {model.architecture} {model.num_layers}×{model.hidden_size}"
    if kind == "pretrained":
        if model.gguf_file:
            return model.gguf_file
        return model.name_or_path if model.source == "hub" else os.path.basename(model.name_or_path.rstrip("/\\"))
    if kind == "bedrock":
        return model.id
    return "?"


def _label(plan: Any, role: str) -> str:
    stage = plan.stage
    if role == "tuned":
        return stage or ("student" if plan.method.objective == "distill" else "tuned")
    if role == "base":
        return f"{stage} base" if stage else "base"
    return f"teacher ({model_name(plan.method.distill.teacher)})"


# --------------------------------------------------------------------------- the comparison


class _Where:
    """Where one plan's steps are: an earlier stage's by its keys in the store, this
    plan's by the step's ``step_dir`` (its view of the plan has no steps)."""

    def __init__(self, names: set[str], locate: Callable[[str], Path]):
        self.names, self.locate = names, locate

    def __call__(self, name: str) -> Path | None:
        return Path(self.locate(name)) if name in self.names else None


def _earlier(plan: Any, store: Any) -> _Where:
    keys = {s.name: s.key for s in plan.steps}
    return _Where(set(keys), lambda name: store.path(name, keys[name]))


def _this(ctx: Any) -> _Where:
    # The plan's steps are the step context's keys (a folder of a step the plan lacks may
    # be a link an earlier run left in the run directory: not this plan's).
    return _Where(set(ctx.keys), ctx.step_dir)


def _references(folder: Path) -> str | None:
    """A fingerprint of the held-out rows an eval step scored: their references in order."""
    rows = read_jsonl(folder / "predictions.jsonl", lenient=True)
    if not rows:
        return None
    text = json.dumps([r.get("reference") for r in rows], ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _rows_of(plan: Any, where: _Where, store: Any, root: Path | None) -> list[dict]:
    distills = plan.method.objective == "distill"
    data_dir = where(PREPARE_DATA.name)
    base_n = start_parameters(plan.model, data_dir, store, root)
    out = []
    for role, step in (("base", EVAL_BASE.name), ("tuned", EVAL_TUNED.name), ("teacher", EVAL_TEACHER.name)):
        if role == "teacher" and not distills:
            continue
        folder = where(step)
        raw = read_json(folder / "metrics.json", dict, lenient=True) if folder is not None else None
        if raw is None:
            continue  # not evaluated (no baseline, no evaluation), or nothing left
        adapter = None
        if role == "base":
            parameters = base_n
        elif role == "tuned":
            train = where(TRAIN.name)
            parameters, adapter = trained_parameters(train, base_n) if train is not None else (None, None)
        else:
            # The teach step keeps a stage teacher (merged) or a converted GGUF teacher whole.
            teach = where(TEACH.name)
            parameters = next((n for n in (folder_parameters(teach / sub) for sub in ("base-model", "model"))
                               if n is not None), None) if teach is not None else None
            if parameters is None:
                parameters = start_parameters(plan.method.distill.teacher, None, store, root)
        row = {"model": _label(plan, role), "stage": plan.stage, "role": role, "parameters": parameters}
        if role == "base" and plan.model.kind == "stage":
            # The earlier stage's model, as this stage scores it: kept where that stage's own
            # row is scored on other rows or metrics (an SFT model under DPO's preference metrics).
            row["model"] = f"{plan.stage} base (stage {plan.model.stage}'s model)"
            row["_starts_from"] = plan.model.stage
        if adapter is not None:
            row["adapter_parameters"] = adapter
        row.update({"metrics": metric_values(raw) or {}, "rows": raw.get("rows"), "split": raw.get("split")})
        if raw.get("intervals") is not None:
            row["intervals"] = raw["intervals"]
        row["_folder"], row["_step"] = folder, step
        out.append(row)
    return out


def _metric_names(plan: Any, rows: list[dict]) -> list[str]:
    names: list[str] = []
    for m in plan.eval.metrics:
        if m.name not in names:
            names.append(m.name)
    for row in rows:
        names += [n for n in row["metrics"] if n not in names]
    return names


def _count(n: int | None) -> str:
    return "?" if n is None else f"{n:,}"


def _distillation(plan: Any, rows: list[dict], metric: str | None) -> dict | None:
    """How close the student of one distillation stage got to its teacher, at what size."""
    stage = plan.stage
    find = lambda role: next((r for r in rows if r["stage"] == stage and r["role"] == role), None)  # noqa: E731
    student, teacher, base = find("tuned"), find("teacher"), find("base")
    if student is None or teacher is None or metric is None:
        return None
    s, t = num(student["metrics"].get(metric)), num(teacher["metrics"].get(metric))
    b = num(base["metrics"].get(metric)) if base is not None else None
    ps, pt = student["parameters"], teacher["parameters"]
    ratio = s / t if s is not None and t not in (None, 0) else None
    size = ps / pt if ps is not None and pt else None
    who = f"student ({stage})" if stage and stage != "student" else "student"
    if s is None or t is None:
        text = f"{who}: no {metric} to compare with the teacher's"
    else:
        lower = " (lower is better)" if metric in LOWER_IS_BETTER else ""
        text = (f"{who}: {metric} {s:.3f} against the teacher's {t:.3f}{lower}"
                + (f", {ratio:.0%} of it" if ratio is not None else ""))
    if size is not None:
        text += f", at {size:.2g}× the teacher's parameters ({_count(ps)} against {_count(pt)})"
    else:
        text += f"; parameters {_count(ps)} against the teacher's {_count(pt)}"
    if b is not None:
        text += f"; the student's base model scored {b:.3f}"
    apart = [r["not_comparable"] for r in (student, teacher) if r.get("not_comparable")]
    if apart:
        text += f" (not on the same rows: {apart[0]})"
    return {"stage": stage, "metric": metric, "student": s, "teacher": t, "base": b, "ratio": ratio,
            "student_parameters": ps, "teacher_parameters": pt, "parameter_ratio": size, "text": text + "."}


def compare(plan: Any, ctx: Any, out: Path) -> dict:
    """The comparison of every evaluated model of every stage, written to
    ``out/comparison.json`` and returned.

    ``plan``: this plan (or the compare_stages step's view of it: stage, stages, model,
    method, eval.split, eval.metrics); ``ctx``: the step's context (ftspec.runtime.context.
    StepContext): the step store, this plan's step keys and folders, and the repository
    root, to count the parameters of a local model folder.
    """
    store, root = ctx.store, ctx.root
    plans = [(p, _earlier(p, store)) for p in plan.stages] + [(plan, _this(ctx))]
    rows: list[dict] = []
    own: list[dict] = []  # this plan's rows: the others are compared with them
    for p, where in plans:
        own = _rows_of(p, where, store, root)
        rows += own
    anchor = next((r for role in ("tuned", "base", "teacher") for r in own if r["role"] == role), None)
    split = plan.eval.split
    count = anchor["rows"] if anchor is not None else None
    held_out = _references(anchor["_folder"]) if anchor is not None else None
    for row in rows:
        reason = None
        if row["split"] is not None and split is not None and row["split"] != split:
            reason = f"evaluated on the {row['split']} split, this stage on {split}"
        elif count is not None and row["rows"] is not None and row["rows"] != count:
            reason = f"evaluated on {row['rows']} rows, this stage on {count}"
        elif held_out is not None and row is not anchor:
            theirs = _references(row["_folder"])
            if theirs is not None and theirs != held_out:
                reason = "evaluated on other held-out rows than this stage (their references differ)"
        row["comparable"] = reason is None
        if reason:
            row["not_comparable"] = reason
    # A later stage's starting model is listed once: as its own stage's row where that is
    # comparable, else as the later stage scored it.
    scored = {r["stage"] for r in rows if r["role"] == "tuned" and r["comparable"]}
    rows = [r for r in rows if r.get("_starts_from") is None or r["_starts_from"] not in scored]
    names = _metric_names(plan, rows)
    headline = names[0] if names else None
    distillation = [d for d in (_distillation(p, rows, headline) for p, _ in plans
                                if p.method.objective == "distill") if d is not None]
    # The evaluation this plan's rows are compared with, as the run directory shows it: a
    # report reads the comparison only while the run directory still shows that output, so
    # that a link left there by an earlier run of another plan is not reported as this one's.
    anchored = {}
    if anchor is not None:
        anchored[step_folder(anchor["_step"])] = os.path.basename(os.path.realpath(anchor["_folder"]))
    comparison = {
        "version": COMPARISON_VERSION,
        "stage": plan.stage,
        "split": split,
        "rows": count,
        "metrics": names,
        "headline": headline,
        "models": [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows],
        "distillation": distillation,
        "evaluated": anchored,
    }
    write_json(Path(out) / COMPARISON, comparison, sort_keys=False)
    return comparison


def load_comparison(run_dir: Path) -> dict | None:
    """The comparison a run directory shows (``stages/comparison.json``), or None: none
    there, unreadable, or made with another evaluation than the run directory now shows
    (a link an earlier run of another plan left)."""
    run_dir = Path(run_dir)
    data = read_json(run_dir / COMPARE_STAGES.folder / COMPARISON, dict, lenient=True)
    if not isinstance(data, dict) or not isinstance(data.get("models"), list):
        return None
    for folder, name in (data.get("evaluated") or {}).items():
        if os.path.basename(os.path.realpath(run_dir / folder)) != name:
            return None
    return data
