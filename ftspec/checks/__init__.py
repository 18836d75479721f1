"""Checks that span sections or look at the data.

:func:`inspect` (ftspec.checks.facts) gathers what the checks and the compiler need:
the data files' columns, a sample of rows, row counts; the templates' text and the
names they use; what can be known of the model offline; and reports what cannot be
read. Each rule (ftspec.checks.rules, one module per concern, registered in
ftspec.checks.registry) then yields issues, and :func:`run_checks` runs them all.
Nothing here touches the network: a hub model or dataset is checked as far as the
local cache allows, and the rest is listed as not checked.
"""

from __future__ import annotations

from ftspec.checks import rules  # noqa: F401  (importing the rules registers them)
from ftspec.checks.derived import answered_by_teacher, has_test, has_validation
from ftspec.checks.evalmode import default_metrics
from ftspec.checks.facts import Budgets, Context, inspect, is_local_model, model_architectures, rel
from ftspec.checks.registry import run_checks
from ftspec.checks.rules.stages import check_single, check_stages
from ftspec.core.errors import ERROR, WARNING

__all__ = ["inspect", "run_checks", "Budgets", "check_single", "check_stages", "Context", "rel", "is_local_model",
           "model_architectures", "answered_by_teacher", "has_test", "has_validation", "default_metrics",
           "ERROR", "WARNING"]
