"""The files a run writes for people and tools to read, as versioned models:
``manifest.json`` (what ran, where, with which versions) and the report's
``metrics.json`` (base and tuned metrics, gates). Their JSON Schemas are published
beside the spec's and the plan's in ``schema/`` (``ftspec schema --of …``).

The runtime validates each file against its model before writing it, so the
schema is what the files hold.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from ftspec.plan import model as plan_model
from ftspec.spec import schema as spec_schema

MANIFEST_VERSION = 1
METRICS_VERSION = 1


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StepEntry(_Record):
    """One step of the run, as this run found or left it."""

    name: str = Field(description="Step name (see ftspec/catalog/steps.py).")
    key: str = Field(description=(
        "The step's key: the hash of the plan fields it reads and of the keys of the steps it needs."))
    dir: str = Field(description="Its folder in the run directory: a link to where the output is stored.")
    stored: Optional[str] = Field(None, description=(
        "Where the step's output is, relative to the run directory: the step store beside it "
        "(`../.ftspec-store/<step>/<key>`), shared by every run directory whose plan has the same step key."))
    state: Literal["ran", "reused", "fetched"] = Field(description=(
        "`ran` in this run, `reused` from an earlier one with the same key, or `fetched` from the shared step "
        "store (computed on another machine)."))
    seconds: Optional[float] = Field(None, description="Wall time of the step, when it ran.")
    finished_at: Optional[str] = Field(None, description="When the step finished (UTC, ISO 8601).")


class DataFile(_Record):
    path: Optional[str] = Field(None, description="File path relative to the repository root, or the hub dataset id.")
    sha256: Optional[str] = Field(None, description="sha256 of the file (files only).")
    revision: Optional[str] = Field(None, description="Pinned hub revision (hub datasets only).")


class Machine(_Record):
    """Where the run ran, and what the plan's `auto` rules became there (the plan holds only the rules)."""

    platform: str = Field(description="The platform (Python's platform.platform()).")
    cpus: Optional[int] = Field(None, description="The machine's CPU count.")
    usable_cpus: Optional[int] = Field(None, description=(
        "The CPUs this process could run on (its affinity mask, as taskset, cgroups' cpusets and SLURM set it)."))
    cpu_bf16: Optional[list[str]] = Field(None, description=(
        "The CPU's bf16 matrix-multiply flags (`avx512_bf16`, `amx_bf16`; from /proc/cpuinfo), which decide "
        "`precision: auto` on the CPU."))
    device: Optional[str] = Field(None, description="The device the steps ran on; null when no step ran.")
    precision: Optional[str] = Field(None, description=(
        "The precision the steps ran in (`fp32`, `bf16`, `fp16`): `compute.precision` resolved on this machine; "
        "null when no step ran."))
    precision_setting: Optional[str] = Field(None, description="`compute.precision` as the plan states it.")
    threads: Optional[int] = Field(None, description=(
        "The CPU threads torch computed with in this process: `compute.threads` resolved on this machine; "
        "null when no step ran."))
    interop_threads: Optional[int] = Field(None, description=(
        "torch's inter-op threads in this process (a process sets them once: an earlier setting may stay)."))
    threads_setting: int | str | None = Field(None, description="`compute.threads` as the plan states it.")


class Manifest(_Record):
    """`manifest.json`: what this run directory holds and how it was made."""

    manifest_version: Literal[1] = Field(MANIFEST_VERSION, description="Version of this file's layout.")
    plan_id: str = Field(description="Id of the plan that ran (plan.json beside this file).")
    name: str = Field(description="The spec's name.")
    spec: dict[str, Any] = Field(description=(
        "The plan's `spec` section: the spec's path, bases, profiles and overrides."))
    spec_files: dict[str, Optional[str]] = Field(description=(
        "sha256 of the spec and each base it extends, when the run started."))
    lock: Optional[dict[str, Any]] = Field(None, description=(
        "The lock file the run was checked against (`run --locked`)."))
    status: Literal["running", "finished", "failed"] = Field(description="Where the run is.")
    pid: int = Field(description="Process id of the run.")
    started_at: str = Field(description="UTC, ISO 8601.")
    finished_at: Optional[str] = Field(None, description="UTC, ISO 8601.")
    seconds: Optional[float] = Field(None, description="Wall time of the whole run.")
    versions: dict[str, Optional[str]] = Field(description="Python and library versions.")
    git: Optional[dict[str, Any]] = Field(None, description=(
        "Commit of the spec's repository; `dirty`: true when a tracked file was modified or an input of the plan (the "
        "spec, its bases, data and template files) was modified or untracked (`modified_inputs`, `untracked_inputs`)."))
    machine: Machine = Field(description=(
        "The platform, and what the plan's `auto` rules became on it (precision, threads) when a step ran."))
    store: Optional[str] = Field(None, description=(
        "The shared step store the run fetched from and uploaded to (`--store`, `FTSPEC_STORE` or "
        "`output.store`), as its URL; null: only the local store beside the run directory."))
    data: dict[str, DataFile] = Field(description=(
        "Each data source, by split (a training mixture's sources as `train.NAME`)."))
    steps: list[StepEntry] = Field(description="The plan's steps, in order.")
    artifacts: dict[str, str] = Field(description="Each step's folder in the run directory.")
    metrics: Optional[dict[str, Any]] = Field(None, description=(
        "Base and tuned metrics and whether the gates passed (from the report)."))
    bedrock: Optional[dict[str, Any]] = Field(None, description=(
        "On the Amazon Bedrock backend: the customization job's ARN (`job_arn`), the "
        "custom model's (`custom_model_arn`) and its name, the region and the attempt."))


class GateResult(_Record):
    gate: str = Field(description="The gate as written in the spec (`accuracy`, `improvement.accuracy`).")
    metric: str = Field(description="The metric it checks.")
    improvement: bool = Field(description="Whether it checks tuned − base rather than the tuned value.")
    op: str = Field(description="Comparison.")
    threshold: float = Field(description="Threshold.")
    value: Optional[float] = Field(None, description=(
        "The tuned value, or tuned − base; null when it could not be computed."))
    passed: bool = Field(description="Whether the gate is met.")
    margin: Optional[float] = Field(None, description="How far the value is on the passing side of the threshold.")
    reason: Optional[str] = Field(None, description="Why a gate could not be checked.")


Interval = Optional[list[float]]


class Intervals(BaseModel):
    """95% confidence intervals, [low, high] per metric (null where one could not be computed)."""

    model_config = ConfigDict(extra="allow")

    method: str = Field(description="How they were computed: a paired percentile bootstrap over the evaluated rows.")
    resamples: int = Field(description="Bootstrap resamples.")
    seed: int = Field(description="Seed of the resampling: the same rows give the same intervals.")
    level: float = Field(description="Confidence level.")
    rows: int = Field(description="Rows resampled: those every evaluated model answered.")
    base: Optional[dict[str, Interval]] = Field(None, description="Each metric of the base model.")
    tuned: Optional[dict[str, Interval]] = Field(None, description="Each metric of the tuned model.")
    majority: Optional[dict[str, Interval]] = Field(None, description=(
        "Each metric of the most-frequent-answer baseline."))
    tuned_minus_base: Optional[dict[str, Interval]] = Field(None, description=(
        "tuned − base, paired: the same resampled rows for both."))
    tuned_minus_majority: Optional[dict[str, Interval]] = Field(None, description=(
        "tuned − the most-frequent-answer baseline, paired."))


class ReportMetrics(BaseModel):
    """The report's `metrics.json`: the held-out comparison of the base and the tuned model."""

    model_config = ConfigDict(extra="allow")  # fields a newer report adds are kept, not refused

    metrics_version: Literal[1] = Field(METRICS_VERSION, description="Version of this file's layout.")
    name: Optional[str] = Field(None, description="The spec's name.")
    split: Optional[str] = Field(None, description="The split that was scored.")
    rows: Optional[int] = Field(None, description="Rows scored.")
    headline: Optional[str] = Field(None, description="The first metric of the spec: the one a run is summed up by.")
    base: Optional[dict[str, Optional[float]]] = Field(None, description=(
        "The base model's metrics (null without a baseline)."))
    tuned: Optional[dict[str, Optional[float]]] = Field(None, description="The tuned model's metrics.")
    delta: dict[str, float] = Field(default_factory=dict, description="tuned − base, per metric.")
    majority: Optional[dict[str, Optional[float]]] = Field(None, description=(
        "The most-frequent-answer baseline: the most frequent answer of the training "
        "split (the majority class, for labels) predicted for every evaluated row, "
        "scored with each metric that needs no model (null without a training split)."))
    majority_answers: Optional[dict[str, Optional[str]]] = Field(None, description=(
        "The answer that baseline predicts, per metric (as the metric's extraction finds it)."))
    intervals: Optional[Intervals] = Field(None, description=(
        "Confidence intervals of each metric and of the differences (null without evaluated rows)."))
    verdict: Optional[str] = Field(None, description=(
        "The report's one headline sentence, weighing tuned against the base model and against always giving the "
        "most frequent answer: better (or worse) than each only where the 95% interval of the difference excludes 0."))
    gates: list[GateResult] = Field(default_factory=list, description="Each gate of the plan, checked.")
    gates_passed: bool = Field(description="Whether every gate passed (true without gates).")
    overfitting: Optional[str] = Field(None, description=(
        "A warning when the validation loss rose while the training loss fell."))
    by_source: Optional[dict[str, Any]] = Field(None, description=(
        "A training mixture's evaluated rows grouped by source (only when the evaluated split has 2+ sources): "
        "`split`; `sources`: per source `rows`, `base`, `tuned`, `delta` (tuned − base) and `intervals` (`base`, "
        "`tuned`, `tuned_minus_base`, 95%); `worse`: each (source, metric) where tuned scores worse than base, "
        "`significant` when the base and tuned intervals do not overlap; `warnings`; `note`: why there is no "
        "breakdown though the split has a sources file."))
    training_rewards: Optional[dict[str, Any]] = Field(None, description=(
        "GRPO runs only: per reward (and `reward`, their weighted sum) its kind, held-out metric, weight and how it "
        "moved in training (first and last logged value, the means of the first and last quarter of logged steps, "
        "its spread between completions, whether it clearly rose)."))
    reward_hacking: Optional[str] = Field(None, description=(
        "GRPO runs only: a warning when a training reward clearly rose while its held-out metric did not improve "
        "(the policy may be exploiting the reward)."))
    details: dict[str, Any] = Field(default_factory=dict, description=(
        "Per-metric details (confusion matrix, judge notes)."))


def _schema(model: type[BaseModel], name: str, title: str) -> dict:
    schema = model.model_json_schema(mode="serialization")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://ftspec.dev/schema/{name}-v1.json"
    schema["title"] = title
    return schema


def schemas() -> dict[str, dict]:
    """Every published schema, by the file name it is published under in ``schema/``."""
    return {
        "ftspec-v1.schema.json": spec_schema.json_schema(),
        "plan.schema.json": plan_model.json_schema(),
        "manifest.schema.json": _schema(Manifest, "manifest", "ftspec run manifest.json, version 1"),
        "metrics.schema.json": _schema(ReportMetrics, "metrics", "ftspec report metrics.json, version 1"),
    }
