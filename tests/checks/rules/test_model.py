"""ftspec.checks.rules.model: a hub model pinned to a revision, rows within the model's positions."""

from __future__ import annotations

from checks.conftest import BASE, at

HUB = BASE.replace("model: {kind: tiny}", "model: {base: some-org/some-model}")


def test_a_hub_model_without_a_revision_is_a_warning(issues):
    found = [i for i in issues(HUB) if i.key == "model.base"]
    assert [(i.message, i.is_error, i.pos.line) for i in found] == [
        ("hub model 'some-org/some-model' has no pinned revision; set model.revision to a commit hash", False, 3)]
    pinned = HUB.replace("some-org/some-model}", "some-org/some-model, revision: " + "a" * 40 + "}")
    assert not at(issues(pinned), "model.base")


def test_max_length_beyond_the_models_positions(issues):
    spec = BASE.replace("kind: tiny}", "kind: tiny, max_position_embeddings: 64}")
    assert at(issues(spec + "training: {max_length: 128}\n"), "training.max_length") == [
        "longer than the model's 64 positions (got 128)"]
    assert not at(issues(spec + "training: {max_length: 64}\n"), "training.max_length")
