"""Where a plan runs. Each backend is a table of step implementations (ftspec.backends.backend);
ftspec.backends.executor runs a plan's steps with the table its ``compute.backend`` names.
Adding a backend is one package here and one row below."""

from __future__ import annotations

from ftspec.backends import bedrock, local
from ftspec.backends.backend import Backend

BACKENDS: dict[str, Backend] = {
    "local": local.BACKEND,
    "bedrock": bedrock.BACKEND,
}
