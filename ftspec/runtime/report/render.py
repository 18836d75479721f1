"""The report document rendered as Markdown and as one self-contained HTML page.

Every piece of text in a block is plain text: the Markdown renderer backslash-escapes
what could start markup, and the HTML page comes from a jinja template
(``ftspec/runtime/report/templates/report.html.j2``) rendered with autoescape on.
"""

from __future__ import annotations

import base64
import re
from functools import lru_cache
from typing import Any, Mapping

from ftspec.core.text import printable
from ftspec.runtime.report.blocks import Alert, Block, Chart, Document, Fields, Heading, Paragraph, Table

__all__ = ["render_html", "render_markdown"]

TEMPLATE = "report.html.j2"

_KINDS: dict[type, str] = {Heading: "heading", Paragraph: "paragraph", Alert: "alert", Table: "table",
                           Fields: "fields", Chart: "chart"}


def _kind(block: Block) -> str:
    try:
        return _KINDS[type(block)]
    except KeyError:
        raise TypeError(f"not a report block: {block!r}") from None


# --------------------------------------------------------------------------- Markdown


_MD_SPECIAL = re.compile(r"[\\`*\[\]|]|<(?=[A-Za-z/!?])|&(?=#?\w+;)")


def md_escape(text: Any) -> str:
    """Plain text for one line of Markdown: what could start markup, an HTML tag or an entity is backslash-escaped."""
    text = "" if text is None else str(text)
    text = _MD_SPECIAL.sub(lambda m: "\\" + m.group(0), text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return " ⏎ ".join(_shown(text).split("\n"))


def _shown(value: Any) -> Any:
    """Text with its lines kept and any other control, format or separator character (an escape
    sequence, a bidi override from a file of the run) shown as its escape: both reports are
    also read with `cat` and in reviews."""
    return "\n".join(printable(line) for line in value.split("\n")) if isinstance(value, str) else value


def _md_block(block: Block) -> str:
    kind = _kind(block)
    if kind == "heading":
        return "#" * block.level + " " + md_escape(block.text)
    if kind == "paragraph":
        text = md_escape(block.text)
        return f"**{text}**" if block.strong else text
    if kind == "alert":
        return "> **⚠ " + md_escape(block.text) + "**"
    if kind == "table":
        lines = ["| " + " | ".join(md_escape(h) for h in block.header) + " |",
                 "|" + "|".join("---:" if i in block.numeric else "---" for i in range(len(block.header))) + "|"]
        lines += ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in block.rows]
        return "\n".join(lines)
    if kind == "fields":
        return "\n".join(f"- **{md_escape(k)}:** {md_escape(v)}" for k, v in block.pairs)
    # A chart: report.md is read in the report step's folder and as a copy at the top of the
    # run directory, so it links no file; the charts are inlined in report.html, beside it in both.
    return f"*Chart in report.html: {md_escape(block.caption)}*"


def render_markdown(doc: Document) -> str:
    return "\n\n".join(_md_block(b) for b in doc.blocks) + "\n"


# --------------------------------------------------------------------------- HTML


@lru_cache(maxsize=1)
def _template():
    from jinja2 import Environment, PackageLoader, StrictUndefined

    env = Environment(loader=PackageLoader("ftspec.runtime.report", "templates"), autoescape=True,
                      trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, undefined=StrictUndefined,
                      finalize=_shown)
    return env.get_template(TEMPLATE)


def render_html(doc: Document, images: Mapping[str, bytes]) -> str:
    """One page, the charts inlined as base64 PNG (a chart without its image is left out)."""
    uris = {name: "data:image/png;base64," + base64.b64encode(data).decode("ascii") for name, data in images.items()}
    return _template().render(title=doc.title, blocks=[(_kind(b), b) for b in doc.blocks], images=uris)
