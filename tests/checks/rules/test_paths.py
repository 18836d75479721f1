"""ftspec.checks.rules.paths: the output directory stays in the repository, away from
the inputs, the step store and what ftspec did not write."""

from __future__ import annotations

import pytest

from checks.conftest import BASE, at, tickets
from ftspec.catalog import steps


@pytest.mark.parametrize("folder", sorted({s.folder for s in steps.STEPS}))
def test_every_folder_a_step_writes_is_protected(issues, tmp_path, folder):
    """The folders the rule protects are those the steps write, each of them."""
    (tmp_path / "runs" / "demo" / folder).mkdir(parents=True)
    found = at(issues(BASE + "output: {dir: runs/demo}\n"), "output.dir")
    assert len(found) == 1 and f"holds '{folder}', which a run would replace" in found[0]


def test_an_output_directory_outside_the_repository(issues):
    found = at(issues(BASE + "output: {dir: ../elsewhere}\n"), "output.dir")
    assert len(found) == 1 and "outside" in found[0]
    assert not at(issues(BASE + "output: {dir: runs/demo}\n"), "output.dir")


def test_the_step_store_is_not_an_output_directory(issues):
    assert at(issues(BASE + "output: {dir: runs/.ftspec-store}\n"), "output.dir") == [
        "'runs/.ftspec-store' is the step store (.ftspec-store) or inside it, where ftspec keeps the steps of every "
        "run directory beside it; use a folder of its own, e.g. runs/{name}"]


@pytest.mark.parametrize("out", ["runs/s", "runs/s/train", "runs/s/new"])
def test_a_folder_linked_to_the_step_store_is_the_step_store(issues, tmp_path, out):
    """A pull request can commit a link to the store: where a run writes is judged with links followed."""
    (tmp_path / "runs" / ".ftspec-store" / "train").mkdir(parents=True)
    (tmp_path / "runs" / "s").symlink_to(".ftspec-store", target_is_directory=True)
    assert at(issues(BASE + f"output: {{dir: {out}}}\n"), "output.dir") == [
        f"'{out}' is the step store (.ftspec-store) or inside it, where ftspec keeps the steps of every "
        "run directory beside it; use a folder of its own, e.g. runs/{name}"]


def test_a_step_folder_ftspec_did_not_write(issues, tmp_path):
    (tmp_path / "runs" / "demo" / "model").mkdir(parents=True)
    (tmp_path / "runs" / "demo" / "model" / "weights.bin").write_text("mine")
    assert at(issues(BASE + "output: {dir: runs/demo}\n"), "output.dir") == [
        "'runs/demo' holds 'model', which a run would replace, and ftspec did not write it; use a folder of its own, "
        "e.g. runs/{name}"]
    (tmp_path / "runs" / "demo" / "model" / ".ftspec-step.json").write_text("{}")
    assert not at(issues(BASE + "output: {dir: runs/demo}\n"), "output.dir")


@pytest.mark.parametrize("where, said", [
    ("runs/demo@smoke/train.jsonl", "the run directory 'demo@smoke' of one of its variants or stages"),
    ("runs/demo.stage-sft/train.jsonl", "the run directory 'demo.stage-sft' of one of its variants or stages"),
    ("runs/demo@smoke.stage-sft/train.jsonl", "the run directory 'demo@smoke.stage-sft'"),
    ("runs/.ftspec-store/train.jsonl", "its step store '.ftspec-store'"),
])
def test_an_input_in_a_variant_or_stage_run_directory_or_in_the_store(issues, where, said):
    """A run of this spec with a profile, or of a stage, writes beside output.dir, as the store
    does: an input there is an error at output.dir, at its line."""
    spec = BASE.replace("train: train.jsonl", f"train: {where}") + "output: {dir: runs/demo}\n"
    found = [i for i in issues(spec, {where: tickets()}) if i.key == "output.dir"]
    assert len(found) == 1 and said in found[0].message and f"holds '{where}', an input" in found[0].message
    assert found[0].pos.line == spec.splitlines().index("output: {dir: runs/demo}") + 1
    assert not at(issues(BASE + "output: {dir: runs/demo}\n", {where: tickets()}), "output.dir"), \
        "a file there that the spec does not read is no concern of its"
