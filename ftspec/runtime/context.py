"""What a step implementation is given besides its view of the plan: where things are,
and how to talk. Every backend's steps receive one (ftspec.backends.executor makes it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ftspec.catalog import steps
from ftspec.store.rundir import Store, store_of


@dataclass
class StepContext:
    """What a step is given besides its view of the plan: where things are, and how to talk."""

    root: Path  # the spec's repository root: plan paths are relative to it
    run_dir: Path
    key: str  # this step's key
    echo: Callable[[str], None] = print
    callbacks: list = field(default_factory=list)  # extra trainer callbacks, for tests
    keys: dict[str, str] = field(default_factory=dict)  # each step of the plan: its key
    store: Store | None = None  # None: the store beside run_dir
    name: str = ""  # this step's name

    def __post_init__(self):
        if self.store is None:
            self.store = store_of(self.run_dir)

    def step_dir(self, name: str) -> Path:
        """Where step ``name``'s output is (in the store, under its key in this plan)."""
        if name in self.keys:
            return self.store.path(name, self.keys[name])
        return self.run_dir / steps.folder(name)

    @property
    def data_dir(self) -> Path:
        return self.step_dir(steps.PREPARE_DATA.name)

    def checkpoints(self) -> Path:
        return self.store.scratch(self.name or steps.TRAIN.name, self.key, "checkpoints")
