"""Every benchmark still runs: each bench/*.py in its `--quick` mode (the same code on
tiny inputs, seconds each), so a benchmark cannot rot unnoticed between the runs that
measure its figures. A script added to bench/ is covered without a change here.

bench/mutations.py --quick only checks that every mutation still applies exactly once
(its full run is its own CI job); bench/stages_gpu.py --quick says "no GPU: skipped"
without a CUDA device. The figures are not looked at: these machines are shared.
"""

import os
import subprocess
import sys

import pytest
from conftest import ROOT

BENCH = ROOT / "bench"
SCRIPTS = sorted(p for p in BENCH.glob("*.py") if not p.name.startswith("_"))
sys.path.insert(0, str(BENCH))
from _quick import QUICK_LINE  # noqa: E402

sys.path.remove(str(BENCH))


def test_every_script_is_found():
    assert {"throughput.py", "mutations.py", "stages_gpu.py"} <= {p.name for p in SCRIPTS}


# The group of the tests that start processes meeting on a local port (tests/conftest.py):
# bench/distributed.py launches two, and every script trains; run one after another with them.
@pytest.mark.bench
@pytest.mark.xdist_group("local-ports")
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_the_script_runs_in_quick_mode(script, tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           "TMPDIR": str(tmp_path)}
    out = subprocess.run([sys.executable, str(script), "--quick"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    shown = f"stdout:\n{out.stdout[-3000:]}\nstderr:\n{out.stderr[-3000:]}"
    assert out.returncode == 0, shown
    assert QUICK_LINE in out.stdout, shown
