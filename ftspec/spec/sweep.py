"""The spec's ``sweep:`` section: which fields ``ftspec sweep`` varies, how it picks the trials,
and what it chooses the winner on (docs/use-cases/sweeps.md).

The section is the spec's, never the plan's: ``ftspec run`` ignores it and a plan's id does not
depend on it. What can only be told against the compiled spec (that a field exists, that each
value is one its field takes, that the objective is a metric the evaluation computes) is checked
by ``ftspec sweep`` (ftspec.plan.sweep), each problem at its line.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Strict,
    Tag,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

# A trial is a whole training run: far past any sweep a person means to pay for.
MAX_TRIALS = 1000
MAX_CHOICES = 100
MAX_FIELDS = 16
MAX_WORKERS = 64
MAX_SEED = 2**32 - 1
# A field of the spec, as `--set` names one: dotted keys.
FIELD_PATH = r"^[A-Za-z_][\w-]*(\.[\w-]+)*$"


def _finite(value: Any) -> Any:
    # YAML's `true` is not the number 1, and no bound of a range is infinite.
    if isinstance(value, bool):
        raise PydanticCustomError("float_type", "Input should be a valid number")
    if isinstance(value, float) and not math.isfinite(value):
        raise PydanticCustomError("finite_number", "Input should be a finite number")
    return value


Bound = Annotated[Union[Annotated[int, Strict()], Annotated[float, Strict()]], BeforeValidator(_finite)]


class SweepRange(BaseModel):
    """A range of numbers a `random` or `tpe` sweep draws from: integers when `low` and `high` both are."""

    model_config = ConfigDict(extra="forbid")

    low: Bound = Field(description="Smallest value.")
    high: Bound = Field(description="Largest value.")
    log: bool = Field(False, description=(
        "Draw on a log scale (as for a learning rate); `low` must then be above 0."))
    step: Bound | None = Field(None, description=(
        "Only values `low + k x step`; not with `log`."))

    @model_validator(mode="after")
    def _consistent(self) -> "SweepRange":
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low above 0 (got {self.low})")
        if self.step is not None:
            if self.log:
                raise ValueError("a range is either log or stepped, not both")
            if self.step <= 0:
                raise ValueError(f"step must be above 0 (got {self.step})")
            if isinstance(self.low, int) and isinstance(self.high, int) and not isinstance(self.step, int):
                raise ValueError(f"an integer range takes an integer step (got {self.step})")
        return self

    @property
    def integers(self) -> bool:
        return isinstance(self.low, int) and isinstance(self.high, int)


Choices = Annotated[list[Any], Field(min_length=1, max_length=MAX_CHOICES)]

SweepValues = Annotated[
    Union[Annotated[Choices, Tag("choices")], Annotated[SweepRange, Tag("range")]],
    Discriminator(lambda v: "choices" if isinstance(v, list) else "range"),
]


class SweepObjective(BaseModel):
    """What the sweep chooses its winner on."""

    model_config = ConfigDict(extra="forbid")

    metric: str | None = Field(None, description=(
        "The metric (one of `eval.metrics`); its table says whether higher or lower is better. "
        "Defaults to the first of `eval.metrics`."))
    split: Literal["validation", "test"] = Field("validation", description=(
        "Always `validation`: the winner is chosen on validation and then scored once on test."))

    @field_validator("split")
    @classmethod
    def _not_on_test(cls, split: str) -> str:
        if split == "test":
            raise ValueError("choosing on the test split overstates the winner: the sweep chooses on validation "
                             "and scores the winner once on test")
        return split


class SweepSpec(BaseModel):
    """A sweep for `ftspec sweep`: trials of this spec, each with other values of some fields."""

    model_config = ConfigDict(extra="forbid")

    fields: dict[Annotated[str, Field(pattern=FIELD_PATH)], SweepValues] = Field(
        min_length=1, max_length=MAX_FIELDS, description=(
            "The spec fields to vary, as `--set` names them: a list of values to choose from "
            "(`training.learning_rate: [1.0e-4, 3.0e-4]`) or a range (`{low: 1.0e-5, high: 1.0e-3, log: true}`)."))
    method: Literal["grid", "random", "tpe"] = Field("grid", description=(
        "`grid`: every combination of the listed values; `random`: `trials` draws (seeded, fixed before "
        "the first trial runs); `tpe`: Optuna's TPE sampler, `trials` trials each chosen from the results so far."))
    trials: Annotated[int, Strict()] | None = Field(None, ge=1, le=MAX_TRIALS, description=(
        "How many trials `random` and `tpe` run (a grid runs every combination)."))
    seed: Annotated[int, Strict()] = Field(0, ge=0, le=MAX_SEED, description=(
        "Seed of the random draws and of TPE's sampler."))
    objective: SweepObjective = Field(default_factory=SweepObjective, description=(
        "The metric the winner is chosen by, on the validation split."))
    prune: Literal["none", "median", "halving"] = Field("none", description=(
        "Stop trials whose validation loss lags the others' at the same step (Optuna's median or successive "
        "halving pruner); a stopped trial is shown as pruned."))
    workers: Annotated[int, Strict()] = Field(1, ge=1, le=MAX_WORKERS, description=(
        "Trials run at a time on this machine."))


__all__ = ["MAX_CHOICES", "MAX_FIELDS", "MAX_TRIALS", "SweepObjective", "SweepRange", "SweepSpec"]
