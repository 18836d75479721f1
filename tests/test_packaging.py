"""Built-in templates are found however ftspec is installed: from a plain checkout
(PYTHONPATH, no install), an editable install (`pip install -e`, as install.sh does) and
a wheel."""

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile

import pytest
from conftest import ROOT


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    build = tmp_path_factory.mktemp("build")
    # setuptools builds in the checkout's build/; files left there from an earlier build
    # would be packed into the next wheel, so a build/ this test made goes away again.
    leftover = not (ROOT / "build").exists()
    # --no-build-isolation: the tests are offline, so setuptools comes from the dev extra.
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q", "-w", str(out)],
        capture_output=True, text=True, timeout=300, cwd=build,
        env={**os.environ, "PIP_NO_INDEX": "1"},
    )
    if leftover:
        shutil.rmtree(ROOT / "build", ignore_errors=True)
    if result.returncode != 0 and "No module named" in result.stderr and "setuptools" in result.stderr:
        pytest.skip("setuptools is not installed (pip install -e '.[dev]')")
    assert result.returncode == 0, result.stderr
    wheels = list(out.glob("ftspec-*.whl"))
    assert len(wheels) == 1
    return wheels[0]


def test_wheel_holds_the_templates_and_the_entry_point(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        assert {"ftspec/_templates/chatml.jinja", "ftspec/_templates/plain-chat.jinja",
                "ftspec/_templates/instruction.j2"} <= names
        assert "ftspec/runtime/report/templates/report.html.j2" in names
        entry = next(n for n in names if n.endswith("entry_points.txt"))
        assert "ftspec = ftspec.cli:main" in zf.read(entry).decode()
        meta = zf.read(next(n for n in names if n.endswith("METADATA"))).decode()
    requires = [l for l in meta.splitlines() if l.startswith("Requires-Dist:")]
    core = [l for l in requires if "extra ==" not in l]
    assert sorted(l.split()[1].split(">")[0].split("<")[0].split("=")[0] for l in core) == [
        "click", "jinja2", "pydantic", "pyyaml"]
    assert any("torch" in l and 'extra == "train"' in l for l in requires)


def test_installed_copy_finds_builtin_templates(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(target),
                    str(wheel)],
                   check=True, capture_output=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = ("import ftspec.data.templates as t, sys; sys.stdout.write(t.__file__ + '\\n' + ' '.join(t.builtin_names()) "
            "+ '\\n'); "
            "from ftspec.spec.schema import BuiltinTemplate; from ftspec.core.errors import Pos; "
            "from pathlib import Path; "
            "print(t.resolve(BuiltinTemplate(builtin='chatml'), Path('.'), Pos('x'), 'k').text.count('im_start'))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(target)
    out = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, capture_output=True, text=True, env=env,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    path, names, count = out.stdout.splitlines()
    assert path.startswith(str(target)), "imported the checkout, not the installed copy"
    assert names.split() == ["chatml", "instruction", "plain-chat"]
    assert int(count) >= 2


# The same question under each install: where ftspec comes from, whether the package
# ftspec._templates exists, the built-ins, one of them read, and an unknown one named.
PROBE = """
import importlib.util, sys
from pathlib import Path
import ftspec, ftspec.data.templates as t
from ftspec.core.errors import Pos, SpecError
from ftspec.spec.schema import BuiltinTemplate
print(ftspec.__file__)
print(importlib.util.find_spec("ftspec._templates") is not None)
print(" ".join(t.builtin_names()))
print(t.resolve(BuiltinTemplate(builtin="chatml"), Path("."), Pos("x"), "k").text.count("im_start") >= 2)
try:
    t.resolve(BuiltinTemplate(builtin="chatmll"), Path("."), Pos("spec.yaml", 12, 11), "format.prompt")
except SpecError as exc:
    print(exc)
"""

UNKNOWN = ("spec.yaml:12:11: format.prompt: no built-in template 'chatmll' (built-ins: chatml, instruction, "
           "plain-chat); did you mean 'chatml'?")


def _probe(tmp_path, pythonpath: list, sitedir=None) -> list[str]:
    """Run PROBE with no site-packages processing (-S: no .pth file, so no editable
    finder of this environment), the dependencies on the path, from an unrelated folder."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    prelude = f"import site; site.addsitedir({str(sitedir)!r})\n" if sitedir else ""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
           "PYTHONPATH": os.pathsep.join([*map(str, pythonpath), *deps])}
    out = subprocess.run([sys.executable, "-S", "-c", prelude + PROBE], cwd=elsewhere, capture_output=True, text=True,
                         env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.splitlines()


def test_plain_checkout_finds_builtin_templates(tmp_path):
    """PYTHONPATH=<checkout>, nothing installed: templates/ beside the package."""
    origin, packaged, names, read, unknown = _probe(tmp_path, [ROOT])
    assert origin == str(ROOT / "ftspec" / "__init__.py")
    assert packaged == "False"
    assert (names, read, unknown) == ("chatml instruction plain-chat", "True", UNKNOWN)


def test_editable_install_as_ci_does_finds_builtin_templates(tmp_path):
    """install.sh (the README's and CI's install) installs with `pip install -e`: the same install, into a
    folder of its own."""
    target = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index",
         "--target", str(target), "-e", str(ROOT)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path, env={**os.environ, "PIP_NO_INDEX": "1"},
    )
    if result.returncode != 0 and "setuptools" in result.stderr:
        pytest.skip("setuptools is not installed (pip install -e '.[dev]')")
    assert result.returncode == 0, result.stderr
    assert any(p.name.endswith(".pth") for p in target.iterdir()), "not an editable install"
    origin, packaged, names, read, unknown = _probe(tmp_path, [], sitedir=target)
    assert origin == str(ROOT / "ftspec" / "__init__.py")
    assert packaged == "True"  # ftspec._templates is mapped onto templates/
    assert (names, read, unknown) == ("chatml instruction plain-chat", "True", UNKNOWN)


def test_wheel_install_finds_builtin_templates(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(target),
                    str(wheel)],
                   check=True, capture_output=True, timeout=300)
    origin, packaged, names, read, unknown = _probe(tmp_path, [target])
    assert origin == str(target / "ftspec" / "__init__.py")
    assert packaged == "True"
    assert (names, read, unknown) == ("chatml instruction plain-chat", "True", UNKNOWN)


def test_installed_copy_renders_the_html_report(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(target),
                    str(wheel)],
                   check=True, capture_output=True, timeout=300)
    code = ("import ftspec.runtime.report.render as r; from ftspec.runtime.report.document import Document, Heading; "
            "print(r.__file__); print(r.render_html(Document('t', [Heading(1, '<x>')]), "
            "{}).count('<h1>&lt;x&gt;</h1>'))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(target)
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    path, count = out.stdout.splitlines()
    assert path.startswith(str(target)) and count == "1"


# ----------------------------------------------------------------------------- install.sh
# The README's install command, run with a stand-in python that records what it is asked
# to do (nothing is installed), on a machine with an NVIDIA GPU or without one (a stand-in
# nvidia-smi that finds one or fails).

CPU_TORCH = "-m pip install --no-deps --retries 1 --timeout 15 --extra-index-url https://download.pytorch.org/whl/cpu "


def install_sh(tmp_path, *args, gpu: bool = False, **env) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run install.sh; returns the result and the stand-in python's calls, one line each."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    log = tmp_path / "calls.log"
    python = bin_dir / "python"
    python.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{log}"\n'
                      'case "$*" in *"import torch"*) echo "2.13.0+cpu (CPU build)" ;; esac\n', encoding="utf-8")
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\nexit 0\n" if gpu else "#!/bin/sh\nexit 9\n", encoding="utf-8")
    for f in (python, smi):
        f.chmod(0o755)
    environ = {"PATH": f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin", "HOME": str(tmp_path),
               "FTSPEC_PYTHON": str(python), **env}
    environ = {k: v for k, v in environ.items() if v is not None}
    result = subprocess.run(["sh", str(ROOT / "install.sh"), *args], env=environ, capture_output=True, text=True,
                            timeout=60, cwd=tmp_path)
    calls = log.read_text(encoding="utf-8").splitlines() if log.exists() else []
    return result, [c for c in calls if not c.startswith("-c import sys")]  # the Python version check


def install_torch_version() -> str:
    import re

    return re.search(r"^TORCH_VERSION=([\d.]+)", (ROOT / "install.sh").read_text(encoding="utf-8"), re.M).group(1)


def no_gpu_here():
    if sys.platform != "linux" or os.path.exists("/proc/driver/nvidia/version"):
        pytest.skip("this machine has an NVIDIA driver (or is not Linux): the no-GPU path cannot be shown here")


def test_install_sh_without_a_gpu_installs_the_cpu_torch_alone_first(tmp_path):
    """PyPI's Linux torch is the CUDA build: with no GPU, the CPU build from PyTorch's CPU
    index goes in first, alone, and the train extra then keeps it."""
    no_gpu_here()
    result, calls = install_sh(tmp_path, "train,dev")
    assert result.returncode == 0, result.stderr
    version = install_torch_version()
    assert calls == [CPU_TORCH + f"torch=={version}", "-m pip install -e .[train,dev]", calls[2]]
    assert "import torch" in calls[2]
    assert result.stdout.splitlines()[-1].startswith("install.sh: ftspec installed with torch 2.13.0+cpu (CPU build)")


def test_install_sh_with_a_gpu_or_by_choice(tmp_path):
    version = install_torch_version()
    result, calls = install_sh(tmp_path, "train", gpu=True)
    assert result.returncode == 0, result.stderr
    assert calls[:2] == [f"-m pip install torch=={version}", "-m pip install -e .[train]"]  # pip's default build
    (tmp_path / "calls.log").unlink()
    result, calls = install_sh(tmp_path, "train", gpu=True, FTSPEC_TORCH="cpu")
    assert result.returncode == 0 and calls[0] == CPU_TORCH + f"torch=={version}"
    (tmp_path / "calls.log").unlink()
    result, calls = install_sh(tmp_path, "train", FTSPEC_TORCH="keep")
    assert result.returncode == 0 and calls[0] == "-m pip install -e .[train]" and "torch==" not in " ".join(calls)


def test_install_sh_installs_no_torch_without_the_train_extra(tmp_path):
    for extras, target in (((), "-m pip install -e ."), (("bedrock",), "-m pip install -e .[bedrock]")):
        (tmp_path / "calls.log").unlink(missing_ok=True)
        result, calls = install_sh(tmp_path, *extras)
        assert result.returncode == 0, result.stderr
        assert calls == [target]
        assert result.stdout.splitlines()[-1].startswith("install.sh: ftspec installed; python: ")


@pytest.mark.parametrize("args, env, message", [
    (("train",), {"FTSPEC_PYTHON": None, "VIRTUAL_ENV": None, "CONDA_PREFIX": None},
     "install.sh: no virtual environment is active; make one first: python3 -m venv .venv && . .venv/bin/activate"),
    (("train,gpu",), {}, "install.sh: unknown extra 'gpu': pyproject.toml offers train bedrock remote sweep dev"),
    (("train;rm -rf x",), {},
     "install.sh: extras are names separated by commas, e.g. train,dev (got 'train;rm -rf x')"),
    (("train", "dev"), {}, "install.sh: one argument, the extras separated by commas (got 2: train dev); "
                           "e.g. ./install.sh train,dev"),
    (("train",), {"FTSPEC_TORCH": "cuda"}, "install.sh: FTSPEC_TORCH must be auto, cpu, gpu or keep (got 'cuda')"),
])
def test_install_sh_refuses_in_one_line_before_installing_anything(tmp_path, args, env, message):
    result, calls = install_sh(tmp_path, *args, **env)
    assert (result.returncode, result.stderr, calls) == (2, message + "\n", [])


def test_install_sh_pins_a_torch_the_train_extra_admits():
    """install.sh installs the torch CI tests with; the train extra's range must keep it."""
    import re

    tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")
    specifiers = pytest.importorskip("packaging.specifiers")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    torch_req = next(r for r in extras["train"] if re.match(r"torch\b", r))
    assert install_torch_version() in specifiers.SpecifierSet(torch_req[len("torch"):])
