"""The plan of a spec whose model is trained: what export, generate and chat start from."""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ftspec.catalog import steps
from ftspec.core.errors import Issue, Pos, SpecError
from ftspec.core.paths import find_root
from ftspec.plan.compile import compile_located
from ftspec.plan.model import Plan
from ftspec.runtime.tools.generate import require_trained
from ftspec.store.rundir import store_of
from ftspec.store.weights import weights_problem


@dataclass(frozen=True)
class Trained:
    """A trained spec's plan, its repository root, and the function that places an issue
    found later (at a key path) at its line in the spec."""

    plan: Plan
    root: Path
    locate: Callable[[Issue], Issue]


def run_command(spec: Path, profiles: Iterable[str] = (), sets: Iterable[str] = (),
                allow: Iterable[str | Path] = ()) -> str:
    """The `ftspec run` command line that trains this spec, quoted for a shell."""
    words = ["ftspec", "run", str(spec)]
    for p in profiles:
        words += ["-p", p]
    for s in sets:
        words += ["--set", s]
    for a in allow:
        words += ["--allow-path", str(a)]
    return " ".join(shlex.quote(w) for w in words)


def trained_plan(spec: Path, profiles: Iterable[str] = (), sets: Iterable[str] = (),
                 allow: Iterable[str | Path] = ()) -> Trained:
    """The plan of a spec whose model is trained. A spec that has not been trained is a
    SpecError in one line naming the command that trains it."""
    profiles, sets, allow = tuple(profiles), tuple(sets), tuple(allow)
    # The spec's warnings were for training it; trying the trained model does not repeat them.
    plan, _, locate = compile_located(spec, profiles, sets, False, allow)
    root = find_root(spec)
    command = run_command(spec, profiles, sets, allow)
    run_dir = require_trained(plan, root, str(spec), command)
    if plan.compute.backend == "local":
        key = plan.step(steps.TRAIN.name).key
        entry = store_of(run_dir).path(steps.TRAIN.name, key)
        problem = weights_problem(entry)
        if problem:  # marked complete, but what it held is gone: one line, not a loader's traceback
            raise SpecError.one(Pos(str(spec)), "", f"the trained model of this plan ({entry}) is marked complete, "
                                f"but {problem}", f"run `{command} --force train` to train it again")
    return Trained(plan, root, locate)
