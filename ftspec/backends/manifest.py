"""What a run directory records about the run beside the steps' outputs: manifest.json
(checked against its published schema), the facts it holds about the spec's files and
repository, and the files copied to the top of the run directory."""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
from pathlib import Path

from ftspec.catalog import steps
from ftspec.core.git import run_git
from ftspec.core.io import copy_atomic, read_json, write_json
from ftspec.plan.artifacts import Manifest
from ftspec.plan.compute import cpu_bf16_flags, usable_cpus
from ftspec.plan.model import Plan

# The report step's files people look for first, copied to the top of the run directory.
REPORT_FILES = ("metrics.json", "predictions.jsonl", "report.md", "report.html")


def write_manifest(run_dir: Path, manifest: dict) -> None:
    """manifest.json, checked against its published schema (schema/manifest.schema.json)."""
    write_json(run_dir / "manifest.json", Manifest.model_validate(manifest).model_dump(mode="json"))


def read_manifest(run_dir: Path) -> Manifest | None:
    """The run directory's earlier manifest.json, checked against its schema on the way in;
    None when there is none, or it was cut short or edited into another shape (it is
    rewritten anyway). One that is not a regular file, or too large, is a BadFileError."""
    return read_json(Path(run_dir) / "manifest.json", dict, lenient=True, schema=Manifest)


def manifest_steps(manifest) -> list[dict]:
    """The step entries of an earlier manifest; nothing from one that was edited into another shape."""
    if isinstance(manifest, Manifest):
        return [e.model_dump(mode="json") for e in manifest.steps]
    entries = manifest.get("steps") if isinstance(manifest, dict) else None
    if not isinstance(entries, list):
        return []
    return [e for e in entries if isinstance(e, dict) and isinstance(e.get("name"), str)]


def machine(plan: Plan, setup: dict | None) -> dict:
    """manifest.json's `machine`: the platform, and what the plan's `auto` rules became here
    (the precision, and the CPU threads the backend's setup set; absent when nothing ran),
    since the plan holds only the rules (ftspec.plan.compute)."""
    found: dict = {"platform": platform.platform(), "cpus": os.cpu_count(), "usable_cpus": usable_cpus(),
                   "cpu_bf16": list(cpu_bf16_flags())}
    if setup and "threads" in setup:
        # Deferred: torch, to resolve the device; setup has imported it already.
        from ftspec.runtime.training.builders import resolve_device, resolve_precision

        device = resolve_device(plan.compute)
        found.update(device=device, precision=resolve_precision(plan.compute, device),
                     precision_setting=plan.compute.precision, threads=setup["threads"],
                     interop_threads=setup.get("interop"), threads_setting=setup.get("setting", plan.compute.threads))
    return found


def spec_files(plan: Plan, root: Path) -> dict[str, str | None]:
    """sha256 of the spec and of each base it extends, as they were when the run started."""
    out = {}
    for rel_path in [*plan.spec.bases, plan.spec.path]:
        path = root / rel_path
        out[rel_path] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
    return out


def plan_inputs(plan: Plan) -> list[str]:
    """The files a plan reads, relative to the repository root: the spec, its bases,
    local data files and template files."""
    found = [plan.spec.path, *plan.spec.bases]

    def walk(node) -> None:
        if isinstance(node, dict):
            if node.get("kind") == "file" and isinstance(node.get("path"), str):
                found.append(node["path"])
            if node.get("source") == "file" and isinstance(node.get("ref"), str) and node["ref"]:
                found.append(node["ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    body = plan.to_dict()
    walk({k: body[k] for k in ("data", "format", "eval") if k in body})
    return sorted(set(found))


def git_state(root: Path, inputs: list[str] = ()) -> dict | None:
    """The commit of the spec's repository, and whether what ran differs from it:
    ``dirty`` when a tracked file is modified or any input of the plan (the spec, its
    bases, data and template files) is modified or not tracked at all."""
    if not (root / ".git").exists():
        return None
    try:
        commit = run_git(root, "rev-parse", "HEAD")
        if commit.returncode != 0:
            return None
        changed = run_git(root, "status", "--porcelain", "--untracked-files=no").stdout.strip()
        # Inputs outside the repository (../shared/…, allowed with --allow-path) are not git's: the
        # plan holds their sha256; named to git, they would fail the whole command.
        inputs = [i for i in inputs if (root / i).exists() and not _outside(i)]
        # -z: names as they are, not quoted with octal escapes (a name with "é" or a quote in it)
        tracked = set(run_git(root, "ls-files", "-z", "--", *inputs).stdout.split("\0")) if inputs else set()
        modified = set()
        if inputs:
            status = run_git(root, "status", "--porcelain", "-z", "--untracked-files=no", "--", *inputs)
            modified = porcelain_paths(status.stdout) & set(inputs)
    except (OSError, subprocess.TimeoutExpired):
        return None
    untracked = sorted(i for i in inputs if i not in tracked)
    return {"commit": commit.stdout.strip(), "dirty": bool(changed or untracked or modified),
            "untracked_inputs": untracked, "modified_inputs": sorted(modified)}


def _outside(path: str) -> bool:
    parts = Path(os.path.normpath(path)).parts
    return Path(path).is_absolute() or (bool(parts) and parts[0] == "..")


def porcelain_paths(out: str) -> set[str]:
    """The paths ``git status --porcelain -z`` lists: ``XY PATH``, a rename or copy followed
    by the path it came from."""
    found, fields = set(), iter(out.split("\0"))
    for field in fields:
        if len(field) > 3:
            found.add(field[3:])
            if field[0] in "RC" or field[1] in "RC":
                found.add(next(fields, ""))
    return found


def publish(run_dir: Path) -> None:
    """Copy the files people look for first to the top of the run directory."""
    for step_def, files in ((steps.TRAIN, ("metrics.jsonl",)), (steps.REPORT, REPORT_FILES)):
        for name in files:
            src = run_dir / step_def.folder / name
            if src.exists():
                copy_atomic(src, run_dir / name)
