"""Keeping the training libraries' console output to what matters, in every process that
loads a model (a run, a training worker, `ftspec generate`, `ftspec export`)."""

from __future__ import annotations

import warnings

# Deprecation notices a library raises from inside itself, which nothing ftspec passes
# can change: (message, category, module the warning is raised in). Only these are
# silenced, by name; any other deprecation notice is left to Python's own rules, so one
# that ftspec's use of a library causes is seen (tests/runtime/test_library_warnings.py runs
# tiny runs and fails on any).
LIBRARY_NOTICES = (
    # peft reads `model.is_gradient_checkpointing`, renamed in transformers 5: before 0.22 whenever
    # it wraps a model in an adapter or loads one (PeftModel.__init__), in 0.22 on DPO's path.
    (r"`is_gradient_checkpointing` is deprecated", FutureWarning, r"transformers\.modeling_utils"),
)


def quiet_libraries() -> None:
    """Keep the libraries' messages to what matters: their log at errors only, and none of
    the deprecation notices they raise from inside themselves (:data:`LIBRARY_NOTICES`);
    a deprecation ftspec causes is not hidden."""
    for message, category, module in LIBRARY_NOTICES:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    # Deferred: transformers takes seconds to import, and a run with nothing to compute never needs it.
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        from datasets.utils import logging as ds_logging

        ds_logging.set_verbosity_error()
        ds_logging.disable_progress_bar()
    except ImportError:
        pass
