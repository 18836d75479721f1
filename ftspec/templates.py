"""Jinja templates as ftspec uses them: resolved from inline text, a file next to
the spec or a built-in, rendered only in a sandbox.

A spec may come from someone the repository owner does not fully trust, so every
template is rendered in jinja's ``ImmutableSandboxedEnvironment`` with
``StrictUndefined``: no attribute walks to Python internals, no mutation, and a
missing column is an error rather than an empty string.
"""

from __future__ import annotations

import hashlib
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


@lru_cache(maxsize=1)
def environment() -> ImmutableSandboxedEnvironment:
    return ImmutableSandboxedEnvironment(
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=False,
        extensions=[GenerationBlock],
    )


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


def render(template: jinja2.Template, row: dict) -> str:
    """Render with a row's columns; raises jinja2's errors for the caller to place."""
    return template.render(row)


def describe_render_error(exc: Exception) -> str:
    if isinstance(exc, jinja2.UndefinedError):
        return f"template error: {exc.message}"
    if isinstance(exc, jinja2.exceptions.SecurityError):
        return f"template refused by the sandbox: {exc}"
    return f"template error: {type(exc).__name__}: {exc}"
