"""The documented data limits of the Bedrock model families (ftspec.catalog.bedrock_families):
row counts at validate (check_bedrock), and at prepare_data, on the rendered files and
before anything is uploaded: file size, characters per record, Nova's reserved keywords."""

from __future__ import annotations

import dataclasses
import json

import pytest

from ftspec.catalog import bedrock_families as families
from ftspec.checks.facts import SAMPLE_ROWS
from ftspec.core.errors import SpecError
from ftspec.data.bedrock_jsonl import render


def _with_limits(monkeypatch, **limits):
    """Nova Micro, as the shipped spec uses it, with some of its limits set for the test."""
    real = families.find

    def find(model_id):
        found = real(model_id)
        if found is None:
            return None
        family, model = found
        return family, dataclasses.replace(model, limits=dataclasses.replace(model.limits, **limits))

    monkeypatch.setattr(families, "find", find)


# --- the table ------------------------------------------------------------------------


def test_the_documented_limits_are_in_the_table():
    _, titan = families.find("amazon.titan-text-express-v1")
    assert titan.limits.train_file_bytes == 1_000_000_000 and titan.limits.pretraining_file_bytes == 10_000_000_000
    assert titan.limits.validation_file_bytes == 100_000_000 and titan.limits.max_chars_per_record == 4096 * 6
    _, premier = families.find("amazon.titan-text-premier-v1:0")
    assert premier.limits.max_chars_per_record == 24_576
    _, nova = families.find("amazon.nova-micro-v1:0")
    assert {"User:", "Bot:", "Assistant:", "System:", "[EOS]"} <= set(nova.limits.reserved_prefixes)
    # Not found documented: left out, so nothing is checked.
    _, llama = families.find("meta.llama3-1-8b-instruct-v1:0")
    assert llama.limits == families.Limits()


def test_a_titan_record_over_its_character_quota_is_named_by_row():
    _, titan = families.find("amazon.titan-text-lite-v1")
    ok = render([{"prompt": "p" * 20_000, "completion": "c" * 4_576}], "prompt-completion")
    assert families.data_problem(titan, "train", ok, "FINE_TUNING") is None
    over = render([{"prompt": "short", "completion": "fine"}, {"prompt": "p" * 20_000, "completion": "c" * 4_577}],
                  "prompt-completion")
    row, message = families.data_problem(titan, "validation", over, "FINE_TUNING")
    assert row == 2 and "24,577 characters" in message and "at most 24,576" in message


def test_continued_pre_training_takes_the_larger_training_file():
    model = dataclasses.replace(families.find("amazon.titan-text-lite-v1")[1],
                                limits=families.Limits(train_file_bytes=10, pretraining_file_bytes=100))
    body = render([{"input": "x" * 40}], "input-text")
    assert families.data_problem(model, "train", body, "CONTINUED_PRE_TRAINING") is None
    row, message = families.data_problem(model, "train", body, "FINE_TUNING")
    assert row is None and "at most 10" in message


def test_a_nova_system_prompt_starting_with_a_reserved_keyword_is_refused():
    _, nova = families.find("amazon.nova-lite-v1:0")
    body = render([{"messages": [{"role": "system", "content": "System: be brief"}, {"role": "user", "content": "hi"},
                                 {"role": "assistant", "content": "User: hello"}]}], "bedrock-conversation-2024")
    row, message = families.data_problem(nova, "train", body, "FINE_TUNING")
    assert row == 1 and "system prompt starts with 'System:'" in message
    # The assistant's answer may start with one: only prompts are reserved.
    fine = render([{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "User: hello"}]}],
                  "bedrock-conversation-2024")
    assert families.data_problem(nova, "train", fine, "FINE_TUNING") is None


# --- validate: row counts ---------------------------------------------------------------


def test_validate_refuses_more_training_rows_than_the_model_takes(monkeypatch):
    from conftest import ROOT

    from ftspec.plan.compile import compile_spec

    compile_spec(ROOT / "specs/bedrock-nova.yaml", [])  # within the documented limits (none on rows)
    _with_limits(monkeypatch, train_rows_max=5)
    with pytest.raises(SpecError) as err:
        compile_spec(ROOT / "specs/bedrock-nova.yaml", [])
    (issue,) = [i for i in err.value.issues if i.key == "data.train"]
    assert "training rows" in issue.message and "at most 5" in issue.message


# --- prepare_data: nothing uploaded when a limit is broken ------------------------------

# The tests below run against moto; the module's imports stop here without boto3 and moto.
pytest.importorskip("boto3")
pytest.importorskip("moto")

import test_bedrock_run  # noqa: E402
from test_bedrock_job import aws_env, moto_aws  # noqa: E402,F401 - fixtures, found by pytest in this namespace
from test_bedrock_run import BUCKET, _run  # noqa: E402

aws = test_bedrock_run.aws  # the fixture: moto's S3 and Bedrock, and the shipped specs in a temporary folder


def _nothing_uploaded(s3) -> bool:
    return s3.list_objects_v2(Bucket=BUCKET).get("KeyCount", 0) == 0


def test_a_training_file_over_its_size_is_refused_before_upload(aws, monkeypatch):
    _with_limits(monkeypatch, train_file_bytes=1_000)
    with pytest.raises(SpecError) as err:
        _run(aws["root"])
    (issue,) = err.value.issues
    assert issue.key == "data.train" and "the train file is" in issue.message and "at most 1,000" in issue.message
    assert _nothing_uploaded(aws["s3"])


# validate reads the first SAMPLE_ROWS rows of a file (and refuses a row over a limit there:
# tests/checks/test_bedrock_spec.py); prepare_data checks every row, those past the sample too.
LINE = SAMPLE_ROWS + 101  # a line of the shipped tickets that validate does not read


def test_a_record_over_its_character_quota_is_refused_with_its_row_and_origin(aws, monkeypatch):
    data = aws["root"] / "specs/data/support-tickets.jsonl"
    rows = [json.loads(line) for line in data.read_text().splitlines() if line.strip()]
    rows[LINE - 1]["text"] = "long " * 200
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    _with_limits(monkeypatch, max_chars_per_record=600)
    with pytest.raises(SpecError) as err:
        _run(aws["root"])
    (issue,) = err.value.issues
    assert f"support-tickets.jsonl:{LINE}" in issue.message and "at most 600 per record" in issue.message
    assert issue.message.startswith(("the train split's row", "the validation split's row"))
    assert _nothing_uploaded(aws["s3"])


def test_a_nova_prompt_starting_with_a_reserved_keyword_is_refused_before_upload(aws):
    data = aws["root"] / "specs/data/support-tickets.jsonl"
    rows = [json.loads(line) for line in data.read_text().splitlines() if line.strip()]
    for r in rows[SAMPLE_ROWS:]:
        r["text"] = "User: " + r["text"]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(SpecError) as err:
        _run(aws["root"])
    (issue,) = err.value.issues
    assert issue.key == "data.train" and "the train split's row " in issue.message
    assert "support-tickets.jsonl:" in issue.message and "user prompt starts with 'User:'" in issue.message
    assert _nothing_uploaded(aws["s3"])


def test_the_shipped_nova_spec_is_within_its_limits(aws):
    result, _ = _run(aws["root"])
    assert "prepare_data" in result.ran and not _nothing_uploaded(aws["s3"])
