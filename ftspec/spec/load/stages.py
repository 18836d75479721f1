"""Stages: a spec's ``stages:`` list taken out of it, and each stage's keys put over the
rest of the spec to make that stage's own spec."""

from __future__ import annotations

import re

from ftspec.core.errors import Issue, Pos, SpecError, did_you_mean
from ftspec.spec.limits import MAX_STAGES
from ftspec.spec.load.document import Document, merge, relabel, subdocument

# What a stage may set. A stage's `model`, `data`, `format` and `method` replace the
# spec's whole (a preference set does not inherit the SFT set's columns); its
# `training`, `eval`, `compute` and `tracking` merge key by key onto the spec's.
STAGE_REPLACES = ("model", "data", "format", "method")
STAGE_MERGES = ("training", "eval", "compute", "tracking")
STAGE_KEYS = ("name", "description", "from") + STAGE_REPLACES + STAGE_MERGES
_STAGE_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


def split_stages(doc: Document) -> list[tuple[str, str | None, Pos, Document]]:
    """Take `stages` out of the spec: each stage's name, what it starts from, where it is
    written, and its keys (without name and from; a stage's description is its plan's).
    Every mistake in the list is reported at once, each at its line."""
    if "stages" not in doc.data:
        return []
    raw = doc.data.pop("stages")
    origin = doc.where[("stages",)]
    holder = Document({"stages": raw}, {p: o for p, o in doc.where.items() if p[:1] == ("stages",)}, doc.root)
    doc.where = {p: o for p, o in doc.where.items() if p[:1] != ("stages",)}
    example = "stages: [{name: sft}, {name: dpo, method: {kind: dpo}, data: …, format: …}]"
    if not isinstance(raw, list) or not raw:
        raise SpecError.one(origin.pos, "stages",
                            f"must be a list of stages, each a mapping with a name, e.g. {example}")
    if len(raw) > MAX_STAGES:
        raise SpecError.one(origin.pos, "stages", f"more than {MAX_STAGES} stages ({len(raw)})")
    problems: list[Issue] = []
    out = []
    seen: dict[str, int] = {}
    for i, stage in enumerate(raw):
        where = holder.where.get(("stages", i), origin)
        here = f"stages.{i}"
        if not isinstance(stage, dict):
            problems.append(Issue(where.pos, here, "a stage must be a mapping with a name and the keys it changes"))
            continue
        name = stage.get("name")
        # Where this stage writes key `k`; `i` and `where` are bound to this stage, not to the loop's variables.
        key_pos = lambda k, i=i, where=where: (holder.where.get(("stages", i, k)) or where).pos  # noqa: E731
        if not isinstance(name, str) or not _STAGE_NAME.match(name):
            problems.append(Issue(key_pos("name") if "name" in stage else where.pos, f"{here}.name",
                                  "every stage needs a name: lower-case letters, digits, '.', '_' and '-'"
                                  + ("" if name is None else f" (got {str(name)[:40]!r})")))
            name = None
        elif name == "base":  # `from: base` names the base model: a stage of that name could never be started from
            problems.append(Issue(key_pos("name"), f"{here}.name",
                                  "'base' is reserved: `from: base` starts a stage from the base model",
                                  "name the stage otherwise, e.g. 'base-sft'"))
        elif name in seen:
            problems.append(Issue(key_pos("name"), f"{here}.name",
                                  f"stage '{name}' is named twice (first as stage {seen[name] + 1})"))
        else:
            seen[name] = i
        for key in stage:
            if key not in STAGE_KEYS:
                o = holder.where.get(("stages", i, key)) or where
                problems.append(Issue(o.key_pos or o.pos, f"{here}.{key}", f"a stage cannot set '{key}'",
                                      did_you_mean(str(key), list(STAGE_KEYS))
                                      or f"a stage sets {', '.join(STAGE_KEYS[1:])}"))
        start = out[-1][0] if out else None
        if "from" in stage:
            ref = stage["from"]
            if "model" in stage:
                problems.append(Issue(key_pos("from"), f"{here}.from",
                                      "a stage with its own model starts from that model",
                                      "leave out 'from' or 'model'"))
            elif ref == "base":
                start = None
            elif not isinstance(ref, str) or ref not in seen or seen[ref] >= i:
                earlier = [n for n in seen if seen[n] < i]
                problems.append(Issue(key_pos("from"), f"{here}.from",
                                      f"'{str(ref)[:40]}' is not an earlier stage; "
                                      "a stage starts from an earlier stage "
                                      f"({', '.join(earlier) or 'none before this one'}) or from base",
                                      did_you_mean(str(ref), earlier)))
            else:
                start = ref
        if "model" in stage:
            start = None
        keys = {k: v for k, v in stage.items() if k in ("description",) + STAGE_REPLACES + STAGE_MERGES}
        overlay = subdocument(Document({"s": keys}, {("s",) + p[2:]: o for p, o in holder.where.items()
                                                      if p[:2] == ("stages", i) and (len(p) == 2 or p[2] in keys)},
                                        holder.root), ("s",))
        overlay.where = relabel(overlay.where, "spec")
        out.append((name, start, where.pos, overlay))
    if problems:
        raise SpecError(problems)
    return out


def put_stage(spec: Document, overlay: Document) -> Document:
    """The spec with a stage's keys put over it: its model, data, format and method
    replace the spec's, its other sections merge key by key."""
    gone = [k for k in STAGE_REPLACES if k in overlay.data]
    base = Document({k: v for k, v in spec.data.items() if k not in gone},
                    {p: o for p, o in spec.where.items() if not (p and p[0] in gone)}, spec.root)
    return merge(base, overlay)
