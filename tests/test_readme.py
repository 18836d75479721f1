"""The README matches what a user sees: it is short (the rest is the site in docs/), the
install commands are exact, and the run output it shows has the shape of a real run's
(the same lines, in the same order; the numbers are free)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

from conftest import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")


def blocks(kind: str) -> list[str]:
    return re.findall(rf"^```{kind}\n(.*?)^```", README, flags=re.S | re.M)


def ci_torch() -> str:
    """The torch version CI installs first (its CPU build)."""
    found = re.search(r'pip install [^\n]*"torch==([\d.]+)"', (ROOT / ".ci/run").read_text(encoding="utf-8"))
    assert found, ".ci/run no longer pins torch"
    return found.group(1)


# ----------------------------------------------------------------------------- install


def test_the_readme_is_short():
    """What ftspec is, how to install and run it, one spec, one run; the rest is in docs/."""
    lines = README.count("\n")
    assert lines < 250, f"README.md has {lines} lines: move the detail into a page of docs/"


def test_the_quick_start_commands_are_the_ones_that_work():
    commands = [line for block in blocks("sh") for line in block.splitlines()]
    assert 'pip install -e ".[train]" && ftspec run specs/quickstart.yaml' in commands
    assert 'pip install -e ".[train,dev]" && python -m pytest -q' in commands
    assert (ROOT / "specs/quickstart.yaml").is_file()
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    assert {"train", "dev"} <= set(extras)
    # CI runs the second command as written, after the same torch the README installs
    assert 'pip install -e ".[train,dev]" && python -m pytest -q' in (ROOT / ".ci/run").read_text(encoding="utf-8")


def test_the_cpu_torch_command_is_exact():
    """One command, to copy: the CPU build from PyTorch's own index, the version CI pins
    (PyPI's Linux wheel of torch is the CUDA build), within the train extra's range."""
    lines = [line for block in blocks("sh") for line in block.splitlines() if line.startswith("pip install torch")]
    assert lines == [f"pip install torch=={ci_torch()} --index-url https://download.pytorch.org/whl/cpu"], lines
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    torch_req = next(r for r in extras["train"] if re.match(r"torch\b", r))
    lowest = re.search(r">=\s*([\d.]+)", torch_req).group(1)
    as_tuple = lambda v: tuple(int(p) for p in v.split("."))  # noqa: E731
    assert as_tuple(ci_torch()) >= as_tuple(lowest), (torch_req, ci_torch())


# ----------------------------------------------------------------------------- the run's output


def shape(lines: list[str]) -> list[str]:
    """Each line as its indentation and its first word: `  losses    train 0.04 …` is
    `  losses`. Progress lines (`  step 3/5 …`) and an elision (`…`) are left out."""
    out = []
    for line in lines:
        if not line.strip() or line.strip() == "…" or re.match(r"\s*step \d+/\d+\b", line):
            continue
        indent = len(line) - len(line.lstrip(" "))
        out.append(" " * indent + re.split(r"[\s:]", line.strip(), maxsplit=1)[0])
    return out


def readme_run() -> list[str]:
    shown = [b for b in blocks("text") if b.startswith("ftspec run quickstart")]
    assert len(shown) == 1, "the README shows one run of the quickstart"
    return shown[0].splitlines()


def test_the_shape_ignores_values_but_not_structure():
    readme = shape(readme_run())
    assert readme[0] == "ftspec" and "done" in readme
    assert shape(["  losses    train 1.0 · validation 2.0", "    accuracy       base 0.1", "  step 3/5  loss 1"]) == \
        ["  losses", "    accuracy"]
    assert shape(["x 1"]) != shape(["  x 1"]) and shape(["a: b"]) != shape(["b: a"])


TINY = ["--set", "model.hidden_size=32", "--set", "model.num_layers=1", "--set", "model.num_heads=2",
        "--set", "data.limit=48", "--set", "training.max_steps=3", "--set", "eval.limit=24"]


def test_the_run_output_in_the_readme_has_the_shape_of_a_real_run(tmp_path):
    """The README's example is copied from a real `ftspec run specs/quickstart.yaml`; a
    small run of the same spec prints the same lines in the same order (only what the
    numbers are differs), so a change to the output that the README does not follow fails
    here."""
    pytest.importorskip("torch")
    shutil.copytree(ROOT / "specs", tmp_path / "specs")
    (tmp_path / ".git").mkdir()  # the repository root for the spec's paths
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, "-m", "ftspec", "run", "specs/quickstart.yaml", *TINY], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode in (0, 3), result.stdout[-3000:] + result.stderr[-3000:]  # 3: a tiny run fails the gates
    real = shape(result.stdout.splitlines())
    assert real == shape(readme_run()), "\n".join(
        ["README's run output no longer has the shape of a real run's:",
         *(f"  real: {line}" for line in result.stdout.splitlines())])


def test_every_relative_link_in_the_readme_resolves():
    """Links to the repository's own files (specs/, templates/, the report screenshots)."""
    targets = re.findall(r"\]\(([^)#\s]+)\)", README)
    local = [t for t in targets if not re.match(r"[a-z]+:", t)]
    assert local, "the README links no file of the repository"
    missing = [t for t in local if not (ROOT / t).exists()]
    assert missing == [], missing
