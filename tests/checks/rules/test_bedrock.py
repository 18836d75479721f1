"""ftspec.checks.rules.bedrock: the bedrock backend and a Bedrock model go together, and
a local run takes no Bedrock setting."""

from __future__ import annotations

from checks.conftest import BASE, at


def test_the_bedrock_backend_needs_a_bedrock_model(issues):
    found = [i for i in issues(BASE.replace("{device: cpu}", "{backend: bedrock}")) if i.key == "compute.backend"]
    said = [(i.message, i.hint) for i in found]
    assert ("the bedrock backend customises a Bedrock base model, not a local one",
            "set model: {kind: bedrock, id: MODEL_ID}, or compute.backend: local") in said
    assert not at(issues(BASE), "compute.backend")


def test_a_learning_rate_multiplier_is_for_bedrock_models(issues):
    assert at(issues(BASE + "training: {learning_rate_multiplier: 2.0}\n"), "training.learning_rate_multiplier") == [
        "is for Amazon Bedrock models that take a learning-rate multiplier; a local run takes training.learning_rate"]
