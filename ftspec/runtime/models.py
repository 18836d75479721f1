"""Models and tokenizers: a hub id or local path, a GGUF file converted once to
safetensors, or a tiny model built from the plan's config with a tokenizer that needs
no download."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Iterable

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedTokenizerFast,
)

from ftspec.catalog.architectures import architecture
from ftspec.catalog.steps import PREPARE_DATA, TRAIN
from ftspec.core.errors import Issue, Pos, SpecError
from ftspec.data.sources import fingerprint
from ftspec.plan.model import chat_template_text
from ftspec.runtime.training import builders

SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
# Turn markers of the built-in chat templates, so a tiny tokenizer keeps them whole.
CHAT_TOKENS = ["<|im_start|>", "<|im_end|>"]


def _wrap(tok: Tokenizer) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(tokenizer_object=tok, extra_special_tokens=CHAT_TOKENS, **SPECIAL_TOKENS)


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """One token per UTF-8 byte (256), plus the special tokens as added tokens."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return _wrap(tok)


def bpe_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on ``texts``: every byte stays encodable, so nothing is unknown."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS.values()) + CHAT_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return _wrap(tok)


def tiny_config(m: Any, tokenizer: PreTrainedTokenizerFast):
    """A transformers config for the plan's tiny model, sized to the tokenizer."""
    common = dict(
        vocab_size=len(tokenizer),  # len() counts the added special tokens; vocab_size does not
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    sizes = {config_name: getattr(m, name) for name, config_name in architecture(m.architecture).tiny_sizes}
    return AutoConfig.for_model(m.architecture, **sizes, **common)


def build_tiny(m: Any, train_texts: Iterable[str], out_dir: Path) -> None:
    """Build the tiny model and its tokenizer, and save both to ``out_dir``."""
    tok_spec = m.tokenizer
    tokenizer = byte_tokenizer() if tok_spec.kind == "byte" else bpe_tokenizer(train_texts, tok_spec.vocab_size)
    config = tiny_config(m, tokenizer)
    torch.manual_seed(m.init_seed)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def convert_gguf(plan_model: Any, root: Path, out_dir: Path) -> dict:
    """De-quantise the plan's GGUF model through transformers and save it, with its
    tokenizer (and chat template), as an ordinary safetensors folder at ``out_dir``; later
    steps load that in about a second instead of converting again. Returns what it did."""
    from transformers import GgufConfig

    folder = (str(root / plan_model.name_or_path) if plan_model.source == "local"
              else hub_id(plan_model.name_or_path, "model.base"))
    name = plan_model.gguf_file
    if plan_model.gguf_sha256 is not None:  # the file the plan fingerprinted, not one put there since
        found = fingerprint(Path(folder) / name)
        if found != plan_model.gguf_sha256:
            raise SpecError.one(Pos("model.gguf_file"), "model.gguf_file",
                                f"'{name}' changed since the plan was made (sha256 {found[:12]}…, the plan has "
                                f"{plan_model.gguf_sha256[:12]}…)", "make the plan again")
    kwargs: dict = {"gguf_file": name}
    if plan_model.source == "hub" and plan_model.revision:
        kwargs["revision"] = plan_model.revision
    started = time.perf_counter()
    from transformers.utils import logging as hf_logging

    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a bar per tensor says nothing the closing line does not
    # transformers' GGUF reader draws its own tqdm bar, whatever its logging settings say.
    from transformers import modeling_gguf_pytorch_utils as gguf_reader

    reader_bar = getattr(gguf_reader, "tqdm", None)
    gguf_reader.tqdm = lambda iterable, *args, **kwargs: iterable
    try:
        tokenizer = None
        if plan_model.tokenizer is None:  # the model's own tokenizer, from the GGUF file
            tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(folder, quantization_config=GgufConfig(dequantize=True),
                                                     dtype=torch.float32, **kwargs)
    except (OSError, ValueError) as exc:
        raise SpecError.one(Pos("model.gguf_file"), "model.gguf_file",
                            f"cannot load '{name}' from '{folder}': {_first_line(exc)}") from None
    finally:
        if bar:
            hf_logging.enable_progress_bar()
        if reader_bar is not None:
            gguf_reader.tqdm = reader_bar
    if (getattr(model, "hf_quantizer", None) is not None
            or getattr(model.config, "quantization_config", None) is not None):
        model = _plain_copy(model)
    model.save_pretrained(out_dir, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(out_dir)
    return {"gguf_file": name, "architecture": model.config.model_type,
            "parameters": sum(p.numel() for p in model.parameters()),
            "seconds": round(time.perf_counter() - started, 1)}


def materialize_stage(m: Any, store, root: Path, out_dir: Path) -> dict:
    """Write the model an earlier stage trained (``m``: a plan's StageModel) as whole
    weights with its tokenizer at ``out_dir``: a full model as it was saved, a LoRA
    adapter merged into that stage's base. So the stage that starts from it, and a
    DPO stage's reference model, are exactly the earlier stage's model."""
    trained = store.path(TRAIN.name, m.train)
    if not store.complete(TRAIN.name, m.train):
        raise SpecError.one(Pos("model"), "model", f"stage {m.stage} has not finished training "
                            f"(train key {m.train[:8]}); its run stopped before it: run the spec again")
    started = time.perf_counter()
    dtype = getattr(_root_model(m), "dtype", "auto")
    dtype = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    if m.adapter == "full":
        model = AutoModelForCausalLM.from_pretrained(str(trained), dtype=dtype)
    else:
        from peft import PeftModel

        # A QLoRA stage's base was loaded in 4 or 8 bits to train; it is merged into the
        # base's own (de-quantised) weights here, which is what a merged export holds too.
        base = AutoModelForCausalLM.from_pretrained(
            base_model_path(m.base, root, store.path(PREPARE_DATA.name, m.data)), dtype=dtype)
        model = PeftModel.from_pretrained(base, str(trained)).merge_and_unload()
    model.save_pretrained(out_dir, safe_serialization=True)
    AutoTokenizer.from_pretrained(str(trained)).save_pretrained(out_dir)  # saved with the model, chat template and all
    return {"stage": m.stage, "adapter": m.adapter, "merged": m.adapter != "full",
            "parameters": sum(p.numel() for p in model.parameters()),
            "seconds": round(time.perf_counter() - started, 1)}


def load_teacher(teacher: Any, root: Path, teach_dir: Path, dtype: torch.dtype, device: str,
                 attention: str = "auto", chat_template: str | None = None):
    """A distillation's teacher (``method.distill.teacher``) and its tokenizer, frozen: as the
    teach step prepared it in ``teach_dir/base-model`` (an earlier stage's model merged, a
    GGUF file converted), or from its hub id or folder."""
    tokenizer = teacher_tokenizer(teacher, root, teach_dir, chat_template)
    with _as_teacher():
        model = load_model(teacher, root, teach_dir, dtype, device, attention=attention)
    model.eval()
    model.requires_grad_(False)
    return model, tokenizer


def teacher_tokenizer(teacher: Any, root: Path, teach_dir: Path, chat_template: str | None = None):
    with _as_teacher():
        return load_tokenizer(teacher, root, teach_dir, chat_template)


class _as_teacher:
    """A teacher that does not load is an error at ``method.teacher``, not at the student's ``model``."""

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if isinstance(exc, SpecError):
            raise SpecError(Issue(Pos("method.teacher"), "method.teacher", f"the teacher: {i.message}", i.hint)
                            if i.key == "model.base" else i for i in exc.issues) from None
        return False


def _root_model(m: Any) -> Any:
    while m.kind == "stage":
        m = m.base
    return m


def _plain_copy(model):
    """The same weights in a model that carries no quantizer (transformers will not save one that does)."""
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    plain = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config), dtype=torch.float32)
    plain.load_state_dict(model.state_dict(), strict=True)
    return plain


def base_model_path(plan_model: Any, root: Path, data_dir: Path) -> str:
    """Where the base model loads from: the prepared tiny model or converted GGUF model, a
    local folder, or a hub id."""
    if plan_model.kind in ("tiny", "stage") or getattr(plan_model, "gguf_file", None):
        return str(data_dir / "base-model")
    if plan_model.source == "local":
        return str(root / plan_model.name_or_path)
    return hub_id(plan_model.name_or_path, "model.base")


def hub_id(name: str, key: str) -> str:
    """A hub id the plan names, as the loaders get it. transformers and datasets take a
    folder of that name in the working directory over the hub: one there now (made after
    the plan, or in another working directory) would load something the plan never named."""
    if os.path.lexists(name):
        raise SpecError.one(Pos(key), key, f"'{name}' is a hub id in the plan, but a folder or file of that name "
                            f"is in the working directory ({os.getcwd()}) and would be loaded instead",
                            "run from another directory, or name the folder as a local path (./…)")
    return name


def load_tokenizer(plan_model: Any, root: Path, data_dir: Path, chat_template: str | None = None):
    path = base_model_path(plan_model, root, data_dir)
    kwargs = {}
    if plan_model.kind == "pretrained":
        kwargs = {"trust_remote_code": plan_model.trust_remote_code}
        other = plan_model.tokenizer
        if other is None:  # the model's own tokenizer, at the model's revision (a GGUF one is in the prepared folder)
            kwargs["revision"] = None if plan_model.gguf_file else plan_model.revision
        else:  # another repository: the model's revision means nothing there
            path = (str(root / other.name_or_path) if other.source == "local"
                    else hub_id(other.name_or_path, "model.tokenizer"))
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **{k: v for k, v in kwargs.items() if v is not None})
    except OSError as exc:
        raise SpecError.one(Pos("model.base"), "model.base",
                            f"cannot load the tokenizer of '{path}': {_first_line(exc)}") from None
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(plan_model: Any, root: Path, data_dir: Path, dtype: torch.dtype, device: str,
               path: str | None = None, quantization_config=None, attention: str = "auto"):
    """Load the base model (or a saved full model at ``path``) for training or evaluation,
    with the plan's attention implementation (``auto``: transformers' default, SDPA)."""
    source = path or base_model_path(plan_model, root, data_dir)
    kwargs: dict = {"dtype": dtype}
    if attention != "auto":
        kwargs["attn_implementation"] = attention
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
        kwargs["device_map"] = {"": 0}
    if plan_model.kind == "pretrained" and path is None:
        kwargs["trust_remote_code"] = plan_model.trust_remote_code
        if plan_model.revision and not plan_model.gguf_file:  # a converted GGUF model is a local folder
            kwargs["revision"] = plan_model.revision
    try:
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except OSError as exc:
        raise SpecError.one(Pos("model.base"), "model.base",
                            f"cannot load the model '{source}': {_first_line(exc)}") from None
    except (ImportError, ValueError) as exc:
        if attention == "auto":
            raise
        # transformers refuses an implementation the model or this machine lacks (no flash-attn package, no GPU).
        raise SpecError.one(Pos("compute.attention"), "compute.attention",
                            f"{attention} cannot be used here: {_first_line(exc)}") from None
    return model if quantization_config is not None else model.to(device)


def load_tuned(plan_model: Any, adapter_kind: str, attention: str, root: Path, data_dir: Path, model_dir: Path,
               dtype: torch.dtype, device: str, merge: bool = False):
    """The trained model: a full model, or the base with its LoRA adapter. ``merge``: a LoRA
    adapter is merged into the base's weights (for a model that only answers: each layer
    then runs one matrix product instead of three; the answers are the same to rounding,
    tests/runtime/test_models.py). A QLoRA adapter stays apart: merging into 4-bit weights
    would round them again."""
    if adapter_kind == "full":
        return load_model(plan_model, root, data_dir, dtype, device, path=str(model_dir), attention=attention)
    from peft import PeftModel

    base = load_model(plan_model, root, data_dir, dtype, device, attention=attention)
    model = PeftModel.from_pretrained(base, str(model_dir)).to(device)
    if merge and adapter_kind == "lora":
        model = model.merge_and_unload()
        model.eval()
    return model


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


# --------------------------------------------------------------------------- as a plan runs them


def load_evaluated(plan, root: Path, data_dir: Path, model_dir: Path | None = None):
    """The model a generation step runs and its tokenizer: the base model (as prepared),
    or with ``model_dir`` the tuned one. ``ftspec generate`` loads through here too, so
    that what it answers is what the evaluation measured."""
    if "pair_scores" in plan.eval.outputs:  # a reward model's plan (its evaluation scores pairs with its head)
        raise SpecError.one(Pos("method.kind"), "method.kind", "a reward model scores answers with its score head; it "
                            "does not write them, so there is nothing to generate with it",
                            "its scores of the held-out pairs are in the run's eval-tuned/predictions.jsonl")
    device = builders.resolve_device(plan.compute)
    precision = builders.resolve_precision(plan.compute, device)
    dtype = builders.model_dtype(plan.model, precision)
    if model_dir is not None:
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        model = load_tuned(plan.model, plan.method.adapter.kind, plan.compute.attention, root, data_dir,
                           model_dir, dtype, device, merge=True)
    else:
        tokenizer = load_tokenizer(plan.model, root, data_dir, chat_template_text(plan.format))
        model = load_model(plan.model, root, data_dir, dtype, device, attention=plan.compute.attention)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def load_plan_teacher(plan, root: Path, teach_dir: Path):
    """A distillation's teacher and its tokenizer, on the plan's device and precision."""
    teacher = plan.method.distill.teacher
    device = builders.resolve_device(plan.compute)
    dtype = builders.model_dtype(teacher, builders.resolve_precision(plan.compute, device))
    return load_teacher(teacher, root, teach_dir, dtype, device, plan.compute.attention,
                        chat_template_text(plan.format))


# --------------------------------------------------------------------------- reward models (a score head)


def load_scorer(plan_model: Any, root: Path, data_dir: Path, dtype: torch.dtype, device: str, tokenizer,
                path: str | None = None, attention: str = "auto"):
    """The base model (or a saved reward model at ``path``) with a one-output score head, for a
    reward model to train or evaluate: transformers' sequence-classification class of the same
    architecture, from the same folder (the head new unless ``path`` holds a trained one). It
    reads the score at each row's last token before the padding, so its pad token id is the
    tokenizer's."""
    source = path or base_model_path(plan_model, root, data_dir)
    kwargs: dict = {"dtype": dtype, "num_labels": 1}
    if attention != "auto":
        kwargs["attn_implementation"] = attention
    if plan_model.kind == "pretrained" and path is None:
        kwargs["trust_remote_code"] = plan_model.trust_remote_code
        if plan_model.revision and not plan_model.gguf_file:
            kwargs["revision"] = plan_model.revision
    try:
        model = AutoModelForSequenceClassification.from_pretrained(source, **kwargs)
    except OSError as exc:
        raise SpecError.one(Pos("model.base"), "model.base",
                            f"cannot load the model '{source}': {_first_line(exc)}") from None
    except ValueError as exc:  # an architecture transformers has no sequence-classification class for
        raise SpecError.one(Pos("method.kind"), "method.kind", f"a reward model needs a score head on the model, "
                            f"and '{source}' cannot have one: {_first_line(exc)}") from None
    model.config.pad_token_id = tokenizer.pad_token_id
    return model.to(device)


def load_scored(plan, root: Path, data_dir: Path, model_dir: Path | None = None):
    """A reward model as the generation step runs it (``model_dir``: the trained one; without it
    the base with an untrained head), and its tokenizer."""
    device = builders.resolve_device(plan.compute)
    dtype = builders.model_dtype(plan.model, builders.resolve_precision(plan.compute, device))
    attention = plan.compute.attention
    if model_dir is None:
        tokenizer = load_tokenizer(plan.model, root, data_dir, chat_template_text(plan.format))
        return load_scorer(plan.model, root, data_dir, dtype, device, tokenizer, attention=attention), tokenizer
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if plan.method.adapter.kind == "full":
        return load_scorer(plan.model, root, data_dir, dtype, device, tokenizer, path=str(model_dir),
                           attention=attention), tokenizer
    from peft import PeftModel

    base = load_scorer(plan.model, root, data_dir, dtype, device, tokenizer, attention=attention)
    model = PeftModel.from_pretrained(base, str(model_dir)).merge_and_unload()  # the score head saved beside it
    model.eval()
    return model.to(device), tokenizer


def materialize_reward_model(m: Any, store, root: Path, out_dir: Path) -> Path:
    """An earlier stage's reward model (``m``: the plan's StageModel of a GRPO reward) as a whole
    sequence-classification folder with its tokenizer at ``out_dir`` (a LoRA adapter merged into
    that stage's base), written once: a resumed training finds it there."""
    if (out_dir / "config.json").exists():
        return out_dir
    trained = store.path(TRAIN.name, m.train)
    if not store.complete(TRAIN.name, m.train):
        raise SpecError.one(Pos("method.rewards"), "method.rewards", f"stage {m.stage}'s reward model has not "
                            f"finished training (train key {m.train[:8]}); its run stopped before it: run the spec "
                            "again")
    tokenizer = AutoTokenizer.from_pretrained(str(trained))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    data_dir = store.path(PREPARE_DATA.name, m.data)
    if m.adapter == "full":
        model = load_scorer(m.base, root, data_dir, torch.float32, "cpu", tokenizer, path=str(trained))
    else:
        from peft import PeftModel

        base = load_scorer(m.base, root, data_dir, torch.float32, "cpu", tokenizer)
        model = PeftModel.from_pretrained(base, str(trained)).merge_and_unload()
    partial = out_dir.with_name(out_dir.name + ".partial")
    model.save_pretrained(partial, safe_serialization=True)
    tokenizer.save_pretrained(partial)
    os.replace(partial, out_dir)
    return out_dir

