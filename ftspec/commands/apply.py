"""The plan file: ``ftspec plan SPEC -o plan.json`` writes it, ``ftspec run --plan plan.json``
runs exactly that plan, or nothing (what terraform's ``apply PLANFILE`` promises).

The file is the plan's JSON (as ``plan --json`` prints it) with one more top-level key,
``made_with``, which is not part of the plan: the plan's id is computed without it, and
``Plan.from_json`` of the file without that key is the plan. It says what the plan was made
with::

    "made_with": {
      "plan_file": 1,
      "versions": {"ftspec": …, "python": …, "torch": …, "transformers": …, "peft": …,
                   "trl": …, "datasets": …, "accelerate": …, "tokenizers": …},
      "device": {"kind": "cpu" | "cuda" | "mps" | "unknown", "gpus": ["NVIDIA H100 …"]},
      "models": {"models/base": "<sha256 of the folder's files>"}
    }

Versions are read from the packages' metadata (nothing is imported); the device from what
the operating system shows (``/proc/driver/nvidia``, ``nvidia-smi -L``), never torch;
``models`` holds a content hash (ftspec.commands.lock.folder_hash) of each local model or
tokenizer folder the plan reads, which the plan itself does not hash (a GGUF file's sha256
is in the plan).

At apply, the spec the plan names (inside the repository), with the profiles and ``--set``
overrides recorded in the plan, is compiled again: any field of the new plan that differs
from the file's is refused, a line each, naming the field (ftspec.plan.diff); so is a local
model folder whose content changed, and a library that ``run --locked`` pins (ftspec and
ftspec.core.versions.LIBRARIES) at another version. Other differences — python, accelerate,
tokenizers, the kind of device — are warnings that say what they change. A plan file without
``made_with`` (``plan --json > FILE``, a run directory's plan.json) is applied too, with a
warning that versions, device and model folders were not compared. Light: no torch.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Mapping, Optional

from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError

from ftspec.commands.lock import folder_hash
from ftspec.core import jsonread
from ftspec.core.errors import WARNING, Issue, Pos, SpecError
from ftspec.core.paths import describe_os_error, find_root, read_regular, resolved
from ftspec.core.versions import LIBRARIES, versions
from ftspec.plan.diff import MISSING, diff_plans
from ftspec.plan.inputs import plan_inputs
from ftspec.plan.model import PLAN_MAX_DEPTH, Plan, PlanFormatError, PlanVersionError, pretty_json, thaw

PLAN_FILE = 1
MADE_WITH = "made_with"
MAX_PLAN_FILE_BYTES = 50_000_000
# What the plan file records; of these, what `run --locked` pins is refused when it differs.
RECORDED = (*LIBRARIES, "accelerate", "tokenizers")
REFUSED = ("ftspec", *LIBRARIES)
SHA = re.compile(r"[0-9a-f]{64}")


# --------------------------------------------------------------------------- what a plan was made with


def device_kind() -> dict:
    """The accelerator this machine has, as far as the operating system shows it without torch:
    ``cuda`` with the GPUs' names (an NVIDIA driver's /proc files, else ``nvidia-smi -L``),
    ``mps`` (Apple silicon), ``cpu``, or ``unknown`` (a GPU driver whose devices cannot be named)."""
    gpus = []
    for info in sorted(Path("/proc/driver/nvidia/gpus").glob("*/information")):
        try:
            text = info.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        found = re.search(r"^Model:\s*(.+)$", text, re.MULTILINE)
        if found:
            gpus.append(found.group(1).strip())
    if not gpus and shutil.which("nvidia-smi"):
        try:
            listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
            gpus = [m.group(1).strip() for m in re.finditer(r"^GPU \d+: (.+?)(?: \(UUID: [^)]*\))?$",
                                                            listed.stdout, re.MULTILINE)]
        except (OSError, subprocess.TimeoutExpired):
            pass
    if gpus:
        return {"kind": "cuda", "gpus": gpus}
    if Path("/proc/driver/nvidia").exists() or Path("/dev/kfd").exists():  # a driver, but no GPU it names
        return {"kind": "unknown", "gpus": []}
    if sys.platform == "darwin" and platform.machine() == "arm64":
        return {"kind": "mps", "gpus": []}
    return {"kind": "cpu", "gpus": []}


def model_folders(plan: Plan, root: Path) -> dict[str, str]:
    """A content hash of each local folder the plan reads that the plan does not hash itself
    (models, tokenizers, judges), by its name in the plan (relative to the repository root)."""
    root = Path(root)
    skip = set()
    for one in (*plan.stages, plan):
        model = one.model
        if getattr(model, "gguf_file", None):  # the GGUF file's sha256 is in the plan
            skip.add(os.path.normpath(model.name_or_path))
        skip.update(os.path.normpath(s.path) for _, s in one.data.named_sources() if s.kind == "file")
    found = {}
    for path in plan_inputs(plan, root):
        name = Path(os.path.relpath(path, root)).as_posix()
        if os.path.normpath(name) not in skip and path.is_dir():
            found[name] = folder_hash(path)
    return found


def made_with(plan: Plan, root: Path) -> dict:
    """What the plan file records beside the plan (see the module's docstring)."""
    installed = versions(RECORDED)
    return {
        "plan_file": PLAN_FILE,
        "versions": {"ftspec": installed.pop("ftspec"), "python": platform.python_version(), **installed},
        "device": device_kind(),
        "models": model_folders(plan, root),
    }


def plan_file_text(plan: Plan, root: Path) -> str:
    """The plan file of ``plan``: its JSON with ``made_with`` beside it."""
    return pretty_json({**plan.to_dict(), MADE_WITH: made_with(plan, root)})


# --------------------------------------------------------------------------- reading a plan file


Text = Annotated[StrictStr, Field(max_length=4096)]
Sha = Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{64}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class Device(_Strict):
    kind: Literal["cpu", "cuda", "mps", "unknown"]
    gpus: list[Text] = Field(max_length=1024)


class MadeWith(_Strict):
    """``made_with``, checked on the way in: a hand-edited one of the wrong shape is one line."""

    plan_file: Literal[1]
    versions: dict[Text, Optional[Text]] = Field(max_length=64)
    device: Device
    models: dict[Text, Sha] = Field(max_length=1024)


@dataclass(frozen=True)
class PlanFile:
    path: Path
    plan: Plan
    made_with: MadeWith | None  # None: a plain plan's JSON


def read_plan_file(path: Path) -> PlanFile:
    """The plan file at ``path``: a plan of this version whose id matches its content, with what
    it was made with where the file records it. Raises SpecError (one line, at the file and
    its line where it can be placed)."""
    shown = str(path)

    def refuse(message: str, line: int | None = None) -> SpecError:
        return SpecError.one(Pos(shown, line), "", f"not a readable plan file: {message}")

    try:  # a FIFO or a device is refused at once, not read without end
        text = read_regular(Path(path), MAX_PLAN_FILE_BYTES).decode("utf-8")
    except OSError as exc:
        raise refuse(describe_os_error(exc)) from None
    except UnicodeDecodeError:
        raise refuse("not UTF-8 text") from None
    try:
        data = jsonread.decode(text, max_depth=PLAN_MAX_DEPTH, bounded_ints=True)
    except json.JSONDecodeError as exc:
        raise refuse(f"not JSON: {exc.msg} (column {exc.colno})", exc.lineno) from None
    except jsonread.BadValue as exc:
        raise refuse(f"not usable JSON: {exc.message}",
                     jsonread.where(text, exc.pos)[0] if exc.pos is not None else None) from None
    if not isinstance(data, dict):
        raise refuse(f"a plan is a JSON object (got {jsonread.json_kind(data)})")
    recorded = None
    if MADE_WITH in data:
        raw = data.pop(MADE_WITH)
        try:
            recorded = MadeWith.model_validate(raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in (MADE_WITH, *err["loc"]))
            raise refuse(f"{where}: {err['msg']}",
                         _line_of(text, MADE_WITH)) from None
    try:
        plan = Plan.from_dict(data)
    except (PlanFormatError, PlanVersionError) as exc:
        line = getattr(exc, "line", None)
        if line is None and getattr(exc, "step", None):
            line = _line_of(text, "name", exc.step)
        raise refuse(str(exc), line) from None
    return PlanFile(Path(path), plan, recorded)


def _line_of(text: str, key: str, value: str | None = None) -> int | None:
    pattern = json.dumps(key) + r"\s*:" + (r"\s*" + re.escape(json.dumps(value)) if value is not None else "")
    found = re.search(pattern, text)
    return jsonread.where(text, found.start())[0] if found else None


def plan_spec(applied: PlanFile, spec: Path | None) -> Path:
    """The spec to compile again for a plan file: the one the plan names, in the repository of
    ``spec`` when it is given (and then it must be that spec), else of the working directory.
    Raises SpecError when the plan names a spec outside its repository, or one not there."""
    recorded = applied.plan.spec.path
    where = Pos(str(applied.path))
    parts = Path(recorded).parts
    if not recorded or Path(recorded).is_absolute() or ".." in parts:
        raise SpecError.one(where, "spec.path", f"the plan names its spec '{recorded}', outside its repository; "
                                                "a plan file names the spec by its path from the repository root")
    root = find_root(Path(spec)) if spec is not None else find_root(Path.cwd() / "plan.json")
    named = root / recorded
    if spec is not None and resolved(Path(spec))[0] != resolved(named)[0]:
        raise SpecError.one(where, "spec.path", f"the plan was made from '{recorded}', not from '{spec}'",
                            "give the plan's own spec, or no spec with --plan")
    if not named.is_file():
        raise SpecError.one(where, "spec.path", f"the plan's spec '{recorded}' is not in {root}",
                            "run from the spec's repository, or name the spec: ftspec run SPEC --plan FILE")
    return named


# --------------------------------------------------------------------------- comparing


def _short(value: Any) -> str:
    if value is MISSING:
        return "(absent)"
    if isinstance(value, str) and SHA.fullmatch(value):
        return value[:12] + "…"
    text = json.dumps(thaw(value), ensure_ascii=False, sort_keys=True)
    return text if len(text) <= 60 else text[:59] + "…"


_PART = re.compile(r'\[(\d+)\]|\["((?:[^"\\]|\\.)*)"\]|\.?([^.\[]+)')


def _at(body: Any, path: str) -> Any:
    """The value at a change's path (``data.sources.train.sha256``, ``eval.gates[0]``) in a plan's JSON."""
    for index, quoted, plain in _PART.findall(path):
        key: Any = int(index) if index else (json.loads(f'"{quoted}"') if quoted else plain)
        try:
            body = body[key]
        except (KeyError, IndexError, TypeError):
            return None
    return body


def _explained(path: str, old: Any, new: Any, body: Mapping) -> str:
    """What one changed field means, in words: the file it fingerprints where it is a hash."""
    parent = _at(body, path.rsplit(".", 1)[0]) if "." in path else None
    if path.endswith(".sha256") and isinstance(parent, Mapping) and parent.get("kind") == "file":
        return f"changed: {parent.get('path')} is not the file the plan was made from"
    if path.endswith("gguf_sha256") and isinstance(parent, Mapping):
        return (f"changed: {parent.get('name_or_path')}/{parent.get('gguf_file')} is not the file the plan "
                "was made from")
    node = _at(body, path)
    if isinstance(node, Mapping) and "text" in node and "sha256" in node:  # a template, a schema
        source = f" of {node.get('ref') or node.get('path')}" if node.get("source") == "file" or "path" in node else ""
        return f"changed: the text{source} is not the text the plan was made from: planned {_short(old)}, " \
               f"now {_short(new)}"
    return f"changed: planned {_short(old)}, now {_short(new)}"


def plan_differences(recorded: Plan, current: Plan, where: Pos) -> list[Issue]:
    """Every field in which ``current`` (the spec compiled again) differs from the plan file's
    plan, a line each; empty when the plans are the same."""
    if recorded.id == current.id:
        return []
    found = diff_plans(recorded, current)
    staged = bool(recorded.stages or current.stages)
    by_stage = {p.stage: p.to_dict() for p in (*current.stages, current)}
    issues = []
    for c in found.changes:
        body = by_stage.get(c.stage, by_stage[current.stage]) if staged else by_stage[current.stage]
        key = f"{c.path} (stage {c.stage})" if staged and c.stage else c.path
        issues.append(Issue(where, key, _explained(c.path, c.old, c.new, body)))
    if not issues:  # what a reviewer's diff leaves out: the spec's files, its warnings, the step keys
        old, new = recorded.to_dict(), current.to_dict()
        for key in sorted(set(old) | set(new)):
            if key == "id" or json.dumps(old.get(key), sort_keys=True) == json.dumps(new.get(key), sort_keys=True):
                continue
            said = f"changed: planned {_short(old.get(key, MISSING))}, now {_short(new.get(key, MISSING))}"
            if key in ("checks", "stages") and _unchecked(old.get(key)) == _unchecked(new.get(key)):
                # What validate could look at here (a hub model in the local cache or not).
                issues.append(Issue(where, key, f"{said}: what could be checked here differs from where the plan was "
                                                "made; no step reads it, so the plan runs", severity=WARNING))
            else:
                issues.append(Issue(where, key, said))
    return issues


def _unchecked(value: Any) -> str:
    """A plan section without the checks' findings (a stage's plans, ``checks`` itself)."""
    if isinstance(value, list):
        value = [{k: v for k, v in p.items() if k not in ("checks", "id")} if isinstance(p, dict) else p
                 for p in value]
    elif isinstance(value, dict) and set(value) <= {"warnings", "not_checked"}:
        value = None
    return json.dumps(value, sort_keys=True)


def made_with_differences(applied: PlanFile, current: Plan, root: Path) -> list[Issue]:
    """Refusals (errors) and notes (warnings) from what the plan file says it was made with."""
    where = Pos(str(applied.path))
    recorded = applied.made_with
    if recorded is None:
        return [Issue(where, "", "the plan file records nothing of what it was made with (a plan's JSON, not a "
                                 "file of `ftspec plan -o`): library versions, the device and local model folders "
                                 "are not compared", severity=WARNING)]
    issues = []
    here = made_with(current, root)
    for name in sorted(set(recorded.versions) | set(here["versions"])):
        then, now = recorded.versions.get(name), here["versions"].get(name)
        if then == now:
            continue
        said = f"made with {name} {then or '(not installed)'}, here {now or '(not installed)'}"
        if name in REFUSED:
            issues.append(Issue(where, f"{MADE_WITH}.versions.{name}", f"{said}: refused, as `run --locked` refuses "
                                f"a library that drifted from the lock",
                                f"install {name}=={then}, or make the plan again here" if then else
                                "make the plan again here"))
        else:
            issues.append(Issue(where, f"{MADE_WITH}.versions.{name}", f"{said} (not pinned: the plan runs)",
                                severity=WARNING))
    for name, sha in sorted(recorded.models.items()):
        now = here["models"].get(name)
        if now != sha:
            what = "is gone" if now is None else "is not the folder the plan was made from"
            issues.append(Issue(where, f"{MADE_WITH}.models.{name}",
                                f"changed: the local model folder {name} {what} (content sha256 "
                                f"{sha[:12]}…, now {now[:12] + '…' if now else 'none'})"))
    for name in sorted(set(here["models"]) - set(recorded.models)):
        issues.append(Issue(where, f"{MADE_WITH}.models.{name}", f"the local model folder {name} is read by the plan "
                                                                 "but was not hashed when the plan was made"))
    then_dev, now_dev = recorded.device.model_dump(), here["device"]
    if then_dev != now_dev:
        auto = [k for k in ("device", "precision") if getattr(current.compute, k, None) == "auto"]
        effect = (f"compute.{' and compute.'.join(auto)} `auto` may resolve differently here, so results can "
                  "differ from a run where the plan was made" if auto else
                  "the plan names its device and precision, so they resolve the same (or the run stops at the "
                  "first step)")
        issues.append(Issue(where, f"{MADE_WITH}.device", f"made on {_device(then_dev)}, applied on "
                                                          f"{_device(now_dev)}: {effect}", severity=WARNING))
    return issues


def _device(device: Mapping) -> str:
    gpus = device.get("gpus") or []
    return f"{device['kind']} ({', '.join(gpus)})" if gpus else str(device["kind"])


def check_applied(applied: PlanFile, current: Plan, root: Path, warn: Callable[[Issue], None] | None = None) -> Plan:
    """Refuse (SpecError, every difference a line) unless ``current`` — the plan file's spec
    compiled again here — is the plan of the file, and nothing it pins drifted; warnings
    (``warn``) for what differs but does not stop the run. Returns the plan to run: the
    file's own (its id is the one reviewed)."""
    issues = plan_differences(applied.plan, current, Pos(str(applied.path))) + \
        made_with_differences(applied, current, root)
    errors = [i for i in issues if i.is_error]
    if errors:
        raise SpecError(errors)
    if warn is not None:
        for issue in issues:
            warn(issue)
    return applied.plan


__all__ = ["MADE_WITH", "MadeWith", "PlanFile", "check_applied", "device_kind", "made_with", "made_with_differences",
           "model_folders", "plan_differences", "plan_file_text", "plan_spec", "read_plan_file"]
