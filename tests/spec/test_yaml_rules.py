"""The YAML a spec is read as: YAML 1.2's core schema, one rule per test, and the
limits the loader holds while it reads (docs/writing-specs.md: "How a spec's YAML is read")."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import ROOT

from ftspec.core.errors import SpecError
from ftspec.spec.load import MAX_DEPTH, load, parse_set, parse_yaml
from ftspec.spec.validate import validate

HANG = 60  # seconds: a hang detector for a fresh process, not a speed claim


def value_of(text: str):
    value, _, _, issues = parse_yaml(f"v: {text}\n", "f.yaml")
    assert issues == [], issues
    return value["v"]


def refusal(text: str) -> str:
    _, _, _, issues = parse_yaml(f"v: {text}\n", "f.yaml")
    [issue] = issues
    assert issue.key == "v" and (issue.pos.line, issue.pos.col) == (1, 4)
    return issue.message


# --------------------------------------------------------------------------- booleans


@pytest.mark.parametrize("text", ["true", "True", "TRUE"])
def test_true(text):
    assert value_of(text) is True


@pytest.mark.parametrize("text", ["false", "False", "FALSE"])
def test_false(text):
    assert value_of(text) is False


@pytest.mark.parametrize("text", ["yes", "no", "on", "off", "y", "n", "Yes", "NO", "On", "OFF", "Y", "N", "tRUE"])
def test_yaml_1_1_booleans_stay_text(text):
    assert value_of(text) == text


def test_choices_yes_no_stay_strings(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("ftspec: 1\nname: x\nmodel: {kind: tiny}\ndata: {train: t.jsonl}\n"
                    "format: {kind: prompt_completion, prompt: '{{ q }}', completion: '{{ a }}'}\n"
                    "eval:\n  mode: choices\n  choices: [yes, no]\n", encoding="utf-8")
    spec_, issues = validate(load(spec))
    assert issues == []
    assert spec_.eval.choices == ["yes", "no"]


def test_keys_are_text_as_written():
    value, _, _, _ = parse_yaml("on: 1\nyes: 2\n3: 3\nnull: 4\n", "f.yaml")
    assert value == {"on": 1, "yes": 2, "3": 3, "null": 4}


# --------------------------------------------------------------------------- integers


@pytest.mark.parametrize("text,expected", [
    ("0", 0), ("17", 17), ("-17", -17), ("+17", 17),
    ("017", 17),          # decimal: YAML 1.1 read a leading zero as octal (15)
    ("0o17", 15),         # octal is 0o
    ("0x1F", 31), ("0x1f", 31),
    ("9" * 30, int("9" * 30)),
    ("000000000000000000000000000000000000000001", 1),  # leading zeros are not digits of the value
])
def test_integers(text, expected):
    value = value_of(text)
    assert type(value) is int and value == expected


@pytest.mark.parametrize("text", ["1:30", "1_000", "0b101", "-0x1F", "+0o7", "0o8", "0xG", "1,000", "12abc"])
def test_not_integers_stay_text(text):
    """Sexagesimal (1:30 was 5400), underscores, binary and signed hex/octal were YAML 1.1."""
    assert value_of(text) == text


def test_integer_of_more_than_30_digits_is_refused_by_its_length():
    message = refusal("9" * 5000)  # past Python's int-string limit (4300 digits)
    assert message == ("number '999999999999999999999999…' (5000 characters) is out of range; "
                       "a spec's integers have at most 30 digits")
    assert "out of range" in refusal("1" + "0" * 30)
    assert "out of range" in refusal("0x" + "f" * 40)


# --------------------------------------------------------------------------- floats


@pytest.mark.parametrize("text,expected", [
    ("1.5", 1.5), ("-1.5", -1.5), (".5", 0.5), ("1.", 1.0), ("1e3", 1000.0), ("1E3", 1000.0),
    ("1.0e-3", 0.001), ("1e-3", 0.001), ("+2.5e+2", 250.0), ("1e300", 1e300), ("-1e300", -1e300), ("1e-400", 0.0),
])
def test_floats(text, expected):
    value = value_of(text)
    assert type(value) is float and value == expected


@pytest.mark.parametrize("text", [".inf", ".Inf", ".INF", "+.inf", "-.inf", ".nan", ".NaN", ".NAN"])
def test_non_finite_floats_are_refused(text):
    assert refusal(text) == f"{text.lstrip('+')} is not allowed; every number in a spec must be finite"


@pytest.mark.parametrize("text", ["1e400", "1e999", "-1e301", "1" * 400 + ".0"])
def test_out_of_range_floats_are_refused(text):
    assert "is out of range; a spec's numbers must be finite and at most 1e300 in size" in refusal(text)


@pytest.mark.parametrize("text", ["inf", "nan", "Infinity", "1e", "e3", ".", "1.2.3", "0x1.8p1"])
def test_not_floats_stay_text(text):
    assert value_of(text) == text


# --------------------------------------------------------------------------- null, timestamps, quoting, tags


@pytest.mark.parametrize("text", ["null", "Null", "NULL", "~", ""])
def test_null(text):
    assert value_of(text) is None


@pytest.mark.parametrize("text", ["NuLL", "none", "None", "nil"])
def test_not_null_stays_text(text):
    assert value_of(text) == text


@pytest.mark.parametrize("text", ["2024-01-02", "2024-01-02T10:00:00Z", "2024-01-02 10:00:00.5 +01:00"])
def test_timestamps_stay_text(text):
    """YAML 1.2's core schema has no timestamp type, and a plan is JSON."""
    assert value_of(text) == text


@pytest.mark.parametrize("text,expected", [
    ("'true'", "true"), ('"12"', "12"), ("'.inf'", ".inf"), ('"1e999"', "1e999"), ("'~'", "~"),
    ("|\n  yes\n", "yes\n"), ("! 12", "12"), ("!!str 12", "12"), ("!!str true", "true"),
])
def test_quoted_block_and_str_tagged_scalars_are_text(text, expected):
    assert value_of(text) == expected


@pytest.mark.parametrize("text,expected", [
    ("!!int '12'", 12), ("!!float 1", 1.0), ("!!float '2.5'", 2.5), ("!!bool 'true'", True), ("!!null ''", None),
    ("!!timestamp 2024-01-02", "2024-01-02"),
])
def test_core_tags_say_the_type(text, expected):
    value = value_of(text)
    assert type(value) is type(expected) and value == expected


@pytest.mark.parametrize("text,message", [
    ("!!bool yes", "'yes' is not a valid !!bool"),
    ("!!int 1.5", "'1.5' is not a valid !!int"),
    ("!!float .nan", ".nan is not allowed; every number in a spec must be finite"),
    ("!!null x", "'x' is not a valid !!null"),
])
def test_core_tags_that_do_not_fit_are_refused(text, message):
    assert refusal(text) == message


def test_set_values_follow_the_same_rules():
    assert parse_set("eval.choices=[yes, no]")[1].data == {"eval": {"choices": ["yes", "no"]}}
    assert parse_set("training.learning_rate=1e-4")[1].data == {"training": {"learning_rate": 0.0001}}
    assert parse_set("a=0o17")[1].data == {"a": 15}
    with pytest.raises(SpecError) as info:
        parse_set("training.learning_rate=.nan")
    assert [i.format() for i in info.value.issues] == [
        "--set training.learning_rate=.nan: training.learning_rate: .nan is not allowed; "
        "every number in a spec must be finite"]


# --------------------------------------------------------------------------- text


def test_lone_surrogates_are_refused_at_their_key():
    _, _, _, issues = parse_yaml('a:\n  b: "x\\ud800"\n  c: [ok, "\\udfff"]\n', "f.yaml")
    assert [(i.key, i.pos.line, i.pos.col) for i in issues] == [("a.b", 2, 6), ("a.c.1", 3, 11)]
    assert all("lone surrogate" in i.message for i in issues)


def test_characters_beyond_the_bmp_are_fine():
    assert value_of('"\\U0001F600 \\u00e9"') == "\U0001F600 \u00e9"


def test_undecodable_command_line_bytes_are_named():
    """Python keeps a command-line byte that is not UTF-8 as a surrogate escape."""
    with pytest.raises(SpecError) as info:
        parse_set("name=caf\udce9")
    assert [i.format() for i in info.value.issues] == ["--set name=caf\\udce9: name: not valid UTF-8 (byte 0xe9)"]


# --------------------------------------------------------------------------- merge keys


def test_merge_explicit_keys_win_and_earlier_sources_win():
    value, where, _, issues = parse_yaml(
        "a: &a {x: 1, y: 1}\nb: &b {y: 2, z: 2}\nc:\n  <<: [*a, *b]\n  x: 3\n", "f.yaml")
    assert issues == []
    assert value["c"] == {"x": 3, "y": 1, "z": 2}
    assert where[("c", "x")].pos.line == 5  # the explicit key, not the merged one
    assert where[("c", "y")].pos.line == 1
    assert where[("c", "z")].pos.line == 2


def test_merge_key_written_after_the_keys_still_loses_to_them():
    value, where, _, _ = parse_yaml("a: &a {x: 1}\nc:\n  x: 3\n  <<: *a\n", "f.yaml")
    assert value["c"] == {"x": 3}
    assert where[("c", "x")].pos.line == 3


def test_quoted_merge_key_is_an_ordinary_key():
    value, _, _, _ = parse_yaml("a: {'<<': 1}\n", "f.yaml")
    assert value == {"a": {"<<": 1}}


@pytest.mark.parametrize("text,key", [
    ("a: &a {<<: *a}\n", "a"),
    ("a: &a {b: {<<: *a}}\n", "a.b"),
    ("a: &a [{<<: *a}]\n", "a.0"),
    ("a: &a {<<: [{}, *a]}\n", "a"),
])
def test_merge_cycles_are_one_line(text, key):
    with pytest.raises(SpecError) as info:
        parse_yaml(text, "f.yaml")
    [issue] = info.value.issues
    assert issue.key == key and "refers to a value that contains it (a cycle); refused" in issue.message


def test_merge_chains_count_against_the_depth():
    text = "m0: &m0 {x: 1}\n" + "".join(f"m{i}: &m{i} {{<<: *m{i - 1}}}\n" for i in range(1, 200))
    with pytest.raises(SpecError) as info:
        parse_yaml(text, "f.yaml")
    [issue] = info.value.issues
    assert f"nested more than {MAX_DEPTH} levels deep (through aliases or merges)" in issue.message


# --------------------------------------------------------------------------- limits


def test_depth_limit_is_exact():
    ok = "v: " + "[" * MAX_DEPTH + "]" * MAX_DEPTH + "\n"
    assert parse_yaml(ok, "f.yaml")[3] == []
    with pytest.raises(SpecError, match="nested more than 64 levels deep; refused"):
        parse_yaml("v: " + "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1) + "\n", "f.yaml")


def test_5000_levels_deep_is_one_line_in_a_fresh_process(tmp_path):
    spec = tmp_path / "deep.yaml"
    spec.write_text("ftspec: 1\nname: " + "[" * 5000 + "]" * 5000 + "\n", encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "ftspec", "validate", "deep.yaml"], cwd=tmp_path,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                          timeout=HANG)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "Traceback" not in proc.stderr and "RecursionError" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert lines == [f"deep.yaml:2:71: name{'.0' * 64}: nested more than 64 levels deep; refused", "ftspec: 1 error"]


def test_a_second_document_is_refused_without_reading_it():
    with pytest.raises(SpecError) as info:
        parse_yaml("a: 1\n---\n" + "[" * 5000 + "\n", "f.yaml")
    assert [i.format() for i in info.value.issues] == [
        "f.yaml:2:1: more than one YAML document; a spec is a single document (remove '---')"]


def test_set_value_is_held_to_the_same_limits():
    with pytest.raises(SpecError) as info:
        parse_set("name=" + "[" * 5000)
    [issue] = info.value.issues
    assert issue.key == "name" and issue.message == "nested more than 64 levels deep; refused"


@pytest.mark.parametrize("key,text,expected", [
    ("batch_size", '"16"', "must be an integer (got '16'); a quoted value is text: write 16 without quotes"),
    ("learning_rate", '"2e-4"', "must be a number (got '2e-4'); a quoted value is text: write 2e-4 without quotes"),
    ("warmup_ratio", "'0.1'", "must be a number (got '0.1'); a quoted value is text: write 0.1 without quotes"),
    ("epochs", "!!str 2", "must be a number (got '2'); a quoted value is text: write 2 without quotes"),
])
def test_a_quoted_number_is_text_for_every_field(tmp_path, key, text, expected):
    """One rule, for integers and numbers alike: a quoted value is text, refused at its line."""
    path = tmp_path / "spec.yaml"
    path.write_text("ftspec: 1\nname: q\nmodel: {kind: tiny}\ndata: {train: t.jsonl}\n"
                    "format: {kind: prompt_completion, prompt: p, completion: c}\n"
                    f"training:\n  {key}: {text}\n", encoding="utf-8")
    spec, issues = validate(load(path))
    assert spec is None
    assert [(i.key, i.pos.line, i.format().split(": ", 2)[2]) for i in issues] == [(f"training.{key}", 7, expected)]
    path.write_text(path.read_text().replace(text, text.strip("'\"").replace("!!str ", "")), encoding="utf-8")
    assert validate(load(path))[0] is not None


@pytest.mark.parametrize("key,text,expected", [
    ("batch_size", "1_6", "must be an integer (got '1_6'); YAML reads 1_6 as text, not a number: write 16"),
    ("learning_rate", "1_0e-4", "must be a number (got '1_0e-4'); YAML reads 1_0e-4 as text, not a number: "
                                "write 0.001"),
    ("epochs", "\u0662", "must be a number (got '\u0662'); YAML reads \u0662 as text, not a number: write 2"),
])
def test_unquoted_text_python_reads_as_a_number_is_not_said_to_be_quoted(tmp_path, key, text, expected):
    """`1_000` is text in YAML 1.2 though Python's float() reads it: the hint says what to write,
    never that the value was quoted when it was not (it used to say "write 1_6 without quotes")."""
    path = tmp_path / "spec.yaml"
    path.write_text("ftspec: 1\nname: q\nmodel: {kind: tiny}\ndata: {train: t.jsonl}\n"
                    "format: {kind: prompt_completion, prompt: p, completion: c}\n"
                    f"training:\n  {key}: {text}\n", encoding="utf-8")
    spec, issues = validate(load(path))
    assert spec is None
    assert [(i.key, i.pos.line, i.format().split(": ", 2)[2]) for i in issues] == [(f"training.{key}", 7, expected)]
