"""Problems found in a spec, and the exit codes every command shares.

A user's mistake is an :class:`Issue` (one line, at its place in a file) collected
into a :class:`SpecError`; the CLI prints the lines and exits with status 2. Only a
bug in ftspec shows a traceback.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Iterable, Sequence

from ftspec.core.text import printable

EXIT_OK = 0
EXIT_FAILURE = 1  # a crash or a bug while running: the traceback is kept
EXIT_USAGE = 2  # the spec, the data or the command line is wrong
EXIT_GATE = 3  # an evaluation gate was not met

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True)
class Pos:
    """Where something is: a file (or a pseudo-file like ``<--set>``), 1-based line and column."""

    file: str
    line: int | None = None
    col: int | None = None

    def __str__(self) -> str:
        parts = [self.file]
        if self.line is not None:
            parts.append(str(self.line))
            if self.col is not None:
                parts.append(str(self.col))
        return ":".join(parts)


@dataclass(frozen=True)
class Issue:
    """One problem: where it is, which key, what is wrong, and a hint when one helps."""

    pos: Pos
    key: str
    message: str
    hint: str | None = None
    severity: str = ERROR

    def format(self) -> str:
        """The issue as one line: control characters from the spec are shown escaped."""
        text = self.message if self.severity == ERROR else f"warning: {self.message}"
        if self.hint:
            text = f"{text}; {self.hint}"
        # Errors found at run time are placed at the key itself: say it once.
        line = f"{self.pos}: {self.key}: {text}" if self.key and self.key != str(self.pos) else f"{self.pos}: {text}"
        return printable(line)

    @property
    def is_error(self) -> bool:
        return self.severity == ERROR

    def sort_key(self) -> tuple:
        return (self.pos.file, self.pos.line or 0, self.pos.col or 0, self.key, self.message)


class SpecError(Exception):
    """The spec (or its data, or the command line) is wrong; carries every issue found."""

    def __init__(self, issues: Iterable[Issue]):
        self.issues = sorted_issues(issues)
        super().__init__("\n".join(i.format() for i in self.issues))

    @classmethod
    def one(cls, pos: Pos, key: str, message: str, hint: str | None = None) -> "SpecError":
        return cls([Issue(pos, key, message, hint)])


class RunFailed(Exception):
    """A run stopped on something other than its input (a worker process died, a save came
    out incomplete): one line that says what happened, exit status 1."""


class Pruned(RunFailed):
    """A sweep's pruner stopped this training on its validation curve
    (ftspec.runtime.training.pruning): the train step is left incomplete. The sweep records
    the trial as pruned; anywhere else it is a failed run, one line, status 1."""

    def __init__(self, step: int, validation_loss: float, message: str):
        self.step = step
        self.validation_loss = validation_loss
        super().__init__(message)

    def __reduce__(self):  # pickled whole (its arguments are not Exception's args)
        return (type(self), (self.step, self.validation_loss, str(self)))


class Detached(RunFailed):
    """Ctrl-C while a Bedrock job was polled: ftspec stopped waiting; the job keeps running
    on AWS. The CLI exits 130, as for any Ctrl-C."""

    def __init__(self, arn: str, spec: str = "SPEC"):
        self.arn = arn
        self.spec = spec
        super().__init__(f"detached from Bedrock job {arn}: it keeps running on AWS (and is billed) until it ends; "
                         f"attach again with `ftspec run {spec}` (the same command), stop it with `ftspec stop {spec}`")


def sorted_issues(issues: Iterable[Issue]) -> list[Issue]:
    seen: set[Issue] = set()
    unique = []
    for issue in issues:
        if issue not in seen:
            seen.add(issue)
            unique.append(issue)
    return sorted(unique, key=Issue.sort_key)


def did_you_mean(word: str, candidates: Sequence[str]) -> str | None:
    """A hint naming the closest candidate, or None when nothing is close."""
    matches = difflib.get_close_matches(str(word), [str(c) for c in candidates], n=1, cutoff=0.6)
    return f"did you mean '{matches[0]}'?" if matches else None

