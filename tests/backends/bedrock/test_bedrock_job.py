"""The Bedrock backend's runtime pieces: rendering (golden files), S3 upload, the
customization job (create or attach, poll, detach, stop), its losses, retries, and that
credentials never reach a file.

No test reaches AWS. What runs against what:
  S3 head_object / put_object / list_objects_v2 / get_object   moto (mock_aws, in-process)
  bedrock create / list / get / stop model customization job  moto; moto's get and stop look
      jobs up by name only, so the ``moto_aws`` fixture resolves ARNs in its backend, and
      failed states are set on moto's job object (moto keeps a job InProgress forever)
  get_model_customization_job's statusDetails sequence         botocore Stubber (moto has no statusDetails)
  throttling retried                                           moto, with a ThrottlingException answered
      at botocore's before-send (where botocore's retry handler sees it: Stubber answers
      before the retry loop, so it cannot show a retry)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ftspec.core.errors import RunFailed
from ftspec.data import bedrock_jsonl as R

GOLDEN = Path(__file__).resolve().parents[2] / "golden" / "bedrock"
REGION = "us-east-1"
BUCKET = "ftspec-test-bucket"
# Fake credentials, unique enough to be searched for in every file a test writes.
FAKE_KEY_ID = "AKIAFTSPECFAKE7QX3ZD"
FAKE_SECRET = "ftspecFakeSecret/9kQ2vN+wL8rT5yU1pZ4mC7xB0aE6hJ3sD"
FAKE_TOKEN = "ftspecFakeSessionToken/Zq81mWx0+Lr5Tb3YnVc7Ke2Ps9HuJ4dG"
FAKES = (FAKE_KEY_ID, FAKE_SECRET, FAKE_TOKEN)


def plant_fake_keys(monkeypatch) -> None:
    """The fake keys where boto3 reads them, once moto runs: mock_aws puts keys of its own
    in the environment when it starts, which would leave the fakes nowhere to leak from."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", FAKE_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET)
    monkeypatch.setenv("AWS_SESSION_TOKEN", FAKE_TOKEN)

# ------------------------------------------------------------------------- rendering

PROMPT_COMPLETION = [
    {"prompt": "Route this ticket: my card was charged twice", "completion": "billing"},
    {"prompt": "Übersetze: «thé» — naïve café 東京\n(two lines)", "completion": "tea \"quoted\" \\ back\tslash"},
]
CHAT = [
    {"messages": [{"role": "system", "content": "You route support tickets."},
                  {"role": "user", "content": "The app crashes on start"},
                  {"role": "assistant", "content": "bug"}]},
    {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello! What is it about?"},
                  {"role": "user", "content": "a refund ✓"}, {"role": "assistant", "content": "billing"}]},
]
CASES = {  # golden file → (records, data_format)
    "nova-chat.jsonl": (CHAT, "bedrock-conversation-2024"),
    "nova-prompt-completion.jsonl": (PROMPT_COMPLETION, "bedrock-conversation-2024"),
    "titan-llama-prompt-completion.jsonl": (PROMPT_COMPLETION, "prompt-completion"),
    "claude-chat.jsonl": (CHAT, "claude-messages"),
    "claude-prompt-completion.jsonl": (PROMPT_COMPLETION, "claude-messages"),
    "continued-pretraining.jsonl": ([{"text": "Plain text to read. ✓"}] + PROMPT_COMPLETION, "input-text"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_render_matches_golden(name, update_golden):
    records, data_format = CASES[name]
    body = R.render(records, data_format)
    path = GOLDEN / name
    if update_golden:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
    assert path.exists(), f"no golden file {path.name}; run pytest --update-golden and review it"
    assert body == path.read_bytes(), f"{data_format} rendering changed; review, then pytest --update-golden"
    assert body == R.render(json.loads(json.dumps(records)), data_format)  # the same bytes every time
    lines = body.decode("utf-8").split("\n")
    assert lines[-1] == "" and len(lines) == len(records) + 1  # one line a record, each ending in \n
    assert "東京" in body.decode("utf-8") or data_format != "prompt-completion"  # UTF-8, not \u escapes


def test_render_field_order_is_the_documented_one():
    nova = json.loads(R.render(CHAT[:1], "bedrock-conversation-2024"))
    assert list(nova) == ["schemaVersion", "system", "messages"]
    assert nova["system"] == [{"text": "You route support tickets."}]
    assert nova["messages"][0] == {"role": "user", "content": [{"text": "The app crashes on start"}]}
    assert list(json.loads(R.render(PROMPT_COMPLETION[:1], "prompt-completion"))) == ["prompt", "completion"]
    claude = json.loads(R.render(CHAT[:1], "claude-messages"))
    assert list(claude) == ["system", "messages"] and claude["messages"][1] == {"role": "assistant", "content": "bug"}
    assert json.loads(R.render(PROMPT_COMPLETION[:1], "input-text")) == {
        "input": "Route this ticket: my card was charged twicebilling"}


def test_render_system_argument_and_line_separators():
    row = {"prompt": "a\u2028b", "completion": "c\u2029"}
    body = R.render([row], "bedrock-conversation-2024", system="Be brief.")
    assert body.count(b"\n") == 1 and "\u2028".encode() not in body  # no Unicode line break inside a line
    assert len(body.decode("utf-8").splitlines()) == 1
    parsed = json.loads(body)
    assert parsed["system"] == [{"text": "Be brief."}] and parsed["messages"][0]["content"][0]["text"] == "a\u2028b"
    # Distillation's prompts end with the user's turn: accepted only when asked for.
    only_prompt = [{"messages": [{"role": "user", "content": "why is the sky blue"}]}]
    assert json.loads(R.render(only_prompt, "bedrock-conversation-2024",
                               answered=False))["messages"][-1]["role"] == "user"


@pytest.mark.parametrize("records,data_format,message", [
    ([PROMPT_COMPLETION[0], {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}],
     "bedrock-conversation-2024", "row 2: message 2 is 'user' where 'assistant' was expected"),
    ([{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                    {"role": "user", "content": "c"}]}], "claude-messages", "row 1: ends with a user turn"),
    ([{"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "b"}]}],
     "claude-messages", "row 1: message 2 is 'assistant' where 'user' was expected"),
    (CHAT[:1], "prompt-completion", "row 1: prompt-completion lines have no system field"),
    (CHAT[1:], "prompt-completion", "row 1: has 4 turns"),
    ([{"prompt": "p", "completion": "   "}], "prompt-completion", "row 1: completion is empty"),
    ([{"prompt": "p", "completion": 3}], "claude-messages", "row 1: completion is int, not text"),
    ([{"question": "q"}], "bedrock-conversation-2024", "row 1: has neither messages nor prompt and completion"),
    (CHAT[:1], "input-text", "row 1: continued pre-training takes text"),
    ([{"prompt": "\ud800", "completion": "x"}], "prompt-completion", "row 1: holds text that is not valid Unicode"),
    (PROMPT_COMPLETION, "jsonl", "unknown data format 'jsonl'"),
])
def test_render_rejects_what_the_format_cannot_hold(records, data_format, message):
    with pytest.raises(ValueError) as info:
        R.render(records, data_format)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_render_imports_no_aws_library():
    import subprocess
    import sys

    code = ("import sys, ftspec.data.bedrock_jsonl, ftspec.backends.bedrock.aws, ftspec.backends.bedrock.job; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore', 'moto')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------------- AWS fixtures


@pytest.fixture
def aws_env(monkeypatch, tmp_path):
    """Fake credentials in the environment, and no ~/.aws or instance role to fall back on."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ROLE_ARN",
                 "AWS_WEB_IDENTITY_TOKEN_FILE",
                 "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", FAKE_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def moto_aws(aws_env, monkeypatch):
    """moto's S3 and Bedrock in this process. Real Bedrock takes a job's ARN wherever it
    takes its name; moto only its name, so its backend is taught ARNs here."""
    pytest.importorskip("boto3")
    moto = pytest.importorskip("moto")
    from urllib.parse import unquote

    from moto.bedrock.models import BedrockBackend

    def by_name(method):
        def wrapper(self, job_identifier, *args, **kwargs):
            ident = unquote(job_identifier)
            for job in self.model_customization_jobs.values():
                if ident == job.job_arn:
                    ident = job.job_name
            return method(self, ident, *args, **kwargs)
        return wrapper

    for name in ("get_model_customization_job", "stop_model_customization_job"):
        monkeypatch.setattr(BedrockBackend, name, by_name(getattr(BedrockBackend, name)))
    with moto.mock_aws():
        from ftspec.backends.bedrock import aws

        plant_fake_keys(monkeypatch)
        s3 = aws.client("s3", REGION)
        s3.create_bucket(Bucket=BUCKET)
        yield {"s3": s3, "bedrock": aws.client("bedrock", REGION)}


def moto_job(arn: str):
    """moto's record of a job, to move it through states moto never reaches itself."""
    from moto.bedrock.models import bedrock_backends

    backend = bedrock_backends["123456789012"][REGION]
    return next(j for j in backend.model_customization_jobs.values() if j.job_arn == arn)


def request(token: str = "train-key-0123abcd", name: str = "ftspec-quickstart-0123abcd") -> dict:
    return {"jobName": name, "customModelName": name, "roleArn": "arn:aws:iam::123456789012:role/BedrockFineTune",
            "clientRequestToken": token, "baseModelIdentifier": "amazon.nova-micro-v1:0:128k",
            "customizationType": "FINE_TUNING", "hyperParameters": {"epochCount": "2", "learningRate": "0.00001"},
            "trainingDataConfig": {"s3Uri": f"s3://{BUCKET}/ftspec/data/train-abc.jsonl"},
            "outputDataConfig": {"s3Uri": f"s3://{BUCKET}/ftspec/output/"}}


# ------------------------------------------------------------------------- aws.py


def test_clients_retry_adaptively_and_name_ftspec(aws_env):
    pytest.importorskip("boto3")
    from ftspec import __version__
    from ftspec.backends.bedrock import aws

    c = aws.client("bedrock", REGION)
    # botocore counts max_attempts as retries after the first call: 9 calls at most.
    assert c.meta.config.retries == {"mode": "adaptive", "total_max_attempts": 9}
    assert c.meta.config.user_agent_extra == f"ftspec/{__version__}"
    assert c.meta.region_name == REGION


def test_missing_credentials_is_one_line(aws_env, monkeypatch):
    pytest.importorskip("boto3")
    from ftspec.backends.bedrock import aws

    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(RunFailed) as info:
        aws.client("s3", REGION)
    assert str(info.value) == "no AWS credentials found: boto3 looks in the environment, ~/.aws and the instance role"


def test_aws_errors_become_one_line(moto_aws):
    from ftspec.backends.bedrock import aws

    with pytest.raises(RunFailed) as info, aws.one_line("train"):
        moto_aws["bedrock"].get_model_customization_job(jobIdentifier="no-such-job")
    assert str(info.value).startswith("train: GetModelCustomizationJob: ResourceNotFoundException: ")
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------------- upload


def test_upload_skips_the_same_content(moto_aws):
    from ftspec.backends.bedrock import job

    s3, puts, lines = moto_aws["s3"], [], []
    s3.meta.events.register("provide-client-params.s3.PutObject", lambda params, **kw: puts.append(params["Key"]))
    key = "ftspec/data/train-abc.jsonl"
    assert job.upload(s3, BUCKET, key, b'{"prompt":"a","completion":"b"}\n', lines.append) == f"s3://{BUCKET}/{key}"
    assert job.upload(s3, BUCKET, key, b'{"prompt":"a","completion":"b"}\n', lines.append) == f"s3://{BUCKET}/{key}"
    assert len(puts) == 1 and "already there" in lines[1]
    # Same size, other bytes (or an object that lacks the sha256): uploaded again.
    assert job.upload(s3, BUCKET, key, b'{"prompt":"a","completion":"c"}\n') and len(puts) == 2
    s3.put_object(Bucket=BUCKET, Key="ftspec/data/other.jsonl", Body=b"x\n")
    job.upload(s3, BUCKET, "ftspec/data/other.jsonl", b"x\n")
    assert len(puts) == 4  # the test's own put, then the upload: no sha256 metadata to trust
    assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == b'{"prompt":"a","completion":"c"}\n'


def test_upload_metadata_is_the_sha256(moto_aws):
    import hashlib

    from ftspec.backends.bedrock import job

    data = "é\n".encode()
    job.upload(moto_aws["s3"], BUCKET, "k.jsonl", data)
    assert (moto_aws["s3"].head_object(Bucket=BUCKET, Key="k.jsonl")["Metadata"]["sha256"]
            == hashlib.sha256(data).hexdigest())


# ------------------------------------------------------------------------- the job


def test_create_then_attach_makes_one_job(moto_aws):
    from ftspec.backends.bedrock import job

    bedrock, lines = moto_aws["bedrock"], []
    first = job.create_or_attach(bedrock, request(), lines.append)
    again = job.create_or_attach(bedrock, request(), lines.append)
    assert first == again
    assert [j["jobName"] for j in bedrock.list_model_customization_jobs()["modelCustomizationJobSummaries"]] == [
        "ftspec-quickstart-0123abcd"]
    assert lines == ["  attached to the existing job ftspec-quickstart-0123abcd (InProgress)"]
    # A similar name is not the same job.
    other = job.create_or_attach(bedrock, request(token="train-key-ffff", name="ftspec-quickstart-0123abcd-2"))
    assert other != first and len(bedrock.list_model_customization_jobs()["modelCustomizationJobSummaries"]) == 2


def test_a_job_of_that_name_from_another_request_is_not_attached(moto_aws):
    from ftspec.backends.bedrock import job

    job.create_or_attach(moto_aws["bedrock"], request())
    with pytest.raises(RunFailed, match="already exists .* created from another request"):
        job.create_or_attach(moto_aws["bedrock"], request(token="train-key-changed"))


def test_created_meanwhile_is_attached(moto_aws, monkeypatch):
    """The name was free when looked up, taken when created (another run, or a lost response)."""
    from ftspec.backends.bedrock import job

    arn = moto_aws["bedrock"].create_model_customization_job(**request())["jobArn"]
    real_find, calls = job.find, []

    def late_find(bedrock, name):
        calls.append(name)
        return None if len(calls) == 1 else real_find(bedrock, name)

    monkeypatch.setattr(job, "find", late_find)
    assert job.create_or_attach(moto_aws["bedrock"], request()) == arn and len(calls) == 2


def stubbed_bedrock(aws_env):
    pytest.importorskip("boto3")
    from botocore.stub import Stubber

    from ftspec.backends.bedrock import aws

    client = aws.client("bedrock", REGION)
    return client, Stubber(client)


ARN = "arn:aws:bedrock:us-east-1:123456789012:model-customization-job/amazon.nova-micro-v1:0:128k/abc123def456"


def get_response(status, validation=None, processing=None, training=None, **extra):
    details = {k: {"status": v} for k, v in (("validationDetails", validation), ("dataProcessingDetails", processing),
                                             ("trainingDetails", training)) if v}
    return {"jobArn": ARN, "jobName": "ftspec-q", "outputModelName": "ftspec-q", "roleArn": request()["roleArn"],
            "status": status, "statusDetails": details, "creationTime": "2026-01-01T00:00:00Z",
            "baseModelArn": "arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-micro-v1:0:128k",
            "trainingDataConfig": {"s3Uri": "s3://b/t.jsonl"},
            "validationDataConfig": {"validators": [{"s3Uri": "s3://b/v.jsonl"}]},
            "outputDataConfig": {"s3Uri": "s3://b/out/"}, **extra}


def test_poll_prints_a_line_when_a_status_changes(aws_env):
    from ftspec.backends.bedrock import job

    client, stub = stubbed_bedrock(aws_env)
    states = [("InProgress", "InProgress", "NotStarted", "NotStarted"),
              ("InProgress", "Completed", "InProgress", "NotStarted"),
              ("InProgress", "Completed", "InProgress", "NotStarted"),  # unchanged: no line
              ("InProgress", "Completed", "Completed", "InProgress"),
              ("Completed", "Completed", "Completed", "Completed")]
    for s in states:
        stub.add_response("get_model_customization_job", get_response(*s, outputModelArn=ARN + "-model"),
                          {"jobIdentifier": ARN})
    lines, sleeps = [], []
    with stub:
        final = job.poll(client, ARN, lines.append, 30, sleep=sleeps.append)
    stub.assert_no_pending_responses()
    assert (final["status"] == "Completed" and final["outputModelArn"] == ARN + "-model"
            and "ResponseMetadata" not in final)
    assert lines == [
        "  job InProgress · validation InProgress · data processing NotStarted · training NotStarted",
        "  job InProgress · validation Completed · data processing InProgress · training NotStarted",
        "  job InProgress · validation Completed · data processing Completed · training InProgress",
        "  job Completed · validation Completed · data processing Completed · training Completed"]
    assert sleeps == [30, 30, 30, 30]


def test_poll_failure_is_its_message_in_one_line(aws_env):
    from ftspec.backends.bedrock import job

    client, stub = stubbed_bedrock(aws_env)
    stub.add_response("get_model_customization_job", get_response(
        "Failed", "Failed", failureMessage="Validation failed:\n  row 3: learningRate out of range\n"))
    with stub, pytest.raises(RunFailed) as info:
        job.poll(client, ARN, lambda line: None, sleep=lambda s: None)
    assert str(info.value).startswith("Bedrock job ftspec-q failed: Validation failed: row 3: "
                                      "learningRate out of range (")
    assert "\n" not in str(info.value)


def test_poll_failure_and_stop_against_moto(moto_aws):
    from ftspec.backends.bedrock import job

    bedrock = moto_aws["bedrock"]
    arn = job.create_or_attach(bedrock, request())
    moto_job(arn).status, moto_job(arn).failure_message = "Failed", "Insufficient permissions on s3://bucket"
    with pytest.raises(RunFailed, match="failed: Insufficient permissions on s3://bucket"):
        job.poll(bedrock, arn, lambda line: None, sleep=lambda s: None)

    arn = job.create_or_attach(bedrock, request(token="t2", name="second-job"))
    assert job.stop(bedrock, arn) == "Stopping"
    assert bedrock.get_model_customization_job(jobIdentifier=arn)["status"] == "Stopped"
    assert job.stop(bedrock, arn) == "Stopped"  # already ended: nothing asked of AWS
    with pytest.raises(RunFailed, match="was stopped before it completed"):
        job.poll(bedrock, arn, lambda line: None, sleep=lambda s: None)


def test_stop_leaves_an_ended_job_alone(aws_env):
    from ftspec.backends.bedrock import job

    client, stub = stubbed_bedrock(aws_env)
    stub.add_response("get_model_customization_job", get_response("Completed"), {"jobIdentifier": ARN})
    with stub:
        assert job.stop(client, ARN) == "Completed"  # a StopModelCustomizationJob call would fail the Stubber
    client, stub = stubbed_bedrock(aws_env)
    stub.add_response("get_model_customization_job", get_response("InProgress", "Completed"), {"jobIdentifier": ARN})
    stub.add_response("stop_model_customization_job", {}, {"jobIdentifier": ARN})
    with stub:
        assert job.stop(client, ARN) == "Stopping"
    stub.assert_no_pending_responses()


def test_ctrl_c_detaches_and_rerun_attaches(moto_aws):
    from ftspec.backends.bedrock import job

    bedrock, lines = moto_aws["bedrock"], []
    arn = job.create_or_attach(bedrock, request())

    def interrupted(seconds):
        raise KeyboardInterrupt

    with pytest.raises(job.Detached) as info:
        job.poll(bedrock, arn, lines.append, spec="specs/bedrock-nova.yaml", sleep=interrupted)
    message = str(info.value)
    assert info.value.arn == arn and isinstance(info.value, RunFailed) and "\n" not in message
    assert "`ftspec run specs/bedrock-nova.yaml`" in message and "`ftspec stop specs/bedrock-nova.yaml`" in message
    assert lines == ["  job InProgress"]
    assert bedrock.get_model_customization_job(jobIdentifier=arn)["status"] == "InProgress"  # still running
    # The same command again: the same job, polled to its end.
    assert job.create_or_attach(bedrock, request()) == arn
    moto_job(arn).status = "Completed"
    assert job.poll(bedrock, arn, lines.append, sleep=interrupted)["status"] == "Completed"
    assert len(bedrock.list_model_customization_jobs()["modelCustomizationJobSummaries"]) == 1


def test_throttling_is_retried(moto_aws, monkeypatch):
    """Two ThrottlingExceptions, then moto's answer: botocore's retries ride them out."""
    from types import SimpleNamespace

    from botocore.awsrequest import AWSResponse

    from ftspec.backends.bedrock import job

    bedrock = moto_aws["bedrock"]
    arn = job.create_or_attach(bedrock, request())
    moto_job(arn).status = "Completed"
    sent = []

    class Raw:
        def stream(self, **kwargs):
            yield b""

    def throttle(request, **kwargs):
        sent.append(request.url)
        if len(sent) <= 2:
            body = json.dumps({"message": "Too many requests, please wait before trying again."}).encode()
            response = AWSResponse(request.url, 429, {"x-amzn-ErrorType": "ThrottlingException:http://internal"}, Raw())
            response._content = body
            return response
        return None  # moto answers

    bedrock.meta.events.register_first("before-send.bedrock.GetModelCustomizationJob", throttle)
    backoff: list[float] = []  # botocore's waits between tries, recorded instead of slept
    monkeypatch.setattr("botocore.endpoint.time", SimpleNamespace(sleep=backoff.append))
    final = job.poll(bedrock, arn, lambda line: None, sleep=lambda s: None)
    assert final["status"] == "Completed" and len(sent) == 3 and len(backoff) == 2
    assert final.get("ResponseMetadata", {}).get("RetryAttempts", 2) == 2


# ------------------------------------------------------------------------- metrics

TRAIN_CSV = "step_number,epoch_number,training_loss,perplexity\n0,0,2.5,12.18\n1,0,2.25,9.49\n2,1,1.75,5.75\n"
VALID_CSV = "step_number,epoch_number,validation_loss,perplexity\n1,0,2.4,11.0\n2,1,nan,nan\n3,1,1.9,6.7\n"


def test_metrics_from_the_jobs_output(moto_aws):
    from ftspec.backends.bedrock import job

    s3 = moto_aws["s3"]
    out = f"s3://{BUCKET}/ftspec/output"
    mine = "ftspec/output/model-customization-job-abc123def456/"
    s3.put_object(Bucket=BUCKET, Key=mine + "training_artifacts/step_wise_training_metrics.csv",
                  Body=TRAIN_CSV.encode())
    s3.put_object(Bucket=BUCKET, Key=mine + "validation_artifacts/post_fine_tuning_validation/validation_metrics.csv",
                  Body=("\ufeff" + VALID_CSV).encode())
    records = job.metrics(s3, out, {"jobArn": ARN})
    assert records == [{"step": 0, "epoch": 0, "loss": 2.5}, {"step": 1, "epoch": 0, "loss": 2.25},
                       {"step": 1, "epoch": 0, "eval_loss": 2.4}, {"step": 2, "epoch": 1, "loss": 1.75},
                       {"step": 3, "epoch": 1, "eval_loss": 1.9}]
    assert job.metrics(s3, out) == records  # one job's folder: no need to name it
    # Another job's output beside it: only this job's are read; unnamed, it is ambiguous.
    s3.put_object(Bucket=BUCKET, Key="ftspec/output/model-customization-job-zzz/training_artifacts/"
                  "step_wise_training_metrics.csv", Body=b"step_number,epoch_number,training_loss\n0,0,9.0\n")
    assert job.metrics(s3, out + "/", {"jobArn": ARN}) == records
    with pytest.raises(RunFailed, match="2 files named step_wise_training_metrics.csv"):
        job.metrics(s3, out)
    assert job.metrics(s3, f"s3://{BUCKET}/elsewhere/", {"jobArn": ARN}) == []


# ------------------------------------------------------------------------- secrets


def test_fake_keys_never_reach_a_file(moto_aws, tmp_path, monkeypatch):
    """A whole job's worth of calls, every file written under tmp_path: no key in any of them,
    nor in what is printed or raised."""
    from ftspec.backends.bedrock import aws, job

    monkeypatch.chdir(tmp_path)
    s3, bedrock, lines = moto_aws["s3"], moto_aws["bedrock"], []
    body = R.render(CHAT, "bedrock-conversation-2024")
    (tmp_path / "train.jsonl").write_bytes(body)
    uri = job.upload(s3, BUCKET, "ftspec/data/train-x.jsonl", body, lines.append)
    req = request()
    req["trainingDataConfig"] = {"s3Uri": uri}
    arn = job.create_or_attach(bedrock, req, lines.append)
    moto_job(arn).status = "Completed"
    final = job.poll(bedrock, arn, lines.append, sleep=lambda s: None)
    (tmp_path / "job.json").write_text(json.dumps(final, default=str))
    records = job.metrics(s3, req["outputDataConfig"]["s3Uri"], final)
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    raised = []
    for call in (lambda: job.poll(bedrock, "arn:aws:bedrock:us-east-1:123456789012:model-customization-job/none",
                                  lines.append, sleep=lambda s: None),
                 lambda: s3.get_object(Bucket=BUCKET, Key="missing")):
        try:
            with aws.one_line("step"):
                call()
        except RunFailed as exc:
            raised.append(str(exc))
    assert len(raised) == 2
    (tmp_path / "log.txt").write_text("\n".join(lines + raised))
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) >= 4
    # What ftspec's clients sign with is the planted fake, so a leak would be seen.
    assert aws.session(REGION).get_credentials().get_frozen_credentials()[:3] == FAKES
    for path in written:
        data = path.read_bytes()
        assert not [fake for fake in FAKES if fake.encode() in data], path
