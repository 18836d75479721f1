"""The jinja sandbox every ftspec template renders in, and the limits it enforces.

A spec may come from someone the repository owner does not fully trust; its
templates must not hang a CI runner or fill its memory. jinja's
``ImmutableSandboxedEnvironment`` already refuses attribute walks to Python
internals and mutation; :func:`make_environment` adds limits on everything that can
build a large value from a small template (operators, str methods, filters, ``~``,
``range``), each checked *before* it runs: Python cannot interrupt one call into C
(a str method, a join, a format). The work a rendering may do is counted in steps (each
item a ``for`` loop draws, each call, each filter, weighed by the items it goes through)
against :data:`MAX_STEPS` and the allowance :func:`metered` is given: the same count on
every machine, however loaded. Where templates are rendered
(:mod:`ftspec.data.templates`) a wall clock is kept as a backstop only.
"""

from __future__ import annotations

import functools
import re
import threading
import types
from contextlib import contextmanager
from typing import Iterator

import jinja2
import jinja2.ext
import jinja2.nodes
from jinja2.compiler import CodeGenerator, operators, optimizeconst
from jinja2.runtime import LoopContext, Macro
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedFormatter
from markupsafe import Markup

# Limits on what one rendering may build.
MAX_TEXT = 1_000_000  # characters a rendering, or one operation in it, may produce
MAX_BUILT = 32_000_000  # characters all the operations of one rendering may produce together
MAX_RANGE = 10_000  # items range() may produce (and batch/slice may make)
MAX_POWER = 10_000  # largest exponent `**` may take
MAX_INT_BITS = 100_000  # largest integer (in bits) `*` and `**` may build
# Jinja tokens that all the templates one check compiles may hold together. Compiling costs
# by the token (some 30 000 a second on a small CPU), lexing some ten times less: the budget
# counts the work, the same on every machine; a long chat template is some 3 000 tokens.
MAX_COMPILE_TOKENS = 20_000
# Steps one rendering may take: an item drawn by a `for` loop or a lazy filter (map,
# select...), an attribute or item looked up, a call, a filter is one step; a call, filter or
# comparison that goes through a list costs one more per STEP_ITEMS items (per STEP_CHARS
# characters of a text), a macro call MACRO_STEPS, lipsum() a step a word. A chat template
# over a conversation of twenty turns takes some hundred steps; a step costs about a
# microsecond (0.3 to 5 on a small CPU): bench/bounded_work.py times them.
MAX_STEPS = 100_000
MAX_STEPS_IN_ALL = 1_000_000  # and all the renderings of one command together (validate's sample rows)
STEP_ITEMS = 4
STEP_CHARS = 1024
MACRO_STEPS = 5


class TemplateLimit(jinja2.exceptions.SecurityError):
    """A template went past one of the limits above."""


def _size(value) -> int:
    return len(value) if isinstance(value, (str, bytes, list, tuple)) else 0


def weight(value, cap: int = MAX_TEXT) -> int:
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
    steps = 0
    max_steps = MAX_STEPS


_state = _State()


class StepLimit(TemplateLimit):
    """A rendering took more steps than it was allowed (see :data:`MAX_STEPS`)."""


class Meter:
    """What one rendering did: read ``steps`` once :func:`metered` has ended."""

    steps = 0


def step(cost: int = 1) -> None:
    """Count ``cost`` steps against the rendering's allowance."""
    if _state.active:
        _state.steps += cost
        if _state.steps > _state.max_steps:
            raise StepLimit(f"the template took more than {_state.max_steps} steps")


def _items(value) -> int:
    """The steps it costs to go through ``value``: one per STEP_ITEMS items, per STEP_CHARS characters."""
    if isinstance(value, (str, bytes)):
        return len(value) // STEP_CHARS
    if isinstance(value, (list, tuple, dict, set, frozenset, range)):
        return len(value) // STEP_ITEMS
    return 0


def counted(iterable):
    """A loop's iterable, each item drawn one step (the items a loop's `if` skips too)."""
    for item in iterable:
        step()
        yield item


def weighed(value):
    """An operand of a comparison (``==``, ``in``...), which goes through its items: ``value``,
    its items counted."""
    if _state.active and isinstance(value, (str, bytes, list, tuple, dict, set, frozenset)):
        step(_items(value))
    return value


def _account(value) -> None:
    """Count what an operation built against the rendering's allowance."""
    if _state.active:
        _state.built += _size(value)
        if _state.built > MAX_BUILT:
            raise TemplateLimit(f"the template built more than {MAX_BUILT} characters in one rendering")


@contextmanager
def metered(max_steps: int = MAX_STEPS) -> Iterator[Meter]:
    """Count what the operations inside build against one rendering's :data:`MAX_BUILT`,
    and the steps they take against ``max_steps`` (:class:`StepLimit` past it); a rendering
    inside another gets counts of its own, and the outer one's are restored."""
    outer = _state.active, _state.built, _state.steps, _state.max_steps
    _state.active, _state.built, _state.steps, _state.max_steps = True, 0, 0, max_steps
    meter = Meter()
    try:
        yield meter
    finally:
        meter.steps = _state.steps
        _state.active, _state.built, _state.steps, _state.max_steps = outer


def _grows_past(what: str, estimate: int, before: int = 0) -> None:
    if estimate > MAX_TEXT and estimate > before:
        raise TemplateLimit(f"{what} would build a value longer than {MAX_TEXT} characters")


def _checked_join(pieces) -> str:
    """``~``: every operand as text, joined, within the limits."""
    texts = []
    total = 0
    for piece in pieces:
        if not isinstance(piece, str) and weight(piece) > MAX_TEXT:
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
    """jinja's code generator, with ``~`` going through :func:`_checked_join`, every
    ``for`` loop's items drawn through :func:`counted` and every comparison's operands
    weighed (:func:`weighed`)."""

    @optimizeconst
    def visit_Compare(self, node: jinja2.nodes.Compare, frame) -> None:
        self.write("(environment.weighed(")
        self.visit(node.expr, frame)
        self.write(")")
        for op in node.ops:
            self.visit(op, frame)
        self.write(")")

    def visit_Operand(self, node: jinja2.nodes.Operand, frame) -> None:
        self.write(f" {operators[node.op]} environment.weighed(")
        self.visit(node.expr, frame)
        self.write(")")

    def visit_For(self, node: jinja2.nodes.For, frame) -> None:
        if not getattr(node, "ftspec_counted", False):
            node.iter = jinja2.nodes.Call(jinja2.nodes.EnvironmentAttribute("counted"), [node.iter], [], None, None,
                                          lineno=node.iter.lineno)
            node.ftspec_counted = True
        super().visit_For(node, frame)

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
    estimate = len(fmt) + sum(weight(a) for a in args)
    for width, precision, _conversion in _PERCENT.findall(fmt):
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
        if not isinstance(value, str) and weight(value) > MAX_TEXT:
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
        _grows_past("'join'", sum(weight(i) for i in items) + n * max(len(items) - 1, 0))
        args = (items, *args[1:])
    elif name == "encode":
        _grows_past("'encode'", 4 * n, n)
    elif name == "translate" and args and isinstance(args[0], dict):
        longest = max((weight(v) for v in args[0].values()), default=1)
        _grows_past("'translate'", n * max(longest, 1), n)
    return args


_STRINGIFY = {"string", "tojson", "pprint", "xmlattr", "urlencode", "list", "sum"}
_COUNTS = {"batch": 0, "slice": 0}  # filters whose first parameter is a number of items or groups
_WIDTH_FILTERS = {"center", "indent", "wordwrap", "truncate", "filesizeformat"}
# Parameters that cost far more than their size: round(-10**9) computes 10**(10**9), and
# tojson(indent=N) writes N spaces before every item, in one join.
_SMALL_PARAMS = {"round": 1000, "tojson": 16}
# Filters that go through their value's items only as their result's are drawn.
_LAZY_FILTERS = {"map", "select", "reject", "selectattr", "rejectattr"}
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
        quoted = value.count("&") + value.count("'") + value.count('"')
        return len(value) + 4 * quoted + 3 * (value.count("<") + value.count(">"))
    if name == "urlize" and isinstance(value, str):
        extra = sum(weight(a) for a in args) + sum(weight(v) for v in kwargs.values())
        links = value.count(".") + value.count("@") + value.count(":") + 1  # places a link may start, at most
        words = value.split()
        return len(value) + links * (2 * len(words[0]) if words else 0) + links * (extra + 64)
    if name in _STRINGIFY:
        extra = sum(weight(a) for a in args) + sum(weight(v) for v in kwargs.values())
        return (0 if isinstance(value, str) and name in ("string", "list") else weight(value)) + extra
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
        if name not in _LIGHT_FILTERS and not isinstance(value, str) and weight(value, MAX_BUILT) > MAX_BUILT:
            # A filter that goes through the items (sort, unique, map...) of a list that
            # holds the same long text many times would copy it as many times.
            raise TemplateLimit(f"filter '{name}' given a value of more than {MAX_BUILT} characters")
        step(1 if name in _LIGHT_FILTERS or name in _LAZY_FILTERS else 1 + _items(value))
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
                _grows_past("filter 'join'", sum(weight(i) for i in items) + weight(sep) * max(len(items) - 1, 0))
            args = (*args[:skip], items, *args[skip + 1:])
        else:
            estimate = _filter_estimate(name, value, params, kwargs)
            if estimate is not None:
                _grows_past(f"filter '{name}'", estimate, _size(value))
        result = filt(*args, **kwargs)
        if _size(result) > MAX_TEXT and _size(result) > _size(value):
            raise TemplateLimit(f"filter '{name}' built a value longer than {MAX_TEXT} characters")
        _account(result)
        # A lazy filter's work is done as its items are drawn, perhaps by the next filter.
        return counted(result) if isinstance(result, types.GeneratorType) else result

    return checked


class _Sandbox(ImmutableSandboxedEnvironment):
    """jinja's immutable sandbox, plus limits on the operators, methods and filters
    that can make a huge value from a small template."""

    intercepted_binops = frozenset({"*", "**", "%", "+"})
    code_generator_class = _CodeGenerator
    concat = staticmethod(_checked_concat)
    checked_join = staticmethod(_checked_join)
    counted = staticmethod(counted)
    weighed = staticmethod(weighed)

    def call_binop(self, context, operator, left, right):
        if operator == "*":
            if (isinstance(left, int) and isinstance(right, int)
                    and left.bit_length() + right.bit_length() > MAX_INT_BITS):
                raise TemplateLimit(f"'*' would build an integer of more than {MAX_INT_BITS} bits")
            count = right if isinstance(right, int) else left if isinstance(left, int) else 0
            if max(_size(left), _size(right)) * max(count, 0) > MAX_TEXT:
                raise TemplateLimit(f"'*' would build a value longer than {MAX_TEXT} characters")
        elif operator == "**":
            if isinstance(right, (int, float)) and abs(right) > MAX_POWER:
                raise TemplateLimit(f"'**' exponent larger than {MAX_POWER}")
            if (isinstance(left, int) and isinstance(right, int) and right > 0
                    and left.bit_length() * right > MAX_INT_BITS):
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
        cost = 1
        if isinstance(owner, (str, bytes, list, tuple, dict)) and isinstance(__obj, types.BuiltinMethodType):
            cost += _items(owner)
            if isinstance(owner, (str, bytes)):
                args = _check_str_method(owner, __obj.__name__, args, kwargs)
                if __obj.__name__ == "join" and args:
                    cost += _items(args[0])
        elif isinstance(__obj, Macro):
            cost = MACRO_STEPS
        elif isinstance(__obj, LoopContext) and args:  # a recursive loop's `loop(items)`
            args = (counted(args[0]), *args[1:])
        step(cost)
        result = super().call(__context, __obj, *args, **kwargs)
        _account(result)
        return result

    def getattr(self, obj, attribute):
        step()
        return super().getattr(obj, attribute)

    def getitem(self, obj, argument):
        step()
        return super().getitem(obj, argument)

    def wrap_str_format(self, value):
        if (not isinstance(value, (types.MethodType, types.BuiltinMethodType))
                or value.__name__ not in ("format", "format_map")):
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
        counts = [v if isinstance(v, int) and v > 0 else 1 for v in (n, max)]
        step(counts[0] * (counts[1] + 2) // 2)  # a step a word it may write
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


def count_tokens(env: jinja2.Environment, text: str, most: int) -> int:
    """The jinja tokens of ``text``, counted only up to one past ``most`` (so that a huge
    template costs no more to refuse than ``most`` tokens); a syntax error is jinja's."""
    count = 0
    for _token in env.lex(text):
        count += 1
        if count > most:
            break
    return count


def make_environment(**options) -> ImmutableSandboxedEnvironment:
    """A sandboxed environment with every limit of this module; ``options`` are jinja's
    (``undefined``, ``finalize``, whitespace control)."""
    env = _Sandbox(autoescape=False, extensions=[GenerationBlock, jinja2.ext.loopcontrols], **options)
    env.globals["range"] = _limited_range
    if "lipsum" in env.globals:
        env.globals["lipsum"] = _limited_lipsum(env.globals["lipsum"])
    for name in list(env.filters):
        env.filters[name] = _checked_filter(name, env.filters[name])
    return env

