"""Promotion records: ``promoted/NAME.json`` at the repository root says which run's model
is ``NAME`` (``prod``, ``staging``) — the spec and variant, the plan id, the run directory,
the train step's key and the model's sha256, the gates as the report checked them. It is a
small file reviewed in a pull request like the spec itself, so it is read back as untrusted
input (one schema, size caps, a run directory that stays inside the repository) and written
only through the write guard (no input, no run directory or store, no link on the way).
Light: no torch."""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Annotated, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr

from ftspec.core.errors import Pos, SpecError
from ftspec.core.folders import refuse_links
from ftspec.core.io import BadFileError, read_json, write_json
from ftspec.core.layout import MARKER
from ftspec.core.paths import Protected, open_regular, target_problem
from ftspec.core.text import printable

PROMOTED = "promoted"  # the folder of records, at the repository root
RECORD_VERSION = 1
# Lower case only: `Prod` and `prod` would be one file on a case-insensitive disk.
NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
MAX_RECORD_BYTES = 1 << 20

Hex64 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Variant(_Record):
    profiles: list[StrictStr] = Field(default_factory=list, description="The profiles the run was made with.")
    sets: list[StrictStr] = Field(default_factory=list, description="Its --set overrides, in order.")


class Gate(_Record):
    name: StrictStr = Field(description="The gate as the spec writes it.")
    passed: StrictBool
    value: Optional[float] = Field(None, description="The value checked (tuned, or tuned − base); null if none.")


class BedrockModel(_Record):
    """A Bedrock run's model lives in Amazon Bedrock: what identifies it."""

    custom_model_arn: StrictStr
    region: Optional[StrictStr] = None
    job_arn: Optional[StrictStr] = None


class Promotion(_Record):
    """One ``promoted/NAME.json``."""

    promotion_version: Literal[1] = RECORD_VERSION
    name: StrictStr
    spec: StrictStr = Field(description="The spec's path, relative to the repository root.")
    variant: Variant
    plan_id: Hex64
    run_dir: StrictStr = Field(description="The run directory, relative to the repository root.")
    train_key: Hex64
    model_sha256: Optional[Hex64] = Field(None, description=(
        "sha256 over the trained model's files (relative names and bytes); null for a Bedrock model."))
    base_sha256: Optional[Hex64] = Field(None, description=(
        "For a LoRA or QLoRA adapter: sha256 over the files of the base model it is merged into at export (a local "
        "folder, or the base the prepare_data step made); null for a full fine-tune, a hub base or a Bedrock model."))
    bedrock: Optional[BedrockModel] = None
    gates: list[Gate] = Field(default_factory=list)
    gates_passed: StrictBool
    failed_gates: list[StrictStr] = Field(default_factory=list)
    forced: StrictBool
    promoted_at: StrictStr
    ftspec_version: StrictStr


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a promotion, or None."""
    if isinstance(name, str) and NAME.fullmatch(name):
        return None
    return (f"'{name}' is not a promotion name: 1 to 40 characters, lower-case letters, digits, '-' and '_', "
            "starting with a letter or digit (e.g. prod, staging)")


def refuse_name(name: str, option: str = "--to") -> None:
    problem = name_problem(name)
    if problem:
        raise SpecError.one(Pos(option), option, problem)


def record_path(root: Path, name: str) -> Path:
    refuse_name(name)
    return Path(root) / PROMOTED / f"{name}.json"


def run_dir_problem(run_dir: str) -> str | None:
    """Why a record's ``run_dir`` cannot name a folder in the repository, or None: it must be a
    relative path that does not climb out (a record is edited in pull requests)."""
    path = PurePosixPath(run_dir)
    if not run_dir or path.is_absolute() or "\\" in run_dir or any(p in ("..", "") for p in run_dir.split("/")):
        return f"run_dir '{run_dir}' must be a path relative to the repository root, without '..'"
    return None


def read_record(root: Path, name: str, option: str = "--from") -> Promotion:
    """The record ``promoted/NAME.json``; a SpecError in one line when there is none, or it
    cannot be used (not JSON, not of this shape, a run_dir outside the repository, a name
    that is not its file's)."""
    refuse_name(name, option)
    path = Path(root) / PROMOTED / f"{name}.json"
    if os.path.islink(path.parent) or os.path.islink(path):
        link = path.parent if os.path.islink(path.parent) else path
        raise SpecError.one(Pos(str(link)), "", "is a symbolic link; ftspec reads promotion records only as files "
                            "of the repository", "remove the link")
    record = read_json(path, dict, schema=Promotion, limit=MAX_RECORD_BYTES)
    if record is None:
        raise SpecError.one(Pos(option), option, f"no model is promoted as '{name}' ({PROMOTED}/{name}.json "
                            f"not found in {root})", f"promote one with `ftspec promote SPEC --to {name}`")
    if record.name != name:
        raise BadFileError(path, f"names the promotion '{record.name}', not '{name}' (its file's name)")
    problem = run_dir_problem(record.run_dir)
    if problem:
        raise BadFileError(path, problem)
    odd = next((t for t in _strings(record.model_dump()) if not t.isprintable()), None)
    if odd is not None:  # shown on terminals and in commands to copy: no control or bidi character
        raise BadFileError(path, f"holds a character that is not printable: {printable(odd)[:60]!r}")
    return record


def _strings(value) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def list_records(root: Path) -> tuple[list[Promotion], list[str]]:
    """Every record under ``root``/promoted, by name, and one line per file that could not be read."""
    folder = Path(root) / PROMOTED
    if os.path.islink(folder) or not folder.is_dir():
        return [], ([f"{folder} is a symbolic link; promotions are not read through it"]
                    if os.path.islink(folder) else [])
    found, problems = [], []
    for path in sorted(folder.glob("*.json")):
        if name_problem(path.stem):
            continue
        try:
            found.append(read_record(root, path.stem))
        except SpecError as exc:
            problems.append(f"{exc}; not shown")
    return found, problems


def refuse_record_target(root: Path, name: str, protected: Protected) -> Path:
    """The record's path, once it may be written: ``promoted/`` is a folder of the
    repository (not a link, nor something else), the record is not a link nor anything
    but a file, and it is none of the paths no write may touch (an input of the spec, a run
    directory, the step store). Raises SpecError, one line."""
    path = record_path(root, name)
    refuse_links(path.parent, root, f"writes promotion records in {PROMOTED}/")
    if os.path.islink(path) or (os.path.lexists(path) and not stat.S_ISREG(os.lstat(path).st_mode)):
        raise SpecError.one(Pos(str(path)), "", "is not a regular file (a link, a folder…); the promotion record "
                            "was not written", "remove it")
    problem = target_problem(path, protected)
    if problem:
        raise SpecError.one(Pos("--to"), "--to", f"'{path}' {problem}; a promotion record may not touch the spec's "
                            "inputs, run directories or step store")
    return path


def write_record(root: Path, record: Promotion, protected: Protected) -> Path:
    """Write ``record`` as ``promoted/NAME.json`` (pretty JSON, sorted keys, written whole)."""
    path = refuse_record_target(root, record.name, protected)
    path.parent.mkdir(exist_ok=True)
    write_json(path, record.model_dump(mode="json"))
    return path


def model_sha256(folder: Path) -> str:
    """sha256 over a trained model's files: each file's path relative to ``folder`` and its
    bytes, in sorted order; the step's marker (when it finished) is bookkeeping, not the
    model. A link or anything but a folder or a regular file inside is refused (SpecError,
    one line): a model's bytes are read as they are, never through a link."""
    folder = Path(folder)
    files: list[tuple[str, Path]] = []
    for top, dirs, names in os.walk(folder, followlinks=False):
        for entry in sorted(dirs + names):
            path = Path(top) / entry
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode) or not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                raise SpecError.one(Pos(str(path)), "", "is not a regular file or folder (a link, a FIFO…); a "
                                    "trained model's files are hashed as they are", "train it again")
            if stat.S_ISREG(mode):
                rel = path.relative_to(folder).as_posix()
                if rel != MARKER:
                    files.append((rel, path))
    h = hashlib.sha256()
    for rel, path in sorted(files):
        with open_regular(path) as fh:
            # Each name and its size before its bytes: no two different folders give one stream.
            size = os.fstat(fh.fileno()).st_size
            h.update(rel.encode("utf-8", "surrogateescape") + b"\0" + size.to_bytes(8, "big"))
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()
