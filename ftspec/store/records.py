"""The shapes of the small state files the store and the run lock write and read back:
a finished step's marker and the run lock's holder file. Each is read through
:func:`ftspec.core.io.read_json` with its model as ``schema``, so a file of the wrong
shape (a list where an object is, text where a number is, a pid no process can have)
is one line naming the key, or, read leniently, a file not to be trusted — never an
AttributeError, a TypeError or an OverflowError further on."""

from __future__ import annotations

from typing import Annotated, Optional

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

# Fields a newer ftspec adds are kept, not refused: an older ftspec still reads the file.
_CONFIG = ConfigDict(strict=True, extra="allow", frozen=True)

Text = Annotated[StrictStr, Field(max_length=4096)]


class Marker(BaseModel):
    """A finished step's marker (``.ftspec-step.json``): the last file the step writes."""

    model_config = _CONFIG

    key: Text
    step: Optional[Text] = None
    finished_at: Optional[Text] = None


class LockHolder(BaseModel):
    """``.lock-holder.json``: who holds a run directory's lock."""

    model_config = _CONFIG

    pid: Annotated[StrictInt, Field(ge=1, le=2**31 - 1)]  # what os.kill takes
    host: Annotated[StrictStr, Field(max_length=255)]
    started_at: Optional[Text] = None
