"""`ftspec promote SPEC[@VARIANT] --to NAME`: record in the repository which run's model is
``NAME`` (``promoted/NAME.json``, :mod:`ftspec.store.promotions`), and find that run's plan
again for `ftspec export --from NAME`. Light: no torch."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ftspec import __version__
from ftspec.backends.bedrock.steps import MODEL as BEDROCK_MODEL
from ftspec.catalog import steps
from ftspec.commands.lock import folder_hash
from ftspec.commands.trained import run_command
from ftspec.core.errors import Pos, SpecError
from ftspec.core.folders import link_on_way
from ftspec.core.io import BadFileError, read_json
from ftspec.core.paths import find_root
from ftspec.plan.artifacts import ReportMetrics
from ftspec.plan.build import variant_name
from ftspec.plan.compile import compile_located
from ftspec.plan.model import Plan, PlanFormatError
from ftspec.store.promotions import (
    PROMOTED,
    BedrockModel,
    Gate,
    Promotion,
    Variant,
    model_sha256,
    read_record,
    refuse_name,
    write_record,
)
from ftspec.store.protect import protected
from ftspec.store.rundir import now, run_dir_of, store_of
from ftspec.store.weights import weights_problem


@dataclass(frozen=True)
class Promoted:
    """A record written: the record, its file, and the plan id it replaced (None: a new name)."""

    record: Promotion
    path: Path
    previous: str | None

    def describe(self) -> str:
        r = self.record
        what = (f"model sha256 {r.model_sha256[:12]}" if r.model_sha256
                else f"Bedrock model {r.bedrock.custom_model_arn if r.bedrock else '?'}")
        gates = (f"FORCED past failed gates: {', '.join(r.failed_gates)}" if r.forced and r.failed_gates
                 else "gates ok" if r.gates else "no gates")
        replaced = f" (was plan {self.previous[:12]})" if self.previous and self.previous != r.plan_id else ""
        return (f"promoted {r.run_dir} as {r.name}{replaced}: plan {r.plan_id[:12]}, {what}, {gates}; "
                f"wrote {PROMOTED}/{r.name}.json (commit it to review the promotion)")


def split_variant(spec: Path) -> tuple[Path, str | None]:
    """``SPEC@VARIANT`` as (SPEC, VARIANT); a spec file whose own name holds '@' is itself."""
    text = str(spec)
    if os.path.isfile(text) or "@" not in Path(text).name:
        return Path(text), None
    base, _, variant = text.rpartition("@")
    return Path(base), variant


def variant_choices(spec: Path, variant: str, allow: Iterable[str | Path]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The profiles and --set values the run directory ``<output.dir>@VARIANT`` was made with,
    as its plan.json records them; a SpecError in one line when there is no such run."""
    plain, _, _ = compile_located(spec, (), (), False, allow)
    root = find_root(spec)
    base = root / plain.output.dir
    run_dir = base.with_name(f"{base.name}@{variant}")
    _refuse_link(run_dir, root, "a run directory")
    data = read_json(run_dir / "plan.json", dict)
    if data is None:
        raise SpecError.one(Pos(f"{spec}@{variant}"), "", f"no run directory {run_dir.name} (from a run with profiles "
                            "or --set values) beside the spec's run directory",
                            "give the variant with --profile/--set instead (as `ftspec run` was given them)")
    made = data.get("spec") if isinstance(data.get("spec"), dict) else {}
    profiles, sets = made.get("profiles"), made.get("overrides")
    if not (isinstance(profiles, list) and isinstance(sets, list) and all(isinstance(v, str) for v in profiles + sets)):
        raise BadFileError(run_dir / "plan.json", "spec.profiles and spec.overrides should be lists of strings")
    if variant_name(profiles, sets) != variant:
        raise BadFileError(run_dir / "plan.json", f"was made with profiles and --set values that name the variant "
                           f"'{variant_name(profiles, sets)}', not '{variant}'")
    return tuple(profiles), tuple(sets)


def _refuse_link(path: Path, root: Path, what: str) -> None:
    link = link_on_way(path, root) if root in Path(os.path.abspath(path)).parents else None
    if link is not None:
        raise SpecError.one(Pos(str(link)), "", f"is a symbolic link; ftspec reads {what} only where it wrote it, "
                            "never through a link", "remove the link")


def _relative(path: Path, root: Path, spec: Path) -> str:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        raise SpecError.one(Pos(str(spec)), "output.dir", f"the run directory {path} lies outside the repository "
                            f"({root}); a promotion names runs of the repository only") from None


def promote(spec: Path, profiles: Iterable[str] = (), sets: Iterable[str] = (), allow: Iterable[str | Path] = (), *,
            to: str, force: bool = False) -> Promoted:
    """Record the finished run of SPEC (with its variant: ``SPEC@VARIANT`` or ``profiles`` and
    ``sets``) as ``to`` in ``promoted/TO.json``. Refused (SpecError, one line) when the run is
    not complete, or its gates failed and not ``force``."""
    refuse_name(to)
    spec, variant = split_variant(Path(spec))
    profiles, sets, allow = tuple(profiles), tuple(sets), tuple(allow)
    if variant is not None:
        if profiles or sets:
            raise SpecError.one(Pos(f"{spec}@{variant}"), "", "give the variant as SPEC@VARIANT or with "
                                "--profile/--set, not both")
        profiles, sets = variant_choices(spec, variant, allow)
    plan, _, locate = compile_located(spec, profiles, sets, False, allow)
    root = find_root(spec)
    run_dir = root / plan.output.dir  # as written: run_dir_of resolves, and a link must be seen, not followed
    _refuse_link(run_dir, root, "a run directory")
    rel_dir = _relative(run_dir, root, spec)
    store = store_of(run_dir)
    _refuse_link(store.root, root, "the step store")
    command = run_command(spec, profiles, sets, allow)
    shown = f"{spec}" + (f" ({rel_dir})" if rel_dir else "")
    missing = [s for s in (steps.TRAIN.name, steps.REPORT.name) if not store.complete(s, plan.step(s).key)]
    ran = read_json(run_dir / "plan.json", dict)
    if missing or not isinstance(ran, dict) or ran.get("id") != plan.id:
        why = (f"its {' and '.join(missing)} step{'s are' if len(missing) > 1 else ' is'} not complete" if missing
               else f"{rel_dir} holds no run of it" if not isinstance(ran, dict) else
               f"{rel_dir} holds the run of plan {str(ran.get('id'))[:12]}")
        raise SpecError.one(Pos(str(spec)), "", f"cannot promote plan {plan.short_id} of {shown}: {why}",
                            f"run `{command}` first")

    train_key, report_key = plan.step(steps.TRAIN.name).key, plan.step(steps.REPORT.name).key
    report = read_json(store.path(steps.REPORT.name, report_key) / "metrics.json", dict, schema=ReportMetrics)
    if report is None:
        raise SpecError.one(Pos(str(spec)), "", f"the report of plan {plan.short_id} holds no metrics.json",
                            f"run `{command} --force report`")
    gates = [Gate(name=g.gate, passed=g.passed, value=g.value) for g in report.gates]
    failed = [g.name for g in gates if not g.passed]
    if not report.gates_passed and not force:
        detail = ", ".join(f"{g.gate} {'(no value)' if g.value is None else f'{g.value:.4g}'}, needs {g.op} "
                           f"{g.threshold:g}" for g in report.gates if not g.passed) or "the report says so"
        raise SpecError.one(Pos(str(spec)), "eval.gates", f"cannot promote plan {plan.short_id} of {shown} as "
                            f"'{to}': its gates failed: {detail}",
                            "fix the run, or --force to promote it anyway (the record then says forced: true)")

    entry = store.path(steps.TRAIN.name, train_key)
    sha, bedrock = None, None
    if plan.compute.backend == "bedrock":
        # The model lives in Amazon Bedrock: its custom model ARN is what identifies it.
        info = read_json(entry / BEDROCK_MODEL, dict)
        arn = info.get("custom_model_arn") if info else None
        if not isinstance(arn, str) or not arn:
            raise SpecError.one(Pos(str(entry)), "", f"the train step of plan {plan.short_id} records no Bedrock "
                                f"custom model ARN ({BEDROCK_MODEL})", f"run `{command} --force train`")
        bedrock = BedrockModel(custom_model_arn=arn, region=_text(info.get("region")),
                               job_arn=_text(info.get("job_arn")))
    else:
        problem = weights_problem(entry)
        if problem:
            raise SpecError.one(Pos(str(spec)), "", f"the trained model of plan {plan.short_id} ({entry}) is marked "
                                f"complete, but {problem}", f"run `{command} --force train` to train it again")
        sha = model_sha256(entry)
    base = adapter_base(plan, root, store)
    base_sha = folder_hash(base) if base is not None and base.is_dir() else None

    try:
        previous: str | None = read_record(root, to, "--to").plan_id
    except SpecError:
        previous = None  # none yet, or one that cannot be read: replaced either way
    record = Promotion(name=to, spec=plan.spec.path,
                       variant=Variant(profiles=list(plan.spec.profiles), sets=list(plan.spec.overrides)),
                       plan_id=plan.id, run_dir=rel_dir, train_key=train_key, model_sha256=sha, base_sha256=base_sha,
                       bedrock=bedrock,
                       gates=gates, gates_passed=report.gates_passed, failed_gates=failed,
                       forced=bool(force and not report.gates_passed), promoted_at=now(), ftspec_version=__version__)
    try:
        path = write_record(root, record, protected(plan, root))
    except SpecError as exc:
        raise SpecError(locate(i) for i in exc.issues) from None
    return Promoted(record, path, previous)


def adapter_base(plan: Plan, root: Path, store) -> Path | None:
    """The folder a LoRA (or QLoRA) adapter of ``plan`` is merged into at export, found as
    ftspec.runtime.models.base_model_path finds it: the base model its prepare_data step made
    (a tiny model, a converted GGUF file, an earlier stage's model) or a local folder. None for
    a full fine-tune (its weights are all in the train step), a hub model or a Bedrock one.
    The adapter's sha256 alone does not say which model export writes: a base folder changed
    since the promotion would be merged with the promoted adapter, and pass the parity check."""
    model = plan.model
    if plan.method.adapter.kind == "full" or model.kind == "bedrock":
        return None
    if model.kind in ("tiny", "stage") or getattr(model, "gguf_file", None):
        return store.path(steps.PREPARE_DATA.name, plan.step(steps.PREPARE_DATA.name).key) / "base-model"
    if model.source == "local":
        return Path(root) / model.name_or_path
    return None


def _text(value) -> str | None:
    return value if isinstance(value, str) else None


@dataclass(frozen=True)
class PromotedRun:
    """The run a promotion names, found again: its plan, the repository root and the record."""

    plan: Plan
    root: Path
    record: Promotion


def how_to_get(record: Promotion) -> str:
    """The command that makes (or, with a shared step store, fetches) the promoted run again."""
    command = run_command(Path(record.spec), record.variant.profiles, record.variant.sets)
    return (f"run `{command}` at the commit that promoted it (`git log -- {PROMOTED}/{record.name}.json`); "
            "with a shared step store it fetches the run instead of computing it")


def promoted_run(name: str, root: Path | None = None) -> PromotedRun:
    """The plan of the run promoted as ``name``, its model checked against the record's
    sha256. Raises SpecError (one line) when the record cannot be used, the run is not here
    (saying how to get it), the model is a Bedrock one, or the store's model is not the one
    promoted."""
    root = Path(root) if root is not None else find_root(Path.cwd() / PROMOTED)
    record = read_record(root, name)
    where = Pos(f"{PROMOTED}/{name}.json")
    run_dir = root / record.run_dir
    _refuse_link(run_dir, root, "a run directory")
    data = read_json(run_dir / "plan.json", dict)
    if data is None or data.get("id") != record.plan_id:
        held = "" if data is None else f" (it holds plan {str(data.get('id'))[:12]} now)"
        raise SpecError.one(where, "", f"the run promoted as '{name}' (plan {record.plan_id[:12]}) is not in "
                            f"{record.run_dir}{held}", how_to_get(record))
    try:
        plan = Plan.from_dict(data)
    except PlanFormatError as exc:
        raise BadFileError(run_dir / "plan.json", str(exc), exc.line) from None
    if run_dir_of(plan, root) != run_dir.resolve() or plan.step(steps.TRAIN.name).key != record.train_key:
        raise SpecError.one(where, "", f"the record's run_dir or train_key does not match plan {plan.short_id} "
                            f"in {record.run_dir}; the record was edited", "promote the run again")
    if record.bedrock is not None:
        raise SpecError.one(where, "", f"'{name}' is the Amazon Bedrock custom model {record.bedrock.custom_model_arn}:"
                            " it lives in Bedrock, and there are no weights here to export")
    store = store_of(run_dir)
    _refuse_link(store.root, root, "the step store")
    entry = store.path(steps.TRAIN.name, record.train_key)
    data_key = plan.step(steps.PREPARE_DATA.name).key  # the export reads the held-out rows (and a tiny base) there
    if not (store.complete(steps.TRAIN.name, record.train_key) and store.complete(steps.PREPARE_DATA.name, data_key)
            ) or weights_problem(entry):
        raise SpecError.one(where, "", f"the model promoted as '{name}' (train key {record.train_key[:8]}) is not "
                            f"in the step store {store.root}", how_to_get(record))
    if record.model_sha256 is None:
        raise BadFileError(root / PROMOTED / f"{name}.json", "records no model_sha256 for a local model")
    sha = model_sha256(entry)
    if sha != record.model_sha256:
        raise SpecError.one(where, "", f"the step store's model ({entry}) is not the one promoted as '{name}': its "
                            f"sha256 is {sha[:12]}, the record's {record.model_sha256[:12]}; nothing was exported",
                            "find out what changed it; promote again only a model you have checked")
    base = adapter_base(plan, root, store)
    if record.base_sha256 is not None:
        now = folder_hash(base) if base is not None and base.is_dir() else None
        if now != record.base_sha256:
            what = "is gone" if now is None else f"has sha256 {now[:12]}, the record's {record.base_sha256[:12]}"
            raise SpecError.one(where, "", f"the base model the adapter promoted as '{name}' is merged into "
                                f"({base}) is not the one it was promoted with: it {what}; nothing was exported",
                                "restore that base model, or promote again a run trained on this one")
    return PromotedRun(plan, root, record)
