"""What a command that writes a path it was given must leave alone, for one plan: the
repository root, the plan's inputs (ftspec.plan.inputs), its run directories (the
plan's, each stage's, every other run directory beside them) and the step store.
The check itself is ftspec.core.paths.target_problem. Light: no torch."""

from __future__ import annotations

import subprocess
from pathlib import Path

from ftspec.core.errors import Pos, SpecError
from ftspec.core.folders import folder_problem
from ftspec.core.git import run_git
from ftspec.core.paths import Protected, target_problem
from ftspec.plan.inputs import plan_inputs
from ftspec.store.gc import run_dirs
from ftspec.store.rundir import run_dir_of, store_of

# A folder beside the store holding one of these is a run directory (of any spec).
RUN_FILES = ("plan.json", "manifest.json")


def protected(plan, root: Path) -> Protected:
    """Everything ``plan``'s commands may not write over (see the module's docstring)."""
    root = Path(root).resolve()
    folders: dict[Path, str] = {}

    def shown(path: Path) -> str:
        try:
            return path.relative_to(root).as_posix()
        except ValueError:
            return str(path)

    for one in (*plan.stages, plan):
        run_dir = run_dir_of(one, root)
        folders.setdefault(run_dir, f"the run directory '{shown(run_dir)}'")
        store = store_of(run_dir).root
        folders.setdefault(store, f"the step store '{shown(store)}'")
        for other in run_dirs(run_dir.parent):
            if any((other / name).is_file() for name in RUN_FILES):
                folders.setdefault(other.resolve(), f"the run directory '{shown(other.resolve())}'")
    return Protected.of(root, folders.items(), plan_inputs(plan, root))


def refuse_target(target: Path, plan, root: Path, option: str = "--output", folder: bool = False) -> None:
    """Raise SpecError (one line, at ``option``) when ``target`` may not be written for ``plan``."""
    problem = target_problem(target, protected(plan, root), folder)
    if problem:
        what = "a folder ftspec replaces" if folder else "a file ftspec writes"
        raise SpecError.one(Pos(option), option, f"'{target}' {problem}; {what} may not touch the spec's repository "
                                                  "root, its inputs, run directories or step store")


def tracked_problem(out: Path, root: Path) -> str | None:
    """Why ``--force`` may not replace ``out``, or None: it holds files git tracks in the
    spec's repository (its own source, docs…), which no export may wipe. Asked of git; a
    repository git cannot read is not checked this way (the other guards still hold)."""
    real, root = Path(out).resolve(), Path(root).resolve()
    if not real.is_dir() or not (root / ".git").exists() or root not in real.parents:
        return None
    try:
        listed = run_git(root, "--literal-pathspecs", "ls-files", "-z", "--", real.relative_to(root).as_posix())
    except (OSError, subprocess.TimeoutExpired):
        return None
    tracked = [name for name in listed.stdout.split("\0") if name] if listed.returncode == 0 else []
    if tracked:
        return f"holds files git tracks in the repository (e.g. '{tracked[0]}'); give a folder of its own"
    return None


def refuse_tracked(run_dir: Path, store: Path, root: Path) -> None:
    """Raise SpecError (one line, at output.dir) when the run directory or the step store
    holds a file git tracks. Both hold only what ftspec made on this machine: a tracked
    file there came with the repository — a pull request can commit a step marked finished
    (trusted as a trained model) or a checkpoint whose pickled optimizer and RNG state the
    trainer would load — so a run neither trusts nor removes it; the person running decides."""
    root = Path(root).resolve()
    if not (root / ".git").exists():
        return
    specs = []
    for folder in (Path(run_dir), Path(store)):
        real = folder.resolve()
        if real.is_dir() and root in real.parents:
            specs.append(real.relative_to(root).as_posix())
    if not specs:
        return
    try:
        listed = run_git(root, "--literal-pathspecs", "ls-files", "-z", "--", *specs)
    except (OSError, subprocess.TimeoutExpired):
        return
    tracked = [name for name in listed.stdout.split("\0") if name] if listed.returncode == 0 else []
    if tracked:
        raise SpecError.one(Pos("output.dir"), "output.dir",
                            f"'{tracked[0]}' is tracked by git ({len(tracked)} file(s) in the run directory or the "
                            "step store): they hold only what ftspec made on this machine, and a run neither trusts "
                            "nor removes files that came with the repository",
                            f"remove them from git (git rm -r --cached {specs[0]}), or use another output.dir")


def refuse_folder(out: Path, plan, root: Path, force: bool, option: str = "--output") -> None:
    """Raise SpecError (one line, at ``option``) unless ``out`` may be written as a new folder
    for ``plan``: not protected (:func:`refuse_target`), and new or empty unless ``force``
    (ftspec.core.folders.folder_problem)."""
    refuse_target(out, plan, root, option, folder=True)
    problem = folder_problem(out, force) or (tracked_problem(out, root) if force else None)
    if problem:
        raise SpecError.one(Pos(option), option, f"{out} {problem}",
                            "give a new folder, or --force to replace it" if "not empty" in problem else None)
