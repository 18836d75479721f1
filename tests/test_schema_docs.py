"""The JSON Schema and the spec reference page (docs/reference.md) are generated from the
field descriptions, and the copies in the repository are kept in sync."""

import json
import re

import pytest
import yaml
from conftest import ROOT, SPECS

from ftspec.spec import schema as S
from ftspec.spec.reference import REGENERATE, SECTIONS, markdown_reference

jsonschema = pytest.importorskip("jsonschema")

SCHEMA_FILE = ROOT / "schema" / "ftspec-v1.schema.json"


def test_every_published_schema_is_up_to_date_and_valid(update_golden):
    """schema/ holds the spec's, the plan's, the manifest's and the report metrics' schemas."""
    from ftspec.plan.artifacts import schemas

    for name, value in schemas().items():
        jsonschema.Draft202012Validator.check_schema(value)
        path = ROOT / "schema" / name
        expected = json.dumps(value, indent=2, sort_keys=True) + "\n"
        if update_golden:
            path.write_text(expected, encoding="utf-8")
        assert path.read_text(encoding="utf-8") == expected, (
            f"{name}: run ftspec schema --all schema (or pytest --update-golden)")


def test_golden_plans_satisfy_the_plan_schema():
    schema = json.loads((ROOT / "schema" / "plan.schema.json").read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(schema)
    goldens = sorted((ROOT / "tests" / "golden").glob("*.plan.json"))
    assert goldens
    for path in goldens:
        errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(json.loads(path.read_text()))]
        assert errors == [], path.name
    broken = json.loads(goldens[0].read_text())
    broken["training"]["learning_rate"] = "fast"
    assert any("learning_rate" in str(list(e.path)) for e in validator.iter_errors(broken))


def test_schema_is_valid_json_schema():
    jsonschema.Draft202012Validator.check_schema(S.json_schema())


def test_schema_file_is_up_to_date(update_golden):
    expected = json.dumps(S.json_schema(), indent=2, sort_keys=True) + "\n"
    if update_golden:
        SCHEMA_FILE.write_text(expected, encoding="utf-8")
    assert SCHEMA_FILE.read_text(encoding="utf-8") == expected, (
        "run: pytest --update-golden (or ftspec schema -o schema/ftspec-v1.schema.json)")


@pytest.mark.parametrize("spec", [p for p in SPECS if "extends:" not in p.read_text()], ids=lambda p: p.name)
def test_shipped_specs_satisfy_the_json_schema(spec):
    validator = jsonschema.Draft202012Validator(S.json_schema())
    errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(yaml.safe_load(spec.read_text()))]
    assert errors == []


def test_json_schema_rejects_an_unknown_key():
    validator = jsonschema.Draft202012Validator(S.json_schema())
    doc = yaml.safe_load((ROOT / "specs/quickstart.yaml").read_text())
    doc["data"]["trian"] = "x.jsonl"
    assert any("trian" in e.message for e in validator.iter_errors(doc))


def _models():
    seen, todo = set(), [S.Spec]
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        for field in model.model_fields.values():
            for t in re.findall(r"ftspec\.spec\.schema\.(\w+)", repr(field.annotation)):
                todo.append(getattr(S, t))
    return seen


def test_every_field_has_a_description():
    missing = [f"{m.__name__}.{n}" for m in _models() for n, f in m.model_fields.items() if not f.description]
    assert missing == []


def test_reference_covers_every_section_model():
    documented = {m for _, m in SECTIONS}
    trivial = {S.ByteTokenizer, S.FullAdapter, S.NoTracking, S.TensorboardTracking, S.FileTemplate, S.BuiltinTemplate}
    assert _models() - documented - trivial == set()


def test_the_reference_page_is_generated_from_the_schema(update_golden):
    page = ROOT / "docs" / "reference.md"
    if update_golden:
        page.write_text(markdown_reference(), encoding="utf-8")
    assert page.read_text(encoding="utf-8") == markdown_reference(), f"run: {REGENERATE} (or pytest --update-golden)"
