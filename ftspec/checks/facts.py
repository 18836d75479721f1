"""What the checks and the compiler know of a spec beyond its text, gathered once by
:func:`inspect`: the data files' columns, a sample of rows, row counts; the templates'
text and the names they use; what can be known of the model offline (its folder, its
config, a GGUF header, the local Hugging Face cache); what is installed. This is the
only module of the checks that reads files or looks at models; the rules
(ftspec.checks.rules) judge what it gathered.

Nothing here touches the network: a hub model or dataset is looked at as far as the
local cache allows, and the rest is listed as not checked.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import jinja2

from ftspec.catalog.architectures import GGUF_LOADABLE, architecture
from ftspec.checks.mixture import PartCounts, map_parts, mixture_counts
from ftspec.core.errors import WARNING, Issue, Pos, SpecError, did_you_mean
from ftspec.core.paths import (
    PathPolicy,
    describe_os_error,
    file_problem,
    hub_id_problem,
    local_shadow,
    read_regular,
    resolved,
)
from ftspec.data import templates as tpl
from ftspec.data.formatting import RowFormatter
from ftspec.data.gguf import GGUFError, gguf_location
from ftspec.data.gguf import read_header as read_gguf_header
from ftspec.data.sources import MAX_COLUMNS, RowError, ScanBudget, count_lines, infer_format, parquet_rows, read_rows
from ftspec.data.splitting import SPLITS, split_counts
from ftspec.spec import schema as S
from ftspec.spec.load import LoadedSpec, Origin

SAMPLE_ROWS = 200
# What one validate may spend, in all, whatever the spec holds: every row of the local
# data files is parsed up to SCAN_ROWS rows and SCAN_BYTES bytes (beyond, JSON Lines rows
# are counted, the rest is parsed when the data is prepared), and all the renderings
# of sample rows and trial values together take at most sandbox.MAX_STEPS_IN_ALL steps
# of work, all the templates compiled at most sandbox.MAX_COMPILE_TOKENS jinja tokens.
SCAN_ROWS = 300_000
SCAN_BYTES = 256 << 20
RENDER_BUDGET = 30.0  # seconds: a backstop for the step budget of the renderings, for work it misses
COMPILE_BUDGET = 10.0  # seconds: a backstop for the token budget of compiling the templates
SAMPLE_BYTES = 64 << 20  # the sample rows kept, of all splits together (rows can be 16 MiB each)
EXTRACT_SECONDS = 1.0  # and all the metrics' answer extractions of sampled references at most this
MAX_SCHEMA_BYTES = 4 << 20


@dataclass
class Budgets:
    """What one ``validate`` or ``plan`` may spend, made once per command and shared by
    every stage of its spec (a spec of ten stages spends no more than a spec of one)."""

    scan: ScanBudget = field(default_factory=lambda: ScanBudget(SCAN_ROWS, SCAN_BYTES))
    render: tpl.RenderBudget = field(default_factory=lambda: tpl.RenderBudget(RENDER_BUDGET))
    compile: tpl.RenderBudget = field(default_factory=lambda: tpl.RenderBudget(COMPILE_BUDGET))
    extract: tpl.RenderBudget = field(default_factory=lambda: tpl.RenderBudget(EXTRACT_SECONDS))
    sample_bytes: int = field(default_factory=lambda: SAMPLE_BYTES)  # what is left of it
    # Templates compiled so far, by (text, as a chat template): stages that share a template
    # compile it once, so that sharing the compile budget costs a spec of stages nothing.
    compiled: dict[tuple[str, bool], tuple[jinja2.Template, set[str]]] = field(default_factory=dict)


def rel(path: Path, root: Path) -> str:
    """A path as the plan records it: relative to the repository root, with forward slashes,
    ``../shared/x`` for a file outside it (``--allow-path``). Never absolute: the plan's id and
    its step keys are the same wherever the repository and its data sit, as long as they sit
    the same way to each other. The name as the spec wrote it (normalised) where it leads to the
    same file from the root; else the way there with every symbolic link followed (a folder of
    the spec linked elsewhere), which ``root / name`` opens all the same."""
    base = resolved(root)[0] or Path(os.path.abspath(root))
    written = os.path.relpath(os.path.abspath(path), base)
    real = resolved(path)[0]
    if real is None or resolved(base / written)[0] == real:
        return Path(written).as_posix()
    return Path(os.path.relpath(real, base)).as_posix()


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
    spec: Any = None  # the FileSource / HubSource (a mixture's part: FileMixtureSource / HubMixtureSource)
    name: str = ""  # a mixture's part: its name
    at: tuple = ()  # its spec key path: ("data", "train") or a mixture's part ("data", "train", 2)


@dataclass
class ModelInfo:
    source: str  # hub | local | tiny
    model_type: str | None = None
    has_chat_template: bool | None = None  # None: could not tell
    chat_template: str | None = None  # its text, where the model's files hold it
    chat_template_problem: str | None = None  # why a chat template file the model has cannot be read
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
    reward_schemas: dict[int, str] = field(default_factory=dict)  # method.rewards index -> JSON Schema text
    reward_code: dict[int, Any] = field(default_factory=dict)  # method.rewards index -> its file (path, sha256)
    budgets: Budgets = field(default_factory=Budgets)  # the command's, shared with the other stages
    # A key of each training row parsed, kept when a validation or test file is read
    # too: held-out rows that are training rows are found by it (quiet.check_held_out_overlap).
    train_keys: set[int] = field(default_factory=set)
    # data.train as a list (a mixture): each part, its sample rows mapped by its own rename and
    # derive; sources["train"] is then all of them together (ftspec.checks.mixture).
    parts: list[SourceInfo] = field(default_factory=list)

    @property
    def scan(self) -> ScanBudget:
        return self.budgets.scan

    @property
    def render_budget(self) -> tpl.RenderBudget:
        return self.budgets.render

    @property
    def compile_budget(self) -> tpl.RenderBudget:
        return self.budgets.compile

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
        if self.parts:
            return self.mixture_counts()[0]["train"]
        sources = {s: self.source_rows(s)[0] for s in self.sources}
        return split_counts(sources, self.spec.data.split, None)["train"] if "train" in sources else None

    def own_sources(self) -> list[tuple[str, SourceInfo]]:
        """Each source read, by its key: the splits', a mixture's parts in place of its training split."""
        return [(split if info.kind != "mixture" else part.key, part) for split in SPLITS
                if (info := self.sources.get(split)) for part in (self.parts if info.kind == "mixture" else [info])]

    def source_info(self, key: str) -> SourceInfo | None:
        """A split's source, or a mixture's part by its key (``data.train.1``)."""
        return self.sources.get(key) or next((p for p in self.parts if p.key == key), None)

    def source_rows(self, split: str) -> tuple[int | None, bool]:
        """Rows one source gives after data.filter, and whether that is an estimate: the
        filter renders the sample rows only, and the share it keeps there stands for the rest.
        ``split``: a split, or a mixture's part by its key (``data.train.1``)."""
        info = self.source_info(split)
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
        if self.parts:
            counts, _, estimated = self.mixture_counts(limit=True)
            return counts, estimated
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
        return counts, [s for s in SPLITS if counts[s] is not None and floor[s] != counts[s]]

    def mixture_counts(self, limit: bool = False) -> tuple[dict[str, int | None], list[PartCounts], list[str]]:
        """A mixture's rows: of each split (after data.limit with ``limit``), of each part
        (available, drawn, held out), and the splits whose count is an estimate."""
        rows = {s: self.source_rows(s)[0] for s in ("validation", "test") if s in self.sources}
        parts = [self.source_rows(p.key) for p in self.parts]
        lower = [(self.filter_counts[p.key][0] if estimate else n) for p, (n, estimate) in zip(self.parts, parts)]
        cut = self.spec.data.limit if limit else None
        counts, per_part = mixture_counts(self.spec.data, [n for n, _ in parts], rows, cut)
        if lower == [n for n, _ in parts]:
            return counts, per_part, []
        floor = mixture_counts(self.spec.data, lower, rows, cut)[0]
        return counts, per_part, [s for s in SPLITS if counts[s] is not None and floor[s] != counts[s]]


# --------------------------------------------------------------------------- gathering


def inspect(loaded: LoadedSpec, spec: S.Spec, policy: PathPolicy | None = None,
            budgets: Budgets | None = None) -> Context:
    """What is known of one effective spec. ``budgets``: the command's, when it checks
    several stages (each stage's reads and renderings count against the same ones)."""
    spec_dir = loaded.path.resolve().parent
    policy = policy or PathPolicy.for_spec(loaded.path)
    ctx = Context(loaded, spec, spec_dir, policy.root, policy, budgets=budgets or Budgets())
    inspect_model(ctx)
    _inspect_tokenizer(ctx)
    # Each source by its key path, the parts of a mixture at data.train.0, data.train.1, …
    sources = [((("data", split, i) if isinstance(source, list) else ("data", split)), split, item)
               for split in SPLITS if (source := getattr(spec.data, split)) is not None
               for i, item in (enumerate(source) if isinstance(source, list) else [(None, source)])]
    files = [at for at, _, item in sources if isinstance(item, S.FileSource)]
    for at, split, item in sources:
        later = len(files) - files.index(at) - 1 if at in files else 0
        info = _inspect_source(ctx, split, item, later, at)
        if len(at) == 3:
            info.name = item.source_name()
            ctx.parts.append(info)
        else:
            ctx.sources[split] = info
    _inspect_templates(ctx)
    if ctx.parts:
        ctx.sources["train"] = SourceInfo("train", "data.train", ctx.at("data", "train"), "mixture", **map_parts(ctx))
    return ctx


def _inspect_source(ctx: Context, split: str, source: Any, later: int = 0, at: tuple = ()) -> SourceInfo:
    at = at or ("data", split)
    key = ".".join(map(str, at))
    info = SourceInfo(split, key, ctx.at(*at), "hub" if isinstance(source, S.HubSource) else "file", spec=source,
                      at=at)
    _read_source(ctx, info, source, later)
    return info


def _read_source(ctx: Context, info: SourceInfo, source: Any, later: int) -> None:
    at, split = info.at, info.split
    if info.kind == "hub":
        info.shown = f"hub:{source.hub}"
        problem = _hub_dataset_problem(ctx, source.hub)
        if problem:
            ctx.issues.append(ctx.error((*at, "hub") if (*at, "hub") in ctx.loaded.where else at, problem))
            return
        ctx.not_checked.append(f"{info.key}: hub dataset '{source.hub}' is read when the data is prepared; its "
                               "columns and rows are not checked offline")
        return
    path = ctx.spec_dir / source.path
    info.path = path
    info.shown = _shown(path)
    pos = ctx.pos(*at, "path") if (*at, "path") in ctx.loaded.where else ctx.pos(*at)
    key = f"{info.key}.path" if (*at, "path") in ctx.loaded.where else info.key
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
        ctx.issues.append(Issue(pos, key, f"cannot tell the format of '{source.path}' from its name",
                                "set format: jsonl, json, csv, tsv or parquet"))
        return
    info.format = fmt
    on_bad = ctx.spec.data.on_bad_row
    skipped: list[RowError] = []
    # One pass over the file: every row is parsed (within the run's budget), the
    # first ones are kept as the sample that templates are tried on.
    # What is left of the run's budget, less a share kept for each file still to read
    # (a large training file leaves its validation and test files parsed in full).
    share = SCAN_ROWS // 6, SCAN_BYTES // 6
    budget = ScanBudget(max(ctx.scan.rows - later * share[0], SAMPLE_ROWS),
                        max(ctx.scan.bytes - later * share[1], 1 << 20))
    start = budget.rows, budget.bytes
    rows = 0
    keep_keys = split == "train" and later > 0
    try:
        try:
            for row in read_rows(path, fmt, info.shown, source.columns, source.header, source.field,
                                 on_bad_row=on_bad, skipped=skipped, budget=budget):
                if len(info.sample) < SAMPLE_ROWS and (row.size <= ctx.budgets.sample_bytes or not info.sample):
                    info.sample.append(row)
                    ctx.budgets.sample_bytes -= row.size
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
                           f"{SCAN_ROWS} rows and {SCAN_BYTES >> 20} MiB in all); "
                           "they are checked when the data is prepared")
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


def inspect_model(ctx: Context) -> None:
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
            ctx.issues.append(ctx.error(("model", "base"), f"'{m.base}' has no config.json; "
                                                           "is it a transformers model folder?"))
            return
        weights = [p for p in path.iterdir() if p.suffix in (".safetensors", ".bin") or p.name.endswith(".index.json")]
        if not weights:
            ctx.issues.append(ctx.error(("model", "base"), f"'{m.base}' holds no weights (*.safetensors or *.bin)"))
        _read_model_files(info, path)
        return
    info = ModelInfo("hub")
    ctx.model = info
    problem = hub_model_problem(ctx, m.base)
    if problem:
        ctx.issues.append(ctx.error(("model", "base"), problem))
        return
    snap = _hub_snapshot(m.base, m.revision)
    if snap is None or not (snap / "config.json").is_file():
        ctx.not_checked.append(f"model.base: '{m.base}' is not in the local cache; its architecture, LoRA target "
                               "modules and chat template are not checked")
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
        problem = file_problem(path)
        if problem == "not found":
            present = sorted(p.name for p in where.iterdir() if p.name.lower().endswith(".gguf"))
            ctx.issues.append(ctx.error(key, f"no GGUF file '{name}' in '{folder}'",
                                        did_you_mean(name, present)
                                        or (f"it holds: {', '.join(present)}" if present else None)))
            return
        if problem:  # a folder, a FIFO, a device: said as what it is
            ctx.issues.append(ctx.error(key, f"the GGUF file '{name}' in '{folder}' {problem}"))
            return
    else:
        problem = hub_model_problem(ctx, folder)
        if problem:
            ctx.issues.append(ctx.error(("model", "base"), problem))
            return
        snap = _hub_snapshot(folder, m.revision)
        if snap is None or not (snap / name).is_file():
            ctx.not_checked.append(f"model.gguf_file: '{name}' of hub repository '{folder}' is not in the local cache; "
                                   "its architecture, context length, vocabulary, LoRA target modules and chat "
                                   "template are not checked")
            return
        path = snap / name
    try:
        header = read_gguf_header(path)
    except (OSError, GGUFError) as exc:
        ctx.issues.append(ctx.error(key, f"cannot read the GGUF file '{name}': {exc}"))
        return
    if not header.loadable:
        ctx.issues.append(ctx.error(key, f"'{name}' holds a model of architecture '{header.architecture}', which "
                                         "transformers cannot load from GGUF", f"it loads: {', '.join(GGUF_LOADABLE)}"))
        return
    if header.vocab_size is None and m.tokenizer is None:
        ctx.issues.append(ctx.error(key, f"'{name}' holds no tokenizer (no tokenizer.ggml.tokens in its header)",
                                    "name one in model.tokenizer"))
    info.model_type = header.model_type
    info.max_positions = header.context_length
    info.has_chat_template = header.chat_template is not None
    info.chat_template = header.chat_template
    info.vocab_size = header.vocab_size


def hub_model_problem(ctx: Context, name: str) -> str | None:
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
    problem = hub_model_problem(ctx, name)
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
        info.max_positions = (positions if isinstance(positions, int) and not isinstance(positions, bool)
                              and positions > 0 else None)
    tok_cfg = folder / "tokenizer_config.json"
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        info.has_chat_template = True
    elif tok_cfg.is_file():
        value = _read_json(tok_cfg)
        info.has_chat_template = bool(value.get("chat_template")) if isinstance(value, dict) else None
    info.chat_template, info.chat_template_problem = _chat_template_text(folder)


def _chat_template_text(folder: Path) -> tuple[str | None, str | None]:
    """The chat template transformers gives a tokenizer loaded from ``folder``: the text of
    chat_template.jinja, else chat_template.json's, else tokenizer_config.json's (of a
    list of named templates, the `default` one), and None; or (None, why) where such a file
    is there but cannot be read (transformers would fail on it too); (None, None) where there is none."""
    if (folder / "chat_template.jinja").is_file():
        try:
            return read_regular(folder / "chat_template.jinja", tpl.MAX_TEMPLATE_BYTES).decode("utf-8"), None
        except (OSError, ValueError) as exc:
            reason = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else describe_os_error(exc) \
                if isinstance(exc, OSError) else str(exc)
            return None, f"its chat_template.jinja cannot be read: {reason}"
    for name in ("chat_template.json", "tokenizer_config.json"):
        if (folder / name).is_file():
            value = _read_json(folder / name)
            if value is None:
                return None, f"its {name} cannot be read as JSON"
            template = value.get("chat_template") if isinstance(value, dict) else None
            if isinstance(template, list):  # named templates: transformers uses `default`
                template = next((t.get("template") for t in template
                                 if isinstance(t, dict) and t.get("name") == "default"), None)
            return (template if isinstance(template, str) and template.strip() else None), None
    return None, None
    for name in ("chat_template.json", "tokenizer_config.json"):
        if (folder / name).is_file():
            value = _read_json(folder / name)
            template = value.get("chat_template") if isinstance(value, dict) else None
            if isinstance(template, list):  # named templates: transformers uses `default`
                template = next((t.get("template") for t in template
                                 if isinstance(t, dict) and t.get("name") == "default"), None)
            return template if isinstance(template, str) and template.strip() else None
    return None


def template_refs(spec: S.Spec) -> Iterator[tuple[tuple, Any]]:
    """Every template a spec names, with its key path."""
    f = spec.format
    if isinstance(f, S.PromptCompletionFormat):
        yield ("format", "prompt"), f.prompt
        yield ("format", "completion"), f.completion
    elif isinstance(f, S.PreferenceFormat):
        yield ("format", "prompt"), f.prompt
        yield ("format", "chosen"), f.chosen
        yield ("format", "rejected"), f.rejected
    elif isinstance(f, S.FeedbackFormat):
        yield ("format", "prompt"), f.prompt
        yield ("format", "completion"), f.completion
        yield ("format", "label"), f.label
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
    for i, reward in enumerate(getattr(spec.method, "rewards", None) or []):
        extract = getattr(reward, "extract", None)
        if extract is not None and extract.template is not None:
            yield ("method", "rewards", i, "extract", "template"), extract.template


def _inspect_templates(ctx: Context) -> None:
    for path, ref in template_refs(ctx.spec):
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
            chat = path == ("format", "chat_template")
            parsed = ctx.budgets.compiled.get((resolved.text, chat))
            if parsed is None:
                parsed = tpl.parse(resolved, pos, key, ctx.spec_dir, chat=chat, budget=ctx.compile_budget)
                ctx.budgets.compiled[(resolved.text, chat)] = parsed
            ctx.parsed[".".join(map(str, path))] = parsed
        except SpecError as exc:
            ctx.issues.extend(exc.issues)
            if ctx.compile_budget.left <= 0:  # said once, at the template that ran out of it
                break


def same_source(a: SourceInfo, b: SourceInfo) -> bool:
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


def trl_patches(template: str) -> bool | None:
    """Whether trl adds generation markers to this chat template itself: it does to the
    templates it ships a training variant of (``NAME.jinja`` beside ``NAME_training.jinja``
    in its chat_templates folder, matched by their whole text). None where trl is not
    installed or that folder cannot be read (read as files: validate never imports trl)."""
    known = _trl_patched_templates()
    return None if known is None else template in known


@lru_cache(maxsize=1)
def _trl_patched_templates() -> frozenset[str] | None:
    try:
        found = importlib.util.find_spec("trl")
    except (ImportError, ValueError):
        return None
    places = list(found.submodule_search_locations or []) if found is not None else []
    folder = Path(places[0]) / "chat_templates" if places else None
    if folder is None or not folder.is_dir():
        return None
    texts = set()
    for training in folder.glob("*_training.jinja"):
        plain = folder / (training.name[: -len("_training.jinja")] + ".jinja")
        try:
            text = read_regular(plain, tpl.MAX_TEMPLATE_BYTES).decode("utf-8")
        except (OSError, ValueError):
            continue
        texts.add(text.replace("\r\n", "\n").replace("\r", "\n"))  # as trl reads it: in text mode
    return frozenset(texts)


def has_package(name: str) -> bool:
    """Whether a package can be imported, found without importing it (validate stays light)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def model_architectures(ctx: Context) -> list[str] | None:
    """config.json's `architectures` of a local or cached model folder, where it has one."""
    path = ctx.model.path if ctx.model else None
    config = _read_json(path / "config.json") if path is not None and (path / "config.json").is_file() else None
    names = config.get("architectures") if isinstance(config, dict) else None
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else None


# --------------------------------------------------------------------------- the installed transformers

# The modeling file of a model type whose folder is named otherwise.
_MODELING_FILE = {"gemma3_text": "gemma3"}

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@lru_cache(maxsize=None)
def _transformers_models() -> Path | None:
    """transformers' ``models`` folder, located without importing the package."""
    try:
        spec = importlib.util.find_spec("transformers")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "models"


@lru_cache(maxsize=256)
def modeling_defines(model_type: str, class_name: str) -> bool:
    """Whether transformers' modeling file for ``model_type`` defines ``class_name``
    (read as text: validate and plan stay light)."""
    models = _transformers_models()
    if models is None or not _NAME.match(model_type) or not _NAME.match(class_name):
        return False
    folder = _MODELING_FILE.get(model_type, model_type)
    path = models / folder / f"modeling_{folder}.py"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    return re.search(rf"^class {re.escape(class_name)}\(", text, re.MULTILINE) is not None


def decoder_layer(model_type: str | None, architectures: list[str] | tuple[str, ...] | None = None) -> str | None:
    """The decoder-layer class of a model, where it can be told offline: from the
    architecture catalog, else ``XForCausalLM`` -> ``XDecoderLayer`` when transformers'
    modeling file for the model type defines that class; None when neither says."""
    known = architecture(model_type)
    if known is not None and known.decoder_layer:
        return known.decoder_layer
    if model_type and architectures:
        first = architectures[0]
        if isinstance(first, str) and first.endswith("ForCausalLM"):
            candidate = first[: -len("ForCausalLM")] + "DecoderLayer"
            if modeling_defines(model_type, candidate):
                return candidate
    return None
