"""compute.backend local: every step on this machine, with torch (ftspec.backends.local.steps)."""

from __future__ import annotations

from ftspec.backends.backend import Backend
from ftspec.backends.local.steps import STEPS
from ftspec.plan.model import Plan
from ftspec.runtime.quiet import quiet_libraries


def setup(plan: Plan) -> dict:
    """Once for the whole run, before any step computes: the libraries quiet, and the plan's
    CPU threads (returned, for the header). The train step's key covers them (it reads all of
    `compute`): on one machine the losses came out the same with 1 and 2 threads, but a
    library may sum in another order with more."""
    # Deferred: torch, which a run with nothing to compute never needs.
    from ftspec.runtime.training.builders import apply_threads

    quiet_libraries()
    return apply_threads(plan.compute)


def where(plan: Plan, threads: dict | None) -> str:
    if threads is None:
        return "not needed (nothing to run)"
    # Deferred: torch, to resolve the device; only once setup has imported it anyway.
    from ftspec.runtime.training import builders

    device = builders.resolve_device(plan.compute)
    precision = builders.resolve_precision(plan.compute, device)
    # `auto` is shown with what it resolved to on this machine; a precision the plan fixed, as it is.
    shown = f"{precision}, auto" if plan.compute.precision == "auto" else precision
    return f"{device} ({shown}; {builders.describe_threads(threads)})"


def schedule(plan: Plan) -> str:
    return f"{plan.training.total_steps} steps of {plan.training.effective_batch_size} rows"


BACKEND = Backend("local", STEPS, where=where, schedule=schedule, setup=setup)
