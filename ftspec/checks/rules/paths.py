"""Rules on where a run writes: the output directory stays inside the repository,
away from every input and from what ftspec did not write; judge models stay inside too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

from ftspec.catalog.steps import STEPS
from ftspec.checks.facts import Context, hub_model_problem, is_local_model, template_refs
from ftspec.checks.registry import WHOLE_SPEC, rule
from ftspec.core.errors import Issue
from ftspec.core.layout import MARKER, STORE
from ftspec.core.paths import output_problem, resolved
from ftspec.spec import schema as S


def _inputs(ctx: Context) -> list[Path]:
    """Every local file and folder this spec reads: the spec and its bases, data files,
    template files, schemas, local models and tokenizers."""
    found: list[Path] = [Path(p) for p in ctx.loaded.files] + [ctx.loaded.path]
    found += [info.path for info in [*ctx.sources.values(), *ctx.parts] if info.path is not None]
    found += [ctx.spec_dir / ref.file for _, ref in template_refs(ctx.spec) if hasattr(ref, "file")]
    for metric in ctx.spec.eval.metrics:
        if isinstance(metric, S.JsonSchemaMetric):
            found.append(ctx.spec_dir / metric.schema_)
        if isinstance(metric, S.JudgeMetric) and is_local_model(metric.model, ctx.spec_dir):
            found.append(ctx.spec_dir / os.path.expanduser(metric.model))
    m = ctx.spec.model
    for name in (getattr(m, "base", None), getattr(m, "tokenizer", None)):
        if isinstance(name, str) and is_local_model(name, ctx.spec_dir):
            found.append(ctx.spec_dir / os.path.expanduser(name))
    return found


@rule(reads=WHOLE_SPEC)
def check_paths(ctx: Context) -> Iterator[Issue]:
    """The output directory stays inside the repository, away from every input (a run
    renames and removes files in it); local judge models stay inside too."""
    out = ctx.spec.output.dir.replace("{name}", ctx.spec.name)
    refusal = ctx.policy.outside(ctx.root / out, out)
    if refusal:
        yield ctx.error(("output", "dir"), refusal)
    else:
        inputs = _inputs(ctx)
        problem = (output_problem(ctx.root / out, ctx.root, inputs) or _beside(ctx.root / out, ctx.root, inputs)
                   or _foreign_step_folder(ctx.root / out))
        if STORE in Path(os.path.normpath(out)).parts or STORE in _inside_parts(ctx.root / out, ctx.root):
            problem = (f"is the step store ({STORE}) or inside it, where ftspec keeps the steps of every run "
                       "directory beside it; use a folder of its own, e.g. runs/{name}")
        if problem:
            yield ctx.error(("output", "dir"), f"'{out}' {problem}")
    for i, metric in enumerate(ctx.spec.eval.metrics):
        if not isinstance(metric, S.JudgeMetric):
            continue
        if is_local_model(metric.model, ctx.spec_dir):
            refusal = ctx.policy.outside(ctx.spec_dir / os.path.expanduser(metric.model), metric.model)
            if refusal:
                yield ctx.error(("eval", "metrics", i, "model"), refusal)
        else:
            problem = hub_model_problem(ctx, metric.model)
            if problem:
                yield ctx.error(("eval", "metrics", i, "model"), problem)


def _inside_parts(path: Path, root: Path) -> tuple[str, ...]:
    """The names of the folders ``path`` lies in under ``root``, symlinks followed (a folder
    linked to the step store puts a run directory inside it as surely as its name does)."""
    real, real_root = resolved(path)[0], resolved(root)[0]
    if real is None or real_root is None or real_root not in real.parents:
        return ()
    return real.relative_to(real_root).parts


def _beside(out: Path, root: Path, inputs: list[Path]) -> str | None:
    """The folders a run of this spec writes beside its run directory hold no input either:
    the step store, and the run directories of its variants (``OUT@VARIANT``, with profiles
    or --set) and of its stages (``OUT.stage-NAME``), whichever profile is chosen."""
    real = resolved(out)[0]
    if real is None:
        return None
    for item in inputs:
        path = resolved(item)[0]
        if path is None or real.parent not in path.parents:
            continue
        first = path.relative_to(real.parent).parts[0]
        if first == STORE:
            what = f"its step store '{STORE}'"
        elif first.startswith((f"{real.name}@", f"{real.name}.stage-")):
            what = f"the run directory '{first}' of one of its variants or stages"
        else:
            continue
        try:
            shown = path.relative_to(root).as_posix()
        except ValueError:
            shown = str(path)
        return (f"would put {what} beside it, which holds '{shown}', an input of this spec; a run writes and "
                "removes files there: keep inputs out of the runs folder, or use an output folder of its own")
    return None


def _foreign_step_folder(out: Path) -> str | None:
    """A run replaces its steps' folders (data, model, report, …) in the run directory:
    one that ftspec did not write (no step marker in it) would be lost."""
    if out.exists() and not out.is_dir():
        return "is a file; the run directory is a folder"
    if not out.is_dir():
        return None
    for name in sorted({s.folder for s in STEPS}):
        folder = out / name
        if folder.is_symlink() and os.readlink(folder).startswith(os.path.join("..", STORE) + os.sep):
            continue  # a link into the step store beside the run directory: ftspec's own
        if (folder.exists() or folder.is_symlink()) and not (folder / MARKER).is_file():
            return (f"holds '{name}', which a run would replace, and ftspec did not write it; "
                    "use a folder of its own, e.g. runs/{name}")
    return None
