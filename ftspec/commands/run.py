"""`ftspec run`: compile a spec and execute its plan, resuming what is already done."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from ftspec.backends.executor import execute
from ftspec.catalog.steps import STEPS
from ftspec.commands import apply as A
from ftspec.commands import lock as L
from ftspec.commands.remote import STORAGE_ERRORS, open_shared, storage_failed, store_url
from ftspec.core.errors import Detached, Issue, RunFailed, SpecError
from ftspec.core.paths import find_root
from ftspec.plan.compile import compile_located, compile_plan
from ftspec.plan.model import digest

if TYPE_CHECKING:  # the executor imports the runtime; only its result type is named here
    from ftspec.runtime.result import RunResult



def step_names() -> list[str]:
    """Every step a plan can have, in the order they run (what ``force`` and ``only`` name)."""
    return [s.name for s in STEPS]


class UnknownStep(ValueError):
    """``force`` names a step no plan has."""

    def __init__(self, unknown: list[str], known: list[str]):
        self.unknown, self.known = unknown, known
        super().__init__(f"unknown step {', '.join(unknown)} (steps: {', '.join(known)})")


def forced_steps(force: Iterable[str] | str | None) -> set[str]:
    """The steps ``force`` names: "all" for every one, names (a list, or one string of
    comma-separated names), or None for none. Raises UnknownStep."""
    known = step_names()
    if force is None:
        return set()
    if isinstance(force, str):
        force = known if force == "all" else force.split(",")
    names = {n.strip() for n in force if n.strip()}
    unknown = sorted(names - set(known))
    if unknown:
        raise UnknownStep(unknown, known)
    return names


def run(spec: Path | None, profiles: Iterable[str] = (), sets: Iterable[str] = (), strict: bool = False, *,
        force: Iterable[str] = (), only: Iterable[str] | None = None, locked: bool = False,
        allow: Iterable[str | Path] = (), echo: Callable[[str], None] = print,
        warn: Callable[[Issue], None] | None = None, plan_file: Path | None = None,
        store: str | None = None) -> RunResult:
    """Run every step of the spec's plan that is not already done under its key (or that
    ``force`` names; only those ``only`` names, when given), with a progress line per
    event through ``echo`` and each of the spec's warnings through ``warn`` before anything
    runs. With ``locked``, refuse when anything pinned in the spec's lock file drifted.

    With ``plan_file`` (``run --plan``; ftspec.commands.apply), run exactly that plan: its spec
    (``spec`` may be None; when given it must be the plan's), profiles and overrides are the
    ones the file records, compiled again, and any difference refuses the run before a step
    starts. ``profiles`` and ``sets`` must then be empty, ``locked`` False.

    ``store``: the shared step store (``--store``; else FTSPEC_STORE, else the spec's
    ``output.store``; ftspec.commands.remote): a step there is fetched rather than computed,
    and what is computed is uploaded. One that cannot be opened is a warning, and the run
    goes on here.

    Raises SpecError (the spec, its data, a drifted lock or plan file: each issue at its place
    in the spec or the file), RunFailed (a run that stopped on something else, a write that
    failed for want of room or permission), Detached (Ctrl-C while a Bedrock job runs on) and
    KeyboardInterrupt. The result's ``failed_gates`` lists the evaluation gates that were not met."""
    profiles, sets = tuple(profiles), tuple(sets)
    applied = None
    if plan_file is not None:
        if profiles or sets or locked:
            raise ValueError("a plan file records its profiles and overrides; run --locked checks a spec's lock")
        applied = A.read_plan_file(plan_file)
        spec = A.plan_spec(applied, spec)
        profiles, sets = tuple(applied.plan.spec.profiles), tuple(applied.plan.spec.overrides)
    elif spec is None:
        raise ValueError("run needs a spec or a plan file")
    compiled = compile_plan(spec, profiles, sets, strict, allow)
    plan, warnings, locate = compiled.plan, compiled.warnings, compiled.locator()
    root = find_root(spec)
    if applied is not None:
        plan = A.check_applied(applied, plan, root, warn)
    lock_info = None
    if locked:
        lock_file = L.lock_path(spec, profiles)
        pinned = L.read(lock_file)
        L.check(pinned, L.build(plan, root, None, pinned), lock_file)
        extra = L.pinned_sets(pinned)
        if extra:  # load exactly the locked hub commits
            plan, warnings, locate = compile_located(spec, profiles, [*sets, *extra], strict, allow)
        lock_info = {"path": str(lock_file), "sha256": digest(pinned)}
    if warn is not None:
        for issue in warnings:
            warn(issue)
    try:
        remote = open_shared(store_url(store, compiled.store), root, plan)
    except RunFailed as exc:  # its library could not even start (a broken ~/.aws profile): as if it were down
        echo(f"warning: {exc}; the steps are computed here and nothing is shared this run")
        remote = None
    try:
        return execute(plan, root, echo=echo, force=set(force), only=None if only is None else set(only),
                       lock=lock_info, remote=remote)
    except SpecError as exc:
        raise SpecError(locate(issue) for issue in exc.issues) from None
    except Detached as exc:  # worded with this spec's path, so its commands can be pasted
        raise Detached(exc.arn, str(spec)) from None
    except OSError as exc:
        if exc.errno not in STORAGE_ERRORS:
            raise
        raise RunFailed(storage_failed(exc)) from exc
