"""Evaluation through Bedrock's Converse API and serving the custom model
(ftspec.backends.bedrock.converse, ftspec.backends.bedrock.serve), without AWS.

moto does not implement bedrock-runtime, nor custom model deployments: the calls go
to real botocore clients whose responses come from botocore's Stubber, or, where
calls run concurrently (the Stubber answers in call order), from a ``before-send``
hook that answers each request from its own body — serialisation and parsing are
botocore's own either way, and nothing leaves the machine.
"""

from __future__ import annotations

import json
import random
import threading
import time
from types import SimpleNamespace

import pytest

botocore = pytest.importorskip("botocore")
from botocore.awsrequest import AWSResponse  # noqa: E402
from botocore.config import Config  # noqa: E402
from botocore.stub import Stubber  # noqa: E402

from ftspec.backends.bedrock import converse  # noqa: E402
from ftspec.backends.bedrock.serve import serving  # noqa: E402
from ftspec.core.errors import RunFailed  # noqa: E402
from ftspec.plan.model import Bedrock  # noqa: E402

REGION = "us-east-1"
FAKE_KEY_ID, FAKE_SECRET = "AKIAFTSPECFAKEKEY123", "ftspec-fake-secret-never-written"
MODEL = "amazon.nova-micro-v1:0"
CUSTOM = "arn:aws:bedrock:us-east-1:123456789012:custom-model/amazon.nova-micro-v1:0:128k/abc123"


@pytest.fixture(autouse=True)
def fake_credentials(monkeypatch, tmp_path):
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", FAKE_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))


def client(service: str):
    import botocore.session

    # botocore's own retries off: the retries under test are ftspec's
    return botocore.session.get_session().create_client(
        service, region_name=REGION, config=Config(retries={"total_max_attempts": 1}))


def reply(text: str, stop_reason: str = "end_turn") -> dict:
    return {"output": {"message": {"role": "assistant", "content": [{"text": text}]}}, "stopReason": stop_reason,
            "usage": {"inputTokens": 1, "outputTokens": 1, "totalTokens": 2}, "metrics": {"latencyMs": 1}}


class _Raw:
    def __init__(self, body: bytes):
        self.body = body

    def stream(self, **_):
        yield self.body


class FakeRuntime:
    """A bedrock-runtime client whose Converse answers "answer: <the user's text>" after a
    random short delay, recording each request and the most calls seen in flight at once."""

    def __init__(self, fail: dict[str, str] | None = None):
        self.client = client("bedrock-runtime")
        self.sent: list[str] = []
        self.fail = fail or {}
        self.in_flight = self.peak = 0
        self.lock = threading.Lock()
        self.rng = random.Random(0)
        self.client.meta.events.register("before-send.bedrock-runtime.Converse", self.send)

    def send(self, request, **_):
        body = json.loads(request.body)
        text = body["messages"][-1]["content"][0]["text"]
        with self.lock:
            self.sent.append(text)
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            delay = self.rng.uniform(0, 0.03)
        time.sleep(delay)
        with self.lock:
            self.in_flight -= 1
        if text in self.fail:
            payload, status = {"message": f"bad {text}"}, 400
            headers = {"x-amzn-ErrorType": self.fail[text], "Content-Type": "application/json"}
        else:
            payload, status, headers = reply(f"answer: {text}"), 200, {"Content-Type": "application/json"}
        return AWSResponse(request.url, status, headers, _Raw(json.dumps(payload).encode()))


def prompts(n: int) -> list[dict]:
    return [{"prompt": f"q{i}"} for i in range(n)]


# --------------------------------------------------------------------------- converse


def test_answers_come_back_in_order_under_concurrency(tmp_path):
    fake = FakeRuntime()
    lines = []
    got = converse.answer(fake.client, MODEL, prompts(20), path=tmp_path / "answers.jsonl", max_tokens=16,
                          max_concurrency=4, echo=lines.append, progress_every=5)
    assert got == [f"answer: q{i}" for i in range(20)]
    assert sorted(fake.sent) == sorted(f"q{i}" for i in range(20))  # each row once
    assert 1 < fake.peak <= 4  # concurrent, and bounded
    assert [line.strip() for line in lines] == [f"{n}/20 rows answered" for n in (5, 10, 15, 20)]


def test_the_request_is_the_converse_api_s_and_stop_strings_end_the_answer(tmp_path):
    rt = client("bedrock-runtime")
    chat = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                         {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "2+2?"},
                         {"role": "assistant", "content": "4"}]}
    with Stubber(rt) as stub:
        stub.add_response("converse", reply("four\nmore"), {
            "modelId": MODEL, "system": [{"text": "Be brief."}],
            "messages": [{"role": "user", "content": [{"text": "Hi"}]},
                         {"role": "assistant", "content": [{"text": "Hello"}]},
                         {"role": "user", "content": [{"text": "2+2?"}]}],
            "inferenceConfig": {"maxTokens": 8, "temperature": 0.0, "stopSequences": ["\n"]}})
        stub.add_response("converse", reply("Paris"), {
            "modelId": MODEL, "system": [{"text": "You answer questions."}],
            "messages": [{"role": "user", "content": [{"text": "Capital of France?"}]}],
            "inferenceConfig": {"maxTokens": 8, "temperature": 0.0, "stopSequences": ["\n"]}})
        got = converse.answer(rt, MODEL, [chat, {"prompt": "Capital of France?"}], path=tmp_path / "a.jsonl",
                              system="You answer questions.", max_tokens=8, stop=["\n"], max_concurrency=1)
        stub.assert_no_pending_responses()
    assert got == ["four", "Paris"]


def test_throttling_is_retried_with_backoff_then_succeeds(tmp_path):
    rt = client("bedrock-runtime")
    sleeps: list[float] = []
    with Stubber(rt) as stub:
        stub.add_client_error("converse", "ThrottlingException", "Too many requests", 429)
        stub.add_client_error("converse", "ModelNotReadyException", "Model is loading", 429)
        stub.add_client_error("converse", "ServiceUnavailableException", "Unavailable", 503)
        stub.add_response("converse", reply("ok"))
        got = converse.answer(rt, MODEL, prompts(1), path=tmp_path / "a.jsonl", max_tokens=8, max_concurrency=1,
                              sleep=sleeps.append, base_delay=1.0, rng=random.Random(1))
        stub.assert_no_pending_responses()
    assert got == ["ok"]
    assert len(sleeps) == 3
    for n, s in enumerate(sleeps):  # exponential, with jitter: between half and all of 1, 2, 4 s
        assert 2 ** n / 2 <= s <= 2 ** n


def test_retries_exhausted_is_one_line_naming_the_row(tmp_path):
    rt = client("bedrock-runtime")
    with Stubber(rt) as stub:
        stub.add_response("converse", reply("first"))
        for _ in range(3):
            stub.add_client_error("converse", "ThrottlingException", "Rate exceeded", 429)
        with pytest.raises(RunFailed) as err:
            converse.answer(rt, MODEL, prompts(2), path=tmp_path / "a.jsonl", max_tokens=8, max_concurrency=1,
                            attempts=3, sleep=lambda s: None, label="custom model")
        stub.assert_no_pending_responses()
    message = str(err.value)
    assert "\n" not in message
    assert "custom model row 2 of 2" in message and "ThrottlingException after 3 tries" in message
    assert "max_concurrency" in message


def test_a_validation_error_is_one_line_naming_the_row(tmp_path):
    rt = client("bedrock-runtime")
    with Stubber(rt) as stub:
        stub.add_client_error("converse", "ValidationException", "Input is too long\nfor this model", 400)
        with pytest.raises(RunFailed) as err:
            converse.answer(rt, MODEL, prompts(1), path=tmp_path / "a.jsonl", max_tokens=8, max_concurrency=1,
                            sleep=lambda s: pytest.fail("a validation error is not retried"))
    message = str(err.value)
    assert "\n" not in message
    assert "row 1 of 1" in message and MODEL in message and "Input is too long for this model" in message


def test_a_rerun_sends_only_the_rows_not_answered(tmp_path):
    path = tmp_path / "answers.jsonl"
    fake = FakeRuntime(fail={"q3": "ValidationException"})
    with pytest.raises(RunFailed, match="row 4 of 6"):
        converse.answer(fake.client, MODEL, prompts(6), path=path, max_tokens=8, max_concurrency=1)
    assert fake.sent == ["q0", "q1", "q2", "q3"]  # stopped at the bad row, later rows not sent
    with path.open("a", encoding="utf-8") as fh:
        fh.write('{"index": 4, "answer": "half wri')  # a crash while writing: that row is asked again

    again = FakeRuntime()
    lines = []
    got = converse.answer(again.client, MODEL, prompts(6), path=path, max_tokens=8, max_concurrency=3,
                          echo=lines.append)
    assert got == [f"answer: q{i}" for i in range(6)]
    assert sorted(again.sent) == ["q3", "q4", "q5"]
    assert "3 of 6 rows already answered" in lines[0]

    third = FakeRuntime()  # everything answered: nothing is sent
    assert converse.answer(third.client, MODEL, prompts(6), path=path, max_tokens=8) == got
    assert third.sent == []

    changed = prompts(6)
    changed[1] = {"prompt": "q1 changed"}  # a row whose request changed is asked again
    fourth = FakeRuntime()
    got = converse.answer(fourth.client, MODEL, changed, path=path, max_tokens=8)
    assert fourth.sent == ["q1 changed"] and got[1] == "answer: q1 changed"
    assert converse.answer(FakeRuntime().client, "other-model", prompts(1), path=tmp_path / "b.jsonl",
                           max_tokens=8) == ["answer: q0"]


def _eval(**kw):
    base = dict(split="test", limit=None, outputs=("answers",), mode="generate", few_shot=0, few_shot_seed=None,
                max_new_tokens=16, stop=())
    return SimpleNamespace(**{**base, **kw})


def test_generate_outputs_has_the_local_generation_step_s_shape(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    rows = [{"prompt": f"q{i}", "completion": f" a{i}"} for i in range(3)]
    (data / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (data / "train.jsonl").write_text(json.dumps({"prompt": "t", "completion": " u"}) + "\n", encoding="utf-8")
    fake = FakeRuntime()
    summary, out = converse.generate_outputs(fake.client, MODEL, _eval(limit=2), "prompt_completion", data,
                                             tmp_path / "answers.jsonl", baseline=False)
    assert summary == {"rows": 2, "split": "test", "few_shot": 0, "mode": "generate", "outputs": ["answers"],
                       "labels": None}
    assert out == [{"index": 0, "prompt": "q0", "reference": "a0", "prediction": "answer: q0"},
                   {"index": 1, "prompt": "q1", "reference": "a1", "prediction": "answer: q1"}]
    # the baseline's few-shot examples come before its prompt, as in a local run
    summary, out = converse.generate_outputs(FakeRuntime().client, MODEL, _eval(few_shot=1, few_shot_seed=3),
                                             "prompt_completion", data, tmp_path / "base.jsonl", baseline=True)
    assert summary["few_shot"] == 1 and out[0]["prompt"] == "t u\n\nq0"
    with pytest.raises(RunFailed, match="log-probabilities"):
        converse.generate_outputs(fake.client, MODEL, _eval(mode="choices"), "prompt_completion", data,
                                  tmp_path / "c.jsonl", baseline=False)
    with pytest.raises(RunFailed, match="perplexity"):
        converse.generate_outputs(fake.client, MODEL, _eval(outputs=("answers", "perplexity")), "prompt_completion",
                                  data, tmp_path / "c.jsonl", baseline=False)


# --------------------------------------------------------------------------- serving


def plan_bedrock(**kw) -> Bedrock:
    base = dict(region=REGION, customization="FINE_TUNING", data_format="bedrock-conversation-2024",
                role_arn="arn:aws:iam::123456789012:role/ftspec", s3={"bucket": "b", "prefix": "p/"},
                tags={"team": "ml"})
    return Bedrock.model_validate({**base, **kw})


DEPLOYMENT = "arn:aws:bedrock:us-east-1:123456789012:custom-model-deployment/abc"
PROVISIONED = "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/xyz"


def test_on_demand_creates_waits_and_deletes(tmp_path):
    bedrock = client("bedrock")
    lines, sleeps = [], []
    with Stubber(bedrock) as stub:
        stub.add_response("create_custom_model_deployment", {"customModelDeploymentArn": DEPLOYMENT}, {
            "modelDeploymentName": "ftspec-eval", "modelArn": CUSTOM,
            "description": "ftspec evaluation; deleted when the evaluation ends",
            "tags": [{"key": "team", "value": "ml"}]})
        for status in ("Creating", "Creating", "Active"):
            stub.add_response("get_custom_model_deployment",
                              {"customModelDeploymentArn": DEPLOYMENT, "modelDeploymentName": "ftspec-eval",
                               "modelArn": CUSTOM, "createdAt": "2026-01-01T00:00:00Z", "status": status},
                              {"customModelDeploymentIdentifier": DEPLOYMENT})
        stub.add_response("delete_custom_model_deployment", {}, {"customModelDeploymentIdentifier": DEPLOYMENT})
        with serving(bedrock, CUSTOM, plan_bedrock(serve="on_demand"), lines.append, name="ftspec-eval",
                     sleep=sleeps.append, poll_seconds=7) as model_id:
            assert model_id == DEPLOYMENT
            assert not any("deleted the" in line for line in lines)
        stub.assert_no_pending_responses()
    assert sleeps == [7, 7]
    assert [line.strip() for line in lines[1:]] == [
        "on-demand deployment ftspec-eval: Creating", "on-demand deployment ftspec-eval: Active",
        "deleted the on-demand deployment ftspec-eval"]


def test_provisioned_is_deleted_when_evaluation_fails(tmp_path):
    bedrock = client("bedrock")
    lines = []
    with Stubber(bedrock) as stub:
        stub.add_response("create_provisioned_model_throughput", {"provisionedModelArn": PROVISIONED}, {
            "modelUnits": 2, "provisionedModelName": "ftspec-eval", "modelId": CUSTOM,
            "tags": [{"key": "team", "value": "ml"}]})
        stub.add_response("get_provisioned_model_throughput", {
            "modelUnits": 2, "desiredModelUnits": 2, "provisionedModelName": "ftspec-eval",
            "provisionedModelArn": PROVISIONED, "modelArn": CUSTOM, "desiredModelArn": CUSTOM,
            "foundationModelArn": CUSTOM, "status": "InService", "creationTime": "2026-01-01T00:00:00Z",
            "lastModifiedTime": "2026-01-01T00:00:00Z"}, {"provisionedModelId": PROVISIONED})
        stub.add_response("delete_provisioned_model_throughput", {}, {"provisionedModelId": PROVISIONED})
        with pytest.raises(KeyboardInterrupt):
            with serving(bedrock, CUSTOM, plan_bedrock(serve="provisioned", model_units=2), lines.append,
                         name="ftspec-eval", sleep=lambda s: None) as model_id:
                assert model_id == PROVISIONED
                raise KeyboardInterrupt  # Ctrl-C while evaluating
        stub.assert_no_pending_responses()
    assert lines[-1].strip() == "deleted the provisioned throughput ftspec-eval"


def test_a_failed_deployment_is_one_line_and_is_deleted(tmp_path):
    bedrock = client("bedrock")
    lines = []
    with Stubber(bedrock) as stub:
        stub.add_response("create_custom_model_deployment", {"customModelDeploymentArn": DEPLOYMENT})
        stub.add_response("get_custom_model_deployment", {
            "customModelDeploymentArn": DEPLOYMENT, "modelDeploymentName": "d", "modelArn": CUSTOM,
            "createdAt": "2026-01-01T00:00:00Z", "status": "Failed", "failureMessage": "Quota\nexceeded"})
        stub.add_response("delete_custom_model_deployment", {})
        with pytest.raises(RunFailed) as err:
            with serving(bedrock, CUSTOM, plan_bedrock(serve="on_demand"), lines.append, sleep=lambda s: None):
                pytest.fail("a failed deployment does not serve")
        stub.assert_no_pending_responses()
    assert "\n" not in str(err.value) and "failed: Quota exceeded" in str(err.value)
    assert "deleted the on-demand deployment" in lines[-1]


def test_a_deletion_that_fails_says_what_to_delete_by_hand(tmp_path):
    bedrock = client("bedrock")
    lines = []
    with Stubber(bedrock) as stub:
        stub.add_response("create_custom_model_deployment", {"customModelDeploymentArn": DEPLOYMENT})
        stub.add_response("get_custom_model_deployment", {
            "customModelDeploymentArn": DEPLOYMENT, "modelDeploymentName": "d", "modelArn": CUSTOM,
            "createdAt": "2026-01-01T00:00:00Z", "status": "Active"})
        stub.add_client_error("delete_custom_model_deployment", "AccessDeniedException", "not allowed", 403)
        with serving(bedrock, CUSTOM, plan_bedrock(serve="on_demand"), lines.append, sleep=lambda s: None):
            pass
        stub.assert_no_pending_responses()
    last = lines[-1]
    assert "\n" not in last and "AccessDeniedException" in last and "keeps costing money" in last
    assert (f"aws bedrock delete-custom-model-deployment --custom-model-deployment-identifier {DEPLOYMENT} "
            f"--region {REGION}") in last


def test_a_create_that_fails_is_one_line_and_nothing_is_deleted(tmp_path):
    bedrock = client("bedrock")
    with Stubber(bedrock) as stub:
        stub.add_client_error("create_provisioned_model_throughput", "ServiceQuotaExceededException",
                              "no model units left", 400)
        with pytest.raises(RunFailed, match="could not create the provisioned throughput .*no model units left"):
            with serving(bedrock, CUSTOM, plan_bedrock(serve="provisioned", model_units=1), lambda s: None):
                pass
        stub.assert_no_pending_responses()


def test_nothing_is_served_unless_the_plan_says_so():
    bedrock = client("bedrock")
    with Stubber(bedrock):  # any call would fail: nothing is queued
        with pytest.raises(ValueError, match="serve 'none'"):
            with serving(bedrock, CUSTOM, plan_bedrock(), lambda s: None):
                pass
        with pytest.raises(RunFailed, match="model_units"):
            with serving(bedrock, CUSTOM, plan_bedrock(serve="provisioned"), lambda s: None):
                pass


def test_a_new_deployment_of_the_same_custom_model_resumes_with_model_key(tmp_path):
    path = tmp_path / "custom.jsonl"
    first = FakeRuntime(fail={"q2": "ValidationException"})
    with pytest.raises(RunFailed):
        converse.answer(first.client, DEPLOYMENT, prompts(4), path=path, max_tokens=8, max_concurrency=1,
                        model_key=CUSTOM)
    again = FakeRuntime()  # the next run's deployment has another ARN; the custom model is the same
    converse.answer(again.client, DEPLOYMENT + "-2", prompts(4), path=path, max_tokens=8, model_key=CUSTOM)
    assert sorted(again.sent) == ["q2", "q3"]
    other = FakeRuntime()  # another model: everything is asked again
    converse.answer(other.client, MODEL, prompts(4), path=path, max_tokens=8)
    assert sorted(other.sent) == ["q0", "q1", "q2", "q3"]


def test_ctrl_c_keeps_the_answers_in_flight_and_sends_nothing_more(tmp_path):
    import signal

    path = tmp_path / "answers.jsonl"
    main = threading.main_thread().ident
    fake = FakeRuntime()
    original = fake.send
    lock = threading.Lock()
    pressed = threading.Event()

    def send(request, **kw):
        # Ctrl-C once, while the fourth row (or, two threads racing past the third, a later one)
        # is being asked: `== 3` could be skipped when both threads count before either sends.
        with lock:
            press = len(fake.sent) >= 3 and not pressed.is_set()
            if press:
                pressed.set()
        if press:
            signal.pthread_kill(main, signal.SIGINT)
        return original(request, **kw)

    fake.client.meta.events.unregister("before-send.bedrock-runtime.Converse", fake.send)
    fake.client.meta.events.register("before-send.bedrock-runtime.Converse", send)
    # Ctrl-C as Python raises it, whatever handler an earlier test in this process left behind
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            converse.answer(fake.client, MODEL, prompts(40), path=path, max_tokens=8, max_concurrency=2)
    finally:
        signal.signal(signal.SIGINT, previous)
    deadline = time.time() + 60  # a hang detector only: the loop ends as soon as the calls in flight are saved
    while time.time() < deadline and (fake.in_flight or len(converse.saved_answers(path)) < len(fake.sent)):
        time.sleep(0.02)  # the calls in flight finish in their threads, and are saved
    sent = len(fake.sent)
    assert 4 <= sent < 40
    assert len(converse.saved_answers(path)) == sent
    again = FakeRuntime()
    got = converse.answer(again.client, MODEL, prompts(40), path=path, max_tokens=8, max_concurrency=4)
    assert got == [f"answer: q{i}" for i in range(40)]
    assert len(again.sent) == 40 - sent
    text = path.read_text(encoding="utf-8")
    assert FAKE_KEY_ID not in text and FAKE_SECRET not in text
