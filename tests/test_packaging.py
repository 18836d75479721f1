"""Built-in templates are found after a normal (non-editable) install."""

import os
import subprocess
import sys
import zipfile

import pytest

from conftest import ROOT


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    build = tmp_path_factory.mktemp("build")
    # --no-build-isolation: the tests are offline, so setuptools comes from the dev extra.
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q", "-w", str(out)],
        capture_output=True, text=True, timeout=300, cwd=build,
        env={**os.environ, "PIP_NO_INDEX": "1"},
    )
    if result.returncode != 0 and "No module named" in result.stderr and "setuptools" in result.stderr:
        pytest.skip("setuptools is not installed (pip install -e '.[dev]')")
    assert result.returncode == 0, result.stderr
    wheels = list(out.glob("ftspec-*.whl"))
    assert len(wheels) == 1
    return wheels[0]


def test_wheel_holds_the_templates_and_the_entry_point(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        assert {"ftspec/_templates/chatml.jinja", "ftspec/_templates/plain-chat.jinja", "ftspec/_templates/instruction.j2"} <= names
        entry = next(n for n in names if n.endswith("entry_points.txt"))
        assert "ftspec = ftspec.cli:main" in zf.read(entry).decode()
        meta = zf.read(next(n for n in names if n.endswith("METADATA"))).decode()
    requires = [l for l in meta.splitlines() if l.startswith("Requires-Dist:")]
    core = [l for l in requires if "extra ==" not in l]
    assert sorted(l.split()[1].split(">")[0].split("<")[0].split("=")[0] for l in core) == ["click", "jinja2", "pydantic", "pyyaml"]
    assert any("torch" in l and 'extra == "train"' in l for l in requires)


def test_installed_copy_finds_builtin_templates(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code = ("import ftspec.templates as t, sys; sys.stdout.write(t.__file__ + '\\n' + ' '.join(t.builtin_names()) + '\\n'); "
            "from ftspec.spec import BuiltinTemplate; from ftspec.errors import Pos; from pathlib import Path; "
            "print(t.resolve(BuiltinTemplate(builtin='chatml'), Path('.'), Pos('x'), 'k').text.count('im_start'))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(target)
    out = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    path, names, count = out.stdout.splitlines()
    assert path.startswith(str(target)), "imported the checkout, not the installed copy"
    assert names.split() == ["chatml", "instruction", "plain-chat"]
    assert int(count) >= 2
