"""Running git on the spec's repository: never prompting, never localized, never hanging."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def run_git(root: Path, *args: str, timeout: float = 10) -> subprocess.CompletedProcess:
    """``git -C ROOT ARGS`` with its output captured as text. A credential prompt would wait
    forever and a translated message would not parse, so neither can happen; a git that does
    not answer within ``timeout`` seconds raises subprocess.TimeoutExpired. A path is always
    a file's name, never a pathspec pattern (a data file named ``:!x`` or ``*.jsonl`` is
    that file, not "every file but x" or a glob)."""
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0", LC_ALL="C", GIT_LITERAL_PATHSPECS="1")
    return subprocess.run(["git", "-C", str(root), *args], env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)
