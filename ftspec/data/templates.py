"""Jinja templates as ftspec uses them: resolved from inline text, a file next to
the spec or a built-in, compiled and rendered only in the sandbox of
:mod:`ftspec.data.sandbox`, within its limits on the work a rendering does.

A spec may come from someone the repository owner does not fully trust, so every
template is rendered in jinja's ``ImmutableSandboxedEnvironment`` with
``StrictUndefined``: no attribute walks to Python internals, no mutation, and a
missing column is an error rather than an empty string.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import signal
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import jinja2.meta
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ftspec.core.errors import Issue, Pos, SpecError, did_you_mean
from ftspec.core.paths import TooLarge, describe_os_error, read_regular
from ftspec.data.sandbox import (
    MAX_COMPILE_TOKENS,
    MAX_STEPS,
    MAX_STEPS_IN_ALL,
    MAX_TEXT,
    StepLimit,
    TemplateLimit,
    count_tokens,
    make_environment,
    metered,
    weight,
)

BUILTIN_SUFFIXES = (".jinja", ".j2")


@dataclass(frozen=True)
class Resolved:
    """A template's text and where it came from."""

    source: str  # inline | file | builtin
    ref: str  # the file path or builtin name ("" for inline)
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


class ValueTypeError(jinja2.exceptions.TemplateRuntimeError):
    """A template printed a null, a list or a mapping where text belongs: in data,
    usually a missing field or a field of the wrong JSON type."""


def _finalize(value):
    if value is None:
        raise ValueTypeError("a value printed by the template is null (a missing or empty field?)")
    if isinstance(value, (dict, list, tuple)):
        kind = "a mapping" if isinstance(value, dict) else "a list"
        raise ValueTypeError(f"a value printed by the template is {kind}, not text (a field of the wrong JSON type?)")
    return value


@lru_cache(maxsize=1)
def environment() -> ImmutableSandboxedEnvironment:
    """The environment of every template a spec supplies but chat templates."""
    return make_environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False, finalize=_finalize)


class _ChatUndefined(jinja2.StrictUndefined):
    """A name a chat template is never given: testing it (``if x``, ``x is defined``,
    ``x == y``) is fine, as in transformers; printing or looping over it is an error,
    since transformers would silently print nothing."""

    __slots__ = ()

    def __bool__(self) -> bool:
        return False

    def __eq__(self, other) -> bool:
        return type(self) is type(other)

    def __ne__(self, other) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return id(type(self))


def _chat_finalize(value):
    # transformers prints any value; a huge one is still refused before str() builds it.
    if not isinstance(value, str) and weight(value) > MAX_TEXT:
        raise TemplateLimit(f"a printed value would be longer than {MAX_TEXT} characters")
    return value


class ChatTemplateRaised(jinja2.exceptions.TemplateError):
    """A chat template called ``raise_exception``."""


def _raise_exception(message):
    raise ChatTemplateRaised(str(message))


def _strftime_now(fmt):
    import datetime

    text = datetime.datetime.now().strftime(str(fmt)[:100])
    return text


@lru_cache(maxsize=1)
def chat_environment() -> ImmutableSandboxedEnvironment:
    """The environment a chat template is tried in: as transformers renders chat
    templates (trimmed blocks, loop controls, ``raise_exception``, ``strftime_now``),
    with ftspec's limits."""
    env = make_environment(undefined=_ChatUndefined, trim_blocks=True, lstrip_blocks=True, finalize=_chat_finalize)
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


# What transformers gives a chat template besides what ftspec's checks pass in.
CHAT_NAMES = ("messages", "add_generation_prompt", "tools", "documents", "bos_token", "eos_token", "unk_token",
              "sep_token", "pad_token", "cls_token", "mask_token", "additional_special_tokens",
              "raise_exception", "strftime_now")


# `{% generation %}`, with any whitespace control: the tag transformers reads to find the
# assistant's tokens (apply_chat_template's return_assistant_tokens_mask).
_GENERATION_TAG = re.compile(r"\{%[-+]?\s*generation\s*[-+]?%\}")


def has_generation_markers(template: str) -> bool:
    """Whether a chat template marks the assistant's tokens, as assistant-only loss needs."""
    return _GENERATION_TAG.search(template) is not None


def no_generation_markers(pos: Pos, whose: str = "this chat template") -> Issue:
    """The refusal of assistant-only loss on a chat template without generation markers
    that trl cannot patch: said by validate (ftspec.checks.rules.templates) and, were it
    missed, by the run (ftspec.runtime.training.data) in the same words."""
    return Issue(pos, "format.chat_template",
                 f"{whose} has no {{% generation %}} markers, which assistant-only loss needs to find the "
                 "assistant's tokens, and trl cannot add them to it",
                 "set format.chat_template: {builtin: chatml} (or a template with the markers), or format.loss: all")


def builtin_dir():
    """The folder of built-in templates: the installed ``ftspec._templates``, or
    ``templates/`` beside the package when running from a checkout that was not installed."""
    try:
        return resources.files("ftspec._templates")
    except ModuleNotFoundError:
        return Path(__file__).resolve().parents[2] / "templates"


def builtin_names() -> list[str]:
    names = []
    for entry in builtin_dir().iterdir():
        name = entry.name
        for suffix in BUILTIN_SUFFIXES:
            if name.endswith(suffix) and BUILTIN_NAME.match(name[: -len(suffix)]):
                names.append(name[: -len(suffix)])
    return sorted(names)


# A built-in template's name: what `ftspec templates` lists, never a path.
BUILTIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_TEMPLATE_BYTES = 1 << 20  # a template file


def resolve(ref: Any, spec_dir: Path, pos: Pos, key: str) -> Resolved:
    """Turn a spec's template reference (str, FileTemplate, BuiltinTemplate) into text."""
    if isinstance(ref, str):
        return Resolved("inline", "", ref)
    if hasattr(ref, "builtin"):
        name = ref.builtin
        names = builtin_names()
        if name in names:  # a name from the shipped list, never a path
            for suffix in BUILTIN_SUFFIXES:
                entry = builtin_dir().joinpath(name + suffix)
                if entry.is_file():
                    return Resolved("builtin", name, entry.read_text(encoding="utf-8"))
        shown = name if len(name) <= 60 else name[:57] + "..."
        raise SpecError.one(pos, key, f"no built-in template {shown!r} (built-ins: {', '.join(names)})",
                            close_match(name, names) or ("a built-in is a name, not a path; use {file: PATH} for a file"
                                                          if not BUILTIN_NAME.match(name) else None))
    path = spec_dir / ref.file
    try:
        text = read_regular(path, MAX_TEMPLATE_BYTES).decode("utf-8-sig")
    except UnicodeDecodeError:
        raise SpecError.one(pos, key, f"template file '{ref.file}' is not valid UTF-8") from None
    except TooLarge:
        raise SpecError.one(pos, key,
                            f"template file '{ref.file}' is larger than {MAX_TEMPLATE_BYTES >> 20} MiB") from None
    except OSError as exc:
        raise SpecError.one(pos, key, f"template file '{ref.file}' {describe_os_error(exc)}") from None
    return Resolved("file", ref.file, text.replace("\r\n", "\n"))


def _where(resolved: Resolved, pos: Pos, spec_dir: Path, lineno: int | None) -> Pos:
    if resolved.source == "file":
        return Pos(str(Path(pos.file).parent / resolved.ref) if pos.file else resolved.ref, lineno)
    if resolved.source == "builtin":
        return Pos(f"<builtin:{resolved.ref}>", lineno)
    return pos


_LOADING = {jinja2.nodes.Include: "include", jinja2.nodes.Import: "import",
            jinja2.nodes.FromImport: "from … import", jinja2.nodes.Extends: "extends"}


MAX_TEMPLATE_CHARS = 256_000  # one template's text (a long chat template is some 20 000)


def parse(resolved: Resolved, pos: Pos, key: str, spec_dir: Path, chat: bool = False,
          budget: "RenderBudget | None" = None) -> tuple[jinja2.Template, set[str]]:
    """Compile a template; return it with the names it reads from the row. ``chat``:
    compile it as transformers compiles chat templates. ``budget``: the jinja tokens all
    the compilations of one command may hold together (jinja compiles some 30 000 a
    second: a spec full of them must not take minutes); its seconds are a backstop."""
    env = chat_environment() if chat else environment()
    if len(resolved.text) > MAX_TEMPLATE_CHARS:
        raise SpecError.one(pos, key, f"template longer than {MAX_TEMPLATE_CHARS} characters")
    too_many = f"templates too large or complex: more than {budget.tokens} jinja tokens in all" if budget else ""
    if budget is not None and budget.left <= 0:
        raise SpecError.one(pos, key, too_many if budget.tokens_spent > budget.tokens else "templates too large or "
                            f"complex: compiling them took more than {budget.seconds:g} s in all")
    try:
        with _time_limit(budget.left if budget is not None else 0, budget):
            if budget is not None and not budget.count_tokens(env, resolved.text):
                raise SpecError.one(pos, key, too_many)
            ast = env.parse(resolved.text)
            for node in ast.find_all(tuple(_LOADING)):
                tag = _LOADING[type(node)]
                line = f" (template line {node.lineno})" if resolved.source == "inline" and node.lineno > 1 else ""
                where = _where(resolved, pos, spec_dir, node.lineno if resolved.source != "inline" else None)
                raise SpecError.one(where, key, f"'{{% {tag} %}}' is not supported in ftspec templates{line}: "
                                                "a template cannot load other templates; write the text in this one")
            names = set(jinja2.meta.find_undeclared_variables(ast))
            template = env.from_string(ast)
    except jinja2.TemplateSyntaxError as exc:
        line = f" (template line {exc.lineno})" if resolved.source == "inline" and exc.lineno and exc.lineno > 1 else ""
        raise SpecError.one(_where(resolved, pos, spec_dir, exc.lineno), key,
                            f"template syntax error: {exc.message}{line}") from None
    except _Timeout:
        raise SpecError.one(pos, key, "templates too large or complex: "
                                      f"compiling them took more than {budget.seconds:g} s in all") from None
    except RecursionError:
        raise SpecError.one(pos, key, "template nests too deeply") from None
    # Python's compiler refusing the code jinja generated.
    except (SyntaxError, MemoryError, ValueError, OverflowError) as exc:
        raise SpecError.one(pos, key, f"template cannot be compiled: {type(exc).__name__}: {str(exc)[:200]}") from None
    return template, names


def listing(names: list[str], most: int = 20) -> str:
    """Names for a hint, at most ``most`` of them."""
    return ", ".join(names[:most]) + (f", … ({len(names)} in all)" if len(names) > most else "")


def close_match(word: str, candidates, most: int = 200) -> str | None:
    """did_you_mean over many candidates, in bounded time: only those of about the
    word's length are compared (difflib costs milliseconds per hundred candidates)."""
    word = str(word)
    n = len(word)
    pool = [c for c in candidates if abs(len(str(c)) - n) <= max(2, n // 3)]
    if len(pool) > most:
        first = word[:1].lower()
        pool = [c for c in pool if str(c)[:1].lower() == first][:most]
    return did_you_mean(word, pool)


def check_names(names: set[str], available: list[str], pos: Pos, key: str, most: int = 20) -> list[Issue]:
    """Issues for names a template reads that no column provides (at most ``most``)."""
    issues = []
    have = set(available)
    unknown = sorted(n for n in names if n not in have)
    for name in unknown[:most]:
        issues.append(Issue(pos, key, f"template uses '{name}', which is not a column",
                            close_match(name, available) or f"columns: {listing(available)}"))
    if len(unknown) > most:
        issues.append(Issue(pos, key, f"template uses {len(unknown) - most} more names that are not columns"))
    return issues


MAX_NAME_ISSUES = 20  # names reported per template: past that, the template is plainly not for this data
MAX_NAME_ISSUES_IN_ALL = 100  # and of all templates together


class RenderBudget:
    """The work that all the renderings (or compilations) of one command may do together
    (validate renders many sample rows with many templates: each rendering is limited,
    and so is their sum): ``steps`` of rendering (see :data:`ftspec.data.sandbox.MAX_STEPS`),
    ``tokens`` of compiling, the same count on every machine. ``seconds`` of wall time
    are a backstop only, for work the counts miss."""

    def __init__(self, seconds: float, tokens: int = MAX_COMPILE_TOKENS, steps: int = MAX_STEPS_IN_ALL):
        self.seconds = seconds
        self.spent = 0.0
        self.tokens = tokens  # for compiling: the work it may do, in jinja tokens (the seconds are a backstop)
        self.tokens_spent = 0
        self.steps = steps  # for rendering: the work it may do, in steps
        self.steps_spent = 0

    @property
    def left(self) -> float:
        if self.tokens_spent > self.tokens or self.steps_spent >= self.steps:
            return 0.0
        return self.seconds - self.spent

    @property
    def steps_left(self) -> int:
        return max(self.steps - self.steps_spent, 0)

    def count_tokens(self, env: jinja2.Environment, text: str) -> bool:
        """Count a template's tokens against the budget; whether they fit in what was left."""
        self.tokens_spent += count_tokens(env, text, self.tokens - self.tokens_spent)
        return self.tokens_spent <= self.tokens

    def exhausted(self) -> TemplateLimit:
        if self.steps_spent >= self.steps:
            return TemplateLimit(f"rendering the sample rows took more than {self.steps} steps in all "
                                 "(a slow template?)")
        return TemplateLimit(f"rendering the sample rows took more than {self.seconds:g} s in all (a slow template?)")


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout()


_HANDLER_HELD = 0  # renderings inside alarm_handler(): the handler is already in place


@contextlib.contextmanager
def alarm_handler():
    """Keep the time limit's signal handler installed around many renderings (a data pass
    renders millions of rows; installing and restoring it each time costs more than a
    simple rendering). Each rendering still has its own timer."""
    global _HANDLER_HELD
    if not hasattr(signal, "setitimer") or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGALRM, _alarm)
    _HANDLER_HELD += 1
    try:
        yield
    finally:
        _HANDLER_HELD -= 1
        signal.signal(signal.SIGALRM, previous)


class _time_limit:
    """Raise _Timeout in the main thread after ``seconds`` (0: no limit); with
    ``budget``, the time taken is counted against it."""

    def __init__(self, seconds: float, budget: "RenderBudget | None" = None):
        self.seconds = seconds
        self.budget = budget
        self.timed = (bool(seconds) and hasattr(signal, "setitimer")
                      and threading.current_thread() is threading.main_thread())

    def __enter__(self):
        if self.timed:
            self.installed = not _HANDLER_HELD
            if self.installed:
                self.previous = signal.signal(signal.SIGALRM, _alarm)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.timed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            if self.installed:
                signal.signal(signal.SIGALRM, self.previous)
        if self.budget is not None:
            self.budget.spent += time.perf_counter() - self.start
        return False


# Wall time for one rendering (main thread, where signals work): a backstop only, for work
# the step count misses; MAX_STEPS take well under a second.
RENDER_SECONDS = 10.0


def render(template: jinja2.Template, row: dict, seconds: float = RENDER_SECONDS,
           budget: RenderBudget | None = None, steps: int = MAX_STEPS) -> str:
    """Render with a row's columns, within ``steps`` of work and the size limits (and
    what is left of ``budget``); raises jinja2's errors (or TemplateLimit) for the
    caller to place."""
    limit, allowed = seconds, steps
    if budget is not None:
        if budget.left <= 0:
            raise budget.exhausted()
        limit = min(seconds, budget.left) if seconds else budget.left
        allowed = min(steps, budget.steps_left)
    meter = None
    try:
        try:
            with metered(allowed) as meter, _time_limit(limit, budget):
                text = template.render(row)
        finally:
            if budget is not None and meter is not None:
                budget.steps_spent += meter.steps
    except StepLimit:
        if budget is not None and allowed < steps:
            raise budget.exhausted() from None
        raise TemplateLimit(f"rendering took more than {steps} steps (a huge loop?)") from None
    except _Timeout:  # also when the alarm rang as the rendering ended
        if budget is not None and limit < seconds:
            raise budget.exhausted() from None
        raise TemplateLimit(f"rendering took longer than {seconds:g} s (a huge loop?)") from None
    except RecursionError:
        raise TemplateLimit("recursion too deep") from None
    except MemoryError:
        raise TemplateLimit("rendering ran out of memory") from None
    if len(text) > MAX_TEXT:
        raise TemplateLimit(f"rendered text longer than {MAX_TEXT} characters")
    return text


def describe_render_error(exc: Exception) -> str:
    if isinstance(exc, jinja2.UndefinedError):
        return f"template error: {exc.message}"
    if isinstance(exc, TemplateLimit):
        return f"template refused: {exc}"
    if isinstance(exc, ValueTypeError):
        return f"template error: {exc}"
    if isinstance(exc, ChatTemplateRaised):
        return f"the template raised an error: {exc}"
    if isinstance(exc, jinja2.exceptions.SecurityError):
        return f"template refused by the sandbox: {exc}"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if len(first) > 200:
        first = first[:197] + "..."
    return f"template error: {type(exc).__name__}: {first}" if first else f"template error: {type(exc).__name__}"


def is_refusal(exc: Exception) -> bool:
    """Whether a rendering failed because the sandbox or a limit stopped it: the
    template's fault, whatever the row."""
    return isinstance(exc, jinja2.exceptions.SecurityError)
