"""ftspec.checks.rules.data: renamed columns, data.filter, splits, the data's size,
early stopping's validation data, held-out data that is the training data."""

from __future__ import annotations

from checks.conftest import BASE, at, tickets


def test_a_renamed_column_that_is_not_in_the_data(issues):
    found = issues(BASE.replace("  train: train.jsonl\n", "  train: train.jsonl\n  rename: {ticket: text}\n"))
    assert at(found, "data.rename.ticket") == ["no column 'ticket' in train.jsonl"]
    assert [i.pos.line for i in found if i.key == "data.rename.ticket"] == [6]
    assert not at(issues(BASE), "data.rename.ticket")


def test_a_filter_that_drops_every_sampled_row(issues):
    spec = BASE.replace("  train: train.jsonl\n", "  train: train.jsonl\n  filter: \"{{ queue == 'none' }}\"\n")
    found = issues(spec)
    assert at(found, "data.filter") == ["drops each of the first 200 rows of train.jsonl; its rows are counted only "
                                        "when the data is prepared"]
    kept = issues(BASE.replace("  train: train.jsonl\n", "  train: train.jsonl\n  filter: \"{{ queue != 'none' }}\"\n"))
    assert not at(kept, "data.filter")


def test_a_held_out_fraction_beside_a_file_of_that_split(issues):
    spec = BASE.replace("  train: train.jsonl\n", "  train: train.jsonl\n  validation: val.jsonl\n")
    found = issues(spec, {"val.jsonl": tickets(50)})
    assert at(found, "data.split.validation") == [
        "data.validation is given, so no validation rows are held out of train; remove one of them"]
    assert not at(issues(spec.replace("validation: 0.1, ", ""), {"val.jsonl": tickets(50)}), "data.split.validation")


def test_few_training_rows_are_a_warning(issues):
    found = issues(BASE, {"train.jsonl": tickets(100)})
    assert at(found, "data.train") == ["only 80 training rows; fine-tuning usually needs 500 or more to pay off"]
    assert not at(issues(BASE), "data.train")


def test_early_stopping_needs_validation_data(issues):
    spec = BASE.replace("{validation: 0.1, test: 0.1}", "{test: 0.1}") + "training: {early_stopping: {patience: 2}}\n"
    assert at(issues(spec), "training.early_stopping") == [
        "needs validation data (data.validation or data.split.validation)"]
    assert not at(issues(BASE + "training: {early_stopping: {patience: 2}}\n"), "training.early_stopping")


def test_validation_read_from_the_training_file(issues):
    spec = BASE.replace("  train: train.jsonl\n", "  train: train.jsonl\n  validation: train.jsonl\n").replace(
        "validation: 0.1, ", "")
    found = [i for i in issues(spec) if i.key == "data.validation"]
    assert [(i.message, i.hint, i.is_error) for i in found] == [(
        "reads the same data as data.train: the model is validated on rows it trained on",
        "remove data.validation and add validation: 0.1 to data.split", False)]


def test_a_limit_on_a_split_the_spec_does_not_have(issues):
    """`data.limit: {test: 5}` without a test split cuts nothing: an error at its key."""
    spec = BASE.replace("  split: {validation: 0.1, test: 0.1}\n",
                        "  split: {validation: 0.1}\n  limit: {train: 50, test: 5}\n")
    found = issues(spec)
    assert at(found, "data.limit.test") == ["there is no test split to limit"]
    assert [i.pos.line for i in found if i.key == "data.limit.test"] == [7]
    assert not at(found, "data.limit.train")
    assert not at(issues(spec.replace("{validation: 0.1}", "{validation: 0.1, test: 0.1}")), "data.limit.test")
