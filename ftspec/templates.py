"""Jinja templates as ftspec uses them: resolved from inline text, a file next to
the spec or a built-in, rendered only in a sandbox.

A spec may come from someone the repository owner does not fully trust, so every
template is rendered in jinja's ``ImmutableSandboxedEnvironment`` with
``StrictUndefined``: no attribute walks to Python internals, no mutation, and a
missing column is an error rather than an empty string.
"""

from __future__ import annotations

import functools
import hashlib
import signal
import threading
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import jinja2.ext
import jinja2.meta
import jinja2.nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ftspec.errors import Issue, Pos, SpecError, did_you_mean

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


# Limits on what one rendering may cost. A spec may come from someone the
# repository owner does not fully trust; its templates must not hang a CI runner
# or fill its memory.
RENDER_SECONDS = 0.5  # wall time for one rendering (main thread, where signals work)
MAX_TEXT = 1_000_000  # characters a rendering, or one operation in it, may produce
MAX_RANGE = 10_000  # items range() may produce
MAX_POWER = 10_000  # largest exponent `**` may take


class TemplateLimit(jinja2.exceptions.SecurityError):
    """A template went past one of the limits above."""


def _size(value) -> int:
    return len(value) if isinstance(value, (str, bytes, list, tuple)) else 0


class _Sandbox(ImmutableSandboxedEnvironment):
    """jinja's immutable sandbox, plus limits on the operators and filters that
    can make a huge value from a small template."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def call_binop(self, context, operator, left, right):
        if operator == "*":
            count = right if isinstance(right, int) else left if isinstance(left, int) else 0
            if max(_size(left), _size(right)) * max(count, 0) > MAX_TEXT:
                raise TemplateLimit(f"'*' would build a value longer than {MAX_TEXT} characters")
        elif operator == "**":
            if isinstance(right, (int, float)) and abs(right) > MAX_POWER:
                raise TemplateLimit(f"'**' exponent larger than {MAX_POWER}")
        elif operator == "%" and isinstance(left, str):
            raise TemplateLimit("'%' string formatting is not allowed in templates; use the format filter or ~")
        return super().call_binop(context, operator, left, right)


def _limited_range(*args):
    r = range(*args)
    if len(r) > MAX_RANGE:
        raise TemplateLimit(f"range() of more than {MAX_RANGE} items")
    return r


def _checked_filter(name: str, filt):
    # Filters marked with jinja's pass_* decorators get the environment or context first.
    skip = 1 if hasattr(filt, "jinja_pass_arg") else 0

    @functools.wraps(filt)
    def checked(*args, **kwargs):
        value, params = (args[skip] if len(args) > skip else None), list(args[skip + 1:]) + list(kwargs.values())
        for p in params:
            if isinstance(p, int) and not isinstance(p, bool) and p > MAX_TEXT:
                raise TemplateLimit(f"filter '{name}' given a width of {p}")
        if name == "format" and isinstance(value, str) and "*" in value:
            raise TemplateLimit("'*' widths are not allowed in the format filter")
        result = filt(*args, **kwargs)
        if _size(result) > MAX_TEXT:
            raise TemplateLimit(f"filter '{name}' built a value longer than {MAX_TEXT} characters")
        return result

    return checked


class GenerationBlock(jinja2.ext.Extension):
    """Accept ``{% generation %}…{% endgeneration %}`` in chat templates.

    transformers uses these markers to find assistant tokens (for assistant-only
    loss); here they only need to parse and render their body unchanged.
    """

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.Scope(body, lineno=lineno)


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
    env = _Sandbox(
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=False,
        extensions=[GenerationBlock],
        finalize=_finalize,
    )
    env.globals["range"] = _limited_range
    for name in ("format", "center", "indent", "wordwrap", "truncate", "join", "replace", "filesizeformat"):
        if name in env.filters:
            env.filters[name] = _checked_filter(name, env.filters[name])
    return env


def builtin_dir():
    """The folder of built-in templates: the installed ``ftspec._templates``, or
    ``templates/`` beside the package when running from a checkout that was not installed."""
    try:
        return resources.files("ftspec._templates")
    except ModuleNotFoundError:
        return Path(__file__).resolve().parent.parent / "templates"


def builtin_names() -> list[str]:
    names = []
    for entry in builtin_dir().iterdir():
        name = entry.name
        for suffix in BUILTIN_SUFFIXES:
            if name.endswith(suffix):
                names.append(name[: -len(suffix)])
    return sorted(names)


def resolve(ref: Any, spec_dir: Path, pos: Pos, key: str) -> Resolved:
    """Turn a spec's template reference (str, FileTemplate, BuiltinTemplate) into text."""
    if isinstance(ref, str):
        return Resolved("inline", "", ref)
    if hasattr(ref, "builtin"):
        name = ref.builtin
        for suffix in BUILTIN_SUFFIXES:
            entry = builtin_dir().joinpath(name + suffix)
            if entry.is_file():
                return Resolved("builtin", name, entry.read_text(encoding="utf-8"))
        names = builtin_names()
        raise SpecError.one(pos, key, f"no built-in template '{name}' (built-ins: {', '.join(names)})",
                            did_you_mean(name, names))
    path = spec_dir / ref.file
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise SpecError.one(pos, key, f"template file '{ref.file}' not found") from None
    except UnicodeDecodeError:
        raise SpecError.one(pos, key, f"template file '{ref.file}' is not valid UTF-8") from None
    except OSError as exc:
        raise SpecError.one(pos, key, f"cannot read template file '{ref.file}': {exc.strerror}") from None
    return Resolved("file", ref.file, text.replace("\r\n", "\n"))


def _where(resolved: Resolved, pos: Pos, spec_dir: Path, lineno: int | None) -> Pos:
    if resolved.source == "file":
        return Pos(str(Path(pos.file).parent / resolved.ref) if pos.file else resolved.ref, lineno)
    if resolved.source == "builtin":
        return Pos(f"<builtin:{resolved.ref}>", lineno)
    return pos


def parse(resolved: Resolved, pos: Pos, key: str, spec_dir: Path) -> tuple[jinja2.Template, set[str]]:
    """Compile a template; return it with the names it reads from the row."""
    env = environment()
    try:
        ast = env.parse(resolved.text)
        template = env.from_string(ast)
    except jinja2.TemplateSyntaxError as exc:
        line = f" (template line {exc.lineno})" if resolved.source == "inline" and exc.lineno and exc.lineno > 1 else ""
        raise SpecError.one(_where(resolved, pos, spec_dir, exc.lineno), key,
                            f"template syntax error: {exc.message}{line}") from None
    return template, set(jinja2.meta.find_undeclared_variables(ast))


def check_names(names: set[str], available: list[str], pos: Pos, key: str) -> list[Issue]:
    """Issues for names a template reads that no column provides."""
    issues = []
    for name in sorted(set(names) - set(available)):
        issues.append(Issue(pos, key, f"template uses '{name}', which is not a column",
                            did_you_mean(name, available) or f"columns: {', '.join(available)}"))
    return issues


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout()


def render(template: jinja2.Template, row: dict, seconds: float = RENDER_SECONDS) -> str:
    """Render with a row's columns, within the time and size limits; raises jinja2's
    errors (or TemplateLimit) for the caller to place."""
    timed = seconds and hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if timed:
        previous = signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        text = template.render(row)
    except _Timeout:
        raise TemplateLimit(f"rendering took longer than {seconds:g} s (a huge loop?)") from None
    except RecursionError:
        raise TemplateLimit("recursion too deep") from None
    except MemoryError:
        raise TemplateLimit("rendering ran out of memory") from None
    finally:
        if timed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
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
    if isinstance(exc, jinja2.exceptions.SecurityError):
        return f"template refused by the sandbox: {exc}"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"template error: {type(exc).__name__}: {first}" if first else f"template error: {type(exc).__name__}"


def is_refusal(exc: Exception) -> bool:
    """Whether a rendering failed because the sandbox or a limit stopped it: the
    template's fault, whatever the row."""
    return isinstance(exc, jinja2.exceptions.SecurityError)
