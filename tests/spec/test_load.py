"""The loader keeps the position of every key and value, and layers extends,
profiles and --set in that order."""

import json

import pytest

from ftspec.core.errors import SpecError
from ftspec.spec.load import load, parse_set, parse_yaml


def _write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_positions_of_keys_and_values():
    value, where, _, issues = parse_yaml("a:\n  b: 1\n  c: [x, y]\n", "f.yaml")
    assert issues == []
    assert value == {"a": {"b": 1, "c": ["x", "y"]}}
    assert (where[("a", "b")].pos.line, where[("a", "b")].pos.col) == (2, 6)
    assert (where[("a", "b")].key_pos.line, where[("a", "b")].key_pos.col) == (2, 3)
    assert (where[("a", "c", 1)].pos.line, where[("a", "c", 1)].pos.col) == (3, 10)


def test_keys_stay_strings_and_dates_stay_text():
    value, _, _, _ = parse_yaml("on: yes\n1: one\nwhen: 2024-01-02\n", "f.yaml")
    assert value == {"on": "yes", "1": "one", "when": "2024-01-02"}


def test_merge_keys_are_supported():
    value, _, _, issues = parse_yaml("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  y: 3\n", "f.yaml")
    assert issues == []
    assert value["other"] == {"x": 1, "y": 3}


def test_extends_merges_mappings_and_replaces_the_rest(tmp_path):
    _write(tmp_path, "base.yaml", "name: base\ntraining:\n  epochs: 2\n  seed: 1\neval:\n  metrics: [a, b]\n")
    child = _write(tmp_path, "child.yaml",
                   "extends: base.yaml\nname: child\ntraining:\n  seed: 7\neval:\n  metrics: [c]\n")
    loaded = load(child)
    assert loaded.data == {"name": "child", "training": {"epochs": 2, "seed": 7}, "eval": {"metrics": ["c"]}}
    # Values keep the file and line they came from.
    assert loaded.where[("training", "epochs")].pos.file.endswith("base.yaml")
    assert loaded.where[("training", "seed")].pos.file.endswith("child.yaml")
    assert [p.name for p in loaded.files] == ["base.yaml", "child.yaml"]


def test_extends_chain_of_three(tmp_path):
    _write(tmp_path, "a.yaml", "x: 1\ny: 1\nz: 1\n")
    _write(tmp_path, "b.yaml", "extends: a.yaml\ny: 2\n")
    c = _write(tmp_path, "c.yaml", "extends: b.yaml\nz: 3\n")
    assert load(c).data == {"x": 1, "y": 2, "z": 3}


def test_profiles_apply_in_order_then_sets(tmp_path):
    spec = _write(tmp_path, "s.yaml",
                  "training: {epochs: 1, seed: 1}\nprofiles:\n  a: {training: {epochs: 2, seed: 2}}\n"
                  "  b: {training: {epochs: 3}}\n")
    loaded = load(spec, ["a", "b"], ["training.seed=9", "eval.metrics=[x, y]"])
    assert loaded.data == {"training": {"epochs": 3, "seed": 9}, "eval": {"metrics": ["x", "y"]}}
    assert loaded.where[("training", "epochs")].key == "profiles.b.training.epochs"
    assert loaded.profiles == ["a", "b"]
    assert loaded.unused_profiles == {}


def test_set_values_are_yaml():
    assert parse_set("a.b=5")[1].data == {"a": {"b": 5}}
    assert parse_set("a=0.5")[1].data == {"a": 0.5}
    assert parse_set("a=true")[1].data == {"a": True}
    assert parse_set("a={x: 1}")[1].data == {"a": {"x": 1}}
    assert parse_set("a=hello world")[1].data == {"a": "hello world"}
    assert parse_set("a=x=y")[1].data == {"a": "x=y"}


@pytest.mark.parametrize("bad", ["noequals", "=5", "a..b=1", ".a=1", "a b=1", "extends=x.yaml", "profiles.x=1"])
def test_bad_set_is_an_error(bad):
    with pytest.raises(SpecError):
        parse_set(bad)


def test_set_value_tags_are_refused():
    with pytest.raises(SpecError, match="not allowed"):
        parse_set("a=!!python/name:os.system")


def test_extends_names_what_a_base_that_is_not_a_file_is(tmp_path):
    import os

    (tmp_path / "folder").mkdir()
    os.mkfifo(tmp_path / "fifo")
    for ref, what in (("folder", "is a directory"), ("fifo", "is not a regular file"), ("missing.yaml", "not found")):
        spec = tmp_path / "child.yaml"
        spec.write_text(f"ftspec: 1\nextends: {ref}\nname: child\n")
        with pytest.raises(SpecError) as err:
            load(spec)
        [issue] = err.value.issues
        assert issue.key == "extends" and f"base spec '{ref}' {what}" in issue.message and issue.pos.line == 2


# --------------------------------------------------------------------------- an empty mapping replaces (issue 12)

_GATED = """\
ftspec: 1
name: gated
model: {kind: tiny}
data:
  train: train.jsonl
  split: {validation: 0.2, test: 0.2}
format: {kind: prompt_completion, prompt: "{{ text }}", completion: " {{ queue }}"}
eval:
  metrics: [accuracy]
  gates: {accuracy: ">= 0.8"}
profiles:
  smoke:
    eval: {gates: {}}
"""


def _gated(tmp_path):
    import json

    rows = "".join(json.dumps({"text": f"t{i}", "queue": "ab"[i % 2]}) + "\n" for i in range(20))
    _write(tmp_path, "train.jsonl", rows)
    return _write(tmp_path, "spec.yaml", _GATED)


def test_an_empty_mapping_in_a_profile_replaces_the_base_mapping(tmp_path):
    loaded = load(_gated(tmp_path), profiles=["smoke"])
    assert loaded.data["eval"]["gates"] == {}
    assert loaded.data["eval"]["metrics"] == ["accuracy"]  # the rest of eval still merges
    origin = loaded.where[("eval", "gates")]
    assert (origin.layer, origin.pos.line) == ("profile:smoke", 13)
    assert ("eval", "gates", "accuracy") not in loaded.where


def test_an_empty_mapping_in_an_extending_spec_replaces_the_base_mapping(tmp_path):
    _gated(tmp_path)
    child = _write(tmp_path, "child.yaml", "extends: spec.yaml\nname: child\neval:\n  gates: {}\n")
    loaded = load(child)
    assert loaded.data["eval"] == {"metrics": ["accuracy"], "gates": {}}
    assert (loaded.where[("eval", "gates")].layer, loaded.where[("eval", "gates")].pos.line) == ("spec", 4)


def test_an_empty_mapping_from_set_replaces_the_base_mapping(tmp_path):
    loaded = load(_gated(tmp_path), sets=["eval.gates={}"])
    assert loaded.data["eval"]["gates"] == {}
    assert loaded.where[("eval", "gates")].layer == "set"


def test_a_mapping_with_keys_still_merges(tmp_path):
    loaded = load(_gated(tmp_path), sets=["eval.gates={f1: '>= 0.1'}"])
    assert loaded.data["eval"]["gates"] == {"accuracy": ">= 0.8", "f1": ">= 0.1"}


def test_explain_and_diff_say_where_the_empty_gates_came_from(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from ftspec.cli import main

    _gated(tmp_path)
    _write(tmp_path, "child.yaml", "extends: spec.yaml\nname: gated\neval:\n  gates: {}\n")
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    for args, where in ((["-p", "smoke"], "profile smoke  spec.yaml:13"),
                        (["--set", "eval.gates={}"], "--set eval.gates={}")):
        out = runner.invoke(main, ["plan", "spec.yaml", *args, "--explain"]).output
        gates = [line for line in out.splitlines() if line.startswith("eval.gates")]
        assert len(gates) == 1 and "{}" in gates[0] and gates[0].rstrip().endswith(where), out
    result = runner.invoke(main, ["diff", "spec.yaml", "child.yaml"])
    removed = [line for line in result.output.splitlines() if "gate accuracy" in line]  # a gate by its name
    assert removed and removed[0].lstrip().startswith("- gate accuracy") and "from spec child.yaml" in removed[0], \
        result.output


@pytest.mark.parametrize("name", ["a/b", "../up", ".hidden", "with space", "a+b", "x" * 65, "nul\x00"])
def test_a_profile_name_that_cannot_be_a_file_name_is_refused_at_its_line(tmp_path, name):
    """A profile's name becomes part of file and folder names (the lock file, the run
    directory): one pattern, refused where the profile is defined, whether chosen or not."""
    path = _write(tmp_path, "s.yaml", "name: s\nprofiles:\n  ok-1.2_x: {training: {epochs: 2}}\n"
                                      f"  {json.dumps(name)}: {{training: {{epochs: 3}}}}\n")
    with pytest.raises(SpecError) as info:
        load(path)
    [issue] = info.value.issues
    assert (issue.pos.line, issue.pos.col) == (4, 3)
    assert "cannot be a profile name" in issue.message and "letters, digits, '.', '_' and '-'" in issue.hint
    assert load(_write(tmp_path, "t.yaml", "name: t\nprofiles:\n  ok-1.2_x: {training: {epochs: 2}}\n"),
                ["ok-1.2_x"]).data["training"] == {"epochs": 2}
