"""`ftspec stop`: stop the Amazon Bedrock job a spec's train step started."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ftspec.backends.bedrock import aws, job
from ftspec.catalog.steps import TRAIN
from ftspec.core.errors import Pos, RunFailed, SpecError
from ftspec.core.paths import find_root
from ftspec.plan.compile import compile_spec
from ftspec.store.rundir import run_dir_of, store_of

JOB_RECORD = job.JOB_RECORD  # the Bedrock train step's record of the job it started


def stop(spec: Path, profiles: Iterable[str] = (), sets: Iterable[str] = (), allow: Iterable[str | Path] = ()) -> str:
    """Ask Bedrock to stop the customization job the spec's train step started; the job's
    ARN. A spec that does not train on Bedrock is a SpecError; a train step that is
    complete or never started a job, or a job Bedrock will not stop, is RunFailed."""
    plan, _ = compile_spec(spec, profiles, sets, allow=allow)
    if plan.compute.backend != "bedrock":
        raise SpecError.one(Pos(str(spec)), "compute.backend",
                            "ftspec stop stops Bedrock jobs; a local run stops with Ctrl-C")
    key = plan.step(TRAIN.name).key
    store = store_of(run_dir_of(plan, find_root(spec)))
    if store.complete(TRAIN.name, key):
        raise RunFailed(f"the train step (key {key[:8]}) is complete: there is no job to stop")
    # A record of the wrong shape, or one that is not a regular file, is a BadFileError (exit 2).
    record = job.read_record(store.scratch(TRAIN.name, key, "checkpoints") / JOB_RECORD)
    if record is None:
        raise RunFailed(f"no Bedrock job was started for this plan's train step (key {key[:8]})")
    job_arn = record.job_arn
    job.stop(aws.client("bedrock", plan.compute.bedrock.region), job_arn)
    return job_arn
