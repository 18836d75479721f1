"""`ftspec export`: the trained model of a finished run as a folder that stands alone.

1. find the trained model      the train step of this plan's key, complete in the store
2. build the exported model    a LoRA adapter merged into its base (or kept, ``--adapter``);
                               a full fine-tune as it is; in the base model's dtype
3. write it into DIR.partial   weights (safetensors), config, tokenizer with its chat
                               template and special tokens, a generation config whose
                               end-of-sequence ids are where training taught it to stop,
                               and a model card (README.md)
4. parity                      the exported folder, loaded back as a user would, against the
                               trained model loaded as the evaluation steps load it, on
                               held-out prompts: above the tolerance the export fails and
                               DIR.partial is removed
5. rename DIR.partial to DIR   nothing half-written is ever left at DIR

With ``--gguf`` a llama-architecture model is also written as DIR/gguf/model.gguf (the
``gguf`` package's writer, F32 or F16, the tokenizer in its metadata) and read back
through transformers' GGUF loader for the same check.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ftspec.catalog import steps
from ftspec.core.errors import Pos, SpecError
from ftspec.core.folders import new_partial, replace_folder
from ftspec.core.io import read_json, write_atomic, write_json
from ftspec.data.prepared import has_split, read_records
from ftspec.plan.model import Plan
from ftspec.plan.stages import root_model
from ftspec.runtime.evaluation.stopping import end_of_turn_ids, stop_token_ids
from ftspec.runtime.models import base_model_path, load_tuned
from ftspec.store.protect import refuse_folder
from ftspec.store.rundir import store_of
from ftspec.store.weights import weights_problem

# Largest |exported − trained| logit allowed, by the exported dtype. Both models compute in
# float32 (the exported weights are read as stored and widened), so the difference is what
# the export changed. In float32 that is the order of additions in the merge
# (W + B·A·scale): far below 1e-3. A half-precision export rounds every weight; its
# difference is measured relative to the largest logit (|Δ| / max|logit|). Measured on
# SmolLM2-135M, 4 held-out chat rows: rounding to float16 gives 1.5e-3, to bfloat16 5.0e-3
# (computing in those dtypes as well: 1.7e-2 and 4.9e-2, which is the arithmetic's, not the
# export's). The tolerances leave about 3-4× that.
TOLERANCE = {torch.float32: ("absolute", 1e-3), torch.float16: ("relative", 5e-3), torch.bfloat16: ("relative", 2e-2)}
PARITY_ROWS = 4
DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}
# Files of the train step that are the trainer's, not the model's.
_NOT_EXPORTED = {"training_args.bin", "train.json", "metrics.jsonl", "README.md", ".ftspec-step.json"}


class ParityError(Exception):
    """The exported model's logits differ from the trained model's past the tolerance (exit 1)."""


@dataclass
class ExportResult:
    out: Path
    kind: str  # "merged", "full" or "adapter"
    dtype: str
    max_abs_diff: float
    measure: str  # how the tolerance reads: "absolute" or "relative"
    diff: float  # what was compared with the tolerance
    tolerance: float
    rows: int
    eos_token_ids: list[int]


def _err(key: str, message: str, hint: str | None = None) -> SpecError:
    return SpecError.one(Pos(key), key, message, hint)


def command_line(plan: Plan) -> str:
    """The `ftspec run` that makes this plan's run (profiles and --set as given)."""
    parts = ["ftspec run", plan.spec.path]
    parts += [f"-p {p}" for p in plan.spec.profiles]
    parts += [f"--set {s}" for s in plan.spec.overrides]
    return " ".join(parts)


def trained_dir(plan: Plan, root: Path) -> Path:
    """The train step's output for this plan's key, or a one-line refusal naming the command to run."""
    run_dir = (root / plan.output.dir).resolve()
    key = next(s.key for s in plan.steps if s.name == steps.TRAIN.name)
    store = store_of(run_dir)
    if not store.complete(steps.TRAIN.name, key):
        raise _err("export", f"the model of plan {plan.short_id} is not trained (train step, key {key[:8]}, "
                   f"not done in {run_dir.parent})", f"run `{command_line(plan)}` first")
    problem = weights_problem(store.path(steps.TRAIN.name, key))
    if problem:
        raise _err("export", f"the trained model of plan {plan.short_id} ({store.path(steps.TRAIN.name, key)}) is "
                   f"marked complete, but {problem}", f"run `{command_line(plan)} --force train` to train it again")
    return store.path(steps.TRAIN.name, key)


def export_dtype(plan: Plan, base_path: str) -> torch.dtype:
    """The base model's dtype: the spec's model.dtype, else the base's config (float32 when it says none)."""
    first = root_model(plan.model)  # an earlier stage's model: as the model its chain began with
    dtype = getattr(first, "dtype", "auto")
    if dtype != "auto":
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    if first.kind == "tiny":
        return torch.float32
    from transformers import AutoConfig

    try:
        if plan.model.kind == "stage":  # written whole by this stage's prepare_data
            config = AutoConfig.from_pretrained(base_path)
        else:
            config = AutoConfig.from_pretrained(base_path, trust_remote_code=plan.model.trust_remote_code,
                                                **({"revision": plan.model.revision} if plan.model.revision else {}))
    except OSError:
        return torch.float32
    found = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    if isinstance(found, str):
        found = getattr(torch, found, None)
    return found if found in DTYPE_NAMES else torch.float32


# --------------------------------------------------------------------------- building


def build_model(plan: Plan, root: Path, data_dir: Path, model_dir: Path, dtype: torch.dtype):
    """The model to write: a full fine-tune as trained, or the base with the adapter merged
    in (in float32, then cast to ``dtype``)."""

    model = load_tuned(plan.model, plan.method.adapter.kind, "auto", root, data_dir, model_dir, torch.float32, "cpu")
    if plan.method.adapter.kind != "full":
        model = model.merge_and_unload()
    return model.to(dtype)


def stop_ids(tokenizer, model) -> list[int]:
    return stop_token_ids(tokenizer, model)


def _write_generation_config(source, tokenizer, out: Path) -> list[int]:
    """generation_config.json from the model's own (``source``, may be None): it stops at
    every id that ends an answer as training wrote it (the tokenizer's end of sequence, the
    chat template's end of turn)."""
    from types import SimpleNamespace

    from transformers import GenerationConfig

    config = GenerationConfig.from_dict(source.to_dict()) if source is not None else GenerationConfig()
    ids = stop_ids(tokenizer, SimpleNamespace(generation_config=source))
    config.eos_token_id = ids if len(ids) != 1 else ids[0]
    if tokenizer.pad_token_id is not None:
        config.pad_token_id = tokenizer.pad_token_id
    if tokenizer.bos_token_id is not None:
        config.bos_token_id = tokenizer.bos_token_id
    config.save_pretrained(str(out))
    return ids


def _adapter_base(plan: Plan, base_path: str, data_dir: Path, out: Path, dtype: torch.dtype) -> str:
    """What an exported adapter names as its base: the hub id, the local folder, or, for a
    base made by the prepare step (a tiny model, a converted GGUF), a copy in DIR/base-model."""
    resolved = Path(base_path).resolve() if os.path.exists(base_path) else None
    if resolved is None:
        return base_path  # a hub id
    if data_dir.resolve() in resolved.parents or resolved == data_dir.resolve():
        from transformers import AutoModelForCausalLM

        base = AutoModelForCausalLM.from_pretrained(str(resolved), dtype=dtype)
        base.save_pretrained(str(out / "base-model"), safe_serialization=True)
        return "base-model"
    return str(resolved)


# --------------------------------------------------------------------------- parity


def parity_prompts(plan: Plan, data_dir: Path, tokenizer, limit: int = PARITY_ROWS) -> list[list[int]]:
    """Token ids of a few held-out rows (the test split, else validation, else train), as training showed them."""
    rows: list = []
    for split in ("test", "validation", "train"):
        if has_split(data_dir, split):
            rows = read_records(data_dir, split, limit)  # the first rows only, whatever the split's size
            if rows:
                break
    out = []
    for row in rows:
        if "messages" in row:
            ids = tokenizer.apply_chat_template(row["messages"], tokenize=True, return_dict=True)["input_ids"]
        else:
            answer = row.get("completion", row.get("chosen", ""))
            ids = tokenizer(row.get("prompt", "") + answer)["input_ids"]
        ids = list(ids)[: plan.training.max_length]
        if ids:
            out.append(ids)
    return out


@torch.no_grad()
def _logits(model, prompts: list[list[int]]) -> list[torch.Tensor]:
    model.eval()
    return [model(input_ids=torch.tensor([ids])).logits[0].float() for ids in prompts]


def parity(reference, exported, prompts, dtype: torch.dtype) -> tuple[float, float, str, float]:
    """(max |Δ logit|, the measure compared, its kind, the tolerance)."""
    ref, got = _logits(reference, prompts), _logits(exported, prompts)
    diff = max((a - b).abs().max().item() for a, b in zip(ref, got))
    scale = max(a.abs().max().item() for a in ref)
    kind, tol = TOLERANCE[dtype]
    measured = diff if kind == "absolute" else diff / max(scale, 1e-12)
    return diff, measured, kind, tol


def _load_exported(plan: Plan, root: Path, data_dir: Path, folder: Path, adapter: bool, dtype: torch.dtype):
    """The exported folder, loaded as its model card says (its weights widened to ``dtype``)."""
    from transformers import AutoModelForCausalLM

    if not adapter:
        return AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype)
    from peft import PeftModel

    base = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))["base_model_name_or_path"]
    base_path = str(folder / base) if (folder / base).is_dir() else base
    kwargs = {"revision": plan.model.revision} if getattr(plan.model, "revision", None) and base_path == base else {}
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=dtype, **kwargs)
    return PeftModel.from_pretrained(model, str(folder))


# --------------------------------------------------------------------------- the model card


def _fmt(value) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "–"


def _with_interval(report: dict, who: str, metric: str) -> str:
    value = (report.get(who) or {}).get(metric)
    shown = _fmt(value)
    interval = ((report.get("intervals") or {}).get(who) or {}).get(metric)
    if isinstance(interval, list) and len(interval) == 2 and shown != "–":
        shown += f" ({_fmt(interval[0])}–{_fmt(interval[1])})"
    return shown


def evaluation_table(report: dict | None) -> str:
    if not report or not isinstance(report.get("tuned"), dict):
        return "No evaluation: the run's report step has not run for this plan.\n"
    metrics = [m for m, v in report["tuned"].items() if isinstance(v, (int, float))]
    level = (report.get("intervals") or {}).get("level")
    lines = [f"Held-out `{report.get('split', '?')}` split, {report.get('rows', '?')} rows"
             + (f"; {level:.0%} intervals: {report['intervals'].get('method', 'bootstrap')}"
                if isinstance(level, (int, float)) else "")
             + ".", "", "| metric | majority | base | tuned |", "| --- | --- | --- | --- |"]
    for m in metrics:
        lines.append(f"| {m} | {_with_interval(report, 'majority', m)} | {_with_interval(report, 'base', m)} | "
                     f"{_with_interval(report, 'tuned', m)} |")
    gates = report.get("gates") or []
    if gates:
        lines += ["", "Gates: " + ", ".join(f"{g.get('gate')} {'passed' if g.get('passed') else 'FAILED'}"
                                            for g in gates)]
    return "\n".join(lines) + "\n"


def model_card(plan: Plan, root: Path, kind: str, dtype: str, eos: list[int], tokenizer, report: dict | None,
               parity_line: str, base_ref: str | None) -> str:
    spec_texts = []
    for rel in [*plan.spec.bases, plan.spec.path]:
        path = root / rel
        text = path.read_text(encoding="utf-8") if path.is_file() else "(not found)"
        spec_texts.append(f"`{rel}`:\n\n```yaml\n{text.rstrip()}\n```\n")
    sources = []
    for label, src in plan.data.named_sources():  # a training mixture's sources one by one
        if src.kind == "file":
            sources.append(f"| {label} | `{src.path}` | `{src.sha256}` |")
        else:
            sources.append(f"| {label} | hub `{src.hub}` ({src.split}) | revision `{src.revision or 'unpinned'}` |")
    stops = ", ".join(f"{i} `{tokenizer.convert_ids_to_tokens(i)}`" for i in eos)
    if kind == "adapter":
        load = (f"from peft import PeftModel\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
                f"base = AutoModelForCausalLM.from_pretrained(\"{_shown_base(base_ref)}\")\n"
                f"model = PeftModel.from_pretrained(base, \"path/to/this/folder\")\n"
                f"tokenizer = AutoTokenizer.from_pretrained(\"path/to/this/folder\")")
    else:
        load = ("from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
                "model = AutoModelForCausalLM.from_pretrained(\"path/to/this/folder\")\n"
                "tokenizer = AutoTokenizer.from_pretrained(\"path/to/this/folder\")")
    what = {"merged": "the LoRA adapter merged into its base model", "full": "a full fine-tune",
            "adapter": f"a LoRA adapter (its base: `{base_ref}`)"}[kind]
    prompt = ("messages through the tokenizer's chat template (`apply_chat_template(..., add_generation_prompt=True)`)"
              if plan.format.kind == "chat" else "the spec's prompt template, as in the spec below")
    return "\n".join([
        f"# {plan.name}", "",
        f"Fine-tuned with [ftspec](https://pypi.org/project/ftspec/): {what}, {plan.method.objective}, "
        f"weights in {dtype}.", "",
        f"- plan id: `{plan.id}`",
        f"- base model: {_describe_base(plan)}",
        f"- stops at: {stops} (generation_config.json)",
        f"- parity: {parity_line}", "",
        "## Evaluation", "", evaluation_table(report),
        "## Data", "", "| split | source | sha256 / revision |", "| --- | --- | --- |", *sources, "",
        "## How to load", "", "```python", load, "```", "",
        f"Give the model its input formatted as in training: {prompt}. `generate()` stops at the ids above.", "",
        "## The spec", "",
        *([(f"Profiles: {', '.join(plan.spec.profiles)}. " if plan.spec.profiles else "")
           + (f"Overrides: {', '.join(plan.spec.overrides)}." if plan.spec.overrides else ""), ""]
          if plan.spec.profiles or plan.spec.overrides else []),
        *spec_texts,
    ])


def _shown_base(base_ref: str | None) -> str:
    return "path/to/this/folder/base-model" if base_ref == "base-model" else str(base_ref)


def _describe_base(plan: Plan) -> str:
    m = plan.model
    if m.kind == "stage":
        merged = ", its LoRA adapter merged" if m.adapter != "full" else ""
        return (f"the model stage `{m.stage}` of this spec trained{merged} "
                f"(that stage started from {_describe_base_of(m.base)})")
    return _describe_base_of(m)


def _describe_base_of(m) -> str:
    if m.kind == "stage":
        return f"stage `{m.stage}`'s model"
    if m.kind == "tiny":
        return f"tiny {m.architecture} built from a config ({m.num_layers} layers × {m.hidden_size})"
    where = f"`{m.name_or_path}`" + (f" at revision `{m.revision}`" if m.revision else "")
    gguf = getattr(m, "gguf_file", None)
    return where + (f", GGUF file `{gguf}`" if gguf else "")


# --------------------------------------------------------------------------- export


def export_model(plan: Plan, root: Path, out: Path, adapter: bool = False, force: bool = False,
                 echo: Callable[[str], None] = print, builder: Callable = build_model,
                 gguf: str | None = None) -> ExportResult:
    """Export the trained model of ``plan`` to ``out`` (see the module's docstring);
    ``gguf`` ("F32" or "F16"): also DIR/gguf/model.gguf, checked the same way."""
    from transformers import AutoTokenizer

    out = Path(out)
    refuse_folder(out, plan, root, force)  # the repository, its inputs, runs and store; not empty
    model_dir = trained_dir(plan, root)
    kind_trained = plan.method.adapter.kind
    if adapter and kind_trained == "full":
        raise _err("--adapter", "this run fine-tuned every weight (method.adapter: full): there is no adapter to keep",
                   "export without --adapter")
    if gguf is not None and adapter:
        raise _err("--gguf", "a GGUF file holds a whole model: give --gguf without --adapter")
    if gguf is not None and gguf not in GGUF_TYPES:
        raise _err("--gguf", f"must be one of {', '.join(sorted(GGUF_TYPES))} (got '{gguf}')")
    data_dir = store_of((root / plan.output.dir).resolve()).path(
        steps.PREPARE_DATA.name, next(s.key for s in plan.steps if s.name == steps.PREPARE_DATA.name))
    base_path = base_model_path(plan.model, root, data_dir)
    dtype = export_dtype(plan, base_path)
    kind = "adapter" if adapter else ("full" if kind_trained == "full" else "merged")

    # Written beside DIR under a name of its own (nothing of the user's is replaced), then renamed.
    partial = new_partial(out)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        base_ref = None
        if adapter:
            base_ref = _adapter_base(plan, base_path, data_dir, partial, dtype)
            config = json.loads((model_dir / "adapter_config.json").read_text(encoding="utf-8"))
            config["base_model_name_or_path"] = base_ref
            config["revision"] = getattr(plan.model, "revision", None)
            write_json(partial / "adapter_config.json", config)
            for f in model_dir.iterdir():
                if f.is_file() and f.name.startswith("adapter_model"):
                    shutil.copyfile(f, partial / f.name)
            from transformers import GenerationConfig

            try:
                source = GenerationConfig.from_pretrained(base_path)
            except OSError:
                source = None
            eos = _write_generation_config(source, tokenizer, partial)
        else:
            model = builder(plan, root, data_dir, model_dir, dtype)
            model.config.use_cache = True  # training switched it off
            model.save_pretrained(str(partial), safe_serialization=True)
            eos = _write_generation_config(getattr(model, "generation_config", None), tokenizer, partial)
            del model
        tokenizer.save_pretrained(str(partial))

        # Parity: the trained model as the evaluation steps load it, in float32 on the CPU.
        reference = load_tuned(plan.model, kind_trained, "auto", root, data_dir, model_dir, torch.float32, "cpu")
        exported = _load_exported(plan, root, data_dir, partial, adapter, torch.float32)
        prompts = parity_prompts(plan, data_dir, tokenizer)
        if not prompts:
            raise _err("export", "no held-out rows to check the exported model on (the run's data/ has none)")
        max_abs, measured, measure, tol = parity(reference, exported, prompts, dtype)
        if measure == "absolute":
            line = (f"max |Δ logit| {measured:.2e} over {len(prompts)} held-out rows, {DTYPE_NAMES[dtype]} export "
                    f"(tolerance {tol:.0e})")
        else:
            line = (f"max |Δ logit| / max |logit| {measured:.2e} over {len(prompts)} held-out rows, "
                    f"{DTYPE_NAMES[dtype]} export (tolerance {tol:.0e}; max |Δ logit| {max_abs:.2e})")
        echo(f"parity: {line}")
        if not measured <= tol:  # NaN fails too
            raise ParityError(f"the exported model does not match the trained one: {line}; nothing was written")
        gguf_parity = None
        if gguf is not None:
            gguf_parity = _export_gguf(exported, tokenizer, partial, gguf, reference, prompts, echo)
        del exported
        report_key = next((s.key for s in plan.steps if s.name == steps.REPORT.name), None)
        store = store_of((root / plan.output.dir).resolve())
        report = None
        if report_key and store.complete(steps.REPORT.name, report_key):
            report = read_json(store.path(steps.REPORT.name, report_key) / "metrics.json", dict, lenient=True)
        card = model_card(plan, root, kind, DTYPE_NAMES[dtype], eos, tokenizer, report, line, base_ref)
        if gguf_parity:
            card = card.replace("\n## Evaluation", f"- GGUF: `gguf/model.gguf` ({gguf}, llama architecture, the "
                                "tokenizer and chat template in its metadata; llama.cpp, or `AutoModelForCausalLM"
                                ".from_pretrained(\"path/to/this/folder/gguf\", gguf_file=\"model.gguf\")`); "
                                f"read back by transformers: {gguf_parity['line']}\n\n## Evaluation", 1)
        write_atomic(partial / "README.md", card)
        write_json(partial / "ftspec-export.json", {"plan_id": plan.id, "name": plan.name, "kind": kind,
                                                    "dtype": DTYPE_NAMES[dtype], "parity": {
                                                        "max_abs_logit_diff": max_abs, "measure": measure,
                                                        "value": measured, "tolerance": tol, "rows": len(prompts)},
                                                    "eos_token_id": eos,
                                                    **({"gguf": gguf_parity} if gguf_parity else {})})
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    try:
        replace_folder(partial, out)  # an empty DIR, or --force: moved aside, removed once the new one is in place
    except OSError as exc:
        raise _err("--output", f"{out} cannot be replaced: {exc.strerror or exc}; it is as it was") from None
    return ExportResult(out, kind, DTYPE_NAMES[dtype], max_abs, measure, measured, tol, len(prompts), eos)


# --------------------------------------------------------------------------- GGUF (llama family)


def _export_gguf(model, tokenizer, folder: Path, outtype: str, reference, prompts, echo) -> dict:
    """Write DIR/model.gguf from the exported model and check it as read back by transformers'
    GGUF loader: the same tokens for the held-out rows, and logits within the tolerance."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # In a folder of its own: transformers, given a folder with tokenizer files beside the
    # GGUF file, mixes them with the file's metadata (and loses the special tokens).
    path = folder / "gguf" / "model.gguf"
    path.parent.mkdir()
    write_gguf(model, tokenizer, path, outtype)
    read_tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    for name in ("eos_token_id", "bos_token_id", "pad_token_id"):
        if getattr(read_tok, name) != getattr(tokenizer, name):
            raise ParityError(f"the GGUF file's tokenizer reads back with {name} {getattr(read_tok, name)}, "
                              f"not {getattr(tokenizer, name)}; nothing was written")
    for ids in prompts:
        text = tokenizer.decode(ids)
        if (tokenizer(text, add_special_tokens=False)["input_ids"]
                != read_tok(text, add_special_tokens=False)["input_ids"]):
            raise ParityError(f"the GGUF file's tokenizer splits a held-out row differently: {text[:60]!r}; "
                              "nothing was written")
    read = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    dtype = GGUF_TYPES[outtype]
    max_abs, measured, measure, tol = parity(reference, read, prompts, dtype)
    what = "max |Δ logit|" + (" / max |logit|" if measure == "relative" else "")
    line = f"{what} {measured:.2e} over {len(prompts)} held-out rows, {outtype} (tolerance {tol:.0e})"
    echo(f"parity (GGUF): {line}")
    if not measured <= tol:
        raise ParityError(f"the GGUF file does not match the trained model: {line}; nothing was written")
    return {"file": "gguf/model.gguf", "type": outtype, "max_abs_logit_diff": max_abs, "value": measured,
            "tolerance": tol, "line": line}

GGUF_TYPES = {"F32": torch.float32, "F16": torch.float16}


def _permute_rotary(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """llama.cpp's layout of the q and k projections: each head's rotary halves interleaved
    (transformers' GGUF loader undoes it)."""
    return (weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


def write_gguf(model, tokenizer, path: Path, outtype: str = "F32") -> None:
    """Write a llama-architecture model and its byte-level BPE tokenizer as one GGUF file
    (F32 or F16), with the metadata transformers' GGUF loader and llama.cpp read."""
    import gguf

    config = model.config
    if config.model_type != "llama":
        raise _err("--gguf", f"GGUF export writes the llama architecture only (this model is '{config.model_type}')")
    state = {k: v for k, v in model.state_dict().items() if "rotary_emb" not in k}
    blocks = config.num_hidden_layers
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, blocks)
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    rope = getattr(config, "rope_parameters", None) or {}
    if rope.get("rope_type", "default") != "default":
        raise _err("--gguf", "GGUF export writes plain rotary embeddings only "
                             f"(this model uses '{rope.get('rope_type')}')")

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(str(getattr(config, "_name_or_path", "") or "ftspec export"))
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(blocks)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if outtype == "F16" else gguf.LlamaFileType.ALL_F32)
    _add_tokenizer(writer, tokenizer, config.vocab_size)

    tied = bool(getattr(config, "tie_word_embeddings", False))
    for name, tensor in state.items():
        if tied and name == "lm_head.weight":
            continue  # llama.cpp reads the embedding as the output then
        stem, _, suffix = name.rpartition(".")
        gguf_name = names.get_name(stem)
        if gguf_name is None:
            raise _err("--gguf", f"no GGUF name for the tensor '{name}'")
        t = tensor.detach().to(torch.float32)
        if stem.endswith("self_attn.q_proj"):
            t = _permute_rotary(t, heads)
        elif stem.endswith("self_attn.k_proj"):
            t = _permute_rotary(t, kv_heads)
        # Norms and 1-D tensors stay F32, as llama.cpp keeps them.
        dtype = GGUF_TYPES[outtype] if t.ndim > 1 else torch.float32
        writer.add_tensor(f"{gguf_name}.{suffix}", t.to(dtype).numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _add_tokenizer(writer, tokenizer, vocab_size: int) -> None:
    """The tokenizer as llama.cpp's "gpt2" (byte-level BPE) vocabulary: tokens by id, their
    types (special ones as control), merges, special ids and the chat template."""
    import gguf

    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    if backend.get("model", {}).get("type") != "BPE":
        raise _err("--gguf", "GGUF export writes byte-level BPE tokenizers only")
    vocab = tokenizer.get_vocab()
    by_id = {i: t for t, i in vocab.items()}
    special = set(tokenizer.all_special_ids)
    added = {i for i in getattr(tokenizer, "added_tokens_decoder", {}) or {}}
    tokens, types = [], []
    for i in range(vocab_size):
        token = by_id.get(i)
        if token is None:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        else:
            tokens.append(token)
            types.append(gguf.TokenType.CONTROL if i in special or i in added else gguf.TokenType.NORMAL)
    merges = backend["model"].get("merges") or []
    merges = [m if isinstance(m, str) else " ".join(m) for m in merges]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    if merges:
        writer.add_token_merges(merges)
    else:  # an empty array is not written: a reader then derives merges from the scores (none, for single bytes)
        writer.add_token_scores([-float(i) for i in range(len(tokens))])
    for key, value in (("bos", tokenizer.bos_token_id), ("eos", tokenizer.eos_token_id),
                       ("pad", tokenizer.pad_token_id), ("unk", tokenizer.unk_token_id)):
        if value is not None:
            getattr(writer, f"add_{key}_token_id")(value)

    for eot in end_of_turn_ids(tokenizer)[:1]:  # llama.cpp stops at end of turn too
        if eot != tokenizer.eos_token_id:
            writer.add_eot_token_id(eot)
    probe = tokenizer("a")["input_ids"]
    writer.add_add_bos_token(bool(probe) and tokenizer.bos_token_id is not None and probe[0] == tokenizer.bos_token_id)
    if getattr(tokenizer, "chat_template", None):
        writer.add_chat_template(tokenizer.chat_template)
