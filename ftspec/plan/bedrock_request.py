"""The CreateModelCustomizationJob request a plan makes, as plain data.

Parameter names and limits are botocore's (botocore/data/bedrock/2023-04-20/service-2.json,
shape CreateModelCustomizationJobRequest). No credentials and nothing secret: the role
ARN, bucket and KMS key id are names, not keys.

Three values are known only when the run starts and stand in the plan as placeholders,
filled by :func:`fill`: ``{train_sha256}`` and ``{validation_sha256}`` (the sha256 of the
rendered JSONL, so the S3 key is content-addressed) and ``{train_key}`` (the train step's
key: ``clientRequestToken`` is the whole key, so that an unchanged spec run again attaches
to the job it created instead of paying for a second one; ``jobName`` and
``customModelName`` carry its first KEY_CHARS characters).
"""

from __future__ import annotations

import re
from typing import Any

KEY_CHARS = 12
TRAIN_KEY = "{train_key}"
TRAIN_SHA = "{train_sha256}"
VALIDATION_SHA = "{validation_sha256}"
MAX_NAME = 63  # JobName and CustomModelName: 1 to 63 characters


def _job_stem(name: str) -> str:
    """The spec's name as a JobName begins ([a-zA-Z0-9](-*[a-zA-Z0-9+\\-.])*): '_' becomes '-'."""
    stem = name.replace("_", "-")
    return stem[: MAX_NAME - KEY_CHARS - 1].rstrip("-.+") or "ftspec"


def _model_stem(name: str) -> str:
    """The spec's name as a CustomModelName begins (([0-9a-zA-Z][_-]?){1,63}): '.' becomes '-',
    and no two of '-' and '_' follow each other."""
    stem = re.sub(r"[-_.]{2,}", "-", name.replace(".", "-"))
    return stem[: MAX_NAME - KEY_CHARS - 1].rstrip("-_") or "ftspec"


def data_uri(bucket: str, prefix: str, split: str, sha256: str | None = None) -> str:
    """Where a rendered split goes: content-addressed, so unchanged data is uploaded once
    (with ``sha256`` None, the plan's placeholder for it)."""
    return f"s3://{bucket}/{prefix}data/{split}-{sha256 or '{' + split + '_sha256}'}.jsonl"


def build(name: str, model_id: str, bedrock: dict[str, Any], hyperparameters: dict[str, str],
          validation: bool) -> dict[str, Any]:
    """The request for the plan's compute.bedrock section (``bedrock``: region, customization,
    role_arn, s3, kms_key_id, vpc, tags, teacher_model, max_response_length)."""
    s3 = bedrock["s3"]
    request: dict[str, Any] = {
        "jobName": f"{_job_stem(name)}-{TRAIN_KEY}",
        "customModelName": f"{_model_stem(name)}-{TRAIN_KEY}",
        "roleArn": bedrock["role_arn"],
        "clientRequestToken": TRAIN_KEY,
        "baseModelIdentifier": model_id,
        "customizationType": bedrock["customization"],
        "trainingDataConfig": {"s3Uri": data_uri(s3["bucket"], s3["prefix"], "train")},
        "outputDataConfig": {"s3Uri": f"s3://{s3['bucket']}/{s3['prefix']}output/"},
        "hyperParameters": dict(hyperparameters),
    }
    if validation:
        request["validationDataConfig"] = {
            "validators": [{"s3Uri": data_uri(s3["bucket"], s3["prefix"], "validation")}]}
    if bedrock.get("kms_key_id"):
        request["customModelKmsKeyId"] = bedrock["kms_key_id"]
    if bedrock.get("vpc"):
        request["vpcConfig"] = {"subnetIds": list(bedrock["vpc"]["subnets"]),
                                "securityGroupIds": list(bedrock["vpc"]["security_groups"])}
    tags = [{"key": k, "value": v} for k, v in sorted((bedrock.get("tags") or {}).items())]
    if tags:
        request["jobTags"] = tags
        request["customModelTags"] = tags
    if bedrock["customization"] == "DISTILLATION":
        teacher: dict[str, Any] = {"teacherModelIdentifier": bedrock["teacher_model"]}
        if bedrock.get("max_response_length") is not None:
            teacher["maxResponseLengthForInference"] = bedrock["max_response_length"]
        request["customizationConfig"] = {"distillationConfig": {"teacherModelConfig": teacher}}
    return request


def fill(request: dict[str, Any], train_key: str, train_sha256: str,
         validation_sha256: str | None = None) -> dict[str, Any]:
    """The request with its placeholders filled: what the run sends."""
    short = train_key[:KEY_CHARS]

    def sub(value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            return {k: sub(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [sub(v, key) for v in value]
        if isinstance(value, str):
            value = value.replace(TRAIN_KEY, train_key if key == "clientRequestToken" else short)
            value = value.replace(TRAIN_SHA, train_sha256)
            if validation_sha256 is not None:
                value = value.replace(VALIDATION_SHA, validation_sha256)
        return value

    return sub(request)
