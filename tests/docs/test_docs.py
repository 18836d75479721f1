"""The documentation site in docs/ stays whole and true: every page is in mkdocs.yml's nav,
every relative link (README's and the pages') resolves, anchors included, every `ftspec`
command and repository file the README and the pages name exists, the pages that copy
another file are that file, and `mkdocs build --strict` passes where mkdocs is installed
(without -q, which hides the warnings that --strict turns into a failure)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from conftest import ROOT

from ftspec.cli import main

DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
README = ROOT / "README.md"
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", flags=re.DOTALL | re.MULTILINE)


def nav_pages(node) -> list[str]:
    """The page paths of a (nested) mkdocs nav."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [page for item in node for page in nav_pages(item)]
    if isinstance(node, dict):
        return [page for value in node.values() for page in nav_pages(value)]
    return []


def slug(heading: str) -> str:
    """A heading's anchor as Python-Markdown's toc extension makes it (what mkdocs links to)."""
    text = re.sub(r"`([^`]*)`", r"\1", heading)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    return {slug(h) for h in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", text, flags=re.MULTILINE)}


def links(page: Path) -> list[str]:
    """The relative links of a page, outside code blocks."""
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]


def test_the_site_has_its_pages():
    assert {"index.md", "reference.md", "security.md", "troubleshooting.md", "cli.md", "api.md"} <= \
        {p.name for p in PAGES}
    assert len(list((DOCS / "use-cases").glob("*.md"))) >= 7


def test_every_page_is_in_the_nav_and_every_nav_entry_is_a_page():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    listed = nav_pages(config["nav"])
    on_disk = [p.relative_to(DOCS).as_posix() for p in PAGES]
    assert sorted(set(on_disk) - set(listed)) == [], "pages missing from mkdocs.yml's nav"
    assert sorted(set(listed) - set(on_disk)) == [], "nav entries with no page in docs/"
    assert len(listed) == len(set(listed)), "a page is listed twice in the nav"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(DOCS).as_posix())
def test_every_link_of_a_page_resolves_to_a_page_and_anchor_of_the_site(page):
    """A page links only to pages of the site (a repository file is named in code, as
    the built site cannot serve it), and to headings those pages have."""
    broken = []
    for target in links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if DOCS.resolve() not in dest.parents or dest.suffix != ".md" or not dest.is_file():
            broken.append(f"{target}: not a page of docs/")
        elif anchor and anchor not in anchors(dest):
            broken.append(f"{target}: {dest.name} has no heading #{anchor}")
    assert broken == []


def test_every_relative_link_in_the_readme_resolves_anchors_included():
    broken = []
    for target in links(README):
        path, _, anchor = target.partition("#")
        dest = ROOT / path
        if not dest.exists():
            broken.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor}")
    assert broken == []
    assert any(t.startswith("docs/") for t in links(README)), "the README links into docs/"


REPO_PATH = re.compile(r"`((?:ftspec|specs|bench|examples|tests|schema|templates)/[\w./-]*)`")


@pytest.mark.parametrize("page", [README, *PAGES], ids=lambda p: p.relative_to(ROOT).as_posix())
def test_the_repository_files_a_page_names_exist(page):
    """The pages name repository files in code (`ftspec/plan/keys.py`, `specs/distill.yaml`);
    a file moved or renamed is named by its new path."""
    named = {m.split(":")[0] for m in REPO_PATH.findall(page.read_text(encoding="utf-8"))}
    assert sorted(n for n in named if not (ROOT / n).exists()) == []


def shown_commands(text: str) -> set[str]:
    """The `ftspec COMMAND` of every command line in the code blocks of a page."""
    names = set()
    for block in FENCE.findall(text):
        for line in block.splitlines()[1:]:
            found = re.match(r"\s*(?:\$\s+)?(?:[^#\n]*&&\s*)?ftspec\s+([a-z][a-z-]*)", line)
            if found:
                names.add(found.group(1))
    return names


@pytest.mark.parametrize("page", [README, *PAGES], ids=lambda p: p.relative_to(ROOT).as_posix())
def test_the_commands_a_page_shows_exist(page):
    names = shown_commands(page.read_text(encoding="utf-8"))
    if page == README:
        assert {"run", "validate", "plan"} <= names
    for name in sorted(names):
        result = CliRunner().invoke(main, [name, "--help"])
        assert result.exit_code == 0, f"`ftspec {name} --help`: {result.output}"


def test_the_cli_page_names_only_commands_that_exist():
    """tests/cli/test_cli.py checks the converse: every command is on the page."""
    named = set(re.findall(r"`ftspec ([a-z][a-z-]*)", (DOCS / "cli.md").read_text(encoding="utf-8")))
    assert named and named <= set(main.commands), sorted(named - set(main.commands))


def test_the_security_page_is_security_md():
    assert (DOCS / "security.md").read_text(encoding="utf-8") == (ROOT / "SECURITY.md").read_text(encoding="utf-8"), \
        "docs/security.md differs from SECURITY.md: cp SECURITY.md docs/security.md"


def run_block(text: str) -> str:
    blocks = re.findall(r"^```text\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)
    shown = [b for b in blocks if b.startswith("ftspec run quickstart")]
    assert len(shown) == 1
    return shown[0]


def test_the_run_output_on_the_running_page_is_the_readmes():
    """tests/test_readme.py checks the README's against a real run; the page shows the same."""
    assert run_block((DOCS / "running.md").read_text(encoding="utf-8")) == run_block(README.read_text(encoding="utf-8"))


def test_mkdocs_build_is_strict_clean(tmp_path):
    """No broken link or anchor, no page outside the nav: what CI's strict build checks."""
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (it comes with the dev extra)")
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent)) or shutil.which("mkdocs")
    command = [mkdocs] if mkdocs else [sys.executable, "-m", "mkdocs"]
    result = subprocess.run([*command, "build", "--strict", "-d", str(tmp_path / "site")], cwd=ROOT,
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "site" / "reference" / "index.html").is_file()
