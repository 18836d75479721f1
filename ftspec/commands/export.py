"""`ftspec export`: a spec's trained model written as a model that stands alone."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ftspec.commands.promote import promoted_run
from ftspec.commands.trained import trained_plan
from ftspec.core.errors import Issue, Pos, RunFailed, SpecError
from ftspec.core.paths import Protected, target_problem
from ftspec.plan.model import Plan
from ftspec.runtime.quiet import quiet_libraries
from ftspec.store.promotions import PROMOTED
from ftspec.store.protect import refuse_folder

# How the closing line names what was exported (ExportResult.kind).
KINDS = {"merged": "LoRA merged into its base", "full": "full fine-tune", "adapter": "LoRA adapter"}


@dataclass(frozen=True)
class Exported:
    """What was written, from which plan: the folder, its kind (merged, full or adapter; see
    :data:`KINDS`), its dtype, and how close its logits came to the trained model's: ``diff``
    (measured as ``measure``, "absolute" or "relative") against ``tolerance``, over ``rows``
    prompts."""

    plan: Plan
    output: Path
    kind: str
    dtype: str
    measure: str
    diff: float
    tolerance: float
    rows: int

    def describe(self) -> str:
        """The line `ftspec export` ends with."""
        return f"exported {self.plan.name} ({KINDS[self.kind]}, {self.dtype}) to {self.output}"


def export(spec: Path, profiles: Iterable[str] = (), sets: Iterable[str] = (), allow: Iterable[str | Path] = (), *,
           output: Path, adapter: bool = False, force: bool = False, gguf: str | None = None,
           echo: Callable[[str], None] = print) -> Exported:
    """Write the trained model of the spec's run to ``output``: merged (or the LoRA
    ``adapter``), with its tokenizer, chat template, generation config and model card;
    with ``gguf`` ("f32" or "f16") a model.gguf too. ``force`` replaces a folder that is not
    empty. Checked against the trained model's logits: past the tolerance nothing is
    written and RunFailed is raised. Raises SpecError, each issue at its place."""
    trained = trained_plan(spec, profiles, sets, allow)
    return _export(trained.plan, trained.root, trained.locate, output, adapter, force, gguf, echo)


def export_promoted(name: str, root: Path | None = None, *, output: Path, adapter: bool = False, force: bool = False,
                    gguf: str | None = None, echo: Callable[[str], None] = print) -> Exported:
    """:func:`export` of the model promoted as ``name`` (``promoted/NAME.json`` in ``root``,
    default: the repository of the current directory): the run's plan as its run directory
    holds it, the model checked against the record's sha256 first (ftspec.commands.promote)."""
    found = promoted_run(name, root)
    return _export(found.plan, found.root, lambda issue: issue, output, adapter, force, gguf, echo)


def _export(plan: Plan, root: Path, locate: Callable[[Issue], Issue], output: Path, adapter: bool, force: bool,
            gguf: str | None, echo: Callable[[str], None]) -> Exported:
    if plan.method.objective == "reward_model":  # before anything is checked, loaded or written
        raise SpecError([locate(Issue(Pos("method.kind"), "method.kind", "a reward model is a score head, not a "
                                      "model that writes answers: export (a generation model, its GGUF file, its "
                                      "answers checked against the run's) is not offered for it",
                                      "a later GRPO stage uses it as {reward_model: STAGE}"))])
    # DIR is checked before torch is imported: a target that is the repository, an input, a run
    # directory, the store or the promotion records is refused at once (--force too), and so is
    # one that is not empty.
    refuse_folder(Path(output), plan, root, force)
    records = Protected.of(root, [(Path(root) / PROMOTED, f"the promotion records '{PROMOTED}'")])
    problem = target_problem(Path(output), records, folder=True)
    if problem:
        raise SpecError.one(Pos("--output"), "--output", f"'{output}' {problem}; an export may not touch them")
    from ftspec.runtime.tools.export import ParityError, export_model  # defers torch: imported at its top

    try:
        quiet_libraries()
        result = export_model(plan, root, output, adapter=adapter, force=force, echo=echo,
                              gguf=gguf.upper() if gguf else None)
    except SpecError as exc:
        raise SpecError(locate(i) for i in exc.issues) from None
    except ParityError as exc:
        raise RunFailed(str(exc)) from exc
    return Exported(plan, Path(output), result.kind, str(result.dtype), result.measure, result.diff,
                    result.tolerance, result.rows)
