"""The SmolLM2 specs (specs/smollm2-*.yaml): they open with their command, name the real
model by its GGUF file, and validate with --strict in every profile where ../shared is
(skipped, with the reason, where it is not: a user's machine has no ../shared)."""

from __future__ import annotations

import pytest
import yaml
from conftest import ROOT, SHARED, SHARED_SPECS

NAMES = ["smollm2-tickets.yaml", "smollm2-sst2.yaml"]
MODEL = SHARED / "models" / "smollm2-135m-instruct" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _doc(name):
    return yaml.safe_load((ROOT / "specs" / "real" / name).read_text(encoding="utf-8"))


def _variants():
    for name in NAMES:
        yield name, ()
        for profile in _doc(name).get("profiles") or {}:
            yield name, (profile,)


@pytest.mark.parametrize("name", NAMES)
def test_opens_with_its_command_and_names_the_gguf_model(name):
    text = (ROOT / "specs" / "real" / name).read_text(encoding="utf-8")
    assert text.splitlines()[0] == f"# ftspec run specs/real/{name} --allow-path ../shared --profile smoke"
    assert name in {p.name for p in SHARED_SPECS}
    doc = _doc(name)
    assert doc["model"] == {"base": "../../../shared/models/smollm2-135m-instruct", "gguf_file": MODEL.name}
    smoke = doc["profiles"]["smoke"]
    assert smoke["eval"]["gates"] == {} and smoke["training"]["max_steps"] <= 12
    assert {"few-shot", "generate"} <= set(doc["profiles"])  # base few-shot, and the generate mode


@pytest.mark.parametrize("name,profiles", list(_variants()),
                         ids=lambda v: v if isinstance(v, str) else "+".join(v) or "-")
def test_validates_strict_on_the_real_model(name, profiles, in_root):
    if not MODEL.is_file():
        pytest.skip(f"the real model is not here ({MODEL}); the SmolLM2 specs validate only where ../shared is")
    if "sst2" in name and not (SHARED / "datasets" / "sst2" / "train.tsv").is_file():
        pytest.skip("../shared/datasets/sst2 is not here")
    from ftspec.plan.compile import compile_spec

    plan, warnings = compile_spec(f"specs/real/{name}", profiles, strict=True, allow=[SHARED])
    assert warnings == []
    assert plan.model.gguf_file == MODEL.name and plan.model.gguf_sha256 == \
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"  # as ../shared/models/…/README.md says
    assert plan.eval.mode == ("generate" if "generate" in profiles else "choices")
    assert plan.eval.few_shot == (5 if "few-shot" in profiles else 0)
