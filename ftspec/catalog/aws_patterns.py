"""What AWS accepts in each value a Bedrock job's request carries, as data: a regular
expression over the whole value (used with ``re.fullmatch``: ``$`` would let a trailing
newline through) and its length limits.

Source: botocore's service model for bedrock (botocore/data/bedrock/2023-04-20/service-2.json,
the shapes named beside each entry) and, for region names, botocore/data/partitions.json
(each partition's regionRegex). Where AWS's own expression is looser than the values it
describes (``\\s``, ``\\w``, ``\\d`` and ``[^:]`` also take newlines, tabs or non-ASCII
digits), the class here is the documented one, narrowed to ASCII; nothing is looser than AWS's.

Light: pure data and ``re``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Pattern:
    """A value's shape: ``regex`` over the whole value, ``min``..``max`` characters, and
    ``what`` it should look like, for an error message."""

    regex: str
    min: int
    max: int
    what: str

    def problem(self, value: str) -> str | None:
        """Why ``value`` is not one, in words (None when it is)."""
        if not self.min <= len(value) <= self.max:
            return f"expected {self.what}, {self.min} to {self.max} characters (got {len(value)})"
        if re.fullmatch(self.regex, value) is None:
            shown = value if len(value) <= 60 else value[:57] + "..."
            return f"expected {self.what} (got {shown!r})"
        return None

    def check(self, value: str) -> str:
        """``value``, or ValueError saying what it should look like (a pydantic validator)."""
        problem = self.problem(value)
        if problem:
            raise ValueError(problem)
        return value


# partitions.json: aws ^(us|eu|ap|sa|ca|me|af|il|mx)\-\w+\-\d+$, aws-cn ^cn\-\w+\-\d+$,
# aws-eusc ^eusc\-(de)\-\w+\-\d+$, aws-iso ^us\-iso\-…, aws-iso-b ^us\-isob\-…, aws-iso-e
# ^eu\-isoe\-…, aws-iso-f ^us\-isof\-…, aws-us-gov ^us\-gov\-… ; \w+ as [a-z]+ (every region
# name is lower-case ASCII), \d+ as one or two digits.
REGION = Pattern(
    r"(?:(?:us|eu|ap|sa|ca|me|af|il|mx|cn)|us-(?:gov|iso|isob|isof)|eu-isoe|eusc-de)-[a-z]+-[0-9]{1,2}",
    1, 64, "an AWS region such as us-east-1")
# RoleArn: arn:aws(-[^:]+)?:iam::([0-9]{12})?:role/.+ (0-2048). Narrowed to a partition name
# and IAM's own role path and name characters (letters, digits, + = , . @ _ - and /).
ROLE_ARN = Pattern(r"arn:aws(?:-[a-z]+)*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}", 1, 2048,
                   "an IAM role ARN: arn:aws:iam::<12-digit account>:role/<name>")
# KmsKeyId (1-2048); the partition's [^:]+ narrowed to [a-z-]+.
KMS_KEY_ID = Pattern(
    r"arn:aws(?:-[a-z]+)*:kms:[a-zA-Z0-9-]*:[0-9]{12}:(?:key/[a-zA-Z0-9-]{36}|alias/[a-zA-Z0-9_/-]+)"
    r"|[a-zA-Z0-9-]{36}|alias/[a-zA-Z0-9_/-]+", 1, 2048, "a KMS key id, alias/<name>, or a key or alias ARN")
# TagKey (1-128) and TagValue (0-256): [a-zA-Z0-9\s._:/=+@-]*, where \s is the space the
# tagging rules name (docs.aws.amazon.com/tag-editor/latest/userguide/tagging.html: letters,
# digits, spaces and + - = . _ : / @), not a newline or a tab.
TAG_KEY = Pattern(r"[a-zA-Z0-9 ._:/=+@-]*", 1, 128, "a tag key: letters, digits, spaces and . _ : / = + @ -")
TAG_VALUE = Pattern(r"[a-zA-Z0-9 ._:/=+@-]*", 0, 256, "a tag value: letters, digits, spaces and . _ : / = + @ -")
# SubnetId and SecurityGroupId: [-0-9a-zA-Z]+ (0-32), narrowed to EC2's ids.
SUBNET_ID = Pattern(r"subnet-(?:[0-9a-f]{8}|[0-9a-f]{17})", 1, 32, "a subnet id: subnet- and 8 or 17 hex digits")
SECURITY_GROUP_ID = Pattern(r"sg-(?:[0-9a-f]{8}|[0-9a-f]{17})", 1, 32,
                            "a security group id: sg- and 8 or 17 hex digits")
# S3Uri (1-1024): s3://BUCKET(/SEGMENT)*/?, each key segment of these characters.
S3_SEGMENT = Pattern(r"[-!_*'().a-zA-Z0-9]+", 1, 1024,
                     "a key segment of letters, digits and - ! _ * ' ( ) . (what CreateModelCustomizationJob's s3Uri "
                     "accepts)")
S3_URI = Pattern(r"s3://[a-z0-9][-.a-z0-9]{1,61}[a-z0-9](?:/[-!_*'().a-z0-9A-Z]+(?:/[-!_*'().a-z0-9A-Z]+)*)?/?",
                 1, 1024, "an S3 URI")
# JobName and CustomModelName (1-63).
JOB_NAME = Pattern(r"[a-zA-Z0-9](?:-*[a-zA-Z0-9+.-])*", 1, 63, "a job name")
CUSTOM_MODEL_NAME = Pattern(r"(?:[0-9a-zA-Z][_-]?){1,63}", 1, 63, "a custom model name")
# BaseModelIdentifier (1-2048): a foundation model's id or ARN, or a custom model's name.
_FOUNDATION_ID = r"[a-z0-9-]{1,63}[.][a-z0-9-]{1,63}(?:[.]?[a-z0-9-]{1,63})(?:[:][a-z0-9-]{1,63}){0,2}"
BASE_MODEL_ID = Pattern(rf"arn:aws(?:-[a-z]+)*:bedrock:[a-z0-9-]{{1,20}}::foundation-model/{_FOUNDATION_ID}"
                        rf"|{_FOUNDATION_ID}|(?:[0-9a-zA-Z][_-]?)+", 1, 2048,
                        "a Bedrock base model id such as amazon.nova-micro-v1:0")
# TeacherModelIdentifier: a foundation model's id or ARN, or an inference profile's ARN or id.
TEACHER_MODEL_ID = Pattern(
    rf"arn:aws(?:-[a-z]+)*:bedrock:[a-z0-9-]{{1,20}}:(?::foundation-model/{_FOUNDATION_ID}"
    rf"|[0-9]{{12}}:inference-profile/[a-zA-Z0-9:.-]+)|{_FOUNDATION_ID}", 1, 2048,
    "a Bedrock model id or inference profile such as amazon.nova-pro-v1:0")
