"""The package layout's rules, as tests (DESIGN.md draws the layers).

- The import contracts in pyproject.toml ([tool.importlinter]) hold: each layer imports only the layers
  below it, and the light layers never import torch, transformers, peft, trl, datasets, accelerate or
  boto3. A planted upward import, and a planted torch import, make them fail.
- No import cycle between ftspec's modules, counting the imports placed inside functions.
- An import inside a function defers a heavy library, and says so: its target is an ftspec module that
  imports, at its top, a library the core install does not have (or is such a library).
- No private name (`_x`) is imported from another module.
- No module is over 600 lines unless it is listed below with the one thing it does.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "ftspec"

# What the core install (`pip install -e .`) has beside the standard library; anything else is an
# optional, heavy dependency that light code must not reach and heavy code imports late.
CORE_DISTRIBUTIONS = {"yaml", "pydantic", "pydantic_core", "jinja2", "markupsafe", "click"}

# Modules allowed past 600 lines, each because it does one thing that is long by nature.
LONG_MODULES = {
    "ftspec/spec/schema.py": "the spec's pydantic models, one per section, each field documented once",
    "ftspec/checks/facts.py": "gathering what the checks know of a spec's files and model: the only reader of them",
    "ftspec/plan/model.py": "the frozen plan's pydantic models, one per section, sharing ModelRef, Template, Extract "
                            "and the frozen base",
}
MAX_LINES = 600


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _target(module: str, node: ast.ImportFrom) -> list[str]:
    """The ftspec modules an import statement loads (a package's submodule when a name is one)."""
    base = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    if node.level:
        parts = base.split(".")
        parts = parts[: len(parts) - (node.level - 1)]
        name = ".".join(parts + ([node.module] if node.module else []))
    else:
        name = node.module or ""
    out = []
    for alias in node.names:
        sub = f"{name}.{alias.name}"
        out.append(sub if sub in MODULES else name)
    return [t for t in out if t in MODULES]


class _Imports(ast.NodeVisitor):
    def __init__(self, module: str):
        self.module = module
        self.depth = 0
        self.top: list[tuple[int, str, list[str]]] = []  # (line, target, names)
        self.inner: list[tuple[int, str, list[str]]] = []
        self.external_top: set[str] = set()
        self.external_inner: list[tuple[int, str]] = []

    def _scope(self, node):
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _scope

    def visit_Import(self, node: ast.Import):
        for alias in node.names:
            if alias.name.split(".")[0] == "ftspec":
                targets = [alias.name] if alias.name in MODULES else []
                for t in targets:
                    (self.inner if self.depth else self.top).append((node.lineno, t, []))
            elif self.depth:
                self.external_inner.append((node.lineno, alias.name.split(".")[0]))
            else:
                self.external_top.add(alias.name.split(".")[0])

    def visit_ImportFrom(self, node: ast.ImportFrom):
        if node.level or (node.module or "").split(".")[0] == "ftspec":
            names = [a.name for a in node.names]
            for t in _target(self.module, node):
                (self.inner if self.depth else self.top).append((node.lineno, t, names))
        elif self.depth:
            self.external_inner.append((node.lineno, (node.module or "").split(".")[0]))
        else:
            self.external_top.add((node.module or "").split(".")[0])


def _scan() -> dict[str, _Imports]:
    out = {}
    for module, path in MODULES.items():
        visitor = _Imports(module)
        visitor.visit(ast.parse(path.read_text(encoding="utf-8")))
        out[module] = visitor
    return out


SCAN = _scan()
STDLIB = set(sys.stdlib_module_names) | {"__future__"}


def _heavy() -> set[str]:
    """The ftspec modules that import, at their top and directly or through other ftspec modules, a
    library the core install lacks."""
    heavy = {m for m, v in SCAN.items() if v.external_top - STDLIB - CORE_DISTRIBUTIONS}
    changed = True
    while changed:
        changed = False
        for module, v in SCAN.items():
            if module not in heavy and any(t in heavy for _, t, _ in v.top):
                heavy.add(module)
                changed = True
    return heavy


def _lint_imports(cwd: Path, extra_path: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if extra_path is not None:
        env["PYTHONPATH"] = str(extra_path) + os.pathsep + env.get("PYTHONPATH", "")
    code = ("import sys; from importlinter.cli import lint_imports_command as c; "
            "sys.argv = ['lint-imports', '--config', 'pyproject.toml', '--no-cache']; c()")
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


importlinter = pytest.importorskip("importlinter", reason="import-linter is in the dev extra")


def test_the_import_contracts_hold():
    done = _lint_imports(ROOT)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "BROKEN" not in done.stdout


@pytest.fixture(scope="module")
def copy_of_the_package(tmp_path_factory) -> Path:
    copy = tmp_path_factory.mktemp("planted")
    shutil.copytree(PACKAGE, copy / "ftspec", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    return copy


def _plant(copy: Path, module: str, line: str) -> str:
    path = copy / module
    original = path.read_text(encoding="utf-8")
    path.write_text(original + "\n" + line + "\n", encoding="utf-8")
    return original


@pytest.mark.parametrize("module, line, says", [
    ("ftspec/core/io.py", "from ftspec.cli import main  # planted", "ftspec.core is not allowed to import ftspec.cli"),
    ("ftspec/spec/schema.py", "from ftspec.plan import model  # planted",
     "ftspec.spec is not allowed to import ftspec.plan"),
    ("ftspec/store/rundir.py", "import torch  # planted", "ftspec.store.rundir -> torch"),
])
def test_a_planted_import_breaks_the_contracts(copy_of_the_package, module, line, says):
    original = _plant(copy_of_the_package, module, line)
    try:
        done = _lint_imports(copy_of_the_package, extra_path=copy_of_the_package)
    finally:
        (copy_of_the_package / module).write_text(original, encoding="utf-8")
    assert done.returncode != 0
    assert "BROKEN" in done.stdout
    assert says in " ".join(done.stdout.split()), done.stdout[-3000:]


def test_no_import_cycles_between_modules():
    graph = {m: {t for _, t, _ in v.top + v.inner if t != m} for m, v in SCAN.items()}
    # a package's __init__ is loaded with each of its submodules: importing ftspec.a.b imports ftspec.a
    # too, but the edge that matters for a cycle is the one written in the code, so it is not added.
    index, low, stack, on, cycles = {}, {}, [], set(), []
    counter = [0]

    def connect(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in graph:
        if v not in index:
            connect(v)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_imports_inside_functions_only_defer_heavy_libraries_and_say_so():
    heavy = _heavy()
    wrong = []
    for module, v in SCAN.items():
        lines = MODULES[module].read_text(encoding="utf-8").splitlines()
        for line, target, _names in v.inner:
            if target not in heavy:
                wrong.append(f"{MODULES[module].relative_to(ROOT)}:{line}: {target} is light: import it at the top")
                continue
            # the reason is said on the import's line, or on the comment line(s) just above its block
            said = "#" in lines[line - 1]
            above = line - 2
            while not said and above >= 0 and lines[above].strip().startswith(("from ", "import ", "#")):
                said = lines[above].strip().startswith("#") or "#" in lines[above]
                above -= 1
            if not said:
                wrong.append(f"{MODULES[module].relative_to(ROOT)}:{line}: say why {target} is imported here")
    assert not wrong, "\n".join(dict.fromkeys(wrong))


def test_no_private_name_is_imported_from_another_module():
    wrong = [f"{MODULES[m].relative_to(ROOT)}:{line}: {name} from {target}"
             for m, v in SCAN.items() for line, target, names in v.top + v.inner
             for name in names if name.startswith("_") and not name.startswith("__") and target != m]
    assert not wrong, "\n".join(wrong)


def test_no_module_is_long_unless_it_does_one_thing():
    long = {str(p.relative_to(ROOT)): n for p in MODULES.values()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    unexplained = {p: n for p, n in long.items() if p not in LONG_MODULES}
    assert not unexplained, f"modules over {MAX_LINES} lines: {unexplained}"
    stale = set(LONG_MODULES) - set(long)
    assert not stale, f"listed as long but no longer are: {stale}"


def test_the_light_packages_import_no_heavy_library_at_their_top():
    """The forbidden contract's own check, without import-linter: what `ftspec validate` loads."""
    light = ("ftspec.core", "ftspec.catalog", "ftspec.spec", "ftspec.data", "ftspec.checks", "ftspec.plan",
             "ftspec.store", "ftspec.commands", "ftspec.cli", "ftspec.api")
    heavy = _heavy()
    wrong = sorted(m for m in heavy if m.startswith(light))
    assert not wrong, f"light modules that load a heavy library at import: {wrong}"
