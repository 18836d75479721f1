"""Light commands stay light: validate, plan and schema never import the training stack."""

import subprocess
import sys

import pytest
from conftest import ROOT
from helpers import HEAVY, PROBE


@pytest.mark.parametrize("args", [
    ["validate", "specs/quickstart.yaml"],
    ["validate", "specs/routing-lora.yaml", "specs/chat-sft.yaml", "specs/dpo-preference.yaml"],
    ["plan", "specs/quickstart.yaml"],
    ["plan", "specs/routing-prod.yaml", "--profile", "dev", "--json"],
    ["schema"],
    ["schema", "--of", "plan"],
    ["plan", "specs/quickstart.yaml", "--explain"],
    ["diff", "specs/quickstart.yaml", "specs/routing-prod.yaml"],
    ["plan", "specs/distill.yaml"],  # a spec with stages (more in tests/test_stages_light.py)
    ["diff", "specs/sft-dpo.yaml", "specs/distill.yaml"],
], ids=lambda a: " ".join(a[:3]))
def test_light_command_does_not_import_the_training_stack(args):
    code = PROBE.format(args=args, heavy=HEAVY)
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    line = [l for l in out.stdout.splitlines() if l.startswith("HEAVY:")][-1]
    assert line == "HEAVY:", f"{' '.join(args)} imported {line[6:]}"
