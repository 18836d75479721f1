"""Every shipped spec validates, opens with the command that runs it, and compiles
to its reviewed golden plan (regenerate with `pytest --update-golden`)."""

import json

import pytest
from conftest import ROOT, SPECS

from ftspec.plan.compile import check_spec, compile_spec

# (spec file, profiles) pairs with a golden plan each.
GOLDEN = [(p.name, ()) for p in SPECS] + [("routing-prod.yaml", ("dev",)), ("quickstart.yaml", ("smoke",))]


def golden_path(name, profiles):
    stem = name[: -len(".yaml")] + "".join(f"+{p}" for p in profiles)
    return ROOT / "tests" / "golden" / f"{stem}.plan.json"


def test_there_are_shipped_specs():
    names = {p.name for p in SPECS}
    assert {"quickstart.yaml", "routing-lora.yaml", "chat-sft.yaml", "dpo-preference.yaml",
            "routing-prod.yaml"} <= names


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.name)
def test_shipped_spec_validates(spec, in_root):
    checked = check_spec(spec.relative_to(ROOT))
    assert all(not w.is_error for w in checked.warnings)


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.name)
def test_shipped_spec_opens_with_its_command(spec):
    first = spec.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith(f"# ftspec run specs/{spec.name}"), first


@pytest.mark.parametrize("name,profiles", GOLDEN, ids=lambda v: v if isinstance(v, str) else "+".join(v) or "-")
def test_golden_plan(name, profiles, in_root, update_golden):
    plan, _ = compile_spec(f"specs/{name}", profiles)
    path = golden_path(name, profiles)
    text = plan.to_json()
    if update_golden:
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"no golden plan {path.name}; run pytest --update-golden and review it"
    expected = path.read_text(encoding="utf-8")
    assert json.loads(text) == json.loads(expected), f"plan of {name} changed; review, then pytest --update-golden"
    assert text == expected


def test_profile_changes_the_effective_plan(in_root):
    base, _ = compile_spec("specs/quickstart.yaml")
    smoke, _ = compile_spec("specs/quickstart.yaml", ["smoke"])
    assert base.data.rows.train == 1200
    assert smoke.data.rows.model_dump() == {"train": 64, "validation": 64, "test": 64}
    assert smoke.training.total_steps == 5
    assert smoke.id != base.id


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: p.name)
def test_shipped_spec_passes_strict_or_says_why_not(spec, in_root):
    """A shipped spec is an example to copy: with --strict it has no warnings, in every
    profile, or its header says that it warns and why (only an unpinned hub revision,
    which needs the hub to pin, is allowed)."""
    import yaml

    from ftspec.core.errors import SpecError

    header = "".join(line for line in spec.read_text().splitlines(keepends=True) if line.startswith("#"))
    for profiles in [(), *[(name,) for name in (yaml.safe_load(spec.read_text()).get("profiles") or {})]]:
        try:
            check_spec(spec.relative_to(ROOT), profiles, strict=True)
        except SpecError as exc:
            assert "`ftspec validate --strict` warns here" in header, f"{spec.name} {profiles}: {exc.issues}"
            unexplained = [i for i in exc.issues
                           if not ("revision" in i.message and "revision is not\n# pinned" in header)]
            assert unexplained == [], f"{spec.name} {profiles}: warnings its header does not explain"
