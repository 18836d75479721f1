"""boto3 sessions and clients for the Bedrock backend.

Credentials come from boto3's standard chain (environment, ~/.aws, the instance or task
role) when a client is made; ftspec never reads, prints or stores them. boto3 and botocore
are imported inside the functions: light commands (validate, plan, diff, schema) import
this package without them.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from ftspec import __version__
from ftspec.core.errors import RunFailed

NO_CREDENTIALS = "no AWS credentials found: boto3 looks in the environment, ~/.aws and the instance role"
# Throttling and transient errors are retried by botocore itself, the adaptive mode also
# slowing this client down when AWS says it calls too often.
RETRIES = {"mode": "adaptive", "max_attempts": 8}


def user_agent() -> str:
    return f"ftspec/{__version__}"


def config() -> Any:
    from botocore.config import Config

    return Config(retries=dict(RETRIES), user_agent_extra=user_agent())


def session(region: str) -> Any:
    """A boto3 session in ``region`` whose credential chain found credentials, or
    RunFailed (one line, exit 1) when it found none."""
    import boto3
    from botocore.exceptions import BotoCoreError

    s = boto3.session.Session(region_name=region)
    try:
        found = s.get_credentials()
    except BotoCoreError as exc:  # e.g. a profile named in AWS_PROFILE that ~/.aws lacks
        raise RunFailed(f"AWS credentials could not be loaded: {exc}") from None
    if found is None:
        raise RunFailed(NO_CREDENTIALS)
    return s


def client(name: str, region: str, session_: Any = None) -> Any:
    """A boto3 client for service ``name`` in ``region``, with ftspec's retries and user agent."""
    return (session_ or session(region)).client(name, region_name=region, config=config())


def describe(exc: BaseException) -> str:
    """An AWS error as one line: its code and message (never the request's headers)."""
    from botocore.exceptions import ClientError, NoCredentialsError

    if isinstance(exc, NoCredentialsError):
        return NO_CREDENTIALS
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        op = getattr(exc, "operation_name", "") or "AWS"
        message = " ".join(str(err.get("Message", "")).split())
        return f"{op}: {err.get('Code', 'error')}: {message}".rstrip(": ")
    return " ".join(str(exc).split())


@contextmanager
def one_line(what: str) -> Iterator[None]:
    """AWS errors raised inside become RunFailed with one line: ``what: code: message``."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    try:
        yield
    except NoCredentialsError:
        raise RunFailed(NO_CREDENTIALS) from None
    except (ClientError, BotoCoreError) as exc:
        raise RunFailed(f"{what}: {describe(exc)}") from None
