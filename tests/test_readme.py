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


def quickstart() -> list[str]:
    """The Quick start's command lines as .ci/run reads them (.ci/quickstart-commands)."""
    out = subprocess.run(["sh", str(ROOT / ".ci/quickstart-commands"), str(ROOT / "README.md")], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    return out.splitlines()


# ----------------------------------------------------------------------------- install


def test_the_readme_is_short():
    """What ftspec is, how to install and run it, one spec, one run; the rest is in docs/."""
    lines = README.count("\n")
    assert lines < 250, f"README.md has {lines} lines: move the detail into a page of docs/"


def test_the_quick_start_commands_are_the_ones_that_work():
    """A virtual environment, then install.sh (which picks the torch build the machine can
    use) and the quickstart run, then the tests: nothing to do before, no torch command
    of its own to run first, in the order a user copies them."""
    assert quickstart() == [
        "python3 -m venv .venv && . .venv/bin/activate",
        "./install.sh train && ftspec run specs/quickstart.yaml",
        "./install.sh train,dev && python -m pytest -q",
    ]
    assert (ROOT / "specs/quickstart.yaml").is_file() and os.access(ROOT / "install.sh", os.X_OK)
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    assert {"train", "dev"} <= set(extras)
    assert "pip install torch" not in README and "pip install -e" not in "\n".join(quickstart())


def test_ci_runs_the_quick_start_as_written():
    """.ci/run takes the lines from the README itself (no copy of them to drift) and runs
    them in a fresh copy of the checkout, then checks that the torch is a CPU build."""
    ci = (ROOT / ".ci/run").read_text(encoding="utf-8")
    assert ".ci/quickstart-commands README.md" in ci and 'eval "$line"' in ci
    code = [line for line in ci.splitlines() if not line.lstrip().startswith("#")]
    assert not [line for line in code if "install.sh" in line or "pip install" in line]  # the README's lines install
    assert "torch.version.cuda" in ci and 'startswith(("nvidia-", "nvidia_"))' in ci


def test_the_quick_start_reader_takes_only_that_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n```sh\nnot this\n```\n\n## Quick start\n\ntext\n\n```sh\nfirst && second\n\n"
                      "# a comment\nthird\n```\n\n```sh\nnot this either\n```\n\n## Next\n\n```sh\nnor this\n```\n",
                      encoding="utf-8")
    out = subprocess.run(["sh", str(ROOT / ".ci/quickstart-commands"), str(readme)], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.splitlines() == ["first && second", "third"]


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
