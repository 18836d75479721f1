"""The spec's ``tracking`` section, as the trackers read it.

transformers' tracker callbacks take only part of their settings from the training
arguments: the run name (``run_name``) and which trackers to report to
(``report_to``). The rest they read from environment variables when they set up:
``WANDB_PROJECT`` (and wandb itself ``WANDB_ENTITY``, ``WANDB_DIR``),
``MLFLOW_EXPERIMENT_NAME``, ``TENSORBOARD_LOGGING_DIR``. So:

- :func:`tracking_arguments` gives the training arguments;
- :func:`tracking_environment` sets those variables for the duration of training
  only (wrap the trainer's construction and ``train()``: the TensorBoard callback
  reads its folder when it is made) and puts the environment back as it was, ends
  a tracker run it started, and says at ``tracking.kind`` when the tracker's
  package is not installed.

The functions read the plan's tracking section by attribute (``tracking.kind``,
``tracking.project``), so any object with those attributes will do.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping

from ftspec.core.errors import Pos, SpecError

# The package each tracker needs, as pip installs it.
PACKAGES = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb"),
            "mlflow": ("mlflow", "mlflow-skinny")}

# Every variable this module may set, and MLflow's experiment id (``set_experiment``
# sets it from the name): all of them are put back after training.
VARIABLES = ("WANDB_PROJECT", "WANDB_ENTITY", "WANDB_DIR", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID",
             "TENSORBOARD_LOGGING_DIR")


def report_to(tracking: Any) -> list[str]:
    return [] if tracking.kind == "none" else [tracking.kind]


def tracking_arguments(tracking: Any, run_name: str | None) -> dict:
    """Training arguments: the tracker to report to, and the run's name there (the run
    directory's name)."""
    if tracking.kind == "none" or run_name is None:
        return {"report_to": report_to(tracking)}
    return {"report_to": report_to(tracking), "run_name": run_name}


def tensorboard_dir(run_dir: Path) -> Path:
    """TensorBoard's event files: in the run directory, beside ``metrics.jsonl`` (not under
    ``checkpoints/``, which is removed once training is complete)."""
    return Path(run_dir) / "tensorboard"


def tracking_variables(tracking: Any, run_dir: Path, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The environment variables that carry the tracking section to the tracker.

    What the spec says wins over the environment; what it leaves out (a W&B entity,
    W&B's folder) is left to the environment, except that W&B writes into the run
    directory unless ``WANDB_DIR`` says otherwise.
    """
    kind = tracking.kind
    if kind == "wandb":
        values = {"WANDB_PROJECT": tracking.project}
        if tracking.entity:
            values["WANDB_ENTITY"] = tracking.entity
        if not environ.get("WANDB_DIR"):
            values["WANDB_DIR"] = str(run_dir)
        return values
    if kind == "mlflow":
        return {"MLFLOW_EXPERIMENT_NAME": tracking.experiment}
    if kind == "tensorboard":
        return {"TENSORBOARD_LOGGING_DIR": str(tensorboard_dir(run_dir))}
    return {}


def check_installed(tracking: Any) -> None:
    """A tracker whose package is missing is one error at ``tracking.kind``, before training starts."""
    if tracking.kind not in PACKAGES:
        return
    module, package = PACKAGES[tracking.kind]
    if importlib.util.find_spec(module) is None:
        raise SpecError.one(Pos("tracking.kind"), "tracking.kind",
                            f"{tracking.kind} tracking needs the {module} package: pip install {package}")


@contextmanager
def tracking_environment(tracking: Any, run_dir: Path) -> Iterator[dict[str, str]]:
    """Set the tracker's variables while training, then restore the environment as it was.

    A W&B or MLflow run that training started and left open (it failed, or was
    interrupted) is ended here, so that a later run in the same process does not
    log into it under the old project.
    """
    check_installed(tracking)
    values = tracking_variables(tracking, Path(run_dir))
    if "WANDB_DIR" in values:
        Path(values["WANDB_DIR"]).mkdir(parents=True, exist_ok=True)
    saved = {name: os.environ.get(name) for name in VARIABLES}
    open_before = _open_run(tracking.kind)
    os.environ.update(values)
    failed = True
    try:
        yield values
        failed = False
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if not open_before:
            _end_run(tracking.kind, failed)


def _open_run(kind: str) -> bool:
    """Whether a run of the tracker is already open in this process (imported modules only)."""
    if kind == "wandb" and "wandb" in sys.modules:
        return getattr(sys.modules["wandb"], "run", None) is not None
    if kind == "mlflow" and "mlflow" in sys.modules:
        return sys.modules["mlflow"].active_run() is not None
    return False


def _end_run(kind: str, failed: bool) -> None:
    if kind == "wandb" and "wandb" in sys.modules:
        wandb = sys.modules["wandb"]
        if getattr(wandb, "run", None) is not None:
            wandb.finish(exit_code=1 if failed else 0)
    elif kind == "mlflow" and "mlflow" in sys.modules:
        mlflow = sys.modules["mlflow"]
        if mlflow.active_run() is not None:
            mlflow.end_run(status="FAILED" if failed else "FINISHED")
