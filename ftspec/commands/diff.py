"""`ftspec diff`: what a change to a spec does to training.

Two compiled plans are compared leaf by leaf, so a value that changed through a
default, an ``extends`` base or a profile shows up as what it now is, and the step
keys say which steps of the run must run again. The output is meant for a
reviewer: plain text for the terminal, Markdown for a pull-request comment, JSON
for tools.

This module is on the light command path: the standard library and ftspec's
compiler modules only (no torch, no transformers).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Iterable

from ftspec.commands.apply import read_plan_file
from ftspec.core.errors import Issue, Pos, SpecError
from ftspec.core.git import run_git
from ftspec.core.paths import find_root
from ftspec.plan.compile import compile_sourced
from ftspec.plan.diff import PlanDiff, diff_plans
from ftspec.plan.diff_render import render_json, render_markdown, render_text
from ftspec.plan.diff_results import DiffResults, SideResults
from ftspec.plan.model import Plan
from ftspec.plan.origins import Origin, StagedOrigin
from ftspec.store.results import Fetch, report_key, report_results

# --------------------------------------------------------------------------- git


def _remap(exc: SpecError, tmp: Path, rev: str) -> SpecError:
    """Name files of the old checkout as ``REV:path`` rather than by the temporary folder."""
    issues = []
    for issue in exc.issues:
        file = issue.pos.file
        try:
            inside = Path(file).resolve().relative_to(tmp.resolve()).as_posix()
        except (ValueError, OSError):
            inside = None
        pos = Pos(f"{rev}:{inside}", issue.pos.line, issue.pos.col) if inside is not None else issue.pos
        issues.append(Issue(pos, issue.key, issue.message, issue.hint, issue.severity))
    return SpecError(issues)


def _extract(root: Path, commit: str, dest: Path, where: Pos) -> None:
    proc = subprocess.Popen(["git", "-C", str(root), "archive", "--format=tar", commit],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, GIT_TERMINAL_PROMPT="0", LC_ALL="C"))
    assert proc.stdout is not None
    links: list[tuple[str, str]] = []

    def only_data(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo | None:
        # A symbolic link out of the checkout (to /etc/passwd, ../../x) anywhere in the tree must
        # not stop the diff of a spec that never reads it, nor be written before the files that
        # follow it: it is set aside and made last, so the compiler's path policy refuses it if
        # the spec names it, as it does in the working tree.
        try:
            return tarfile.data_filter(member, path)
        except tarfile.FilterError:
            if member.issym():
                links.append((member.name, member.linkname))
                return None
            raise

    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as archive:
            if hasattr(tarfile, "data_filter"):
                archive.extractall(dest, filter=only_data)
            else:  # pragma: no cover - Python without extraction filters
                archive.extractall(dest)
    except tarfile.TarError as exc:
        proc.kill()
        proc.wait()
        raise SpecError.one(where, "", f"cannot unpack revision {commit[:12]}: {exc}") from None
    finally:
        proc.stdout.close()
    err = proc.stderr.read().decode("utf-8", "replace").strip() if proc.stderr else ""
    if proc.wait() != 0:
        raise SpecError.one(where, "", f"git archive {commit[:12]} failed: "
                                       f"{err.splitlines()[-1] if err else 'unknown error'}")
    for name, target in links:
        link = dest / name
        # git's tree has no path below a link, so its folder is a real one inside dest
        if link.parent.resolve().is_relative_to(dest.resolve()) and not os.path.lexists(link):
            link.symlink_to(target)


def diff_git(rev: str, spec_path: str | Path, profiles: Iterable[str] = (), sets: Iterable[str] = (),
             allow: Iterable[str | Path] = (), with_origins: bool = False) -> tuple:
    """(old plan, new plan): the spec compiled as it was at git revision ``rev`` and
    as it is in the working tree, with the same profiles and overrides. With
    ``with_origins``: (old plan, new plan, old origins, new origins)."""
    spec_path = Path(spec_path)
    where = Pos(str(spec_path))
    profiles, sets = tuple(profiles), tuple(sets)
    if not spec_path.is_file():
        raise SpecError.one(where, "", "spec file not found")
    root = find_root(spec_path)
    if not (root / ".git").exists():
        raise SpecError.one(where, "", "not in a git repository (no .git folder above the spec), "
                                       "so there is no revision to compare with")
    if shutil.which("git") is None:
        raise SpecError.one(where, "", "git is not installed (needed to read the spec at another revision)")
    if not rev or rev.startswith("-"):
        raise SpecError.one(where, "", f"'{rev}' is not a git revision")
    found = run_git(root, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    if found.returncode != 0 or not found.stdout.strip():
        raise SpecError.one(where, "", f"unknown git revision '{rev}' in {root}")
    commit = found.stdout.strip()
    inside = spec_path.resolve().relative_to(root.resolve()).as_posix()
    if run_git(root, "cat-file", "-e", f"{commit}:{inside}").returncode != 0:
        raise SpecError.one(where, "", f"{inside} does not exist at revision '{rev}' ({commit[:12]})")

    new, new_origin = compile_sourced(spec_path, profiles, sets, allow=allow)
    with tempfile.TemporaryDirectory(prefix="ftspec-diff-") as tmp_name:
        tmp = Path(tmp_name)
        _extract(root, commit, tmp, where)
        # Make the checkout its own repository root, so the plan records the same
        # relative paths as it does in the working tree.
        (tmp / ".git").mkdir(exist_ok=True)
        if not (tmp / inside).resolve().is_relative_to(tmp.resolve()):
            raise SpecError.one(Pos(f"{rev}:{inside}"), "", "is a symbolic link to outside the repository")
        try:
            old, old_origin = compile_sourced(tmp / inside, profiles, sets, allow=allow)
        except SpecError as exc:
            raise _remap(exc, tmp, rev) from None
    old_origin = _renamed_origin(old_origin, tmp, f"{rev}:")
    return (old, new, old_origin, new_origin) if with_origins else (old, new)


def _renamed_origin(origin: Origin, tmp: Path, prefix: str) -> Origin:
    """Origins in the old checkout, named ``REV:path`` rather than by the temporary folder."""
    if isinstance(origin, StagedOrigin):
        return StagedOrigin({name: _renamed_origin(o, tmp, prefix) for name, o in origin.by_stage.items()}, origin.last)
    folder = str(tmp.resolve()) + os.sep

    def renamed(path: str) -> str | None:
        words = origin(path)
        return words.replace(folder, prefix) if words else words

    return renamed


# --------------------------------------------------------------------------- the command

MAX_PLAN_BYTES = 50_000_000


def plan_for_diff(path: Path, profiles: Iterable[str] = (), sets: Iterable[str] = (),
                  allow: Iterable[str | Path] = ()) -> tuple[Plan, Origin | None]:
    """A plan from a spec (compiled), with where each value came from, or from a plan JSON
    file written by `ftspec plan -o` (with no origins). Raises SpecError."""
    path = Path(path)
    if path.suffix == ".json":  # `plan -o`'s file (its made_with beside the plan), or a plan's JSON
        return read_plan_file(path).plan, None
    return compile_sourced(path, profiles, sets, allow=allow)


def diff_files(old: Path, new: Path, profiles: Iterable[str] = (), sets: Iterable[str] = (),
               allow: Iterable[str | Path] = ()) -> PlanDiff:
    """What changes from the plan of ``old`` to that of ``new`` (specs, compiled with the
    same profiles and overrides, or plan JSON files). Raises SpecError."""
    profiles, sets = tuple(profiles), tuple(sets)
    (old_plan, old_origin), (new_plan, new_origin) = (plan_for_diff(p, profiles, sets, allow) for p in (old, new))
    return diff_plans(old_plan, new_plan, old_origin, new_origin)


def diff_revision(rev: str, spec: Path, profiles: Iterable[str] = (), sets: Iterable[str] = (),
                  allow: Iterable[str | Path] = ()) -> PlanDiff:
    """What changes from the spec's plan at git revision ``rev`` to its plan in the working
    tree. Raises SpecError."""
    old, new, old_origin, new_origin = diff_git(rev, spec, profiles, sets, allow, with_origins=True)
    return diff_plans(old, new, old_origin, new_origin)


# --------------------------------------------------------------------------- --results


def run_command(spec: Path | str, profiles: Iterable[str] = (), sets: Iterable[str] = ()) -> str:
    """The `ftspec run` command line that computes a side's results, quoted for a shell."""
    words = ["ftspec", "run", str(spec)]
    for p in profiles:
        words += ["-p", p]
    for s in sets:
        words += ["--set", s]
    return " ".join(shlex.quote(w) for w in words)


def side_results(plan: Plan, root: Path, missing: SideResults, fetch: Fetch | None = None) -> SideResults:
    """One side's results from the step store, or the line that says why there are none
    (``missing`` when the plan's report is not in the store)."""
    if report_key(plan) is None:
        return SideResults(note="has no evaluation (its plan has no report step)")
    try:
        metrics = report_results(plan, root, fetch)
    except SpecError as exc:  # an entry there but not to be trusted: said, and the diff still shown
        return SideResults(note="results not shown: " + "; ".join(i.format() for i in exc.issues))
    return SideResults(metrics) if metrics is not None else missing


def results_of(old: Plan, new: Plan, old_root: Path, new_root: Path, old_missing: SideResults,
               new_missing: SideResults,
               fetch: Fetch | None = None) -> DiffResults:
    """Both sides' results, each found by its own plan's report key (never the other's)."""
    same = report_key(old) is not None and report_key(old) == report_key(new)
    return DiffResults(old=side_results(old, old_root, old_missing, fetch),
                       new=side_results(new, new_root, new_missing, fetch), same=same)


def diff_revision_results(rev: str, spec: Path, profiles: Iterable[str] = (), sets: Iterable[str] = (),
                          allow: Iterable[str | Path] = (), fetch: Fetch | None = None) -> tuple[PlanDiff, DiffResults]:
    """:func:`diff_revision` and both sides' results: the revision's plan and the working tree's
    each looked up in the working tree's step store (``fetch``: a remote store's, when not there)."""
    profiles, sets = tuple(profiles), tuple(sets)
    old, new, old_origin, new_origin = diff_git(rev, spec, profiles, sets, allow, with_origins=True)
    root = find_root(Path(spec))
    results = results_of(old, new, root, root, SideResults(note=f"({rev}) has no results in the step store"),
                         SideResults(note="not run yet", command=run_command(spec, profiles, sets)), fetch)
    return diff_plans(old, new, old_origin, new_origin), results


def diff_files_results(old: Path, new: Path, profiles: Iterable[str] = (), sets: Iterable[str] = (),
                       allow: Iterable[str | Path] = (), fetch: Fetch | None = None) -> tuple[PlanDiff, DiffResults]:
    """:func:`diff_files` and both sides' results, each side's in the step store beside its runs."""
    profiles, sets = tuple(profiles), tuple(sets)
    (old_plan, old_origin), (new_plan, new_origin) = (plan_for_diff(p, profiles, sets, allow) for p in (old, new))
    missing = [SideResults(note="not run yet", command=run_command(p, profiles, sets)) if Path(p).suffix != ".json"
               else SideResults(note="has no results in the step store") for p in (old, new)]
    results = results_of(old_plan, new_plan, find_root(Path(old)), find_root(Path(new)), *missing, fetch=fetch)
    return diff_plans(old_plan, new_plan, old_origin, new_origin), results


# What the command offers the CLI and ftspec.api: the diffs, and how they are shown.
__all__ = ["PlanDiff", "DiffResults", "diff_plans", "render_text", "render_markdown", "render_json", "diff_git",
           "plan_for_diff", "diff_files", "diff_revision", "diff_files_results", "diff_revision_results"]
