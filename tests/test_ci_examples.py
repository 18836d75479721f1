"""The CI examples in examples/ci/ cannot rot: every `ftspec …` command line in them names a
real command with real options (parsed by ftspec's own click parser, never run), and each
does what the examples promise (validate, plan, the --results comment, a run on merge)."""

import re
import shlex

import click
import pytest
import yaml
from conftest import ROOT

from ftspec.cli import main

EXAMPLES = ROOT / "examples" / "ci"
FILES = {"github": EXAMPLES / "ftspec-pull-request.yml", "gitlab": EXAMPLES / "ftspec.gitlab-ci.yml"}
# `ftspec` as the word that starts a command: at a line's start, after `;`, `&&`, `||`, `|` or `then`.
COMMAND = re.compile(r"(?:^|[;&|]\s*|\bthen\s+|\bdo\s+)ftspec\s+(.*)$")


def scripts(value) -> list[str]:
    """Every string in the parsed YAML: the shell of a `run:` or a `script:` item."""
    if isinstance(value, dict):
        return [s for v in value.values() for s in scripts(v)]
    if isinstance(value, list):
        return [s for v in value for s in scripts(v)]
    return [value] if isinstance(value, str) else []


def commands(path) -> list[list[str]]:
    found = []
    for text in scripts(yaml.safe_load(path.read_text(encoding="utf-8"))):
        for line in text.splitlines():
            line = re.sub(r"\s#.*$", "", line.strip())  # a shell comment after the command
            m = COMMAND.search(line)
            if m is None:
                continue
            rest = re.split(r"\s(?:>>?|\||;|&&|\|\|)\s", " " + m.group(1) + " ", maxsplit=1)[0]
            found.append(shlex.split(rest))
    return found


@pytest.mark.parametrize("name", list(FILES))
def test_every_ftspec_command_line_parses(name):
    found = commands(FILES[name])
    assert len(found) >= 4, found
    for args in found:
        command = main.get_command(click.Context(main), args[0])
        assert command is not None, f"{FILES[name].name}: `ftspec {args[0]}` is not an ftspec command"
        try:
            command.make_context(args[0], list(args[1:]))
        except click.ClickException as exc:
            pytest.fail(f"{FILES[name].name}: `ftspec {' '.join(args)}`: {exc.format_message()}")


@pytest.mark.parametrize("name", list(FILES))
def test_each_example_validates_plans_comments_and_runs_on_merge(name):
    found = [" ".join(a) for a in commands(FILES[name])]
    assert any(c.startswith("validate ") for c in found)
    assert any(c.startswith("plan ") for c in found)
    assert any(c.startswith("diff --git") and "--results" in c and "--format markdown" in c for c in found)
    assert any(c.startswith("run ") and "--store" in c for c in found)
    text = FILES[name].read_text(encoding="utf-8")
    assert "FTSPEC_STORE" in text
    # credentials from the CI's identity (OIDC), never an access key in the file or a variable
    assert "AWS_SECRET_ACCESS_KEY" not in text and "aws_secret_access_key" not in text


def test_the_parser_catches_a_rotten_line(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("jobs:\n  x:\n    steps:\n      - run: ftspec diff --git main s.yaml --no-such-flag\n")
    args = commands(bad)[0]
    with pytest.raises(click.NoSuchOption):
        main.get_command(click.Context(main), args[0]).make_context(args[0], list(args[1:]))
