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
import re
import signal
import threading
import time
import types
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import jinja2.ext
import jinja2.meta
import jinja2.nodes
from jinja2.compiler import CodeGenerator, optimizeconst
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedFormatter
from markupsafe import Markup

from ftspec.core.errors import Issue, Pos, SpecError, did_you_mean
from ftspec.core.paths import TooLarge, describe_os_error, read_regular

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
# or fill its memory. Python cannot interrupt one call into C (a str method, a
# join, a format), so every operation that can build a large value from a small
# template is checked *before* it runs, not only after.
RENDER_SECONDS = 0.5  # wall time for one rendering (main thread, where signals work)
MAX_TEXT = 1_000_000  # characters a rendering, or one operation in it, may produce
MAX_BUILT = 32_000_000  # characters all the operations of one rendering may produce together
MAX_RANGE = 10_000  # items range() may produce (and batch/slice may make)
MAX_POWER = 10_000  # largest exponent `**` may take
MAX_INT_BITS = 100_000  # largest integer (in bits) `*` and `**` may build
MAX_TEMPLATE_BYTES = 1 << 20  # a template file


class TemplateLimit(jinja2.exceptions.SecurityError):
    """A template went past one of the limits above."""


def _size(value) -> int:
    return len(value) if isinstance(value, (str, bytes, list, tuple)) else 0


def _weight(value, cap: int = MAX_TEXT) -> int:
    """Characters ``value`` takes when turned into text (a lower bound), counted only
    up to just past ``cap``: a list of a thousand references to one long string
    weighs a thousand times that string."""
    total = 0
    stack = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (str, bytes)):
            total += len(node)
        elif isinstance(node, dict):
            total += 2
            if depth < 64:
                for k, v in node.items():
                    stack.append((k, depth + 1))
                    stack.append((v, depth + 1))
                    if len(stack) > 4 * MAX_RANGE:
                        return cap + 1
        elif isinstance(node, (list, tuple, set, frozenset)):
            total += 2 + len(node)
            if depth < 64:
                stack.extend((item, depth + 1) for item in node)
                if len(stack) > 4 * MAX_RANGE and total + len(stack) > cap:
                    return cap + 1
        else:
            total += 1
        if total > cap:
            return total
    return total


class _State(threading.local):
    active = False
    built = 0


_state = _State()


def _account(value) -> None:
    """Count what an operation built against the rendering's allowance."""
    if _state.active:
        _state.built += _size(value)
        if _state.built > MAX_BUILT:
            raise TemplateLimit(f"the template built more than {MAX_BUILT} characters in one rendering")


def _grows_past(what: str, estimate: int, before: int = 0) -> None:
    if estimate > MAX_TEXT and estimate > before:
        raise TemplateLimit(f"{what} would build a value longer than {MAX_TEXT} characters")


def _checked_join(pieces) -> str:
    """``~``: every operand as text, joined, within the limits."""
    texts = []
    total = 0
    for piece in pieces:
        if not isinstance(piece, str) and _weight(piece) > MAX_TEXT:
            raise TemplateLimit(f"'~' would build a value longer than {MAX_TEXT} characters")
        text = str(piece)
        total += len(text)
        texts.append(text)
    if len(texts) > 1:
        _grows_past("'~'", total)
    result = "".join(texts)
    _account(result)
    return result


def _checked_concat(pieces) -> str:
    """What a template writes (its output, a block, a macro), joined within the limits."""
    texts = []
    total = 0
    for piece in pieces:
        total += len(piece)
        if total > MAX_TEXT:
            raise TemplateLimit(f"rendered text longer than {MAX_TEXT} characters")
        texts.append(piece)
    return "".join(texts)


class _CodeGenerator(CodeGenerator):
    """jinja's code generator, with ``~`` going through :func:`_checked_join`."""

    @optimizeconst
    def visit_Concat(self, node: jinja2.nodes.Concat, frame) -> None:
        self.write("environment.checked_join((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


_WIDTHS = re.compile(r"\d+")
_PERCENT = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d*))?[hlL]?([a-zA-Z%])")


def _check_percent_format(fmt: str, args) -> None:
    """The format filter's printf-style string: no '*', widths within the limits."""
    estimate = len(fmt) + sum(_weight(a) for a in args)
    for width, precision, conv in _PERCENT.findall(fmt):
        if width == "*" or precision == "*":
            raise TemplateLimit("'*' widths are not allowed in the format filter")
        for number in (width, precision):
            if number:
                if len(number) > 7 or int(number) > MAX_TEXT:
                    raise TemplateLimit(f"format width {number} is larger than {MAX_TEXT}")
                estimate += int(number)
    _grows_past("the format filter", estimate)


class _Formatter(SandboxedFormatter):
    """``str.format`` in templates: each field's width and value within the limits."""

    def vformat(self, format_string, args, kwargs):
        self._total = 0
        return super().vformat(format_string, args, kwargs)

    def format_field(self, value, format_spec):
        for number in _WIDTHS.findall(format_spec or ""):
            if len(number) > 7 or int(number) > MAX_TEXT:
                raise TemplateLimit(f"format width {number} is larger than {MAX_TEXT}")
        if not isinstance(value, str) and _weight(value) > MAX_TEXT:
            raise TemplateLimit(f"str.format would build a value longer than {MAX_TEXT} characters")
        if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_INT_BITS:
            raise TemplateLimit(f"an integer of more than {MAX_INT_BITS} bits")
        result = super().format_field(value, format_spec)
        self._total = getattr(self, "_total", 0) + len(result)
        if self._total > MAX_TEXT:
            raise TemplateLimit(f"str.format would build a value longer than {MAX_TEXT} characters")
        _account(result)
        return result


def _int_arg(args, kwargs, index: int, name: str, default: int) -> int:
    value = args[index] if len(args) > index else kwargs.get(name, default)
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _check_str_method(owner, name: str, args: tuple, kwargs: dict) -> tuple:
    """Refuse a str (or bytes) method call that would build a value past the limits;
    returns the arguments to call with (an iterable given to join, made a list)."""
    n = len(owner)
    if name in ("ljust", "rjust", "center", "zfill"):
        _grows_past(f"'{name}'", _int_arg(args, kwargs, 0, "width", 0), n)
    elif name == "expandtabs":
        tab = "\t" if isinstance(owner, str) else b"\t"
        _grows_past("'expandtabs'", n + owner.count(tab) * max(_int_arg(args, kwargs, 0, "tabsize", 8), 0), n)
    elif name == "replace" and len(args) >= 2 and isinstance(args[0], type(owner)) and isinstance(args[1], type(owner)):
        old, new = args[0], args[1]
        count = _int_arg(args, kwargs, 2, "count", -1)
        hits = owner.count(old) if old else n + 1
        if count >= 0:
            hits = min(hits, count)
        _grows_past("'replace'", n + hits * max(len(new) - len(old), 0), n)
    elif name == "join" and args:
        items = args[0] if isinstance(args[0], (list, tuple)) else list(args[0])
        if len(items) > MAX_TEXT:
            raise TemplateLimit(f"'join' of more than {MAX_TEXT} items")
        _grows_past("'join'", sum(_weight(i) for i in items) + n * max(len(items) - 1, 0))
        args = (items, *args[1:])
    elif name == "encode":
        _grows_past("'encode'", 4 * n, n)
    elif name == "translate" and args and isinstance(args[0], dict):
        longest = max((_weight(v) for v in args[0].values()), default=1)
        _grows_past("'translate'", n * max(longest, 1), n)
    return args


_STRINGIFY = {"string", "tojson", "pprint", "xmlattr", "urlencode", "list", "sum"}
_COUNTS = {"batch": 0, "slice": 0}  # filters whose first parameter is a number of items or groups
_WIDTH_FILTERS = {"center", "indent", "wordwrap", "truncate", "filesizeformat"}
# Parameters that cost far more than their size: round(-10**9) computes 10**(10**9), and
# tojson(indent=N) writes N spaces before every item, in one join.
_SMALL_PARAMS = {"round": 1000, "tojson": 16}
# Filters that do not go through their value's items.
_LIGHT_FILTERS = {"length", "count", "first", "last", "random", "default", "d", "list", "batch", "slice", "reverse"}


def _filter_estimate(name: str, value, args: list, kwargs: dict) -> int | None:
    """The length of what a filter would build, where it can exceed its input's."""
    if name == "center" and isinstance(value, str):
        return max(len(value), _int_arg(args, kwargs, 0, "width", 80))
    if name == "indent" and isinstance(value, str):
        width = args[0] if args else kwargs.get("width", 4)
        step = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
        return len(value) + (value.count("\n") + 1) * max(step, 0)
    if name == "wordwrap" and isinstance(value, str):
        width = max(_int_arg(args, kwargs, 0, "width", 79), 1)
        wrap = args[2] if len(args) > 2 else kwargs.get("wrapstring")
        return len(value) + (len(value) // width + 1) * (len(wrap) if isinstance(wrap, str) else 1)
    if name == "replace" and isinstance(value, str) and len(args) >= 2:
        old, new = str(args[0]), str(args[1])
        count = args[2] if len(args) > 2 and isinstance(args[2], int) else kwargs.get("count")
        hits = value.count(old) if old else len(value) + 1
        if isinstance(count, int) and count >= 0:
            hits = min(hits, count)
        return len(value) + hits * max(len(new) - len(old), 0)
    if name in ("escape", "e", "forceescape") and isinstance(value, str):
        return len(value) + 4 * (value.count("&") + value.count("'") + value.count('"')) + 3 * (value.count("<") + value.count(">"))
    if name == "urlize" and isinstance(value, str):
        extra = sum(_weight(a) for a in args) + sum(_weight(v) for v in kwargs.values())
        return len(value) + (value.count(".") + value.count("@") + value.count(":") + 1) * (2 * len(value.split()[0]) if value.split() else 0) \
            + (value.count(".") + value.count("@") + value.count(":") + 1) * (extra + 64)
    if name in _STRINGIFY:
        extra = sum(_weight(a) for a in args) + sum(_weight(v) for v in kwargs.values())
        return (0 if isinstance(value, str) and name in ("string", "list") else _weight(value)) + extra
    return None


def _checked_filter(name: str, filt):
    # Filters marked with jinja's pass_* decorators get the environment or context first.
    skip = 1 if hasattr(filt, "jinja_pass_arg") else 0

    @functools.wraps(filt)
    def checked(*args, **kwargs):
        value, params = (args[skip] if len(args) > skip else None), list(args[skip + 1:])
        if name in _WIDTH_FILTERS:
            for p in params + list(kwargs.values()):
                if isinstance(p, int) and not isinstance(p, bool) and p > MAX_TEXT:
                    raise TemplateLimit(f"filter '{name}' given a width of {p}")
        if name in _COUNTS and params and isinstance(params[0], int) and params[0] > MAX_RANGE:
            raise TemplateLimit(f"filter '{name}' given {params[0]} (at most {MAX_RANGE})")
        if name not in _LIGHT_FILTERS and not isinstance(value, str) and _weight(value, MAX_BUILT) > MAX_BUILT:
            # A filter that goes through the items (sort, unique, map...) of a list that
            # holds the same long text many times would copy it as many times.
            raise TemplateLimit(f"filter '{name}' given a value of more than {MAX_BUILT} characters")
        if name in _SMALL_PARAMS:
            for p in params + list(kwargs.values()):
                if (isinstance(p, int) and not isinstance(p, bool) and abs(p) > _SMALL_PARAMS[name]) or (
                        isinstance(p, str) and name == "tojson" and len(p) > _SMALL_PARAMS[name]):
                    raise TemplateLimit(f"filter '{name}' given {str(p)[:20]} (at most {_SMALL_PARAMS[name]})")
        if name == "format" and isinstance(value, str):
            _check_percent_format(value, params + list(kwargs.values()))
        elif name == "join" and value is not None:
            items = value if isinstance(value, (list, tuple)) else list(value)
            sep = params[0] if params else kwargs.get("d", "")
            attribute = len(params) > 1 or "attribute" in kwargs
            if not attribute:
                _grows_past("filter 'join'", sum(_weight(i) for i in items) + _weight(sep) * max(len(items) - 1, 0))
            args = (*args[:skip], items, *args[skip + 1:])
        else:
            estimate = _filter_estimate(name, value, params, kwargs)
            if estimate is not None:
                _grows_past(f"filter '{name}'", estimate, _size(value))
        result = filt(*args, **kwargs)
        if _size(result) > MAX_TEXT and _size(result) > _size(value):
            raise TemplateLimit(f"filter '{name}' built a value longer than {MAX_TEXT} characters")
        _account(result)
        return result

    return checked


class _Sandbox(ImmutableSandboxedEnvironment):
    """jinja's immutable sandbox, plus limits on the operators, methods and filters
    that can make a huge value from a small template."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})
    code_generator_class = _CodeGenerator
    concat = staticmethod(_checked_concat)
    checked_join = staticmethod(_checked_join)

    def call_binop(self, context, operator, left, right):
        if operator == "*":
            if isinstance(left, int) and isinstance(right, int) and left.bit_length() + right.bit_length() > MAX_INT_BITS:
                raise TemplateLimit(f"'*' would build an integer of more than {MAX_INT_BITS} bits")
            count = right if isinstance(right, int) else left if isinstance(left, int) else 0
            if max(_size(left), _size(right)) * max(count, 0) > MAX_TEXT:
                raise TemplateLimit(f"'*' would build a value longer than {MAX_TEXT} characters")
        elif operator == "**":
            if isinstance(right, (int, float)) and abs(right) > MAX_POWER:
                raise TemplateLimit(f"'**' exponent larger than {MAX_POWER}")
            if isinstance(left, int) and isinstance(right, int) and right > 0 and left.bit_length() * right > MAX_INT_BITS:
                raise TemplateLimit(f"'**' would build an integer of more than {MAX_INT_BITS} bits")
        elif operator == "%" and isinstance(left, str):
            raise TemplateLimit("'%' string formatting is not allowed in templates; use the format filter or ~")
        elif operator == "+" and isinstance(left, (str, bytes, list, tuple)) and type(left) is type(right):
            _grows_past("'+'", len(left) + len(right), max(len(left), len(right)))
        result = super().call_binop(context, operator, left, right)
        _account(result)
        return result

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (jinja's own signature)
        owner = getattr(__obj, "__self__", None)
        if isinstance(owner, (str, bytes)) and isinstance(__obj, types.BuiltinMethodType):
            args = _check_str_method(owner, __obj.__name__, args, kwargs)
        result = super().call(__context, __obj, *args, **kwargs)
        _account(result)
        return result

    def wrap_str_format(self, value):
        if not isinstance(value, (types.MethodType, types.BuiltinMethodType)) or value.__name__ not in ("format", "format_map"):
            return None
        owner = value.__self__
        if not isinstance(owner, str) or isinstance(owner, Markup):
            return super().wrap_str_format(value)
        formatter = _Formatter(self)
        is_map = value.__name__ == "format_map"

        def wrapper(*args, **kwargs):
            if is_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one argument")
                args, kwargs = (), args[0]
            return formatter.vformat(owner, args, kwargs)

        return functools.update_wrapper(wrapper, value)


def _limited_range(*args):
    r = range(*args)
    if len(r) > MAX_RANGE:
        raise TemplateLimit(f"range() of more than {MAX_RANGE} items")
    return r


def _limited_lipsum(lipsum):
    @functools.wraps(lipsum)
    def limited(n=5, html=True, min=20, max=100):
        for what, value in (("n", n), ("min", min), ("max", max)):
            if isinstance(value, int) and value > 1000:
                raise TemplateLimit(f"lipsum() {what} larger than 1000")
        return lipsum(n, html, min, max)

    return limited


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


def _make_environment(**options) -> ImmutableSandboxedEnvironment:
    env = _Sandbox(autoescape=False, extensions=[GenerationBlock, jinja2.ext.loopcontrols], **options)
    env.globals["range"] = _limited_range
    if "lipsum" in env.globals:
        env.globals["lipsum"] = _limited_lipsum(env.globals["lipsum"])
    for name in list(env.filters):
        env.filters[name] = _checked_filter(name, env.filters[name])
    return env


@lru_cache(maxsize=1)
def environment() -> ImmutableSandboxedEnvironment:
    """The environment of every template a spec supplies but chat templates."""
    return _make_environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False, finalize=_finalize)


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
    if not isinstance(value, str) and _weight(value) > MAX_TEXT:
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
    env = _make_environment(undefined=_ChatUndefined, trim_blocks=True, lstrip_blocks=True, finalize=_chat_finalize)
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


# What transformers gives a chat template besides what ftspec's checks pass in.
CHAT_NAMES = ("messages", "add_generation_prompt", "tools", "documents", "bos_token", "eos_token", "unk_token",
              "sep_token", "pad_token", "cls_token", "mask_token", "additional_special_tokens",
              "raise_exception", "strftime_now")


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
        raise SpecError.one(pos, key, f"template file '{ref.file}' is larger than {MAX_TEMPLATE_BYTES >> 20} MiB") from None
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
    compile it as transformers compiles chat templates. ``budget``: the time all the
    compilations of one check may take together (jinja compiles some 3 000 tags a
    second: a spec full of them must not take minutes)."""
    env = chat_environment() if chat else environment()
    if len(resolved.text) > MAX_TEMPLATE_CHARS:
        raise SpecError.one(pos, key, f"template longer than {MAX_TEMPLATE_CHARS} characters")
    if budget is not None and budget.left <= 0:
        raise SpecError.one(pos, key, f"templates too large or complex: compiling them took more than {budget.seconds:g} s in all")
    try:
        with _time_limit(budget.left if budget is not None else 0, budget):
            ast = env.parse(resolved.text)
            for node in ast.find_all(tuple(_LOADING)):
                tag = _LOADING[type(node)]
                line = f" (template line {node.lineno})" if resolved.source == "inline" and node.lineno > 1 else ""
                raise SpecError.one(_where(resolved, pos, spec_dir, node.lineno if resolved.source != "inline" else None), key,
                                    f"'{{% {tag} %}}' is not supported in ftspec templates{line}: a template cannot load "
                                    "other templates; write the text in this one")
            names = set(jinja2.meta.find_undeclared_variables(ast))
            template = env.from_string(ast)
    except jinja2.TemplateSyntaxError as exc:
        line = f" (template line {exc.lineno})" if resolved.source == "inline" and exc.lineno and exc.lineno > 1 else ""
        raise SpecError.one(_where(resolved, pos, spec_dir, exc.lineno), key,
                            f"template syntax error: {exc.message}{line}") from None
    except _Timeout:
        raise SpecError.one(pos, key, f"templates too large or complex: compiling them took more than {budget.seconds:g} s in all") from None
    except RecursionError:
        raise SpecError.one(pos, key, "template nests too deeply") from None
    except (SyntaxError, MemoryError, ValueError, OverflowError) as exc:  # Python's compiler refusing the generated code
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
    """Wall time that all the renderings of one check may take together (validate
    renders many sample rows with many templates: each rendering is limited, and so
    is their sum)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.spent = 0.0

    @property
    def left(self) -> float:
        return self.seconds - self.spent

    def exhausted(self) -> TemplateLimit:
        return TemplateLimit(f"rendering the sample rows took more than {self.seconds:g} s in all (a slow template?)")


class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout()


class _time_limit:
    """Raise _Timeout in the main thread after ``seconds`` (0: no limit); with
    ``budget``, the time taken is counted against it."""

    def __init__(self, seconds: float, budget: "RenderBudget | None" = None):
        self.seconds = seconds
        self.budget = budget
        self.timed = bool(seconds) and hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()

    def __enter__(self):
        if self.timed:
            self.previous = signal.signal(signal.SIGALRM, _alarm)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.timed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self.previous)
        if self.budget is not None:
            self.budget.spent += time.perf_counter() - self.start
        return False


def render(template: jinja2.Template, row: dict, seconds: float = RENDER_SECONDS, budget: RenderBudget | None = None) -> str:
    """Render with a row's columns, within the time and size limits (and what is left
    of ``budget``); raises jinja2's errors (or TemplateLimit) for the caller to place."""
    limit = seconds
    if budget is not None:
        if budget.left <= 0:
            raise budget.exhausted()
        limit = min(seconds, budget.left) if seconds else budget.left
    outer = _state.active, _state.built
    _state.active, _state.built = True, 0
    try:
        try:
            with _time_limit(limit, budget):
                text = template.render(row)
        finally:
            _state.active, _state.built = outer
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
