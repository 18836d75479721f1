"""A shared step store in S3 (or any service that speaks its API: MinIO, R2, a local moto
server): ftspec.store.remote's :class:`~ftspec.store.remote.Objects` on boto3.

Credentials, region and endpoint come from boto3's standard chain only (the environment —
``AWS_PROFILE``, ``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL_S3`` —, ~/.aws, an instance or CI
role); ftspec never reads, prints or writes them. An entry's manifest is created with S3's
conditional put (``If-None-Match: *``), which fails when the object exists: two machines
racing on one key leave one manifest. Connection and permission errors become
RemoteUnavailable in one line, quickly (short timeouts, few retries): a store that is down
must not hang a run that can compute its steps here. boto3 is imported when a store is
opened (ftspec.backends.remotes imports this module only then), never by the light commands.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable, Iterator

import boto3
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from ftspec import __version__
from ftspec.core.storeurl import StoreURL
from ftspec.store.remote import LOCAL_WRITE_ERRORS, Listed, RemoteUnavailable

# Refused for want of the right to do it, or the bucket: the same answer next time.
DENIED = {"AccessDenied", "AllAccessDisabled", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
          "InvalidToken", "NoSuchBucket", "AccountProblem", "InvalidBucketName", "PermanentRedirect",
          "AuthorizationHeaderMalformed", "403", "401", "301"}
MISSING = {"NoSuchKey", "404", "NotFound"}
CONFLICT = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}


class S3Objects:
    def __init__(self, where: StoreURL):
        self.url = str(where)
        self.bucket = where.bucket
        self.prefix = f"{where.path}/" if where.path else ""
        config = Config(connect_timeout=5, read_timeout=60, retries={"mode": "standard", "max_attempts": 3},
                        user_agent_extra=f"ftspec/{__version__}")
        try:
            self.client = boto3.session.Session().client("s3", config=config)
        except Exception as exc:  # a profile ~/.aws lacks, an unknown region: botocore's own one line
            raise RemoteUnavailable(f"store {self.url}: {_one_line(exc)}") from None
        self.transfer = TransferConfig(max_concurrency=4)

    def _key(self, name: str) -> str:
        return self.prefix + name

    def _call(self, what: str, fn, *args, **kwargs) -> Any:
        try:
            return fn(*args, **kwargs)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in MISSING:
                raise FileNotFoundError(what) from None
            if code in CONFLICT:
                raise _Conflict() from None
            raise RemoteUnavailable(f"store {self.url}: {what}: {_one_line(exc)}") from None
        except (BotoCoreError, Boto3Error) as exc:  # Boto3Error: the transfer manager's (a failed upload)
            raise RemoteUnavailable(f"store {self.url}: {what}: {_one_line(exc)}") from None
        except OSError as exc:  # a refused or dropped connection below botocore
            if isinstance(exc, FileNotFoundError) or exc.errno in LOCAL_WRITE_ERRORS:
                raise  # (a download filling this machine's disk: said as a run's own writes are)
            raise RemoteUnavailable(f"store {self.url}: {what}: {exc.strerror or exc}") from None

    def read(self, name: str, limit: int) -> bytes | None:
        try:
            got = self._call(f"reading {name}", self.client.get_object, Bucket=self.bucket, Key=self._key(name))
        except FileNotFoundError:
            return None
        body = got["Body"]
        try:
            data = self._call(f"reading {name}", body.read, limit + 1)
        finally:
            body.close()
        return b"\0" if len(data) > limit else data  # too large: read back as a corrupted manifest

    def write(self, name: str, data: bytes) -> None:
        self._call(f"writing {name}", self.client.put_object, Bucket=self.bucket, Key=self._key(name), Body=data)

    def create(self, name: str, data: bytes) -> bool:
        try:
            self._call(f"creating {name}", self.client.put_object, Bucket=self.bucket, Key=self._key(name),
                       Body=data, IfNoneMatch="*")
        except _Conflict:
            return False
        return True

    def upload(self, path: Path, name: str) -> None:
        self._call(f"uploading {name}", self.client.upload_file, str(path), self.bucket, self._key(name),
                   Config=self.transfer)

    def download(self, name: str, path: Path) -> None:
        self._call(f"downloading {name}", self.client.download_file, self.bucket, self._key(name), str(path),
                   Config=self.transfer)

    def list(self, prefix: str) -> Iterator[Listed]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self._key(prefix))
        iterator = iter(pages)
        while True:
            try:
                page = self._call(f"listing {prefix or '/'}", next, iterator)
            except StopIteration:
                return
            for obj in page.get("Contents", []):
                yield Listed(obj["Key"][len(self.prefix):], int(obj["Size"]),
                             obj["LastModified"].isoformat(timespec="seconds"))

    def delete(self, names: Iterable[str]) -> None:
        batch: list[str] = []
        for name in names:
            batch.append(name)
            if len(batch) == 1000:  # DeleteObjects takes at most 1,000 keys
                self._delete(batch)
                batch = []
        if batch:
            self._delete(batch)

    def _delete(self, names: list[str]) -> None:
        got = self._call("deleting", self.client.delete_objects, Bucket=self.bucket,
                         Delete={"Objects": [{"Key": self._key(n)} for n in names], "Quiet": True})
        errors = [e for e in got.get("Errors", []) if e.get("Code") not in MISSING]
        if errors:
            raise RemoteUnavailable(f"store {self.url}: deleting {errors[0].get('Key')}: {errors[0].get('Code')}")


class _Conflict(Exception):
    pass


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, NoCredentialsError):
        return "no AWS credentials found (boto3 looks in the environment, ~/.aws and the instance or CI role)"
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        line = f"{err.get('Code', 'error')}: {' '.join(str(err.get('Message', '')).split())}".rstrip(": ")
        return _USERINFO.sub("://", line)[:300]
    # An endpoint written with a user and password (http://key:secret@host) is never shown whole.
    return _USERINFO.sub("://", " ".join(str(exc).split()))[:300]


_USERINFO = re.compile(r"://[^/\s@\"']*@")
