"""Rules that catch quiet mistakes: a spec that validates and trains, and yet cannot
teach or measure what it means to (a completion that is the same for every row, a CSV
label compared with a number, a test split of one class, rows cut at ``max_length``…).

Each is a warning (an error with ``--strict``) at the line of the template or key
concerned, and its message says the fix; the one about a headerless CSV/TSV file, and a
text column ordered against a number (`x > 0`), are errors, since they come with the
template errors they explain. They look at the rows ``validate`` samples
(the first 200 of each split) as the other rules format them, so
they cost no more reading and, past the cached renderings, little time.
"""

from __future__ import annotations

import re
import time
from typing import Any, Callable, Iterator

import jinja2
import jinja2.meta
import jinja2.nodes

from ftspec.catalog import metrics as metric_catalog
from ftspec.checks.derived import answered_by_teacher, held_out_fix
from ftspec.checks.evalmode import eval_split
from ftspec.checks.facts import Context, row_key, same_source
from ftspec.checks.registry import rule
from ftspec.core.errors import Issue
from ftspec.data import templates as tpl
from ftspec.data.formatting import FormatError, reference
from ftspec.data.splitting import SPLITS
from ftspec.spec import schema as S

CLASSIFICATION = metric_catalog.names(family="classification")
MIN_ROWS = 5  # fewer sampled rows say nothing about "every row"
TRUNCATED_SHARE = 0.05  # more than this share of sampled rows cut at max_length is worth a warning
CHARS_PER_TOKEN = 4  # a BPE tokenizer's usual rate on English text, for an estimate
# What the rules that read the sampled rows read of the spec.
ROWS = ("data.train", "data.validation", "data.test", "data.rename", "data.derive", "data.on_bad_row")


def _short(text: Any, most: int = 40) -> str:
    text = str(text)
    return repr(text if len(text) <= most else text[: most - 1] + "…")


def _records(ctx: Context, split: str) -> list[tuple[Any, dict]]:
    """The sample rows of a split with their formatted records (rows that do not format
    are left out: check_sample_rows reports them)."""
    info = ctx.sources.get(split)
    if ctx.formatter is None or info is None or not info.readable:
        return []
    out = []
    for row in info.sample:
        if ctx.render_budget.left <= 0:
            return []
        try:
            out.append((row, ctx.formatter(row.values)))
        except FormatError as exc:
            if exc.refused:  # a template the sandbox or a limit stopped: no row says more
                return []
    return out


def _path(key: str) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in key.split("."))


# --------------------------------------------------------------------------- 1. one answer for every row


def _answers(ctx: Context) -> list[tuple[str, Callable[[dict], str | None]]]:
    """The answer fields of the format, as (template key, how to read it from a record)."""
    f = ctx.spec.format
    if isinstance(f, (S.PromptCompletionFormat, S.FeedbackFormat)):
        return [("format.completion", lambda r: r["completion"])]
    if isinstance(f, S.PreferenceFormat):
        return [("format.chosen", lambda r: r["chosen"]), ("format.rejected", lambda r: r["rejected"])]
    out = []
    for i, turn in enumerate(f.messages or []):
        if turn.role == "assistant":
            out.append((f"format.messages.{i}.content",
                        lambda r, i=i: r["messages"][i]["content"] if i < len(r["messages"]) else None))
    return out


@rule(reads=ROWS + ("format",))
def check_constant_answer(ctx: Context) -> Iterator[Issue]:
    """A completion (chosen, rejected, assistant turn) that renders to the same text for
    every sampled row teaches one answer: usually a condition that is never true."""
    if "train" in answered_by_teacher(ctx.spec):  # a distillation's teacher writes them
        return
    records = _records(ctx, "train")
    if len(records) < MIN_ROWS:
        return
    for key, read in _answers(ctx):
        texts = {read(record) for _, record in records}
        if len(texts) == 1:
            text = texts.pop()
            if text is None:
                continue
            yield ctx.warning(_path(key), f"renders to the same text, {_short(text)}, for all {len(records)} sampled "
                              "training rows: the model would learn one answer for everything",
                              "make it depend on the row (a condition that is never true? a CSV value is text: "
                              "compare label == \"1\", not label == 1)")


# --------------------------------------------------------------------------- 2. labels of a classification metric


def _references(ctx: Context, extract: Any = None) -> tuple[str, list[tuple[Any, str]], bool] | None:
    """The references of the evaluated split's sample: (words for them, [(row, reference)],
    whether they come from the split's own file). A split held out of data.train by
    data.split is drawn from the training rows: their sample stands in for it."""
    split = eval_split(ctx.spec)
    if split is None or ctx.spec.format.kind == "preference" and extract is None:
        return None
    own = split in ctx.sources
    records = _records(ctx, split if own else "train")
    if not records:
        return None
    kind = ctx.spec.format.kind
    refs = [(row, reference(kind, record)) for row, record in records]
    words = (f"sampled {split} references" if own
             else f"sampled training references (the {split} rows are drawn from them)")
    return words, refs, own


@rule(reads=("data", "format", "eval"))
def check_classification_labels(ctx: Context) -> Iterator[Issue]:
    """A classification metric needs more than one class in the evaluated split, and
    labels the model was trained on."""
    metrics = [(i, m) for i, m in enumerate(ctx.spec.eval.metrics) if m.name in CLASSIFICATION]
    if not metrics or ctx.spec.format.kind == "preference":
        return
    i, metric = metrics[0]  # said once, at the first of them: the labels are the same for all
    found = _references(ctx)
    if found is None:
        return
    words, refs, own = found
    try:
        extracted = _extraction(ctx, i, getattr(metric, "extract", None))
        labels = [extracted(ref) for _, ref in refs]
        train = _records(ctx, "train") if own and "train" not in answered_by_teacher(ctx.spec) else []
        trained = {extracted(reference(ctx.spec.format.kind, record)) for _, record in train}
    except _OutOfTime:
        return
    split = eval_split(ctx.spec)
    if len(refs) >= MIN_ROWS and len(set(labels)) == 1:
        yield ctx.warning(("eval", "metrics", i), f"{metric.name} is scored on the {split} split, but all {len(refs)} "
                          f"{words} are {_short(labels[0])}: one class, so a model that always answers it scores "
                          "perfectly", f"evaluate on rows of every label (e.g. data.split: {{{split}: 0.1, stratify: "
                          "COLUMN}) or choose a metric for text")
        return
    if not own:
        return
    if not trained or len(trained) > min(50, len(train) // 2):  # free text, not a closed set of labels
        return
    unseen = [(row, label) for (row, _), label in zip(refs, labels) if label not in trained]
    if unseen:
        names = sorted({label for _, label in unseen})
        shown = ", ".join(_short(n, 24) for n in names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        row = unseen[0][0]
        yield ctx.warning(("eval", "metrics", i), f"{len(unseen)} of {len(refs)} {words} have labels that no sampled "
                          f"training row has ({shown}; e.g. {ctx.sources[split].shown} row {row.number}): the model "
                          "is never taught them", "check how the labels are spelled in each file, or split one file "
                          "with data.split (stratify: COLUMN keeps every label in every split)")


@rule(reads=("data", "format", "eval"))
def check_positive_label(ctx: Context) -> Iterator[Issue]:
    """``{name: f1, positive: LABEL}`` names a label the references have: one that none
    of them has is never a true positive, and its F1 is 0 whatever the model does."""
    found = None
    for i, metric in enumerate(ctx.spec.eval.metrics):
        positive = getattr(metric, "positive", None)
        if positive is None:
            continue
        found = found or _references(ctx)
        if found is None:
            return
        words, refs, _ = found
        normalize = metric_catalog.NORMALIZATIONS[metric_catalog.get(metric.name).normalization or "trimmed"].apply
        try:
            extracted = _extraction(ctx, i, getattr(metric, "extract", None))
            labels = sorted({normalize(extracted(ref)) for _, ref in refs})
        except _OutOfTime:
            return
        if normalize(str(positive)) not in labels and len(refs) >= MIN_ROWS:  # compared as the scoring compares
            shown = ", ".join(_short(label, 24) for label in labels[:6]) + (" …" if len(labels) > 6 else "")
            yield ctx.warning(("eval", "metrics", i, "positive"),
                              f"{_short(positive)} is not a label of any of {len(refs)} {words} ({shown}): "
                              "its F1 would be 0 whatever the model answers",
                              tpl.close_match(str(positive), labels) or "name one of the labels")


class _OutOfTime(Exception):
    """The extraction took longer than validate gives it (or the sandbox stopped it)."""


def _extraction(ctx: Context, i: int, extract: Any) -> Callable[[str], str]:
    """The metric's answer extraction as the evaluation applies it (runtime.metrics.extract:
    the first or last match, its first group if it has one, stripped; a template rendered
    over `text`), bounded in time: it raises _OutOfTime once the command's extraction
    budget (facts.EXTRACT_SECONDS, all metrics of all stages together) is spent."""
    if extract is None:
        return lambda text: text
    budget = ctx.budgets.extract
    if extract.regex is not None:
        import regex  # in the train extra only: validate runs without it unless a spec extracts by regex

        try:
            pattern = regex.compile(extract.regex)
        except Exception:  # the schema compiled it with re; the evaluation would not get further
            raise _OutOfTime from None

        def run(text: str) -> str:
            left = budget.left
            if left <= 0:
                raise _OutOfTime
            start = time.monotonic()
            try:
                matches = list(pattern.finditer(text, timeout=left))
            except TimeoutError:
                raise _OutOfTime from None
            finally:
                budget.spent += time.monotonic() - start
            if not matches:
                return ""
            match = matches[0] if extract.which == "first" else matches[-1]
            return (match.group(1) if pattern.groups >= 1 else match.group(0) or "").strip()

        return run
    parsed = ctx.parsed.get(f"eval.metrics.{i}.extract.template")
    if parsed is None:  # it did not compile: reported already
        raise _OutOfTime

    def render(text: str) -> str:
        if budget.left <= 0:
            raise _OutOfTime
        start = time.monotonic()
        try:
            return str(tpl.render(parsed[0], {"text": text}, budget=ctx.render_budget)).strip()
        except Exception as exc:  # an error gives no answer, as in the evaluation
            if tpl.is_refusal(exc):
                raise _OutOfTime from None
            return ""
        finally:
            budget.spent += time.monotonic() - start

    return render


# --------------------------------------------------------------------------- 3. text compared with a number


def _text_columns(ctx: Context) -> dict[str, str]:
    """Columns whose values are always text, and where each comes from: every column of
    a CSV/TSV file, and every derived column (a template renders text)."""
    out: dict[str, str] = {}
    rename = ctx.spec.data.rename
    for split in SPLITS:
        info = ctx.sources.get(split)
        if info is not None and info.readable and info.format in ("csv", "tsv"):
            for column in info.columns:
                out.setdefault(rename.get(column, column), f"read from {info.shown}, "
                                                           f"a {info.format.upper()} file, as text")
    for name in ctx.spec.data.derive:
        out[name] = "a derived column: a template's output is text"
    return out


def _number(node: jinja2.nodes.Node) -> str | None:
    if isinstance(node, jinja2.nodes.Neg):
        inner = _number(node.node)
        return f"-{inner}" if inner is not None else None
    if isinstance(node, jinja2.nodes.Const) and type(node.value) in (int, float):
        return repr(node.value)
    return None


def _column(node: jinja2.nodes.Node, columns: dict[str, str]) -> str | None:
    while isinstance(node, (jinja2.nodes.Getattr, jinja2.nodes.Getitem)):
        node = node.node
    if isinstance(node, jinja2.nodes.Name) and node.name in columns:
        return node.name
    return None


_OPS = {"eq": "==", "ne": "!=", "lt": "<", "lteq": "<=", "gt": ">", "gteq": ">="}


def numeric_comparisons(text: str, columns: dict[str, str]) -> list[tuple[str, str, str]]:
    """(column, operator, number) for each comparison in the template ``text`` between a
    column read as text and a number literal."""
    try:
        ast = tpl.environment().parse(text)
    except jinja2.TemplateError:
        return []
    free = jinja2.meta.find_undeclared_variables(ast)
    visible = {k: v for k, v in columns.items() if k in free}
    if not visible:
        return []
    found = []
    for node in ast.find_all(jinja2.nodes.Compare):
        left = node.expr
        for operand in node.ops:
            right = operand.expr
            for a, b in ((left, right), (right, left)):
                name, number = _column(a, visible), _number(b)
                if name is not None and number is not None:
                    found.append((name, _OPS.get(operand.op, operand.op), number))
                    break
            left = right
    return found


@rule(reads=ROWS + ("format",))
def check_text_compared_with_number(ctx: Context) -> Iterator[Issue]:
    """`label == 1` where label is text (a CSV/TSV value, a derived column) is never
    true, and `x > 0` fails on every row: the comparison wants a string or a filter."""
    columns = _text_columns(ctx)
    if not columns:
        return
    for key, resolved in ctx.templates.items():
        if not key.startswith(("format.", "data.")) or key == "format.chat_template":
            continue
        for name, op, number in numeric_comparisons(resolved.text, columns)[:1]:
            what = "is never true" if op == "==" else "is always true" if op == "!=" else "fails on every row"
            cast = "float" if "." in number or "e" in number else "int"
            # `<`, `>`: the row fails to render, an error anyway; this one says why and how to fix it.
            issue = ctx.warning if op in ("==", "!=") else ctx.error
            yield issue(_path(key), f"compares '{name}' with the number {number}, but '{name}' is "
                              f"{columns[name]} ('{number}' is not {number}): '{name} {op} {number}' {what}",
                              f"write {name} {op} \"{number}\" or {name} | {cast} {op} {number}")


# --------------------------------------------------------------------------- headerless CSV/TSV


def _looks_like_data(name: str) -> bool:
    text = name.strip()
    if not text or len(text) > 40:
        return True
    try:
        float(text)
        return True
    except ValueError:
        pass
    return len(text.split()) >= 4 or bool(re.search(r"[.!?]$", text) and " " in text)


@rule(reads=ROWS + ("format",))
def check_headerless(ctx: Context) -> Iterator[Issue]:
    """A CSV/TSV file without a header row has its first row read as column names: when
    those look like data and a template names a column that is not there, say so."""
    if ctx.names_ok:
        return
    used: set[str] = set()
    for key, (_, names) in ctx.parsed.items():
        if key.startswith(("format.", "data.")) and key != "format.chat_template":
            used |= set(names)
    for split in SPLITS:
        info = ctx.sources.get(split)
        source = info.spec if info is not None else None
        if (info is None or not info.readable or info.format not in ("csv", "tsv") or source.columns is not None
                or source.header is not None):
            continue
        data_like = [c for c in info.columns if _looks_like_data(c)]
        if not data_like:
            continue
        known = set(info.columns) | set(ctx.spec.data.rename.values()) | set(ctx.spec.data.derive)
        missing = sorted(used - known)
        if not missing:
            continue
        n = len(info.columns)
        # Which template name goes where, only the user knows: say what each position holds.
        holds = "; ".join(f"column {i + 1} holds {_short(c, 24)}" for i, c in enumerate(info.columns[:4]))
        shown = ", ".join(_short(c, 24) for c in data_like[:2])
        path = ("data", split, "path") if ("data", split, "path") in ctx.loaded.where else ("data", split)
        # An error, like the template errors it explains (a warning would not be shown beside them).
        yield ctx.error(path, f"the first row of {info.shown} was read as its column names, but it looks like data "
                          f"({shown}), and the templates use {', '.join(repr(m) for m in missing[:5])}, "
                          "which are not columns",
                          f"if the file has no header row, name its {n} columns in the file's order: "
                          f"{{path: {source.path}, columns: [{', '.join(f'NAME{i + 1}' for i in range(n))}]}} "
                          f"({holds})")


# --------------------------------------------------------------------------- 4. held-out rows that are training rows


@rule(reads=("data.train", "data.validation", "data.test"))
def check_held_out_overlap(ctx: Context) -> Iterator[Issue]:
    """A validation or test file that holds training rows (a copy of the training file,
    or rows of it) scores memory, not learning."""
    train = ctx.sources.get("train")
    keys = getattr(ctx, "train_keys", None)
    if train is None or not train.readable or not keys:
        return
    for split in ("validation", "test"):
        info = ctx.sources.get(split)
        if info is None or not info.readable or same_source(train, info) or not info.sample:
            continue
        shared = [row for row in info.sample if row_key(row.values) in keys]
        if not shared:
            continue
        everything = len(shared) == len(info.sample)
        what = "validated" if split == "validation" else "tested"
        fix = held_out_fix(ctx.spec, split) if everything else f"remove the training rows from {info.shown}"
        yield ctx.warning(("data", split), f"{len(shared)} of the {len(info.sample)} sampled rows of {info.shown} are "
                          f"also rows of {train.shown} (e.g. row {shared[0].number}): the model is {what} on rows it "
                          "trained on", fix)


# --------------------------------------------------------------------------- 5. rows cut at max_length


def _max_length(ctx: Context) -> int:
    t = ctx.spec.training
    return t.max_length or min(1024, (ctx.model.max_positions if ctx.model else None) or 1024)


@rule(reads=ROWS + ("format", "training", "model"))
def check_truncation(ctx: Context) -> Iterator[Issue]:
    """More than a small share of the sampled training rows longer than max_length: the
    end of a row is cut, and with it the answer the model should learn."""
    records = _records(ctx, "train")
    if len(records) < MIN_ROWS:
        return
    limit = _max_length(ctx)
    model = ctx.spec.model
    kind = ctx.spec.format.kind
    byte = isinstance(model, S.TinyModel) and model.tokenizer.kind == "byte"

    def length(record: dict) -> int:
        if kind == "chat":
            text = "".join(m["content"] for m in record["messages"])
        elif kind in ("prompt_completion", "feedback"):
            text = record["prompt"] + record["completion"]
        else:
            text = record["prompt"] + max(record["chosen"], record["rejected"], key=len)
        if byte:  # one token per UTF-8 byte, and the end-of-text token after the answer
            return len(text.encode("utf-8")) + (1 if kind != "chat" else 0)
        return -(-len(text) // CHARS_PER_TOKEN)

    lengths = [length(record) for _, record in records]
    long = [n for n in lengths if n > limit]
    if len(long) <= TRUNCATED_SHARE * len(lengths):
        return
    share = f"{len(long)} of {len(lengths)} sampled training rows ({100 * len(long) / len(lengths):.0f}%)"
    if byte and kind != "chat":
        how = "tokens (one a byte, so this is exact)"
    elif byte:
        how = "tokens (one a byte, counting the message texts alone: at least this many)"
    else:
        how = f"tokens, estimated at {CHARS_PER_TOKEN} characters a token (the tokenizer is not read at validate time)"
    path = ("training", "max_length") if ("training", "max_length") in ctx.loaded.where else ("training",)
    about = "" if byte and kind != "chat" else "about "
    yield ctx.warning(path, f"{share} are longer than max_length {limit} {how}; their ends are cut off, answers "
                      f"included (the longest is {about}{max(lengths)})",
                      f"raise training.max_length to {max(lengths)} or more, or shorten the prompt")


# --------------------------------------------------------------------------- 6. extraction that finds nothing


@rule(reads=("data", "format", "eval"))
def check_extract_finds_nothing(ctx: Context) -> Iterator[Issue]:
    """A metric's extraction should find an answer in the references: one it finds
    nothing in can never be matched (an empty extraction is a miss)."""
    for i, metric in enumerate(ctx.spec.eval.metrics):
        extract = getattr(metric, "extract", None)
        if extract is None:
            continue
        found = _references(ctx, extract)
        if found is None:
            return
        words, refs, own = found
        try:
            extracted = _extraction(ctx, i, extract)
            empty = [(row, ref) for row, ref in refs if not extracted(ref)]
        except _OutOfTime:
            continue
        if not empty:
            continue
        row, ref = empty[0]
        split = eval_split(ctx.spec) if own else "train"
        how = "regex" if extract.regex is not None else "template"
        yield ctx.warning(("eval", "metrics", i, "extract"), f"the extract {how} finds no answer in {len(empty)} of "
                          f"{len(refs)} {words}, e.g. {ctx.sources[split].shown} row {row.number}: {_short(ref, 60)}",
                          f"make the {how} match how the references write their answers")
