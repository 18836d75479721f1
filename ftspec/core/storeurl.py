"""Where a shared step store is: ``s3://bucket/prefix``, or a folder on a filesystem every
machine mounts (``file:///path``, or a plain path: absolute, or relative to the repository root).

A shared store must create an entry's manifest only where none exists yet, in one operation,
so that two machines computing the same step leave one entry (ftspec.store.remote). S3 does
that (a conditional put), and so does a POSIX filesystem (a hard link); other schemes are
refused here rather than half-supported. A URL never carries credentials: those come from
the storage library's own chain (for S3, boto3's: the environment, ~/.aws, an instance or
CI role), so that nothing ftspec writes or prints can hold them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

# S3's rules for a bucket name (3-63 characters of lower-case letters, digits, dots and hyphens).
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_PREFIX_PART = re.compile(r"[A-Za-z0-9._=+-]{1,200}")
SCHEMES = ("s3", "file")
MAX_URL = 1024


class StoreURLError(ValueError):
    """A store URL ftspec cannot use: one line, what is wrong."""


@dataclass(frozen=True)
class StoreURL:
    scheme: str  # "s3" or "file"
    bucket: str | None  # s3 only
    path: str  # s3: the key prefix ("" for the bucket's top); file: the folder as written

    def __str__(self) -> str:
        if self.scheme == "s3":
            return f"s3://{self.bucket}/{self.path}" if self.path else f"s3://{self.bucket}"
        return self.path


def parse(url: str) -> StoreURL:
    """The store ``url`` names; raises StoreURLError (one line) for one ftspec cannot use."""
    if not isinstance(url, str) or not url.strip():
        raise StoreURLError("a store is a URL such as s3://bucket/prefix, or a folder")
    url = url.strip()
    if len(url) > MAX_URL:
        raise StoreURLError(f"a store URL is at most {MAX_URL} characters")
    if any(ord(c) < 32 or c == "\x7f" for c in url):
        raise StoreURLError("a store URL has no control characters")
    scheme = url.split("://", 1)[0].lower() if "://" in url else None
    if scheme is None:
        return StoreURL("file", None, url)
    if scheme not in SCHEMES:
        raise StoreURLError(f"{scheme}:// stores are not supported (s3://bucket/prefix, or a folder on a shared "
                            "filesystem): a shared store needs an atomic create-if-absent, which ftspec has there")
    parts = urlsplit(url)
    if parts.query or parts.fragment:
        raise StoreURLError("a store URL has no ?query or #fragment (credentials come from the library's own "
                            "chain, never from the URL)")
    if "@" in parts.netloc or parts.password is not None:
        raise StoreURLError("a store URL holds no user name or password: credentials come from the library's own "
                            "chain (for S3: the environment, ~/.aws, an instance or CI role)")
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise StoreURLError("a file:// store is a local folder: file:///absolute/path")
        if not parts.path.startswith("/"):
            raise StoreURLError("a file:// store is an absolute path: file:///absolute/path")
        return StoreURL("file", None, parts.path)
    bucket = parts.netloc
    if not _BUCKET.fullmatch(bucket) or ".." in bucket:
        raise StoreURLError(f"{bucket!r} is not an S3 bucket name (3-63 lower-case letters, digits, '.' and '-')")
    prefix = parts.path.strip("/")
    for part in prefix.split("/") if prefix else ():
        if part in (".", "..") or not _PREFIX_PART.fullmatch(part):
            raise StoreURLError(f"the prefix part {part!r} is not allowed in a store URL (letters, digits and "
                                "._=+- between slashes)")
    return StoreURL("s3", bucket, prefix)


def problem(url: str) -> str | None:
    """What is wrong with ``url`` as a store, or None."""
    try:
        parse(url)
    except StoreURLError as exc:
        return str(exc)
    return None
