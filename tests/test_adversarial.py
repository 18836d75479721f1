"""Hostile and careless input to the light commands (`validate`, `plan`).

Each case is what an adversarial pass tried: numbers a row cannot hold, files that
are not regular files, paths that escape, output locations a run would destroy,
templates that build huge values in one C call or take their time on every row.
Every one ends as one line at its place (`FILE:LINE:COL: key: message`, or
`DATAFILE:ROW: message`), exit status 2, nothing written; the whole validate is
bounded however the spec is built. The bounds count work (template steps, jinja
tokens, rows, bytes, values), so each test asserts which bound stopped the input,
never how long it took: these machines are shared. bench/bounded_work.py times them.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from ftspec.cli import main

ROWS = "".join(json.dumps({"text": f"request {i}", "queue": "billing"}) + "\n" for i in range(8))

SPEC = """ftspec: 1
name: adv
model: {model}
data:
  train: {train}
{data}format:
  kind: {kind}
{format}training: {{max_length: 256}}
{extra}"""

PROMPT_COMPLETION = """  prompt: {prompt}
  completion: " {{{{ queue }}}}"
"""


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / "train.jsonl").write_text(ROWS)
    return repo


def _spec(repo: Path, *, train: str = "train.jsonl", data: str = "  split: {validation: 0.25}\n",
          prompt: str = "'{{ text }}'", fmt: str | None = None, kind: str = "prompt_completion",
          model: str = "{kind: tiny, hidden_size: 32, num_heads: 4}", extra: str = "") -> Path:
    path = repo / "spec.yaml"
    path.write_text(SPEC.format(model=model, train=train, data=data, kind=kind,
                                format=fmt if fmt is not None else PROMPT_COMPLETION.format(prompt=prompt),
                                extra=extra))
    return path


def _run(repo: Path, *args: str, command: str = "validate"):
    before = sorted(p.relative_to(repo) for p in repo.rglob("*") if ".git" not in p.parts)
    cwd = os.getcwd()
    os.chdir(repo)
    try:
        result = CliRunner().invoke(main, [command, "spec.yaml", *args])
    finally:
        os.chdir(cwd)
    after = sorted(p.relative_to(repo) for p in repo.rglob("*") if ".git" not in p.parts)
    assert after == before, "nothing is written"
    return result


def _fails(result, expected: str) -> str:
    """The one error line that contains ``expected``; exit 2, no traceback."""
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"crashed: {result.exception!r}\n{result.output}")
    assert "Traceback" not in result.output and "Aborted" not in result.output
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if expected in line]
    assert len(lines) == 1, result.output
    return lines[0]


# --------------------------------------------------------------------------- numbers in rows


@pytest.mark.parametrize("row, message", [
    ('{"text": %s, "queue": "billing"}' % ("9" * 5000), "a number with more than 4300 digits"),
    ('{"text": NaN, "queue": "billing"}', "NaN is not a JSON number"),
    ('{"text": -Infinity, "queue": "billing"}', "-Infinity is not a JSON number"),
    ('{"text": 1e999, "queue": "billing"}', "is too large for a 64-bit float"),
    ('{"text": "a", "queue": "billing", "text": "b"}', "key 'text' appears twice in one object"),
    ('{"text": "a", "queue": "billing", "x": %s1%s}' % ("[" * 100, "]" * 100),
     "nests lists and objects more than 64 levels deep"),
    ('{"text": "a", "queue": "billing", "x": %s1%s}' % ("[" * 100_000, "]" * 100_000),
     "nests lists and objects more than 64 levels deep"),
    ('{"text": "a", "queue": "billing", "x": [%s]}' % ",".join(["1"] * 100_001), "holds more than 100000 values"),
], ids=["huge-int", "nan", "infinity", "float-overflow", "duplicate-key", "deep", "very-deep", "many-values"])
@pytest.mark.parametrize("fmt", ["jsonl", "json"])
def test_a_row_that_json_cannot_hold_is_a_bad_row(tmp_path, row, message, fmt):
    repo = _repo(tmp_path)
    lines = ROWS.splitlines()[:5] + [row] + ROWS.splitlines()[5:]
    if fmt == "jsonl":
        (repo / "train.jsonl").write_text("\n".join(lines) + "\n")
        where = "train.jsonl:6: "
    else:
        (repo / "train.json").write_text("[\n" + ",\n".join(lines) + "\n]\n")
        where = "train.json:6: row 6: "
    _spec(repo, train=f"train.{fmt}")
    for command in ("validate", "plan"):
        line = _fails(_run(repo, command=command), message)
        assert line.startswith(where), line


def test_a_bad_row_is_skipped_with_on_bad_row_skip(tmp_path):
    repo = _repo(tmp_path)
    (repo / "train.jsonl").write_text(ROWS + '{"text": NaN, "queue": "x"}\n' + ROWS)
    _spec(repo, data="  split: {validation: 0.25}\n  on_bad_row: skip\n")
    result = _run(repo, "--json", command="plan")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["data"]["sources"]["train"]["rows"] == 16


def test_a_huge_integer_in_a_csv_row_is_text(tmp_path):
    repo = _repo(tmp_path)
    (repo / "train.csv").write_text("text,queue\n" + "".join(f"r{i},billing\n" for i in range(8))
                                    + "9" * 5000 + ",billing\n")
    _spec(repo, train="train.csv")
    for command in ("validate", "plan"):
        result = _run(repo, command=command)
        assert result.exit_code == 0, result.output


# --------------------------------------------------------------------------- numbers in the spec


@pytest.mark.parametrize("extra, expected", [
    ("training: {max_length: 256, seed: 4294967296}\n", "training.seed: must be at most 4294967295 (got 4294967296)"),
    ("eval:\n  gates: {exact_match: '>= 1e999'}\n", "eval.gates.exact_match: the threshold must be a number between"),
    ("eval:\n  gates: {exact_match: '>= %s'}\n" % ("9" * 5000), "eval.gates.exact_match: expected a comparison"),
    ("training: {max_length: 256, max_grad_norm: 1e999}\n", "training.max_grad_norm: number '1e999' is out of range"),
    ("training: {max_length: 256, max_grad_norm: .nan}\n", "training.max_grad_norm: .nan is not allowed"),
    ("training: {max_length: 256, max_grad_norm: 1.0e+7}\n", "training.max_grad_norm: must be at most"),
    ("training: {max_length: 256, max_steps: 10000000000000}\n", "training.max_steps: must be at most"),
    ("eval:\n  metrics: [{name: judge, model: org/judge, rubric: '{{ prediction }}', scale: [0, 1e999]}]\n",
     "eval.metrics.0.scale.1: number '1e999' is out of range"),
], ids=["seed", "gate-inf", "gate-digits", "float-inf", "float-nan", "float-bound", "int-bound", "judge-scale"])
def test_numbers_in_the_spec_are_finite_and_bounded(tmp_path, extra, expected):
    repo = _repo(tmp_path)
    _spec(repo, extra=extra.replace("training: {max_length: 256, ", "training_: {"))
    text = (repo / "spec.yaml").read_text().replace("training: {max_length: 256}\n",
                                                    "").replace("training_: {", "training: {max_length: 256, ")
    (repo / "spec.yaml").write_text(text)
    for command in ("validate", "plan"):
        _fails(_run(repo, "--json", command=command) if command == "plan" else _run(repo), expected)


@pytest.mark.parametrize("where", ["data:\n  split: {validation: 0.25, seed: 4294967296}\n",
                                   "model: {kind: tiny, hidden_size: 32, num_heads: 4, init_seed: 4294967296}\n"])
def test_every_seed_is_within_32_bits(tmp_path, where):
    repo = _repo(tmp_path)
    if where.startswith("data"):
        _spec(repo, data="  split: {validation: 0.25, seed: 4294967296}\n")
        expected = "data.split.seed: must be at most 4294967295"
    else:
        _spec(repo, model="{kind: tiny, hidden_size: 32, num_heads: 4, init_seed: 4294967296}")
        expected = "model.init_seed: must be at most 4294967295"
    _fails(_run(repo), expected)


# --------------------------------------------------------------------------- bounded whatever the spec holds


def test_thousands_of_profiles_are_one_error(tmp_path):
    repo = _repo(tmp_path)
    profiles = "profiles:\n" + "".join(f"  p{i}: {{training: {{epochs: 2}}}}\n" for i in range(2000))
    _spec(repo, extra=profiles)
    _fails(_run(repo), "more than 64 profiles")


def test_thousands_of_derived_columns_are_one_error(tmp_path):
    repo = _repo(tmp_path)
    derive = "  derive:\n" + "".join(f"    d{i}: '{{{{ text }}}} {i}'\n" for i in range(3000))
    _spec(repo, data="  split: {validation: 0.25}\n" + derive)
    _fails(_run(repo), "data.derive: must be at most 100 items long")


def test_thousands_of_unknown_keys_are_each_reported(tmp_path):
    repo = _repo(tmp_path)
    keys = "".join(f"  unknown_key_number_{i}: 1\n" for i in range(5000))
    _spec(repo, extra="eval:\n" + keys)
    result = _run(repo)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.count(": unknown key") == 5000


def test_a_slow_template_over_many_rows_spends_one_budget(tmp_path):
    repo = _repo(tmp_path)
    (repo / "train.jsonl").write_text("".join(json.dumps({"text": f"r{i}", "queue": "billing"}) + "\n"
                                              for i in range(600)))
    slow = ("{% for i in range(10000) %}{% for j in range(10000) %}{% if loop.index > 9999 %}{{ j }}{% endif %}"
            "{% endfor %}{% endfor %}")
    _spec(repo, prompt="'" + slow + "{{ text }}'", data="  validation: train.jsonl\n  test: train.jsonl\n")
    line = _fails(_run(repo), "template refused")
    # Stopped by the steps it counts, at the first row, on any machine however loaded.
    assert line.startswith("train.jsonl:1: format.prompt: template refused: rendering took more than 100000 "
                           "steps (a huge loop?)"), line


def test_a_template_slow_on_every_row_is_stopped_by_the_total_budget(tmp_path):
    from ftspec.data.sandbox import MAX_STEPS, MAX_STEPS_IN_ALL

    repo = _repo(tmp_path)
    (repo / "train.jsonl").write_text("".join(json.dumps({"text": f"r{i}", "queue": "billing"}) + "\n"
                                              for i in range(600)))
    # 60 000 steps a row: within the 100 000 of one rendering, but 200 rows x 3 splits is 36 million.
    slow = "{% for i in range(6) %}{% for j in range(10000) %}{% endfor %}{% endfor %}"
    _spec(repo, prompt="'" + slow + "{{ text }}'", data="  validation: train.jsonl\n  test: train.jsonl\n")
    line = _fails(_run(repo), "template refused")
    match = re.match(r"train\.jsonl:(\d+): format\.prompt: template refused: rendering the sample rows took more "
                     r"than 1000000 steps in all \(a slow template\?\)$", line)
    assert match, line
    # The rows before went through: the command's budget, not one rendering's, stopped it.
    assert 60_000 < MAX_STEPS and 1 < int(match.group(1)) <= MAX_STEPS_IN_ALL // 60_000 + 1, line


@pytest.mark.parametrize("template", [
    "{{ '{:>999999999}'.format(text) }}",
    "{{ '{0:{1}}'.format(text, 999999999) }}",
    "{{ ('{:>900000}' * 50).format(*range(50)) }}",
    "{{ text.ljust(999999999) }}",
    "{{ text.rjust(900000) ~ text.rjust(900000) }}",
    "{{ text.center(999999999) }}",
    "{{ ('a' * 100000).replace('a', 'b' * 1000) }}",
    "{{ ','.join(['x' * 900000] * 1000) }}",
    "{{ range(10000) | batch(999999999, 'x') | list | length }}",
    "{{ [1] | slice(999999999) | list | length }}",
    "{% set a = 'x' * 900000 %}{% set b = a ~ a ~ a ~ a %}{{ b | length }}",
    "{% set a = 'x' * 900000 %}{{ (a + a) | length }}",
    "{% set a = 'x' * 900000 %}{{ ([a] * 1000) | join | length }}",
    "{% set a = 'x' * 900000 %}{{ ([a] * 1000) | string | length }}",
    "{% set a = 'x' * 900000 %}{{ ([a] * 1000) | tojson | length }}",
    "{% set a = 'x' * 900000 %}{{ (([a] * 1000) ~ '') | length }}",
    "{% set a = 'x' * 900000 %}{{ '{}'.format([a] * 1000) | length }}",
    "{% set a = 'x' * 900000 %}{% for i in range(10000) %}{{ a }}{% endfor %}",
    "{% set a = 'x' * 900000 %}{% set b %}{% for i in range(10000) %}{{ a }}{% endfor %}{% endset %}{{ b | length }}",
    "{% set a = 'x' * 900000 %}{{ ([a] * 1000) | map('upper') | list | length }}",
    "{% set a = 2 ** 10000 %}{% set b = a * a %}{% set c = b * b %}{% set d = c * c %}{{ (d * d * d) % 7 }}",
    "{{ ((2 ** 10000) ** 10000) % 7 }}",
    "{{ '%999999999s' | format(text) }}",
    "{{ '%.999999999d' | format(1) }}",
    "{{ lipsum(999999999) }}",
    "{% set a = '\n' * 900000 %}{{ a | indent(999999) | length }}",
    "{% set a = 'x' * 900000 %}{{ a.translate({120: 'y' * 900000}) }}",
    "{% set a = ['x' * 900000] * 1000 %}{{ a | sum(start=[]) | length }}",
    "{{ (range(10000) | list) | tojson(indent=999999) | length }}",
    "{{ 5 | round(-999999999) }}",
    "{% set t = 'x' * 900000 %}{{ ('http://a.b ' * 1000) | urlize(target=t) | length }}",
    "{{ (['x' * 900000] * 1000) | unique | list | length }}",
    "{{ (['x' * 900000] * 1000) | sort | length }}",
    "{% for s in ['x' * 900000] * 1000 %}{% set y = s.lower() %}{% endfor %}",
    "{{ ('x' * 900000).encode('utf-32') | length }}",
], ids=lambda t: t[:40])
def test_one_call_cannot_build_a_huge_value(tmp_path, template):
    repo = _repo(tmp_path)
    _spec(repo, prompt="'" + template.replace("'", "''").replace("\n", "\\n") + "'")
    text = (repo / "spec.yaml").read_text()
    if "\\n" in text:  # a newline inside the template: write it as a double-quoted YAML scalar
        text = text.replace("'" + template.replace("'", "''").replace("\n", "\\n") + "'",
                            json.dumps(template))
        (repo / "spec.yaml").write_text(text)
    line = _fails(_run(repo), "template refused")
    assert line.startswith("train.jsonl:1: format.prompt: template refused"), line


def test_ordinary_templates_still_render(tmp_path):
    repo = _repo(tmp_path)
    _spec(repo, prompt="'{{ \"{:>5}\".format(text) }} {{ text.ljust(12) }} {{ text ~ \"!\" }}"
                       " {{ [text, queue] | join(\", \") }}"
                       " {{ range(12) | batch(5) | list | length }} {{ text + \"?\" }} {{ \"%5s\" | format(queue) }}'")
    result = _run(repo)
    assert result.exit_code == 0, result.output


# --------------------------------------------------------------------------- compressed data


def _members(unit: bytes, copies: int) -> bytes:
    """A gzip file made of ``copies`` members of ``unit`` (fast to build, huge to read)."""
    member = gzip.compress(unit, compresslevel=9)
    return member * copies


@pytest.mark.parametrize("unit", [b"\0" * (8 << 20), b"{}\n" * (3 << 20),
                                  b'{"text": "a", "queue": "b"}\n' * (1 << 19)],
                         ids=["one-huge-line", "tiny-rows", "rows"])
def test_a_compression_bomb_is_refused_by_its_ratio(tmp_path, unit):
    repo = _repo(tmp_path)
    (repo / "train.jsonl.gz").write_bytes(_members(unit, 300))  # gigabytes when expanded
    _spec(repo, train="train.jsonl.gz")
    line = _fails(_run(repo), "train.jsonl.gz")
    assert ("compressed file expands more than 64 times" in line
            or "line longer than 16 MiB" in line), line


def test_a_truncated_gzip_file_is_one_line(tmp_path):
    repo = _repo(tmp_path)
    whole = gzip.compress(ROWS.encode() * 50)
    (repo / "train.jsonl.gz").write_bytes(whole[: len(whole) // 2])
    _spec(repo, train="train.jsonl.gz")
    for command in ("validate", "plan"):
        line = _fails(_run(repo, command=command), "train.jsonl.gz")
        assert "compressed file ends early (truncated?)" in line or "corrupt" in line, line


def test_a_corrupt_gzip_stream_is_one_line(tmp_path):
    repo = _repo(tmp_path)
    whole = bytearray(gzip.compress(ROWS.encode() * 50))
    whole[20:40] = b"\xff" * 20
    (repo / "train.jsonl.gz").write_bytes(bytes(whole))
    _spec(repo, train="train.jsonl.gz")
    line = _fails(_run(repo), "train.jsonl.gz")
    assert "corrupt" in line or "truncated" in line or "gzip" in line, line


def test_a_line_too_long_is_a_bad_row(tmp_path):
    repo = _repo(tmp_path)
    (repo / "train.jsonl").write_bytes(ROWS.encode() + b'{"text": "' + b"x" * (17 << 20) + b'", "queue": "b"}\n')
    _spec(repo)
    line = _fails(_run(repo), "line longer than")
    assert line.startswith("train.jsonl:9: "), line


def test_a_large_json_document_is_refused(tmp_path, monkeypatch):
    from ftspec.data import sources

    monkeypatch.setattr(sources, "MAX_JSON_BYTES", 1000)
    repo = _repo(tmp_path)
    (repo / "train.json").write_text(json.dumps([{"text": "x" * 100, "queue": "b"}] * 20))
    _spec(repo, train="train.json")
    _fails(_run(repo), "JSON document larger than")


# --------------------------------------------------------------------------- files that are not regular files


def _fifo(path: Path) -> None:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    os.mkfifo(path)


@pytest.mark.parametrize("what", ["spec", "data", "template", "schema"])
def test_a_fifo_is_named_at_once(tmp_path, what):
    repo = _repo(tmp_path)
    if what == "spec":
        _fifo(repo / "spec.yaml")
        result = _run(repo)
        line = _fails(result, "is a FIFO (named pipe), not a regular file")
        assert line.startswith("spec.yaml: "), line
        return
    if what == "data":
        _fifo(repo / "pipe.jsonl")
        _spec(repo, train="pipe.jsonl")
        expected = "data.train: data file 'pipe.jsonl' is a FIFO (named pipe), not a regular file"
    elif what == "template":
        _fifo(repo / "prompt.j2")
        _spec(repo, prompt="{file: prompt.j2}")
        expected = "format.prompt: template file 'prompt.j2' is a FIFO (named pipe), not a regular file"
    else:
        _fifo(repo / "schema.json")
        _spec(repo, extra="eval:\n  metrics: [{name: json_schema, schema: schema.json}]\n")
        expected = "eval.metrics.0.schema: schema file 'schema.json' is a FIFO (named pipe), not a regular file"
    _fails(_run(repo), expected)


@pytest.mark.parametrize("what", ["data", "template", "schema"])
def test_a_directory_given_as_a_file_is_a_directory(tmp_path, what):
    repo = _repo(tmp_path)
    (repo / "folder").mkdir()
    if what == "data":
        _spec(repo, train="{path: folder, format: jsonl}")
        expected = "data file 'folder' is a directory"
    elif what == "template":
        _spec(repo, prompt="{file: folder}")
        expected = "template file 'folder' is a directory"
    else:
        _spec(repo, extra="eval:\n  metrics: [{name: json_schema, schema: folder}]\n")
        expected = "schema file 'folder' is a directory"
    line = _fails(_run(repo), expected)
    assert "Errno" not in line


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero")
@pytest.mark.parametrize("what", ["data", "template", "schema", "spec"])
def test_a_device_is_refused_even_where_allowed(tmp_path, what):
    repo = _repo(tmp_path)
    (repo / "zero.jsonl").symlink_to("/dev/zero")
    allow = ("--allow-path", "/dev")
    if what == "spec":
        os.unlink(repo / "zero.jsonl")
        (repo / "spec.yaml").symlink_to("/dev/zero")
        line = _fails(_run(repo, *allow), "is a character device, not a regular file")
        return
    if what == "data":
        _spec(repo, train="zero.jsonl")
    elif what == "template":
        _spec(repo, prompt="{file: zero.jsonl}")
    else:
        _spec(repo, extra="eval:\n  metrics: [{name: json_schema, schema: zero.jsonl}]\n")
    line = _fails(_run(repo, *allow), "is a character device, not a regular file")
    assert line.startswith("spec.yaml:"), line


# --------------------------------------------------------------------------- paths that escape


@pytest.mark.parametrize("name",
                         ["/etc/passwd", "../../../../etc/x", "../chatml", "sub/chatml", "chatml/../chatml", ".hidden"])
def test_a_builtin_template_is_a_name_not_a_path(tmp_path, name):
    repo = _repo(tmp_path)
    (tmp_path / "x.j2").write_text("SECRET {{ text }}")
    _spec(repo, prompt="{builtin: '%s'}" % name)
    for command in ("validate", "plan"):
        result = _run(repo, "--json", command=command) if command == "plan" else _run(repo)
        _fails(result, "format.prompt.builtin: a built-in template is a name")
        assert "SECRET" not in result.output


def test_a_builtin_template_must_be_one_that_ships(tmp_path):
    repo = _repo(tmp_path)
    _spec(repo, prompt="{builtin: chatmlx}")
    line = _fails(_run(repo), "no built-in template 'chatmlx'")
    assert "did you mean 'chatml'" in line


@pytest.mark.parametrize("tokenizer, expected", [
    ("../outside-tokenizer", "resolves outside the spec's repository"),
    ("/etc", "resolves outside the spec's repository"),
    ("./missing-tokenizer", "local tokenizer folder './missing-tokenizer' not found"),
    ("not a hub id!", "is not a hub id"),
])
def test_model_tokenizer_goes_through_the_path_policy(tmp_path, tokenizer, expected):
    repo = _repo(tmp_path)
    (tmp_path / "outside-tokenizer").mkdir()
    _spec(repo, model="{base: org/model, revision: abc123, tokenizer: '%s'}" % tokenizer)
    line = _fails(_run(repo), expected)
    assert ": model.tokenizer: " in line, line


@pytest.mark.parametrize("hub, expected", [
    ("../outside-data", "is not a hub id"),
    ("/etc", "is not a hub id"),
    ("~/data", "is not a hub id"),
    ("localdata", "is also a local path"),
])
def test_a_hub_dataset_that_is_a_local_path_is_refused(tmp_path, hub, expected):
    repo = _repo(tmp_path)
    (repo / "localdata").mkdir()
    (repo / "localdata" / "rows.jsonl").write_text(ROWS)
    _spec(repo, train="{hub: '%s'}" % hub, data="")
    line = _fails(_run(repo), expected)
    assert ": data.train" in line, line


def test_a_hub_model_that_is_a_local_path_outside_is_refused(tmp_path, monkeypatch):
    repo = _repo(tmp_path)
    _spec(repo, model="{base: 'a/../../b', revision: abc}")
    _fails(_run(repo), "model.base: ")


@pytest.mark.parametrize("key", ["model", "data"])
@pytest.mark.parametrize("revision", ["../../../etc", "refs/../../x", "/abs", "a\\\\b", ".hidden"])
def test_a_revision_is_a_revision_not_a_path(tmp_path, key, revision):
    repo = _repo(tmp_path)
    if key == "model":
        _spec(repo, model="{base: org/model, revision: '%s'}" % revision)
        expected = "model.revision: "
    else:
        _spec(repo, train="{hub: org/data, revision: '%s'}" % revision, data="")
        expected = "data.train.revision: "
    line = _fails(_run(repo), expected)
    assert "is not a revision" in line, line


def test_a_good_revision_and_hub_ids_pass(tmp_path):
    repo = _repo(tmp_path)
    _spec(repo, model="{base: Qwen/Qwen2.5-0.5B-Instruct, revision: refs/pr/12, tokenizer: Qwen/Qwen2.5-0.5B}",
          train="{hub: stanfordnlp/sst2, revision: 8f0b788}", data="  split: {validation: 0.1}\n")
    result = _run(repo)
    assert result.exit_code == 0, result.output


# --------------------------------------------------------------------------- where a run writes


@pytest.mark.parametrize("out, expected", [
    (".", "is the repository root"),
    ("data", "holds 'data/train.jsonl', an input of this spec"),
    ("data/train.jsonl", "is 'data/train.jsonl', an input of this spec"),
    ("specs", "holds 'specs/spec.yaml', an input of this spec"),
    (".git", "is inside .git"),
    (".git/runs", "is inside .git"),
    ("runs/../data", "holds 'data/train.jsonl'"),
    ("templates", "holds 'templates/prompt.j2'"),
])
def test_the_run_directory_never_holds_an_input(tmp_path, out, expected):
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / "data").mkdir()
    (repo / "data" / "train.jsonl").write_text(ROWS)
    (repo / "templates").mkdir()
    (repo / "templates" / "prompt.j2").write_text("{{ text }}")
    (repo / "specs").mkdir()
    spec = SPEC.format(model="{kind: tiny, hidden_size: 32, num_heads: 4}", train="../data/train.jsonl",
                       data="  split: {validation: 0.25}\n", kind="prompt_completion",
                       format=PROMPT_COMPLETION.format(prompt="{file: ../templates/prompt.j2}"),
                       extra=f"output: {{dir: '{out}'}}\n")
    (repo / "specs" / "spec.yaml").write_text(spec)
    cwd = os.getcwd()
    os.chdir(repo / "specs")
    try:
        result = CliRunner().invoke(main, ["validate", "spec.yaml"])
    finally:
        os.chdir(cwd)
    line = _fails(result, "output.dir: ")
    assert expected in line, line


def test_the_default_run_directory_is_fine(tmp_path):
    repo = _repo(tmp_path)
    _spec(repo, extra="output: {dir: 'runs/{name}'}\n")
    result = _run(repo)
    assert result.exit_code == 0, result.output


# --------------------------------------------------------------------------- checked in full, not at the sample


def test_a_bad_row_past_the_sample_is_found_at_validate(tmp_path):
    repo = _repo(tmp_path)
    rows = "".join(json.dumps({"text": f"r{i}", "queue": "billing"}) + "\n" for i in range(700))
    (repo / "train.jsonl").write_text(rows + '{"text": "r", "queue": \n' + rows)
    _spec(repo)
    line = _fails(_run(repo), "not valid JSON")
    assert line.startswith("train.jsonl:701: "), line


def test_a_bad_csv_row_past_the_sample_is_found_at_validate(tmp_path):
    repo = _repo(tmp_path)
    rows = "".join(f"r{i},billing\n" for i in range(700))
    (repo / "train.csv").write_text("text,queue\n" + rows + "r,billing,extra\n" + rows)
    _spec(repo, train="train.csv")
    line = _fails(_run(repo), "expected 2 columns")
    assert line.startswith("train.csv:702: "), line


@pytest.mark.parametrize("metric, expected", [
    ("{name: judge, model: org/judge, rubric: '{{ prediction }}', score_regex: '(\\d+'}",
     "eval.metrics.0.score_regex: invalid regular expression"),
    ("{name: exact_match, extract: {regex: '[a-'}}", "eval.metrics.0.extract.regex: invalid regular expression"),
])
def test_a_regex_is_compiled_at_validate(tmp_path, metric, expected):
    repo = _repo(tmp_path)
    _spec(repo, extra=f"eval:\n  metrics: [{metric}]\n")
    _fails(_run(repo), expected)


def test_beyond_the_scan_budget_rows_are_counted_and_said_so(tmp_path, monkeypatch):
    from ftspec.checks import facts

    monkeypatch.setattr(facts, "SCAN_ROWS", 300)
    repo = _repo(tmp_path)
    rows = "".join(json.dumps({"text": f"r{i}", "queue": "billing"}) + "\n" for i in range(400))
    (repo / "train.jsonl").write_text(rows + "\n\n" + rows)
    (repo / "test.jsonl").write_text(rows)
    _spec(repo, data="  split: {validation: 0.25}\n  test: test.jsonl\n")
    result = _run(repo, "--json", command="plan")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert plan["data"]["sources"]["train"]["rows"] == 800
    assert plan["data"]["sources"]["test"]["rows"] == 400
    # The training file leaves a share of the budget to the test file (and every file its sample).
    assert plan["checks"]["not_checked"] == [
        "data.test: rows after the first 200 are counted, not parsed (validate parses at most 300 rows and 256 MiB in "
        "all); "
        "they are checked when the data is prepared",
        "data.train: rows after the first 250 are counted, not parsed (validate parses at most 300 rows and 256 MiB in "
        "all); "
        "they are checked when the data is prepared"]


# --------------------------------------------------------------------------- messages that help


@pytest.mark.parametrize("tag", ['{% include "x.j2" %}', '{% import "x.j2" as x %}', '{% extends "x.j2" %}',
                                 '{% from "x.j2" import y %}'])
def test_loading_other_templates_is_refused_at_the_spec_line(tmp_path, tag):
    repo = _repo(tmp_path)
    _spec(repo, prompt="'" + tag + "{{ text }}'")
    line = _fails(_run(repo), "is not supported in ftspec templates")
    assert line.startswith("spec.yaml:9:11: format.prompt: "), line
    assert "loader" not in line


def test_loading_other_templates_from_a_template_file_names_its_line(tmp_path):
    repo = _repo(tmp_path)
    (repo / "prompt.j2").write_text("{{ text }}\n{% include 'other.j2' %}\n")
    _spec(repo, prompt="{file: prompt.j2}")
    line = _fails(_run(repo), "is not supported in ftspec templates")
    assert line.startswith("prompt.j2:2: format.prompt: "), line


CHAT = """  messages:
    - {{role: user, content: "{{{{ text }}}}"}}
    - {{role: assistant, content: "{{{{ queue }}}}"}}
  chat_template: {template}
"""


@pytest.mark.parametrize("template, expected", [
    ("\"{{ raise_exception('no conversation is good enough') }}\"",
     "the template raised an error: no conversation is good enough"),
    ("\"{% for m in messages %}{{ m.content }}{{ system_prompt }}{% endfor %}\"",
     "prints 'system_prompt', which transformers never gives"),
    ("\"{% for m in messages %}{{ m.content.nope() }}{% endfor %}\"",
     "the chat template cannot render this spec's conversations"),
    ("\"{% if messages[0].role != 'system' %}{{ raise_exception('needs a system turn') }}{% endif %}\"",
     "needs a system turn"),
])
def test_a_chat_template_that_cannot_render_is_an_error(tmp_path, template, expected):
    repo = _repo(tmp_path)
    _spec(repo, kind="chat", fmt=CHAT.format(template=template))
    line = _fails(_run(repo), expected)
    assert line.startswith("spec.yaml:12:18: format.chat_template: "), line


@pytest.mark.parametrize("template", [
    "{builtin: chatml}",
    "{builtin: plain-chat}",
    "\"{% for m in messages %}{% if tools is defined and tools %}{{ tools }}{% endif %}{% if m.role == 'user' %}U: "
    "{% endif %}"
    "{% generation %}{{ m.content }}{% endgeneration %}{% if enable_thinking is defined %}{% break %}{% endif %}"
    "\\n{% endfor %}"
    "{% if add_generation_prompt %}A:{% endif %}{{ eos_token }}\"",
])
def test_good_chat_templates_pass(tmp_path, template):
    repo = _repo(tmp_path)
    _spec(repo, kind="chat", fmt=CHAT.format(template=template))
    result = _run(repo)
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("data, key", [
    ("  validation: train.jsonl\n", "data.validation"),
    ("  test: ./train.jsonl\n  split: {validation: 0.25}\n", "data.test"),
])
def test_held_out_data_that_is_the_training_file_is_a_warning(tmp_path, data, key):
    repo = _repo(tmp_path)
    _spec(repo, data=data)
    result = _run(repo)
    assert result.exit_code == 0, result.output
    lines = [l for l in result.output.splitlines() if "reads the same data as data.train" in l]
    assert len(lines) == 1 and f": {key}: warning: " in lines[0], result.output
    result = _run(repo, "--strict")
    assert result.exit_code == 2


# --------------------------------------------------------------------------- multi-process compute


@pytest.mark.parametrize("compute, expected, line", [
    ("{num_processes: 4}", "compute.num_processes: 4 processes need a strategy", 12),
    ("{strategy: ddp, fsdp: {cpu_offload: true}}",
     "compute.fsdp: FSDP settings are given but compute.strategy is 'ddp'", 12),
    ("{device: cpu, strategy: fsdp}", "compute.strategy: fsdp runs only on CUDA GPUs", 12),
    ("{num_processes: 2, strategy: ddp}", "training.batch_size: 2 processes × batch 8 take 16 rows", 11),
])
def test_multi_process_settings_that_cannot_run_are_one_line_at_their_key(tmp_path, compute, expected, line):
    repo = _repo(tmp_path)
    _spec(repo, extra=f"compute: {compute}\n")
    found = _fails(_run(repo), expected)
    assert found.startswith(f"spec.yaml:{line}:"), found


def test_multi_process_in_an_unused_profile_is_reported_there(tmp_path):
    repo = _repo(tmp_path)
    _spec(repo, extra="profiles:\n  big:\n    compute: {num_processes: 8}\n")
    result = _run(repo)
    _fails(result, "profiles.big.compute.num_processes: 8 processes need a strategy")


# --------------------------------------------------------------------------- paths that cannot be resolved


@pytest.mark.parametrize("where", ["data", "template", "schema", "output", "model"])
def test_a_symlink_loop_or_a_nul_is_one_line(tmp_path, where):
    repo = _repo(tmp_path)
    (repo / "loop1").symlink_to("loop2")
    (repo / "loop2").symlink_to("loop1")
    for name, expected in (("loop1", "is a loop of symbolic links"), ('"a\\0b"', "contains a NUL character")):
        if where == "data":
            _spec(repo, train=name)
        elif where == "template":
            _spec(repo, prompt="{file: %s}" % name)
        elif where == "schema":
            _spec(repo, extra="eval:\n  metrics: [{name: json_schema, schema: %s}]\n" % name)
        elif where == "output":
            _spec(repo, extra="output: {dir: %s}\n" % name)
        else:
            _spec(repo, model="{base: %s}" % ('"./a\\0b"' if name.startswith('"') else "./" + name))
        _fails(_run(repo), expected)


# --------------------------------------------------------------------------- more bounds


def test_a_row_with_too_many_keys_is_a_bad_row(tmp_path):
    repo = _repo(tmp_path)
    wide = {"text": "a", "queue": "b", **{f"k{i}": 1 for i in range(10_001)}}
    (repo / "train.jsonl").write_text(ROWS + json.dumps(wide) + "\n")
    _spec(repo)
    line = _fails(_run(repo), "more than 10000 keys")
    assert line.startswith("train.jsonl:9: "), line


def test_a_csv_header_with_too_many_columns_is_refused(tmp_path):
    repo = _repo(tmp_path)
    (repo / "train.csv").write_text(",".join(f"c{i}" for i in range(20_000)) + "\n" + ",".join("x" * 20_000) + "\n")
    _spec(repo, train="train.csv")
    _fails(_run(repo), "a header of more than 10000 columns is refused")


def test_a_template_naming_thousands_of_missing_columns_is_bounded(tmp_path):
    repo = _repo(tmp_path)
    _spec(repo, prompt="'" + "".join(f"{{{{ missing_{i} }}}}" for i in range(3000)) + "'")
    result = _run(repo)
    assert result.exit_code == 2, result.output[-300:]
    assert result.output.count("which is not a column") == 20
    assert "template uses 2980 more names that are not columns" in result.output


def test_a_huge_template_is_refused_before_it_is_compiled(tmp_path):
    repo = _repo(tmp_path)
    (repo / "prompt.j2").write_text("{{ text }} " * 30_000)
    _spec(repo, prompt="{file: prompt.j2}")
    _fails(_run(repo), "format.prompt: template longer than 256000 characters")


def test_compiling_many_large_templates_spends_one_budget(tmp_path):
    repo = _repo(tmp_path)
    for i in range(80):
        (repo / f"t{i}.j2").write_text(f"{{{{ text }}}} {i} " * 2_000)  # each its own (a text is compiled once)
    turns = "".join(f"    - {{role: user, content: {{file: t{i}.j2}}}}\n" for i in range(80))
    _spec(repo, kind="chat", fmt="  messages:\n" + turns + "  chat_template: {builtin: chatml}\n")
    # Counted in jinja tokens, not seconds: each template is 12 000 tokens, so the second goes past
    # the 20 000 of a check, on any machine, however loaded.
    line = _fails(_run(repo), "templates too large or complex: more than 20000 jinja tokens in all")
    assert ": format.messages.1.content: " in line, line


def test_deeply_nested_template_expressions_are_one_line(tmp_path):
    repo = _repo(tmp_path)
    _spec(repo, prompt="'{{ text" + "|trim" * 2_000 + " }}'")  # 4 000 tokens: within the budget, too deep
    _fails(_run(repo), "format.prompt: template nests too deeply")


def test_a_csv_row_with_bad_bytes_is_skipped_alone(tmp_path):
    repo = _repo(tmp_path)
    (repo / "train.csv").write_bytes(b"text,queue\n" + b"".join(b"r%d,billing\n" % i for i in range(5))
                                     + b"bad \xff row,billing\n" + b"".join(b"s%d,billing\n" % i for i in range(5)))
    _spec(repo, train="train.csv", data="  split: {validation: 0.25}\n  on_bad_row: skip\n")
    result = _run(repo, "--json", command="plan")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["data"]["sources"]["train"]["rows"] == 10
    _spec(repo, train="train.csv")
    line = _fails(_run(repo), "not valid UTF-8")
    assert line.startswith("train.csv:7: "), line


def test_the_run_directory_never_holds_folders_a_run_would_replace(tmp_path):
    repo = _repo(tmp_path)
    (repo / "docs" / "report").mkdir(parents=True)
    (repo / "docs" / "report" / "index.md").write_text("hand-written")
    _spec(repo, extra="output: {dir: docs}\n")
    line = _fails(_run(repo), "output.dir: ")
    assert "holds 'report', which a run would replace, and ftspec did not write it" in line, line
    # A folder that a run wrote (its step marker inside) is the run's own.
    (repo / "docs" / "report" / ".ftspec-step.json").write_text('{"step": "report", "key": "k"}')
    result = _run(repo)
    assert result.exit_code == 0, result.output
    (repo / "README.md").write_text("x")
    _spec(repo, extra="output: {dir: README.md}\n")
    _fails(_run(repo), "output.dir: 'README.md' is a file")


def test_many_unknown_names_against_wide_data_are_bounded(tmp_path, monkeypatch):
    from ftspec.data import templates as tpl

    compared: list[int] = []  # the columns each unknown name is compared with, for a "did you mean"
    did_you_mean = tpl.did_you_mean
    monkeypatch.setattr(tpl, "did_you_mean", lambda word, pool: compared.append(len(pool)) or did_you_mean(word, pool))
    repo = _repo(tmp_path)
    wide = {f"column_{i}": "v" for i in range(9_000)}
    (repo / "train.jsonl").write_text("".join(json.dumps({**wide, "text": f"r{i}", "queue": "b"}) + "\n"
                                              for i in range(8)))
    derive = "".join(f"    d{j}: '" + "".join(f"{{{{ colum_{j * 20 + i} }}}}" for i in range(20)) + "'\n"
                     for j in range(100))
    rename = "  rename: {" + ", ".join(f"colmn_{i}: r{i}" for i in range(500)) + "}\n"
    _spec(repo, data="  split: {validation: 0.25, stratify: colum_5}\n" + rename + "  derive:\n" + derive)
    result = _run(repo)
    assert result.exit_code == 2, result.output[-500:]
    assert compared and max(compared) <= 200 and sum(compared) <= 200 * 200, (len(compared), sum(compared))
    assert result.output.count("which is not a column") <= 100
    assert "more templates use names that are not columns" in result.output
