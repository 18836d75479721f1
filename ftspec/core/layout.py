"""ftspec's own names on disk: the marker a finished step leaves in its folder, and the
step store beside the run directories (each step's folder is in ftspec.catalog.steps).

The run directory's bookkeeping (ftspec.store.rundir) writes them; the checks read
them to refuse an output folder that holds what ftspec did not write (a run would
replace it) or that is the step store itself.
"""

from __future__ import annotations

MARKER = ".ftspec-step.json"  # written last into a finished step's folder
STORE = ".ftspec-store"  # the step store: every step output computed for the run directories beside it
