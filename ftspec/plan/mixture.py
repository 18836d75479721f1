"""The plan's training mixture (``data.train`` as a list; docs/use-cases/mixtures.md): each
part's source, its own renames and derived columns, how it is drawn (weights normalised), and
its rows as validate counted them (ftspec.checks.mixture): available after data.filter and
its held-out split, and drawn."""

from __future__ import annotations

from typing import Any, Callable

from ftspec.checks import Context
from ftspec.checks.mixture import mix_seed, mix_total, sample_chars


def mixture_source(ctx: Context, source: Callable[[Any], dict], template: Callable[[Any], dict]) -> dict:
    """The plan's MixtureSource: ``source`` makes a part's file or hub source of its
    SourceInfo, ``template`` a plan template of a resolved one."""
    data = ctx.spec.data
    counts, per_part, _ = ctx.mixture_counts()
    parts = []
    for info, counted in zip(ctx.parts, per_part):
        item = info.spec
        parts.append({
            "name": info.name,
            "source": source(info),
            "rename": dict(item.rename),
            "derive": [{"name": n, "template": template(ctx.templates[f"{info.key}.derive.{n}"])}
                       for n in item.derive],
            "take": counted.take,
            "amount": counted.amount,
            "available": counted.available,
            "drawn": counted.drawn,
            "sample_chars": sample_chars(ctx, info),
        })
    return {"kind": "mixture", "parts": parts, "total": mix_total(data), "seed": mix_seed(data),
            "rows": counts["train"]}


def _num(x: float) -> str:
    return f"{x:g}"


def describe_mixture(src: Any, estimated: bool = False) -> list[str]:
    """The plan's lines on a training mixture: per source where it reads, how it is drawn, its
    rows available and drawn, the times each row is used, its share of the mixture's rows and
    (~, from validate's sample) of its tokens."""
    mark = "~" if estimated else ""
    total = src.total if isinstance(src.total, str) else f"{src.total} weighted rows"
    rows = "?" if src.rows is None else f"{mark}{src.rows}"
    lines = [f"train: a mixture of {len(src.parts)} sources, {rows} rows (total {total}, seed {src.seed}):"]
    drawn = [p.drawn for p in src.parts]
    known = None not in drawn and sum(drawn) > 0
    tokens = [p.drawn * p.sample_chars for p in src.parts] if known and all(
        p.sample_chars is not None for p in src.parts) else None
    width = max(len(p.name) for p in src.parts)
    for i, p in enumerate(src.parts):
        s = p.source
        where = (f"{s.path} ({s.format}, {s.rows} rows, sha256 {s.sha256[:12]})" if s.kind == "file"
                 else f"hub {s.hub} [{s.split}]" + (f" @ {s.revision}" if s.revision else ""))
        how = {"weight": f"weight {p.amount:.3g}", "rows": f"rows {int(p.amount)}",
               "epochs": f"epochs {_num(p.amount)}"}[p.take]
        if p.drawn is None:
            counts = f"{how}: rows drawn known when the data is read"
        else:
            available = "?" if p.available is None else f"{mark}{p.available}"
            counts = f"{how}: {mark}{p.drawn} of {available} rows"
            if p.available:  # sampled without repeats, or every row used about this many times
                counts += (f" ({p.drawn / p.available:.0%} of them, none twice)" if p.drawn < p.available
                           else f" (each row x{p.drawn / p.available:.2f})")
            if known:
                counts += f", {p.drawn / sum(drawn):.1%} of rows"
            if tokens and sum(tokens) > 0:
                counts += f", ~{tokens[i] / sum(tokens):.1%} of tokens"
        lines.append(f"  {p.name:<{width}}  {where}")
        lines.append(f"  {'':<{width}}  {counts}")
    return lines
