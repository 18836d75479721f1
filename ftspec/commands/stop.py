"""`ftspec stop`: stop the Amazon Bedrock job a spec's train step started."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from ftspec.backends.bedrock import aws, job
from ftspec.catalog.steps import TRAIN
from ftspec.core.errors import Pos, RunFailed, SpecError
from ftspec.core.paths import find_root
from ftspec.plan.compile import compile_spec
from ftspec.store.rundir import store_of

# Where the Bedrock train step records the job it started (ftspec.backends.bedrock.steps.train):
# in the step's scratch folder, kept until the step is complete.
JOB_RECORD = "job.json"


def stop(spec: Path, profiles: Iterable[str] = (), sets: Iterable[str] = (), allow: Iterable[str | Path] = ()) -> str:
    """Ask Bedrock to stop the customization job the spec's train step started; the job's
    ARN. A spec that does not train on Bedrock is a SpecError; a train step that is
    complete or never started a job, or a job Bedrock will not stop, is RunFailed."""
    plan, _ = compile_spec(spec, profiles, sets, allow=allow)
    if plan.compute.backend != "bedrock":
        raise SpecError.one(Pos(str(spec)), "compute.backend",
                            "ftspec stop stops Bedrock jobs; a local run stops with Ctrl-C")
    key = plan.step(TRAIN.name).key
    store = store_of(find_root(spec) / plan.output.dir)
    if store.complete(TRAIN.name, key):
        raise RunFailed(f"the train step (key {key[:8]}) is complete: there is no job to stop")
    record = store.scratch(TRAIN.name, key, "checkpoints") / JOB_RECORD
    try:
        job_arn = json.loads(record.read_text(encoding="utf-8"))["job_arn"]
    except (OSError, ValueError, KeyError):
        raise RunFailed(f"no Bedrock job was started for this plan's train step (key {key[:8]})") from None
    job.stop(aws.client("bedrock", plan.compute.bedrock.region), job_arn)
    return job_arn
