"""Checks that span sections or look at the data: one named function per rule.

:func:`inspect` gathers what the checks and the compiler need (the data files'
columns, a sample of rows, row counts, fingerprints; the templates' text and the
names they use; what can be known of the model offline) and reports what cannot be
read. Each ``check_*`` function then yields issues. Nothing here touches the
network: a hub model or dataset is checked as far as the local cache allows, and
the rest is listed as not checked.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import jinja2

from ftspec.spec import schema as S
from ftspec.data import templates as tpl
from ftspec.core.errors import ERROR, WARNING, Issue, Pos, SpecError, did_you_mean
from ftspec.data.formatting import FormatError, RowFormatter, reference
from ftspec.data.gguf import GGUF_ARCHITECTURES, GGUFError, gguf_location
from ftspec.data.gguf import read_header as read_gguf_header
from ftspec.spec.load import LoadedSpec, Origin
from ftspec.core.paths import (PathPolicy, TooLarge, describe_os_error, file_problem, hub_id_problem, local_shadow,
                          output_problem, read_regular, resolved)
from ftspec.data.sources import MAX_COLUMNS, RowError, ScanBudget, count_lines, infer_format, parquet_rows, read_rows

SAMPLE_ROWS = 200
MIN_TRAIN_ROWS = 500
# What one validate may spend, in all, whatever the spec holds: every row of the local
# data files is parsed up to SCAN_ROWS rows and SCAN_BYTES bytes (beyond, JSON Lines rows
# are counted, the rest is parsed when the data is prepared), and all the renderings
# of sample rows and trial values together take at most RENDER_BUDGET seconds.
SCAN_ROWS = 300_000
SCAN_BYTES = 256 << 20
RENDER_BUDGET = 3.0
COMPILE_BUDGET = 2.0  # and compiling all the templates at most this
SAMPLE_BYTES = 64 << 20  # the sample rows kept, of all splits together (rows can be 16 MiB each)
MAX_SCHEMA_BYTES = 4 << 20
SPLITS = ("train", "validation", "test")

# Linear layers of the architectures whose names are known without loading a model.
LINEAR_MODULES = {
    "llama": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    "mistral": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    "qwen2": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    "qwen3": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    "gemma": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    "gemma2": ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    "gpt2": ("c_attn", "c_proj", "c_fc"),
}


def rel(path: Path, root: Path) -> str:
    """A path as the plan records it: relative to the repository root, with forward slashes."""
    real = resolved(path)[0] or Path(path)
    try:
        return real.relative_to(root).as_posix()
    except ValueError:
        return real.as_posix()

# Architectures whose attention keeps packed sequences apart by their position ids
# (transformers builds a block-diagonal mask when there is no attention mask and the
# KV cache is off); tests/test_packing.py checks the ones a tiny model can have.
PACKABLE = {"llama", "mistral", "qwen2", "qwen3", "gpt2", "gemma", "gemma2", "phi3"}


@dataclass
class SourceInfo:
    split: str
    key: str  # data.train
    origin: Origin
    kind: str  # file | hub
    shown: str = ""  # the file as messages name it
    path: Path | None = None
    format: str | None = None
    rows: int | None = None
    columns: list[str] = field(default_factory=list)
    sample: list[Any] = field(default_factory=list)  # sources.Row
    readable: bool = False
    spec: Any = None  # the FileSource / HubSource


@dataclass
class ModelInfo:
    source: str  # hub | local | tiny
    model_type: str | None = None
    has_chat_template: bool | None = None  # None: could not tell
    max_positions: int | None = None
    path: Path | None = None
    vocab_size: int | None = None  # where the model's files say it (a GGUF header)


@dataclass
class Context:
    loaded: LoadedSpec
    spec: S.Spec
    spec_dir: Path
    root: Path
    policy: PathPolicy
    sources: dict[str, SourceInfo] = field(default_factory=dict)
    templates: dict[str, tpl.Resolved] = field(default_factory=dict)  # spec key -> text
    parsed: dict[str, tuple[jinja2.Template, set[str]]] = field(default_factory=dict)
    model: ModelInfo | None = None
    formatter: RowFormatter | None = None
    not_checked: list[str] = field(default_factory=list)
    issues: list[Issue] = field(default_factory=list)
    names_ok: bool = True  # every template name is a column, so rows can be rendered
    filter_counts: dict[str, tuple[int, int]] = field(default_factory=dict)  # split -> (kept, rendered) by data.filter
    schemas: dict[int, str] = field(default_factory=dict)  # eval.metrics index -> JSON Schema text
    scan: ScanBudget = field(default_factory=lambda: ScanBudget(SCAN_ROWS, SCAN_BYTES))
    render_budget: tpl.RenderBudget = field(default_factory=lambda: tpl.RenderBudget(RENDER_BUDGET))
    compile_budget: tpl.RenderBudget = field(default_factory=lambda: tpl.RenderBudget(COMPILE_BUDGET))
    sample_bytes: int = SAMPLE_BYTES  # what is left of it
    # A key of each training row parsed, kept when a validation or test file is read
    # too: held-out rows that are training rows are found by it (quiet.check_held_out_overlap).
    train_keys: set[int] = field(default_factory=set)

    def at(self, *path) -> Origin:
        return self.loaded.origin(path)

    def pos(self, *path) -> Pos:
        return self.loaded.origin(path).pos

    def key(self, *path) -> str:
        o = self.loaded.origin(path)
        dotted = ".".join(str(p) for p in path)
        return o.key if o.key.endswith(dotted) else dotted

    def error(self, path: tuple, message: str, hint: str | None = None) -> Issue:
        return Issue(self.pos(*path), self.key(*path), message, hint)

    def warning(self, path: tuple, message: str, hint: str | None = None) -> Issue:
        return Issue(self.pos(*path), self.key(*path), message, hint, WARNING)

    @property
    def train_rows_after_split(self) -> int | None:
        """Training rows after data.filter (estimated where it was tried on a sample) and splitting, before limit."""
        from ftspec.data.splitting import split_counts

        sources = {s: self.source_rows(s)[0] for s in self.sources}
        return split_counts(sources, self.spec.data.split, None)["train"] if "train" in sources else None

    def source_rows(self, split: str) -> tuple[int | None, bool]:
        """Rows one source gives after data.filter, and whether that is an estimate: the
        filter renders the sample rows only, and the share it keeps there stands for the rest."""
        info = self.sources.get(split)
        rows = info.rows if info is not None and info.readable else None
        if rows is None or self.spec.data.filter is None:
            return rows, False
        kept, rendered = self.filter_counts.get(split, (0, 0))
        if not kept:  # nothing kept, or nothing to estimate from: check_filter says which
            return None, False
        if rendered >= rows:
            return kept, False
        return round(rows * kept / rendered), True

    def planned_rows(self) -> tuple[dict[str, int | None], list[str]]:
        """Rows of each split after data.filter, splitting and data.limit, and the splits
        whose count is an estimate (see :meth:`source_rows`)."""
        from ftspec.data.splitting import SPLITS as ORDER, split_counts

        sources: dict[str, int | None] = {}
        lower: dict[str, int | None] = {}  # the rows the sample shows the filter keeps, at least
        for split in self.sources:
            n, estimate = self.source_rows(split)
            sources[split] = n
            lower[split] = self.filter_counts[split][0] if estimate else n
        data = self.spec.data
        counts = split_counts(sources, data.split, data.limit)
        if lower == sources:
            return counts, []
        # An estimate is certain where the rows known to be kept already fill the split's limit.
        floor = split_counts(lower, data.split, data.limit)
        return counts, [s for s in ORDER if counts[s] is not None and floor[s] != counts[s]]


# --------------------------------------------------------------------------- gathering


def inspect(loaded: LoadedSpec, spec: S.Spec, policy: PathPolicy | None = None) -> Context:
    spec_dir = loaded.path.resolve().parent
    policy = policy or PathPolicy.for_spec(loaded.path)
    ctx = Context(loaded, spec, spec_dir, policy.root, policy)
    _inspect_model(ctx)
    _inspect_tokenizer(ctx)
    files = [split for split in SPLITS if isinstance(getattr(spec.data, split), S.FileSource)]
    for split in SPLITS:
        source = getattr(spec.data, split)
        if source is not None:
            later = len(files) - files.index(split) - 1 if split in files else 0
            _inspect_source(ctx, split, source, later)
    _inspect_templates(ctx)
    return ctx


def _inspect_source(ctx: Context, split: str, source: Any, later: int = 0) -> None:
    info = SourceInfo(split, f"data.{split}", ctx.at("data", split), "hub" if isinstance(source, S.HubSource) else "file", spec=source)
    ctx.sources[split] = info
    if info.kind == "hub":
        info.shown = f"hub:{source.hub}"
        problem = _hub_dataset_problem(ctx, source.hub)
        if problem:
            at = ("data", split, "hub") if ("data", split, "hub") in ctx.loaded.where else ("data", split)
            ctx.issues.append(ctx.error(at, problem))
            return
        ctx.not_checked.append(f"data.{split}: hub dataset '{source.hub}' is read when the data is prepared; its columns and rows are not checked offline")
        return
    path = ctx.spec_dir / source.path
    info.path = path
    info.shown = _shown(path)
    pos = ctx.pos("data", split, "path") if ("data", split, "path") in ctx.loaded.where else ctx.pos("data", split)
    key = f"data.{split}.path" if ("data", split, "path") in ctx.loaded.where else f"data.{split}"
    refusal = ctx.policy.outside(path, source.path)
    if refusal:
        ctx.issues.append(Issue(pos, key, refusal))
        return
    problem = file_problem(path)
    if problem:
        hint = nearby_file(path, source.path) if problem == "not found" else None
        ctx.issues.append(Issue(pos, key, f"data file '{source.path}' {problem}", hint))
        return
    fmt = source.format or infer_format(source.path)
    if fmt is None:
        ctx.issues.append(Issue(pos, key, f"cannot tell the format of '{source.path}' from its name", "set format: jsonl, json, csv, tsv or parquet"))
        return
    info.format = fmt
    on_bad = ctx.spec.data.on_bad_row
    skipped: list[RowError] = []
    # One pass over the file: every row is parsed (within the run's budget), the
    # first ones are kept as the sample that templates are tried on.
    # What is left of the run's budget, less a share kept for each file still to read
    # (a large training file leaves its validation and test files parsed in full).
    share = SCAN_ROWS // 6, SCAN_BYTES // 6
    budget = ScanBudget(max(ctx.scan.rows - later * share[0], SAMPLE_ROWS), max(ctx.scan.bytes - later * share[1], 1 << 20))
    start = budget.rows, budget.bytes
    rows = 0
    keep_keys = split == "train" and later > 0
    try:
        try:
            for row in read_rows(path, fmt, info.shown, source.columns, source.header, source.field,
                                 on_bad_row=on_bad, skipped=skipped, budget=budget):
                if len(info.sample) < SAMPLE_ROWS and (row.size <= ctx.sample_bytes or not info.sample):
                    info.sample.append(row)
                    ctx.sample_bytes -= row.size
                if keep_keys:
                    ctx.train_keys.add(row_key(row.values))
                rows += 1
        finally:
            ctx.scan.rows -= start[0] - budget.rows
            ctx.scan.bytes -= start[1] - budget.bytes
        info.rows = rows
        if budget.spent:
            info.rows = _count_rest(ctx, info, fmt, on_bad, rows)
    except RowError as exc:
        ctx.issues.append(exc.issue())
        return
    except SpecError as exc:
        ctx.issues.extend(exc.issues)
        return
    if info.rows == 0:
        ctx.issues.append(Issue(pos, key, f"data file '{source.path}' has no rows"))
        return
    info.readable = True
    seen: dict[str, None] = {}
    for row in info.sample:
        for name in row.values:
            seen.setdefault(name, None)
        if len(seen) > MAX_COLUMNS:  # rows with different keys each: enough to name them
            break
    info.columns = list(seen)


def row_key(values: dict) -> int:
    """A hash of a row's values, the same for the same row in any file."""
    try:
        return hash(repr(sorted(values.items())))
    except TypeError:
        return hash(repr(values))


def nearby_file(path: Path, written: str, most: int = 10_000) -> str | None:
    """A "did you mean" for a file that is not there: a file beside it with a close name
    or the same name with another extension, or the folder that is missing."""
    folder = path.parent
    if not folder.is_dir():
        parent = Path(written).parent.as_posix()
        return f"there is no folder '{parent}'" if parent not in ("", ".") else None
    names: list[str] = []
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if len(names) >= most:
                    break
                if not entry.name.startswith("."):
                    names.append(entry.name)
    except OSError:
        return None
    prefix = written[: len(written) - len(path.name)]

    def stem(name: str) -> str:
        return name.lower().split(".")[0]

    same_stem = sorted(n for n in names if stem(n) == stem(path.name) and infer_format(n))
    if same_stem:
        return f"did you mean '{prefix}{same_stem[0]}'?"
    close = tpl.close_match(path.name, names)
    if close:
        return close.replace("'", "'" + prefix, 1)
    return None


def _count_rest(ctx: Context, info: SourceInfo, fmt: str, on_bad: str, parsed: int) -> int | None:
    """Rows of a file that validate's budget did not let it parse to the end."""
    rows: int | None = None
    if fmt == "jsonl" and on_bad == "error":
        rows = count_lines(info.path, info.shown)
    elif fmt == "parquet":
        rows = parquet_rows(info.path)
    if rows is not None and rows <= parsed:
        return rows
    counted = "counted, not parsed" if rows is not None else "neither counted nor parsed"
    ctx.not_checked.append(f"{info.key}: rows after the first {parsed} are {counted} (validate parses at most "
                           f"{SCAN_ROWS} rows and {SCAN_BYTES >> 20} MiB in all); they are checked when the data is prepared")
    return rows


def _hub_dataset_problem(ctx: Context, hub: str) -> str | None:
    """A hub dataset id must be a hub id, and not also a local path that `datasets`
    would read instead (a folder, a file, anything outside the repository)."""
    problem = hub_id_problem(hub)
    if problem:
        return problem + " (local files are named with path:)"
    shadow = local_shadow(hub, ctx.spec_dir, ctx.root)
    if shadow is not None:
        return (f"'{hub}' is also a local path ({shadow}); datasets would read it instead of the hub dataset: "
                "name local files with path:")
    return None


def _shown(path: Path) -> str:
    real = resolved(path)[0]
    try:
        return str(real.relative_to(Path.cwd().resolve())) if real is not None else str(path)
    except ValueError:
        return str(path)


def _hub_snapshot(repo_id: str, revision: str | None) -> Path | None:
    """A model's folder in the local Hugging Face cache, if it is there."""
    cache = os.environ.get("HF_HUB_CACHE")
    if not cache:
        home = os.environ.get("HF_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
        cache = os.path.join(home, "hub")
    folder = Path(cache) / ("models--" + repo_id.replace("/", "--"))
    if not folder.is_dir():
        return None
    ref = revision or "main"
    ref_file = folder / "refs" / ref
    try:
        commit = read_regular(ref_file, 1024).decode("utf-8", "replace").strip() if ref_file.is_file() else ref
    except OSError:
        return None
    if "/" in commit or commit in ("", ".", ".."):
        return None
    snap = folder / "snapshots" / commit
    return snap if snap.is_dir() else None


def is_local_model(base: str, spec_dir: Path) -> bool:
    return base.startswith((".", "/", "~")) or base.lower().endswith(".gguf") or (spec_dir / base).is_dir()


def _inspect_model(ctx: Context) -> None:
    m = ctx.spec.model
    if isinstance(m, S.TinyModel):
        ctx.model = ModelInfo("tiny", m.architecture, has_chat_template=False, max_positions=m.max_position_embeddings)
        return
    if isinstance(m, S.BedrockModel):
        # Nothing local to read: Bedrock holds the model, its tokenizer and chat format
        # (check_bedrock checks the id against ftspec.catalog.bedrock_families).
        ctx.model = ModelInfo("bedrock")
        return
    folder, gguf = gguf_location(m.base, m.gguf_file)
    if gguf is not None:
        _inspect_gguf(ctx, m, folder, gguf)
        return
    if is_local_model(m.base, ctx.spec_dir):
        path = ctx.spec_dir / os.path.expanduser(m.base)
        info = ModelInfo("local", path=path)
        ctx.model = info
        refusal = ctx.policy.outside(path, m.base)
        if refusal:
            ctx.issues.append(ctx.error(("model", "base"), refusal))
            return
        path = info.path = path.resolve()
        if not path.is_dir():
            ctx.issues.append(ctx.error(("model", "base"), f"local model directory '{m.base}' not found"))
            return
        if not (path / "config.json").is_file():
            ctx.issues.append(ctx.error(("model", "base"), f"'{m.base}' has no config.json; is it a transformers model folder?"))
            return
        weights = [p for p in path.iterdir() if p.suffix in (".safetensors", ".bin") or p.name.endswith(".index.json")]
        if not weights:
            ctx.issues.append(ctx.error(("model", "base"), f"'{m.base}' holds no weights (*.safetensors or *.bin)"))
        _read_model_files(info, path)
        return
    info = ModelInfo("hub")
    ctx.model = info
    problem = _hub_model_problem(ctx, m.base)
    if problem:
        ctx.issues.append(ctx.error(("model", "base"), problem))
        return
    snap = _hub_snapshot(m.base, m.revision)
    if snap is None or not (snap / "config.json").is_file():
        ctx.not_checked.append(f"model.base: '{m.base}' is not in the local cache; its architecture, LoRA target modules and chat template are not checked")
        return
    info.path = snap
    _read_model_files(info, snap)


def _inspect_gguf(ctx: Context, m: S.PretrainedModel, folder: str, name: str) -> None:
    """A GGUF model: its header says the architecture, context length, vocabulary and
    chat template without loading a tensor (ftspec/data/gguf.py)."""
    key = ("model", "gguf_file") if m.gguf_file is not None else ("model", "base")
    if m.gguf_file is not None:
        if m.base.lower().endswith(".gguf"):
            ctx.issues.append(ctx.error(("model", "base"), f"names a .gguf file and gguf_file names '{name}'",
                                        "give the folder in base and the file in gguf_file, or the file in base alone"))
            return
        if "/" in name or "\\" in name or not name.lower().endswith(".gguf") or name.startswith("."):
            ctx.issues.append(ctx.error(key, f"must be the name of a .gguf file in the base folder (got '{name}')"))
            return
    local = is_local_model(folder, ctx.spec_dir)
    info = ModelInfo("local" if local else "hub")
    ctx.model = info
    if local:
        where = ctx.spec_dir / os.path.expanduser(folder)
        refusal = ctx.policy.outside(where / name, m.base)
        if refusal:
            ctx.issues.append(ctx.error(("model", "base"), refusal))
            return
        where = info.path = where.resolve()
        if not where.is_dir():
            ctx.issues.append(ctx.error(("model", "base"), f"local model directory '{folder}' not found"))
            return
        path = where / name
        if not path.is_file():
            present = sorted(p.name for p in where.iterdir() if p.name.lower().endswith(".gguf"))
            ctx.issues.append(ctx.error(key, f"no GGUF file '{name}' in '{folder}'",
                                        did_you_mean(name, present) or (f"it holds: {', '.join(present)}" if present else None)))
            return
    else:
        problem = _hub_model_problem(ctx, folder)
        if problem:
            ctx.issues.append(ctx.error(("model", "base"), problem))
            return
        snap = _hub_snapshot(folder, m.revision)
        if snap is None or not (snap / name).is_file():
            ctx.not_checked.append(f"model.gguf_file: '{name}' of hub repository '{folder}' is not in the local cache; "
                                   "its architecture, context length, vocabulary, LoRA target modules and chat template are not checked")
            return
        path = snap / name
    try:
        header = read_gguf_header(path)
    except (OSError, GGUFError) as exc:
        ctx.issues.append(ctx.error(key, f"cannot read the GGUF file '{name}': {exc}"))
        return
    if not header.loadable:
        ctx.issues.append(ctx.error(key, f"'{name}' holds a model of architecture '{header.architecture}', which transformers "
                                         "cannot load from GGUF", f"it loads: {', '.join(GGUF_ARCHITECTURES)}"))
        return
    if header.vocab_size is None and m.tokenizer is None:
        ctx.issues.append(ctx.error(key, f"'{name}' holds no tokenizer (no tokenizer.ggml.tokens in its header)",
                                    "name one in model.tokenizer"))
    info.model_type = header.model_type
    info.max_positions = header.context_length
    info.has_chat_template = header.chat_template is not None
    info.vocab_size = header.vocab_size


def _hub_model_problem(ctx: Context, name: str) -> str | None:
    """A model (or tokenizer) name that is not local must be a hub id, and not also a
    local path that transformers would load instead."""
    problem = hub_id_problem(name)
    if problem:
        return problem
    shadow = local_shadow(name, ctx.root)
    if shadow is not None:
        return (f"'{name}' is also a local path ({shadow}); transformers would load it instead of the hub "
                f"repository: write ./{name} for the local folder, relative to the spec")
    return None


def _inspect_tokenizer(ctx: Context) -> None:
    """model.tokenizer is a hub id or a local folder, under the same rules as model.base."""
    m = ctx.spec.model
    name = getattr(m, "tokenizer", None)
    if not isinstance(name, str):
        return
    if is_local_model(name, ctx.spec_dir):
        target = ctx.spec_dir / os.path.expanduser(name)
        refusal = ctx.policy.outside(target, name)
        if refusal:
            ctx.issues.append(ctx.error(("model", "tokenizer"), refusal))
        elif not target.is_dir():
            ctx.issues.append(ctx.error(("model", "tokenizer"), f"local tokenizer folder '{name}' not found"))
        return
    problem = _hub_model_problem(ctx, name)
    if problem:
        ctx.issues.append(ctx.error(("model", "tokenizer"), problem))


def _read_json(path: Path) -> Any:
    """A small JSON file of a model folder, or None when it cannot be read as one."""
    try:
        return json.loads(read_regular(path, MAX_SCHEMA_BYTES).decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return None


def _read_model_files(info: ModelInfo, folder: Path) -> None:
    config = _read_json(folder / "config.json")
    if isinstance(config, dict):
        model_type = config.get("model_type")
        info.model_type = model_type if isinstance(model_type, str) else None
        positions = config.get("max_position_embeddings") or config.get("n_positions")
        info.max_positions = positions if isinstance(positions, int) and not isinstance(positions, bool) and positions > 0 else None
    tok_cfg = folder / "tokenizer_config.json"
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        info.has_chat_template = True
    elif tok_cfg.is_file():
        value = _read_json(tok_cfg)
        info.has_chat_template = bool(value.get("chat_template")) if isinstance(value, dict) else None


def _template_refs(spec: S.Spec) -> Iterator[tuple[tuple, Any]]:
    """Every template a spec names, with its key path."""
    f = spec.format
    if isinstance(f, S.PromptCompletionFormat):
        yield ("format", "prompt"), f.prompt
        yield ("format", "completion"), f.completion
    elif isinstance(f, S.PreferenceFormat):
        yield ("format", "prompt"), f.prompt
        yield ("format", "chosen"), f.chosen
        yield ("format", "rejected"), f.rejected
    else:
        for i, turn in enumerate(f.messages or []):
            yield ("format", "messages", i, "content"), turn.content
        if f.chat_template is not None:
            yield ("format", "chat_template"), f.chat_template
    for name, text in spec.data.derive.items():
        yield ("data", "derive", name), text
    if spec.data.filter is not None:
        yield ("data", "filter"), spec.data.filter
    for i, metric in enumerate(spec.eval.metrics):
        if isinstance(metric, S.JudgeMetric):
            yield ("eval", "metrics", i, "rubric"), metric.rubric
        extract = getattr(metric, "extract", None)
        if extract is not None and extract.template is not None:
            yield ("eval", "metrics", i, "extract", "template"), extract.template
    keep = getattr(spec.method, "filter", None)
    if keep is not None and keep.extract is not None and keep.extract.template is not None:
        yield ("method", "filter", "extract", "template"), keep.extract.template


def _inspect_templates(ctx: Context) -> None:
    for path, ref in _template_refs(ctx.spec):
        key = ctx.key(*path)
        pos = ctx.pos(*path)
        if hasattr(ref, "file"):
            refusal = ctx.policy.outside(ctx.spec_dir / ref.file, ref.file)
            if refusal:
                ctx.issues.append(Issue(pos, key, refusal))
                continue
        try:
            resolved = tpl.resolve(ref, ctx.spec_dir, pos, key)
            ctx.templates[".".join(map(str, path))] = resolved
            ctx.parsed[".".join(map(str, path))] = tpl.parse(resolved, pos, key, ctx.spec_dir,
                                                             chat=path == ("format", "chat_template"),
                                                             budget=ctx.compile_budget)
        except SpecError as exc:
            ctx.issues.extend(exc.issues)
            if ctx.compile_budget.left <= 0:  # said once, at the template that ran out of it
                break


# --------------------------------------------------------------------------- the checks


def _columns_after_mapping(ctx: Context, info: SourceInfo) -> list[str]:
    rename = ctx.spec.data.rename
    return [rename.get(c, c) for c in info.columns] + list(ctx.spec.data.derive)


def check_rename(ctx: Context) -> Iterator[Issue]:
    """Renamed columns exist in the training data."""
    info = ctx.sources.get("train")
    if not info or not info.readable:
        return
    have = set(info.columns)
    missing = [old for old in ctx.spec.data.rename if old not in have]
    for old in missing[:tpl.MAX_NAME_ISSUES]:
        origin = ctx.at("data", "rename", old)
        yield Issue(origin.key_pos or origin.pos, ctx.key("data", "rename", old), f"no column '{old}' in {info.shown}",
                    tpl.close_match(old, info.columns) or f"columns: {tpl.listing(info.columns)}")


def check_template_names(ctx: Context) -> Iterator[Issue]:
    """Every name a template reads is a column, a derived column, or (for extraction) `text`."""
    info = ctx.sources.get("train")
    if not info or not info.readable:
        return
    rename = ctx.spec.data.rename
    base = [rename.get(c, c) for c in info.columns]
    available = list(base)
    problems: list[Issue] = []

    def names_of(names: set, path: tuple) -> None:
        left = tpl.MAX_NAME_ISSUES_IN_ALL - len(problems)
        if left > 0:
            problems.extend(tpl.check_names(names, available, ctx.pos(*path), ctx.key(*path), min(left, tpl.MAX_NAME_ISSUES)))
        elif set(names) - set(available) and not problems[-1].message.startswith("more templates"):
            problems.append(ctx.error(path, "more templates use names that are not columns (not listed: "
                                      f"{tpl.MAX_NAME_ISSUES_IN_ALL} are enough)"))

    for name in ctx.spec.data.derive:
        key = f"data.derive.{name}"
        if key in ctx.parsed:
            names_of(ctx.parsed[key][1], ("data", "derive", name))
        available.append(name)
    if "data.filter" in ctx.parsed:  # the filter sees the columns after renames and derived columns
        names_of(ctx.parsed["data.filter"][1], ("data", "filter"))
    # A training source only a distillation's teacher answers need not hold the answer's
    # columns: the answer templates are checked against the test source's columns instead.
    answers = answer_templates(ctx.spec) if "train" in answered_by_teacher(ctx.spec) else set()
    for key, (_, names) in ctx.parsed.items():
        if not key.startswith("format.") or key == "format.chat_template" or key in answers:
            continue
        names_of(names, tuple(int(p) if p.isdigit() else p for p in key.split(".")))
    test = ctx.sources.get("test")
    if answers and test is not None and test.readable:
        available = [rename.get(c, c) for c in test.columns] + list(ctx.spec.data.derive)
        for key in sorted(answers & set(ctx.parsed)):
            names_of(ctx.parsed[key][1], tuple(int(p) if p.isdigit() else p for p in key.split(".")))
    f = ctx.spec.format
    if isinstance(f, S.ChatFormat) and f.messages_column and f.messages_column not in available:
        problems.append(ctx.error(("format", "messages_column"), f"no column '{f.messages_column}'",
                        tpl.close_match(f.messages_column, available) or f"columns: {tpl.listing(available)}"))
    ctx.names_ok = not problems
    yield from problems


def check_sample_rows(ctx: Context) -> Iterator[Issue]:
    """The first rows of every split render through renames, derived columns and the format's templates."""
    formatter = _formatter(ctx)
    if formatter is None or not ctx.names_ok:
        return
    ctx.formatter = formatter
    for split in SPLITS:
        info = ctx.sources.get(split)
        if not info or not info.readable:
            continue
        reported = 0
        for row in info.sample:
            try:
                formatter(row.values)
            except Dropped:  # data.filter leaves the row out (check_filter reports a filter that cannot decide)
                continue
            except FormatError as exc:
                if exc.refused:  # the template's fault: one report, and no more rendering by any check
                    ctx.formatter = None
                    yield Issue(Pos(info.shown, row.number), exc.key, exc.message)
                    return
                if ctx.spec.data.on_bad_row == "skip":
                    continue
                yield Issue(Pos(info.shown, row.number), exc.key, exc.message)
                reported += 1
                if reported >= 5:  # the same mistake is usually on every row
                    break


class Dropped(FormatError):
    """A sample row that data.filter leaves out (``problem``: why the filter could not
    decide, when it rendered neither true nor false)."""

    def __init__(self, problem: str | None = None):
        super().__init__("data.filter", problem or "left out by data.filter")
        self.problem = problem


class _SampleFormatter:
    """A RowFormatter for the sample rows, within the run's rendering budget, that
    remembers each row's result: the checks and the compiler ask for the same rows
    more than once, and a template is rendered once per row. With ``row_filter``
    (data.filter), a row the filter leaves out raises :class:`Dropped`, as the
    runtime leaves it out before formatting."""

    def __init__(self, formatter: RowFormatter, row_filter: jinja2.Template | None = None, answerless: set[int] = frozenset()):
        self.formatter = formatter
        self.row_filter = row_filter
        self.done: dict[int, tuple[dict, Any]] = {}  # id(values) -> (values, record or FormatError)
        # Sample rows of the sources a distillation's teacher answers (id of their values):
        # formatted without their answers, as the run formats them.
        self.answerless = answerless

    def __getattr__(self, name):
        return getattr(self.formatter, name)

    def _format(self, values: dict) -> dict:
        answer = id(values) not in self.answerless
        if self.row_filter is None:
            return self.formatter(values, answer)
        from ftspec.data.splitting import filter_verdict, verdict_problem

        mapped = self.formatter.columns(values)
        text = self.formatter._render(self.row_filter, mapped, "data.filter", self.formatter.budget)
        verdict = filter_verdict(text)
        if not verdict:
            raise Dropped(None if verdict is False else verdict_problem(text))
        return self.formatter.render(mapped, answer)

    def __call__(self, values: dict) -> dict:
        hit = self.done.get(id(values))
        if hit is None or hit[0] is not values:
            try:
                result: Any = self._format(values)
            except FormatError as exc:
                result = exc
            hit = self.done[id(values)] = (values, result)
        if isinstance(hit[1], FormatError):
            raise hit[1]
        return hit[1]


def _formatter(ctx: Context) -> _SampleFormatter | None:
    """A formatter from the parsed templates, or None when a template did not parse."""
    f = ctx.spec.format
    needed = [k for k in ctx.parsed if k.startswith(("format.", "data.derive.")) or k == "data.filter"]
    wanted = [".".join(map(str, p)) for p, _ in _template_refs(ctx.spec) if p[0] in ("format", "data")]
    if set(wanted) - set(needed):
        return None
    derive = [(name, ctx.parsed[f"data.derive.{name}"][0]) for name in ctx.spec.data.derive]
    fields = {k.split(".", 1)[1]: t for k, (t, _) in ctx.parsed.items()
              if k.startswith("format.") and k.count(".") == 1 and k != "format.chat_template"}
    turns = []
    if isinstance(f, S.ChatFormat) and f.messages:
        turns = [(t.role, ctx.parsed[f"format.messages.{i}.content"][0]) for i, t in enumerate(f.messages)]
    row_filter = ctx.parsed["data.filter"][0] if "data.filter" in ctx.parsed else None
    answerless = {id(row.values) for split in answered_by_teacher(ctx.spec) if (info := ctx.sources.get(split))
                  for row in info.sample}
    return _SampleFormatter(RowFormatter(f.kind, dict(ctx.spec.data.rename), derive, fields, turns,
                                         getattr(f, "messages_column", None), budget=ctx.render_budget), row_filter,
                            answerless)


def answered_by_teacher(spec: S.Spec) -> set[str]:
    """The sources whose rows a distillation's teacher answers (see formatting.teacher_sources)."""
    from ftspec.data.formatting import teacher_sources

    d = spec.data
    sources = [s for s in SPLITS if getattr(d, s) is not None]
    return teacher_sources(isinstance(spec.method, S.DistillMethod), sources,
                           d.split is not None and d.split.test > 0 and d.test is None)


def answer_templates(spec: S.Spec) -> set[str]:
    """The keys of the templates that render a row's answer."""
    f = spec.format
    if isinstance(f, S.ChatFormat):
        keys = set()
        for i in reversed(range(len(f.messages or []))):  # the assistant turns that end the conversation
            if f.messages[i].role != "assistant":
                break
            keys.add(f"format.messages.{i}.content")
        return keys
    return {"format.completion"} if isinstance(f, S.PromptCompletionFormat) else set()


# What the non-row templates see when they are tried out at validate time.
_SAMPLE_MESSAGES = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]
_CHAT_CONTEXT = {"messages": _SAMPLE_MESSAGES, "add_generation_prompt": True, "bos_token": "<s>", "eos_token": "</s>",
                 "pad_token": "<pad>", "unk_token": "<unk>", "sep_token": "<sep>", "cls_token": "<cls>",
                 "mask_token": "<mask>", "additional_special_tokens": [], "tools": None, "documents": None}
# Conversations a chat template is tried on when the data gives none (hub data, say).
_TRIAL_CONVERSATIONS = [
    _SAMPLE_MESSAGES,
    [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}],
    [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"},
     {"role": "user", "content": "u2"}, {"role": "assistant", "content": "a2"}],
]


def _sample_conversations(ctx: Context) -> list[list[dict]]:
    """The conversations of the first sample rows that format, as the data gives them."""
    found: list[list[dict]] = []
    if ctx.formatter is None:
        return found
    for split in SPLITS:
        info = ctx.sources.get(split)
        if not info or not info.readable:
            continue
        for row in info.sample[:3]:
            try:
                record = ctx.formatter(row.values)
            except FormatError:
                continue
            if record.get("messages"):
                found.append(record["messages"])
        if found:
            break
    return found[:3]


_NEVER_GIVEN = re.compile(r"^'([A-Za-z_][A-Za-z0-9_]*)' is undefined$")


def _try_chat_template(ctx: Context, template: jinja2.Template) -> Iterator[Issue]:
    """A chat template must render the conversations this spec makes, both whole (for
    training) and as a prompt (for evaluation), and must not print a name that
    transformers never gives it (it would print nothing)."""
    path = ("format", "chat_template")
    data = _sample_conversations(ctx)
    conversations = data or _TRIAL_CONVERSATIONS
    failures: list[Exception] = []
    for messages in conversations:
        prompt = messages[:-1] if messages[-1]["role"] == "assistant" and len(messages) > 1 else messages
        for msgs, add in ((messages, False), (prompt, True)):
            try:
                tpl.render(template, {**_CHAT_CONTEXT, "messages": msgs, "add_generation_prompt": add}, budget=ctx.render_budget)
            except Exception as exc:  # any error: the template cannot render this conversation
                if tpl.is_refusal(exc):
                    yield ctx.error(path, tpl.describe_render_error(exc))
                    return
                name = _NEVER_GIVEN.match(getattr(exc, "message", "") or "") if isinstance(exc, jinja2.UndefinedError) else None
                if name and name.group(1) not in tpl.CHAT_NAMES:
                    yield ctx.error(path, f"the chat template prints '{name.group(1)}', which transformers never gives a chat "
                                    f"template (it would print nothing); it is given {', '.join(tpl.CHAT_NAMES)}")
                    return
                failures.append(exc)
    if failures and (data or len(failures) == 2 * len(conversations)):
        which = "this spec's conversations (from the first rows)" if data else "any conversation"
        yield ctx.error(path, f"the chat template cannot render {which}: {tpl.describe_render_error(failures[0])}")


def check_other_templates(ctx: Context) -> Iterator[Issue]:
    """Chat templates, extraction templates and judge rubrics are tried on sample
    values, so a hostile or broken one is refused now rather than in the middle of a run."""
    for key, (template, names) in ctx.parsed.items():
        path = tuple(int(p) if p.isdigit() else p for p in key.split("."))
        if key == "format.chat_template":
            yield from _try_chat_template(ctx, template)
            continue
        elif key.endswith("extract.template"):
            values = {"text": "sample answer 42"}
        elif key.endswith(".rubric"):
            values = {"prompt": "p", "reference": "r", "prediction": "p"}
        else:
            continue
        unknown = sorted(set(names) - set(values))
        if unknown:
            yield ctx.error(path, f"template uses '{unknown[0]}'; it can use only {', '.join(sorted(values))}")
            continue
        try:
            tpl.render(template, values, budget=ctx.render_budget)
        except Exception as exc:  # each kind of failure is the template's
            yield ctx.error(path, tpl.describe_render_error(exc))


def check_method_format(ctx: Context) -> Iterator[Issue]:
    """DPO needs preference data; SFT needs prompt/completion or chat data."""
    objective, fmt = ctx.spec.method.kind, ctx.spec.format.kind
    if objective == "dpo" and fmt != "preference":
        yield ctx.error(("format", "kind"), f"DPO trains on preference pairs; format.kind must be 'preference' (got '{fmt}')")
    if objective == "sft" and fmt == "preference":
        yield ctx.error(("format", "kind"), "preference data is for DPO; set method.kind: dpo, or use prompt_completion or chat for SFT")
    if objective == "distill" and fmt == "preference":
        yield ctx.error(("format", "kind"), "a teacher answers prompts: distillation needs prompt_completion or chat data, not preference pairs")
    if objective == "distill" and fmt == "chat" and ctx.spec.format.messages_column is not None:
        yield ctx.error(("format", "messages_column"), "the teacher answers the conversation's last turn: give format.messages "
                        "with a final assistant turn (its template is not rendered for the rows the teacher answers)")


def check_qlora_device(ctx: Context) -> Iterator[Issue]:
    """QLoRA's 4/8-bit base weights need bitsandbytes on a CUDA device."""
    adapter = ctx.spec.method.adapter
    if not isinstance(adapter, S.QLoraAdapter):
        return
    device = ctx.spec.compute.device
    if device in ("cpu", "mps"):
        yield ctx.error(("method", "adapter", "kind"), f"qlora needs a CUDA device (compute.device is '{device}')", "use lora, or compute.device: cuda")
    elif device == "auto":
        yield ctx.warning(("method", "adapter", "kind"), "qlora needs a CUDA device; the run fails on a machine without one")
    if isinstance(ctx.spec.model, S.TinyModel):
        yield ctx.error(("method", "adapter", "kind"), "qlora quantises a pretrained model; a tiny model from config is trained with lora or full")
    if device not in ("cpu", "mps") and not isinstance(ctx.spec.model, S.TinyModel) and not has_package("bitsandbytes"):
        yield ctx.error(("method", "adapter", "kind"), "qlora loads the base model in 4 or 8 bits through the bitsandbytes "
                        "package, which is not installed here", "pip install bitsandbytes, or use lora")


def has_package(name: str) -> bool:
    """Whether a package can be imported, found without importing it (validate stays light)."""
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def check_batching(ctx: Context) -> Iterator[Issue]:
    """Packing and length grouping are for SFT (trl's DPO trainer pads preference pairs
    itself), and packing needs an architecture that keeps packed rows apart."""
    mode = ctx.spec.training.batching
    if mode in ("packed", "length_grouped") and ctx.spec.method.kind == "dpo":
        yield ctx.error(("training", "batching"), f"DPO batches preference pairs itself; {mode} is for SFT (use padded or auto)")
    elif mode == "packed":
        model_type = ctx.model.model_type if ctx.model else None
        if model_type is None:
            ctx.not_checked.append("training.batching: whether the model keeps packed rows apart (architecture unknown offline)")
        elif model_type not in PACKABLE:
            yield ctx.error(("training", "batching"), f"packed rows are not known to stay apart in a {model_type} model; "
                            "use length_grouped or padded")


def check_precision(ctx: Context) -> Iterator[Issue]:
    """fp16 training needs a GPU."""
    c = ctx.spec.compute
    if c.precision == "fp16" and c.device == "cpu":
        yield ctx.error(("compute", "precision"), "fp16 training needs a GPU; on the CPU use bf16 or fp32")


def check_attention(ctx: Context) -> Iterator[Issue]:
    """FlashAttention runs on CUDA GPUs, in half precision."""
    c = ctx.spec.compute
    if c.attention != "flash_attention_2":
        return
    if c.device in ("cpu", "mps"):
        yield ctx.error(("compute", "attention"), f"flash_attention_2 needs a CUDA GPU, not device {c.device}", "use sdpa (the default) here")
    elif c.precision == "fp32":
        yield ctx.error(("compute", "attention"), "flash_attention_2 needs bf16 or fp16, not fp32", "set compute.precision: bf16")


def check_lora_targets(ctx: Context) -> Iterator[Issue]:
    """LoRA target modules exist in the model's architecture."""
    adapter = ctx.spec.method.adapter
    if not isinstance(adapter, S.LoraAdapter) or adapter.target_modules == "all-linear":
        return
    model_type = ctx.model.model_type if ctx.model else None
    known = LINEAR_MODULES.get(model_type or "")
    if known is None:
        if model_type:
            ctx.not_checked.append(f"method.adapter.target_modules: module names of architecture '{model_type}' are not known offline")
        return
    for i, name in enumerate(adapter.target_modules):
        if name not in known:
            yield ctx.error(("method", "adapter", "target_modules", i),
                            f"'{name}' is not a linear module of a {model_type} model ({', '.join(known)})",
                            did_you_mean(name, known))


def check_chat_template(ctx: Context) -> Iterator[Issue]:
    """Chat data needs a chat template: the spec's, or the tokenizer's own."""
    f = ctx.spec.format
    if not isinstance(f, S.ChatFormat) or f.chat_template is not None:
        return
    if ctx.model and ctx.model.has_chat_template is False:
        what = "a tiny model's tokenizer" if ctx.model.source == "tiny" else "this model's tokenizer"
        yield ctx.error(("format", "kind"), f"{what} has no chat template; set format.chat_template", "e.g. chat_template: {builtin: chatml}")


def check_splits(ctx: Context) -> Iterator[Issue]:
    """Split fractions apply only to splits without a file, and the stratify column exists."""
    split = ctx.spec.data.split
    if split is None:
        return
    for name in ("validation", "test"):
        if getattr(split, name) > 0 and getattr(ctx.spec.data, name) is not None:
            yield ctx.error(("data", "split", name), f"data.{name} is given, so no {name} rows are held out of train; remove one of them")
    if split.validation == 0 and split.test == 0:
        yield ctx.warning(("data", "split"), "holds out nothing (validation and test are both 0)")
    info = ctx.sources.get("train")
    if split.stratify and info and info.readable:
        available = _columns_after_mapping(ctx, info)
        if split.stratify not in available:
            yield ctx.error(("data", "split", "stratify"), f"no column '{split.stratify}' to stratify on",
                            tpl.close_match(split.stratify, available) or f"columns: {tpl.listing(available)}")


def has_validation(spec: S.Spec) -> bool:
    return spec.data.validation is not None or bool(spec.data.split and spec.data.split.validation > 0)


def has_test(spec: S.Spec) -> bool:
    return spec.data.test is not None or bool(spec.data.split and spec.data.split.test > 0)


def check_data_size(ctx: Context) -> Iterator[Issue]:
    """Fine-tuning pays off from a few hundred labelled rows; validation data shows over-fitting."""
    rows = ctx.train_rows_after_split
    if rows == 0:
        yield ctx.error(("data", "split"), "holds out every training row; nothing is left to train on")
        return
    if rows is not None and rows < MIN_TRAIN_ROWS:
        yield ctx.warning(("data", "train"), f"only {rows} training rows; fine-tuning usually needs {MIN_TRAIN_ROWS} or more to pay off")
    if not has_validation(ctx.spec):
        yield ctx.warning(("data",), "no validation data: over- and under-fitting cannot be watched",
                          "add data.validation or data.split.validation")


def check_model_revision(ctx: Context) -> Iterator[Issue]:
    """A hub model without a pinned revision can change under the spec."""
    m = ctx.spec.model
    if ctx.model and ctx.model.source == "hub" and not m.revision:
        yield ctx.warning(("model", "base"), f"hub model '{m.base}' has no pinned revision; set model.revision to a commit hash")


def check_max_length(ctx: Context) -> Iterator[Issue]:
    """Rows cannot be longer than the model's positions."""
    limit = ctx.model.max_positions if ctx.model else None
    if limit and ctx.spec.training.max_length and ctx.spec.training.max_length > limit:
        yield ctx.error(("training", "max_length"), f"longer than the model's {limit} positions (got {ctx.spec.training.max_length})")


def check_early_stopping(ctx: Context) -> Iterator[Issue]:
    """Early stopping watches the validation loss, so it needs validation data."""
    if ctx.spec.training.early_stopping is not None and not has_validation(ctx.spec):
        yield ctx.error(("training", "early_stopping"), "needs validation data (data.validation or data.split.validation)")


def metric_names(spec: S.Spec) -> list[str]:
    return [m.name for m in spec.eval.metrics]


def check_eval(ctx: Context) -> Iterator[Issue]:
    """The evaluation has a split to score, metrics that fit the format, and gates on declared metrics."""
    e = ctx.spec.eval
    if e.split == "test" and not has_test(ctx.spec):
        yield ctx.error(("eval", "split"), "no test split; add data.test or data.split.test")
    if e.split == "validation" and not has_validation(ctx.spec):
        yield ctx.error(("eval", "split"), "no validation split; add data.validation or data.split.validation")
    if e.split == "auto" and not has_test(ctx.spec) and not has_validation(ctx.spec):
        yield ctx.warning(("eval",), "no held-out split: the tuned model is not evaluated",
                          "add data.test or data.split.test")
    if e.mode == "choices" and ctx.spec.format.kind == "preference":
        yield ctx.error(("eval", "mode"), "choices mode scores labels of prompt/completion or chat data, not preference pairs")
    from ftspec.plan.evalmode import eval_split, resolve_for
    from ftspec.spec.schema import PREFERENCE_METRICS

    names = metric_names(ctx.spec) or default_metrics(ctx.spec, resolve_for(ctx, eval_split(ctx.spec)).mode)
    seen: set[str] = set()
    for i, name in enumerate(metric_names(ctx.spec)):
        if name in seen:
            yield ctx.error(("eval", "metrics", i), f"metric '{name}' is listed twice")
        seen.add(name)
        if name in PREFERENCE_METRICS and ctx.spec.format.kind != "preference":
            yield ctx.error(("eval", "metrics", i), f"{name} scores preference pairs (format.kind: preference)")
        elif name in ("reward_accuracy", "reward_margin") and not e.baseline:
            yield ctx.error(("eval", "metrics", i), f"{name} is DPO's reward, measured against the base model; "
                            "set eval.baseline: true")
    for gate in e.gates:
        metric = gate[len("improvement."):] if gate.startswith("improvement.") else gate
        if metric not in names:
            yield ctx.error(("eval", "gates", gate), f"gate on '{metric}', which is not among eval.metrics ({', '.join(names) or 'none'})",
                            did_you_mean(metric, names))
        elif gate.startswith("improvement.") and not e.baseline:
            yield ctx.error(("eval", "gates", gate), "an improvement gate compares with the base model; set eval.baseline: true")


def check_json_schemas(ctx: Context) -> Iterator[Issue]:
    """A json_schema metric names a readable JSON Schema file."""
    for i, metric in enumerate(ctx.spec.eval.metrics):
        if not isinstance(metric, S.JsonSchemaMetric):
            continue
        path = ctx.spec_dir / metric.schema_
        at = ("eval", "metrics", i, "schema")
        refusal = ctx.policy.outside(path, metric.schema_)
        if refusal:
            yield ctx.error(at, refusal)
            continue
        try:
            text = read_regular(path, MAX_SCHEMA_BYTES).decode("utf-8-sig")
            schema = json.loads(text)
        except TooLarge:
            yield ctx.error(at, f"schema file '{metric.schema_}' is larger than {MAX_SCHEMA_BYTES >> 20} MiB")
            continue
        except (UnicodeDecodeError, ValueError) as exc:
            yield ctx.error(at, f"schema file '{metric.schema_}' is not JSON: {exc}")
            continue
        except RecursionError:
            yield ctx.error(at, f"schema file '{metric.schema_}' nests too deeply")
            continue
        except OSError as exc:
            yield ctx.error(at, f"schema file '{metric.schema_}' {describe_os_error(exc)}")
            continue
        if not isinstance(schema, dict):
            yield ctx.error(at, f"schema file '{metric.schema_}' must hold a JSON object")
            continue
        ctx.schemas[i] = text


def _inputs(ctx: Context) -> list[Path]:
    """Every local file and folder this spec reads: the spec and its bases, data files,
    template files, schemas, local models and tokenizers."""
    found: list[Path] = [Path(p) for p in ctx.loaded.files] + [ctx.loaded.path]
    found += [info.path for info in ctx.sources.values() if info.path is not None]
    found += [ctx.spec_dir / ref.file for _, ref in _template_refs(ctx.spec) if hasattr(ref, "file")]
    for metric in ctx.spec.eval.metrics:
        if isinstance(metric, S.JsonSchemaMetric):
            found.append(ctx.spec_dir / metric.schema_)
        if isinstance(metric, S.JudgeMetric) and is_local_model(metric.model, ctx.spec_dir):
            found.append(ctx.spec_dir / os.path.expanduser(metric.model))
    m = ctx.spec.model
    for name in (getattr(m, "base", None), getattr(m, "tokenizer", None)):
        if isinstance(name, str) and is_local_model(name, ctx.spec_dir):
            found.append(ctx.spec_dir / os.path.expanduser(name))
    return found


def check_paths(ctx: Context) -> Iterator[Issue]:
    """The output directory stays inside the repository, away from every input (a run
    renames and removes files in it); local judge models stay inside too."""
    out = ctx.spec.output.dir.replace("{name}", ctx.spec.name)
    refusal = ctx.policy.outside(ctx.root / out, out)
    if refusal:
        yield ctx.error(("output", "dir"), refusal)
    else:
        from ftspec.store.rundir import STORE

        problem = output_problem(ctx.root / out, ctx.root, _inputs(ctx)) or _foreign_step_folder(ctx.root / out)
        if STORE in Path(os.path.normpath(out)).parts:
            problem = (f"is the step store ({STORE}) or inside it, where ftspec keeps the steps of every run "
                       "directory beside it; use a folder of its own, e.g. runs/{name}")
        if problem:
            yield ctx.error(("output", "dir"), f"'{out}' {problem}")
    for i, metric in enumerate(ctx.spec.eval.metrics):
        if not isinstance(metric, S.JudgeMetric):
            continue
        if is_local_model(metric.model, ctx.spec_dir):
            refusal = ctx.policy.outside(ctx.spec_dir / os.path.expanduser(metric.model), metric.model)
            if refusal:
                yield ctx.error(("eval", "metrics", i, "model"), refusal)
        else:
            problem = _hub_model_problem(ctx, metric.model)
            if problem:
                yield ctx.error(("eval", "metrics", i, "model"), problem)


def _foreign_step_folder(out: Path) -> str | None:
    """A run replaces its steps' folders (data, model, report, …) in the run directory:
    one that ftspec did not write (no step marker in it) would be lost."""
    from ftspec.plan import steps
    from ftspec.store.rundir import MARKER, STORE

    if out.exists() and not out.is_dir():
        return "is a file; the run directory is a folder"
    if not out.is_dir():
        return None
    for name in sorted({steps.folder(n) for n in steps.BY_NAME}):
        folder = out / name
        if folder.is_symlink() and os.readlink(folder).startswith(os.path.join("..", STORE) + os.sep):
            continue  # a link into the step store beside the run directory: ftspec's own
        if (folder.exists() or folder.is_symlink()) and not (folder / MARKER).is_file():
            return (f"holds '{name}', which a run would replace, and ftspec did not write it; "
                    "use a folder of its own, e.g. runs/{name}")
    return None


def _same_source(a: SourceInfo, b: SourceInfo) -> bool:
    if a.kind == "file" and b.kind == "file" and a.path is not None and b.path is not None:
        first, second = resolved(a.path)[0], resolved(b.path)[0]
        if first is not None and first == second:
            return True
        try:
            return os.path.samefile(a.path, b.path)
        except (OSError, ValueError):
            return False
    if a.kind == "hub" and b.kind == "hub":
        x, y = a.spec, b.spec
        return (x.hub, x.split, x.subset, x.revision) == (y.hub, y.split, y.subset, y.revision)
    return False


def held_out_fix(spec: S.Spec, split: str) -> str:
    """How to hold rows of the training file out for ``split``, in the spec's own words."""
    if spec.data.split is None:
        return f"remove data.{split} and hold rows out of data.train with data.split: {{{split}: 0.1}}"
    return f"remove data.{split} and add {split}: 0.1 to data.split"


def check_same_data(ctx: Context) -> Iterator[Issue]:
    """Held-out rows must not be the rows trained on: validation or test read from the
    training file measure memorisation, not generalisation."""
    train = ctx.sources.get("train")
    if train is None:
        return
    for split in ("validation", "test"):
        info = ctx.sources.get(split)
        if info is not None and _same_source(train, info):
            yield ctx.warning(("data", split), f"reads the same data as data.train: the model is {'validated' if split == 'validation' else 'tested'} "
                              "on rows it trained on", held_out_fix(ctx.spec, split))
    val, test = ctx.sources.get("validation"), ctx.sources.get("test")
    if val is not None and test is not None and _same_source(val, test):
        yield ctx.warning(("data", "test"), "reads the same data as data.validation; the test split should be rows "
                          "that nothing was tuned on")


def default_metrics(spec: S.Spec, mode: str | None = None) -> list[str]:
    """The metrics of an evaluation whose spec lists none (``mode``: the resolved eval mode)."""
    from ftspec.plan.evalmode import default_metrics as defaults

    return defaults(spec.format.kind, mode or spec.eval.mode, spec.eval.baseline)


def check_choices(ctx: Context) -> Iterator[Issue]:
    """In choices mode, the sampled references are among the allowed labels."""
    e = ctx.spec.eval
    if e.mode == "generate" or not e.choices or ctx.formatter is None:  # auto with choices is choices mode
        return
    allowed = set(e.choices)
    teacher = answered_by_teacher(ctx.spec)  # their answers are the teacher's, unknown until it runs
    for split in SPLITS:
        info = ctx.sources.get(split)
        if not info or not info.readable or split in teacher:
            continue
        for row in info.sample:
            try:
                record = ctx.formatter(row.values)
            except FormatError:
                continue
            ref = reference(ctx.spec.format.kind, record)
            if ref not in allowed:
                yield Issue(Pos(info.shown, row.number), "eval.choices",
                            f"the answer {ref!r} is not one of eval.choices ({tpl.listing(e.choices)})",
                            tpl.close_match(ref, e.choices))
                break


def check_filter(ctx: Context) -> Iterator[Issue]:
    """data.filter renders true or false for every sample row, and keeps some of them.
    What it keeps of each source's sample is counted (ctx.filter_counts) for the plan's rows."""
    if ctx.spec.data.filter is None or ctx.formatter is None:
        return
    for split in SPLITS:
        info = ctx.sources.get(split)
        if not info or not info.readable:
            continue
        kept = rendered = 0
        for row in info.sample:
            try:
                ctx.formatter(row.values)
            except Dropped as exc:
                if exc.problem:  # the filter's mistake, whatever the row: one report
                    yield ctx.error(("data", "filter"), f"{exc.problem} (row {info.shown}:{row.number})")
                    return
                rendered += 1
                continue
            except FormatError as exc:
                if exc.refused:  # out of rendering time: count what was rendered
                    break
            kept += 1
            rendered += 1
        ctx.filter_counts[split] = (kept, rendered)
        if rendered and not kept:
            if info.rows is not None and rendered >= info.rows:
                yield ctx.error(("data", "filter"), f"drops every row of {info.shown} ({info.rows} rows)")
            else:
                yield ctx.warning(("data", "filter"), f"drops each of the first {rendered} rows of {info.shown}; "
                                  "its rows are counted only when the data is prepared")


def check_batch_fits(ctx: Context) -> Iterator[Issue]:
    """One optimizer step should not need more rows than there are; with several
    processes, each needs a full batch, and a remainder is made up with repeated rows."""
    if ctx.spec.compute.backend == "bedrock":
        return  # Bedrock batches the rows itself (its batchSize: check_bedrock)
    rows = ctx.planned_rows()[0]["train"] if "train" in ctx.sources else None
    t = ctx.spec.training
    world = ctx.spec.compute.num_processes * ctx.spec.compute.num_nodes
    per_step = t.batch_size * t.gradient_accumulation * world
    if world > 1 and t.batching == "packed":
        # Packing turns rows into sequences of max_length: how many is known once the data is tokenized.
        ctx.not_checked.append("training.batch_size: whether the packed sequences divide across the processes "
                               "(their number is known when the data is prepared)")
        return
    if rows is None or rows <= 0:
        return
    per_round = t.batch_size * world  # one batch on each process
    if world > 1 and rows < per_round:
        yield ctx.error(("training", "batch_size"), f"{world} processes × batch {t.batch_size} take {per_round} rows at "
                        f"once but there are only {rows} training rows: each process needs a full batch",
                        f"lower training.batch_size to {max(rows // world, 1)} or fewer, or use fewer processes")
        return
    if rows < per_step:
        yield ctx.warning(("training", "batch_size"), f"one optimizer step takes {per_step} rows but there are only {rows}")
    if world > 1 and rows % per_round:
        repeated = per_round - rows % per_round
        yield ctx.warning(("training", "batch_size"), f"{rows} training rows do not divide into batches of {t.batch_size} "
                          f"on {world} processes ({per_round} rows at once): the last batch of each epoch is completed "
                          f"with {repeated} repeated row{'s' if repeated != 1 else ''} (accelerate's even_batches)",
                          f"a batch size or process count that divides {rows} avoids it")


def _sharded(ctx: Context) -> str | None:
    """'fsdp' or 'ZeRO stage 3' where the strategy shards the parameters themselves."""
    c = ctx.spec.compute
    if c.strategy == "fsdp":
        return "fsdp"
    if c.strategy == "deepspeed" and (c.deepspeed.zero_stage if c.deepspeed else 2) == 3:
        return "DeepSpeed ZeRO stage 3"
    return None


def check_strategy(ctx: Context) -> Iterator[Issue]:
    """compute.fsdp / compute.deepspeed belong to their strategy, and each strategy to
    the devices its engine runs on."""
    c = ctx.spec.compute
    if c.fsdp is not None and c.strategy != "fsdp":
        yield ctx.error(("compute", "fsdp"), f"FSDP settings are given but compute.strategy is '{c.strategy}'",
                        "set compute.strategy: fsdp, or remove compute.fsdp")
    if c.deepspeed is not None and c.strategy != "deepspeed":
        yield ctx.error(("compute", "deepspeed"), f"DeepSpeed settings are given but compute.strategy is '{c.strategy}'",
                        "set compute.strategy: deepspeed, or remove compute.deepspeed")
    if c.device == "mps" and (c.strategy != "none" or c.num_processes * c.num_nodes > 1):
        yield ctx.error(("compute", "device"), f"strategy {c.strategy} needs torch.distributed, which has no MPS backend",
                        "train in one process on mps (strategy: none), or use cpu with ddp, or cuda")
    elif c.strategy == "fsdp" and c.device == "cpu":
        # accelerate 1.15 sets DistributedType.MULTI_CPU there and wraps the model in
        # DistributedDataParallel: nothing would be sharded, and nothing would say so.
        yield ctx.error(("compute", "strategy"), "fsdp runs only on CUDA GPUs: on the CPU accelerate silently trains "
                        "plain DDP instead (nothing is sharded)", "use strategy: ddp on the CPU")
    elif c.strategy == "deepspeed" and c.device == "cpu":
        yield ctx.error(("compute", "strategy"), "deepspeed needs CUDA GPUs; it does not train on the CPU",
                        "use strategy: ddp on the CPU")
    if c.strategy == "deepspeed" and c.device != "cpu" and not has_package("deepspeed"):
        yield ctx.warning(("compute", "strategy"), "the deepspeed package is not installed here; the run refuses to start "
                          "without it", "pip install deepspeed on the machines that train")
    if c.deepspeed is not None and c.deepspeed.offload_params and c.deepspeed.zero_stage < 3:
        yield ctx.error(("compute", "deepspeed", "offload_params"), f"parameters are partitioned, and so offloaded, only "
                        f"at ZeRO stage 3 (zero_stage is {c.deepspeed.zero_stage})",
                        "set compute.deepspeed.zero_stage: 3, or offload_params: false")
    if c.strategy == "fsdp" and ctx.spec.training.gradient_checkpointing:
        yield ctx.error(("training", "gradient_checkpointing"), "under fsdp, transformers' gradient checkpointing adds a "
                        "redundant all-gather of each layer in the backward",
                        "set compute.fsdp.activation_checkpointing: true instead (FSDP's own)")


def check_qlora_sharding(ctx: Context) -> Iterator[Issue]:
    """FSDP and ZeRO-3 shard QLoRA's quantised weights with the others: 4-bit only, stored
    in the dtype the base model loads in."""
    from ftspec.plan.compute import load_dtype

    adapter = ctx.spec.method.adapter
    sharded = _sharded(ctx)
    if not isinstance(adapter, S.QLoraAdapter) or sharded is None:
        return
    if adapter.bits == 8:
        yield ctx.error(("method", "adapter", "bits"), f"8-bit weights cannot be sharded under {sharded}",
                        "use bits: 4, or strategy ddp")
    dtype = load_dtype(getattr(ctx.spec.model, "dtype", None))
    if adapter.quant_storage not in ("auto", dtype):
        yield ctx.error(("method", "adapter", "quant_storage"), f"under {sharded} the 4-bit weights are sharded with the "
                        f"other parameters and must be stored in the dtype the base loads in ({dtype}), not "
                        f"{adapter.quant_storage}", f"set quant_storage: auto (or {dtype})")


def check_fsdp_wrap(ctx: Context) -> Iterator[Issue]:
    """The classes FSDP is told to wrap should include the model's decoder layer."""
    from ftspec.plan.compute import decoder_layer

    c = ctx.spec.compute
    if c.strategy != "fsdp" or c.fsdp is None or c.fsdp.wrap == "auto":
        return
    from ftspec.plan.build import _architectures

    layer = decoder_layer(ctx.model.model_type if ctx.model else None, _architectures(ctx))
    if layer is None:
        ctx.not_checked.append("compute.fsdp.wrap: whether the classes exist in the model (its decoder layer is not known offline)")
    elif layer not in c.fsdp.wrap:
        yield ctx.warning(("compute", "fsdp", "wrap"), f"does not name {layer}, the decoder layer of a "
                          f"{ctx.model.model_type} model: FSDP then shards in units other than the layers",
                          f"wrap: [{layer}], or auto; a class the model lacks stops the run")


def check_bedrock(ctx: Context) -> Iterator[Issue]:
    """compute.backend bedrock and a Bedrock model go together; the model id belongs to a
    known family (ftspec.catalog.bedrock_families), which decides the customizations, the
    hyperparameters and their ranges, and what of ftspec's settings applies at all."""
    from ftspec.catalog import bedrock_families as families

    spec = ctx.spec
    m, c, t = spec.model, spec.compute, spec.training
    on_bedrock = c.backend == "bedrock"
    bedrock_model = isinstance(m, S.BedrockModel)
    if on_bedrock and not bedrock_model:
        yield ctx.error(("compute", "backend"), "the bedrock backend customises a Bedrock base model, not a local one",
                        "set model: {kind: bedrock, id: MODEL_ID}, or compute.backend: local")
    if bedrock_model and not on_bedrock:
        yield ctx.error(("model", "kind"), "a Bedrock model is customised by Amazon Bedrock; set compute.backend: bedrock "
                        "(with compute.bedrock)")
    if c.bedrock is not None and not on_bedrock:
        yield ctx.error(("compute", "bedrock"), f"Bedrock settings are given but compute.backend is '{c.backend}'",
                        "set compute.backend: bedrock, or remove compute.bedrock")
    if on_bedrock and c.bedrock is None:
        yield ctx.error(("compute", "backend"), "bedrock needs compute.bedrock: region, role_arn and s3 at least")
    if t.learning_rate_multiplier is not None and not (on_bedrock and bedrock_model):
        yield ctx.error(("training", "learning_rate_multiplier"), "is for Amazon Bedrock models that take a learning-rate "
                        "multiplier; a local run takes training.learning_rate")
    if not (on_bedrock and bedrock_model and c.bedrock is not None):
        return
    found = families.find(m.id)
    if found is None:
        yield ctx.error(("model", "id"), f"'{m.id}' is not a Bedrock base model ftspec can customise; known families: "
                        f"{families.known_models()}")
        return
    family, model = found
    b = c.bedrock
    if b.customization not in model.customizations:
        yield ctx.error(("compute", "bedrock", "customization"), f"{model.label} offers {' and '.join(model.customizations)}, "
                        f"not {b.customization}")
    if b.customization == "distillation":
        if b.teacher_model is None:
            yield ctx.error(("compute", "bedrock", "customization"), "distillation needs compute.bedrock.teacher_model",
                            f"{model.label} may learn from {model.teachers_shown}" if model.teachers_shown else None)
        elif model.teachers and not families.is_teacher(model, b.teacher_model):
            yield ctx.error(("compute", "bedrock", "teacher_model"), f"'{b.teacher_model}' is not a teacher {model.label} "
                            f"may learn from; it may learn from {model.teachers_shown}")
    else:
        for name in ("teacher_model", "max_response_length"):
            if getattr(b, name) is not None:
                yield ctx.error(("compute", "bedrock", name), f"is for distillation (customization is {b.customization})")
    if b.model_units is not None and b.serve != "provisioned":
        yield ctx.error(("compute", "bedrock", "model_units"), f"is for serve: provisioned (serve is {b.serve})")
    if b.serve == "provisioned" and b.model_units is None:
        yield ctx.error(("compute", "bedrock", "serve"), "provisioned throughput needs compute.bedrock.model_units")
    for name in sorted(c.model_fields_set - {"backend", "bedrock"}):
        yield ctx.error(("compute", name), "does not apply to a Bedrock job, which runs on AWS's machines",
                        f"remove compute.{name}")
    method = spec.method
    if method.kind == "dpo":
        yield ctx.error(("method", "kind"), "Amazon Bedrock customization jobs do not train on preference pairs (no DPO)",
                        "use method.kind: sft")
    if method.kind == "distill":
        yield ctx.error(("method", "kind"), "on Bedrock, distillation is the job's own customization",
                        "use method.kind: sft with compute.bedrock.customization: distillation and teacher_model")
    if "adapter" in method.model_fields_set:
        yield ctx.error(("method", "adapter"), "Amazon Bedrock chooses how the model is trained; there is no choice of "
                        "adapter", "remove method.adapter")
    for key, message in families.hyperparameters(t, model)[1]:
        yield ctx.error(key, message)
    if spec.format.kind not in ("prompt_completion", "chat"):
        yield ctx.error(("format", "kind"), f"{family.name} customization jobs train on prompt_completion or chat rows "
                        f"(got {spec.format.kind})")
    if spec.eval.mode == "choices":
        yield ctx.error(("eval", "mode"), "a Bedrock model answers through the Converse API, which gives no "
                        "log-probabilities to score choices with", "use eval.mode: generate (or auto)")
    for i, name in enumerate(metric_names(spec)):
        if name == "perplexity":  # the model's token probabilities; Converse returns text only
            yield ctx.error(("eval", "metrics", i), "perplexity needs the model's token probabilities, which "
                            "Bedrock's Converse API does not return", "score the answers instead (accuracy, rouge_l, …)")
    rows = ctx.planned_rows()[0] if "train" in ctx.sources else {}
    lim = model.limits
    train, validation = rows.get("train"), rows.get("validation")
    if train is not None and lim.train_rows_min is not None and train < lim.train_rows_min:
        yield ctx.error(("data", "train"), f"{train} training rows; a {model.label} job needs at least {lim.train_rows_min}")
    if train is not None and lim.train_rows_max is not None and train > lim.train_rows_max:
        yield ctx.error(("data", "train"), f"{train} training rows; a {model.label} job takes at most {lim.train_rows_max}",
                        "cut them with data.limit: {train: N}")
    if validation is not None and lim.validation_rows_max is not None and validation > lim.validation_rows_max:
        where = ("data", "validation") if spec.data.validation is not None else ("data", "split", "validation")
        yield ctx.error(where, f"{validation} validation rows; a {model.label} job takes at most {lim.validation_rows_max}")


CHECKS: list[Callable[[Context], Iterable[Issue]]] = [
    check_rename,
    check_template_names,
    check_sample_rows,
    check_filter,
    check_other_templates,
    check_method_format,
    check_qlora_device,
    check_precision,
    check_attention,
    check_batching,
    check_lora_targets,
    check_chat_template,
    check_splits,
    check_data_size,
    check_model_revision,
    check_max_length,
    check_early_stopping,
    check_eval,
    check_json_schemas,
    check_paths,
    check_same_data,
    check_choices,
    check_batch_fits,
    check_strategy,
    check_qlora_sharding,
    check_fsdp_wrap,
    check_bedrock,
]


# The spec keys each check reads (dotted prefixes). When the schema refused part of a
# spec, the rest is still checked (validate.salvage): a check runs only when nothing it
# reads was set aside, and a check not listed here does not run then.
READS: dict[str, tuple[str, ...]] = {
    "check_rename": ("data.train", "data.rename"),
    "check_template_names": ("data.train", "data.rename", "data.derive", "format"),
    "check_sample_rows": ("data.train", "data.validation", "data.test", "data.rename", "data.derive",
                          "data.filter", "data.on_bad_row", "format"),
    "check_filter": ("data", "format"),
    "check_splits": ("data",),
    "check_data_size": ("data",),
    "check_same_data": ("data.train", "data.validation", "data.test"),
    "check_method_format": ("method", "format"),
    "check_chat_template": ("format", "model"),
    "check_lora_targets": ("method", "model"),
    "check_model_revision": ("model",),
    "check_precision": ("compute",),
    "check_attention": ("compute",),
    "check_strategy": ("compute", "training.gradient_checkpointing"),
    "check_qlora_sharding": ("method", "compute", "model"),
    "check_fsdp_wrap": ("compute", "model"),
    "check_bedrock": ("model", "compute", "method", "training", "data", "eval"),
    "check_json_schemas": ("eval",),
    "check_other_templates": ("format", "eval"),
}


def _overlaps(key: str, aside: Iterable[str]) -> bool:
    return any(key == a or key.startswith(a + ".") or a.startswith(key + ".") for a in aside)


def run_checks(ctx: Context, aside: tuple[str, ...] = ()) -> list[Issue]:
    """Every check's issues. ``aside``: spec keys the schema refused and that were set
    aside (see validate.salvage); what reads them is not checked, nor reported."""
    from ftspec.checks.silent import QUIET_CHECKS, QUIET_READS

    issues = list(ctx.issues)
    reads = {**READS, **QUIET_READS}
    for check in CHECKS + QUIET_CHECKS:
        if aside and (check.__name__ not in reads or any(_overlaps(k, aside) for k in reads[check.__name__])):
            continue
        issues.extend(check(ctx))
    if aside:
        issues = [i for i in issues if not _overlaps(i.key, aside)]
    return issues


__all__ = ["inspect", "run_checks", "Context", "CHECKS", "ERROR", "WARNING"]
