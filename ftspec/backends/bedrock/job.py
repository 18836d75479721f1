"""One Bedrock model customization job: its data in S3, the job itself, and its losses.

API names are botocore's service model for bedrock (botocore/data/bedrock/2023-04-20/
service-2.json): CreateModelCustomizationJob, GetModelCustomizationJob (status, statusDetails
with validationDetails, dataProcessingDetails, trainingDetails, failureMessage),
ListModelCustomizationJobs, StopModelCustomizationJob. The output files are those of
docs.aws.amazon.com/bedrock/latest/userguide/model-customization-analyze.html.

Clients are passed in (ftspec.backends.bedrock.aws.client makes them), so tests hand in clients
that talk to moto or to a botocore Stubber.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import math
import time
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from ftspec.core.errors import Detached, RunFailed  # Detached: job.Detached for callers and tests
from ftspec.core.io import read_json

TERMINAL = ("Completed", "Failed", "Stopped")
# statusDetails' members, in the order a job goes through them, and how a progress line names them.
STAGES = (("validationDetails", "validation"), ("dataProcessingDetails", "data processing"),
          ("trainingDetails", "training"))
POLL_SECONDS = 60.0  # a job takes tens of minutes to hours; its status changes seldom
SHA256_META = "sha256"  # x-amz-meta-sha256: the uploaded bytes' sha256, hex
TRAINING_METRICS = "step_wise_training_metrics.csv"  # step_number, epoch_number, training_loss, perplexity
VALIDATION_METRICS = "validation_metrics.csv"  # step_number, epoch_number, validation_loss, perplexity


# Where the train step records the job it started, in the step's scratch folder (kept
# until the step is complete): `ftspec stop` and the next attempt read it back.
JOB_RECORD = "job.json"


class JobRecord(BaseModel):
    """``job.json``: the job a train step started. Checked on the way in, so a record of
    the wrong shape is one line naming the key, never a TypeError or OverflowError."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=True)

    job_arn: Annotated[StrictStr, Field(pattern=r"^arn:[A-Za-z0-9+=,.@:/_-]+$", max_length=2048)]
    attempt: Annotated[StrictInt, Field(ge=1, le=10_000)] = 1
    region: Optional[Annotated[StrictStr, Field(max_length=64)]] = None


def read_record(path: Path, *, lenient: bool = False) -> JobRecord | None:
    """The job record at ``path``, or None when there is none (or, ``lenient``, when it was
    cut short or is of the wrong shape). Raises BadFileError, one line at FILE[:LINE]."""
    return read_json(path, dict, lenient=lenient, schema=JobRecord)


def s3_uri(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


def split_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` as (bucket, key)."""
    bucket, _, key = uri[5:].partition("/")
    if not uri.startswith("s3://") or not bucket:
        raise ValueError(f"not an S3 URI: {uri!r}")
    return bucket, key


def _code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


# --------------------------------------------------------------------------- S3 data


def upload(s3: Any, bucket: str, key: str, data: bytes, echo: Callable[[str], None] | None = None) -> str:
    """Put ``data`` at ``s3://bucket/key`` unless an object of the same size and sha256
    (its x-amz-meta-sha256, set here) is there already; the object's S3 URI."""
    from botocore.exceptions import ClientError

    digest = hashlib.sha256(data).hexdigest()
    uri = s3_uri(bucket, key)
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if _code(exc) not in ("404", "NoSuchKey", "NotFound"):
            raise
    else:
        if head.get("ContentLength") == len(data) and head.get("Metadata", {}).get(SHA256_META) == digest:
            if echo:
                echo(f"  {uri} is already there (same sha256): not uploaded again")
            return uri
    # ChecksumSHA256: S3 checks the bytes it received against it and refuses a corrupted upload.
    s3.put_object(Bucket=bucket, Key=key, Body=data, Metadata={SHA256_META: digest},
                  ChecksumSHA256=base64.b64encode(bytes.fromhex(digest)).decode("ascii"),
                  ContentType="application/jsonl")
    if echo:
        echo(f"  uploaded {len(data)} bytes to {uri}")
    return uri


# --------------------------------------------------------------------------- the job


def find(bedrock: Any, job_name: str) -> str | None:
    """The ARN of the job named exactly ``job_name`` in this account and region, or None."""
    kwargs: dict[str, Any] = {"nameContains": job_name}
    while True:
        page = bedrock.list_model_customization_jobs(**kwargs)
        for summary in page.get("modelCustomizationJobSummaries", []):
            if summary.get("jobName") == job_name:
                return summary["jobArn"]
        token = page.get("nextToken")
        if not token:
            return None
        kwargs["nextToken"] = token


def create_or_attach(bedrock: Any, request: dict, echo: Callable[[str], None] | None = None) -> str:
    """The ARN of the job ``request`` describes: the existing one when a job of that name
    was created from the same request (the same clientRequestToken: the train step's key),
    else a new one. A job of that name from another request is an error, not attached."""
    from botocore.exceptions import ClientError

    name = request["jobName"]
    token = request.get("clientRequestToken")

    def attach(arn: str) -> str:
        existing = bedrock.get_model_customization_job(jobIdentifier=arn)
        if token is not None and existing.get("clientRequestToken") not in (None, token):
            raise RunFailed(f"a Bedrock job named {name} already exists ({arn}) but was created from another request "
                            f"(clientRequestToken {existing.get('clientRequestToken')}, this run's is {token}); "
                            "job names are unique in an account and region: "
                            "rename the job or delete the other one's model")
        if echo:
            echo(f"  attached to the existing job {name} ({existing.get('status', '?')})")
        return arn

    arn = find(bedrock, name)
    if arn is not None:
        return attach(arn)
    try:
        return bedrock.create_model_customization_job(**request)["jobArn"]
    except ClientError as exc:
        # Created meanwhile (another `ftspec run`, or a response lost after AWS created it):
        # the name is taken now, so attach when it is ours.
        if _code(exc) in ("ConflictException", "ResourceInUseException", "ValidationException"):
            arn = find(bedrock, name)
            if arn is not None:
                return attach(arn)
        raise


def _progress(job: dict) -> str:
    details = job.get("statusDetails") or {}
    parts = [f"{label} {details[field]['status']}" for field, label in STAGES
             if isinstance(details.get(field), dict) and details[field].get("status")]
    return f"  job {job.get('status', '?')}" + (f" · {' · '.join(parts)}" if parts else "")


def _one_line(text: Any) -> str:
    return " ".join(str(text or "").split()) or "no failureMessage given"


def poll(bedrock: Any, arn: str, echo: Callable[[str], None], interval: float = POLL_SECONDS, *,
         spec: str = "SPEC", sleep: Callable[[float], None] | None = None) -> dict:
    """Wait for the job to end: a progress line whenever its status or a sub-status changes;
    the final GetModelCustomizationJob response when it Completed. Failed and Stopped raise
    RunFailed with one line; Ctrl-C raises Detached (the job keeps running)."""
    shown = None
    try:
        while True:
            job = bedrock.get_model_customization_job(jobIdentifier=arn)
            job.pop("ResponseMetadata", None)
            line = _progress(job)
            if line != shown:
                echo(line)
                shown = line
            status = job.get("status")
            if status == "Completed":
                return job
            name = job.get("jobName", arn)
            if status == "Failed":
                raise RunFailed(f"Bedrock job {name} failed: {_one_line(job.get('failureMessage'))} ({arn}); "
                                "running the spec again starts a new job")
            if status == "Stopped":
                raise RunFailed(f"Bedrock job {name} was stopped before it completed ({arn}); "
                                "running the spec again starts a new job")
            (sleep or time.sleep)(interval)
    except KeyboardInterrupt:
        raise Detached(arn, spec) from None


def stop(bedrock: Any, arn: str) -> str:
    """Ask Bedrock to stop the job; its status afterwards ("Stopping", or the status it had
    already ended with)."""
    from botocore.exceptions import ClientError

    status = bedrock.get_model_customization_job(jobIdentifier=arn).get("status")
    if status in TERMINAL or status == "Stopping":
        return status
    try:
        bedrock.stop_model_customization_job(jobIdentifier=arn)
    except ClientError as exc:
        if _code(exc) not in ("ValidationException", "ConflictException"):
            raise
        # It ended between the two calls: say how.
        return bedrock.get_model_customization_job(jobIdentifier=arn).get("status", "?")
    return "Stopping"


# --------------------------------------------------------------------------- losses


def _number(value: str) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number  # nan: no value


def _rows(text: str, loss_column: str, key: str) -> list[dict]:
    out = []
    for row in csv.DictReader(io.StringIO(text)):
        row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
        step, loss = _number(row.get("step_number")), _number(row.get(loss_column))
        if step is None or loss is None:
            continue
        record: dict[str, Any] = {"step": int(step)}
        epoch = _number(row.get("epoch_number"))
        if epoch is not None:
            record["epoch"] = int(epoch) if epoch.is_integer() else epoch
        record[key] = loss
        out.append(record)
    return out


def metrics(s3: Any, output_uri: str, job: dict | None = None) -> list[dict]:
    """The job's training and validation losses as metrics.jsonl records,
    ``{"step", "epoch", "loss"}`` and ``{"step", "epoch", "eval_loss"}``, in step order.

    Bedrock writes them under the job's output URI as
    ``model-customization-job-<job id>/training_artifacts/step_wise_training_metrics.csv`` and
    ``…/validation_artifacts/post_fine_tuning_validation/validation_metrics.csv``; with ``job``
    (the GetModelCustomizationJob response) only that job's folder is read. None there: []."""
    bucket, prefix = split_uri(output_uri)
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(o["Key"] for o in page.get("Contents", []))
    if job and job.get("jobArn"):
        job_id = job["jobArn"].rsplit("/", 1)[-1]
        mine = [k for k in keys if f"model-customization-job-{job_id}/" in k]
        keys = mine or keys

    def read(name: str) -> str | None:
        found = sorted(k for k in keys if k.rsplit("/", 1)[-1] == name)
        if not found:
            return None
        if len(found) > 1:  # several jobs' folders, none of them this job's
            raise RunFailed(f"{len(found)} files named {name} under {output_uri} and none in this job's folder: "
                            "cannot tell which are this job's losses")
        body = s3.get_object(Bucket=bucket, Key=found[-1])["Body"].read()
        return body.decode("utf-8-sig", errors="replace")

    records: list[dict] = []
    text = read(TRAINING_METRICS)
    if text is not None:
        records += _rows(text, "training_loss", "loss")
    text = read(VALIDATION_METRICS)
    if text is not None:
        records += _rows(text, "validation_loss", "eval_loss")
    # Training lines before the validation line of the same step, as a local run logs them.
    return sorted(records, key=lambda r: (r["step"], "eval_loss" in r))
