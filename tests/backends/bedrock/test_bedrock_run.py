"""`ftspec run` of the shipped Bedrock spec from end to end, with no AWS account:

- S3 and the customization job are moto's (in this process); moto keeps a job InProgress
  for ever, so the test moves it to Completed (and writes the loss files Bedrock leaves in
  the output bucket) the first time ftspec waits between two polls;
- the Bedrock runtime (Converse) and the custom model deployment, which moto does not
  implement, are small fakes that answer from the request itself.

What must hold: the data is uploaded once under its sha256; one job, whatever the re-runs;
Ctrl-C detaches without stopping the job and the same command attaches again; a stopped
job is replaced by a new attempt on the next run; the losses land in metrics.jsonl and the
custom model's ARN in the run; both models are scored with the usual metrics and report;
the deployment is deleted afterwards; fake AWS keys never reach a file.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("boto3")
pytest.importorskip("moto")

from conftest import ROOT  # noqa: E402
from test_bedrock_job import FAKES, aws_env, moto_aws, moto_job  # noqa: E402,F401 - fixtures

from ftspec.core.errors import RunFailed  # noqa: E402
from ftspec.plan.compile import compile_spec, find_root  # noqa: E402

REGION = "us-east-1"
BUCKET = "my-ftspec-bucket"


class FakeRuntime:
    """Converse: the base model always answers 'billing'; the custom model answers the
    ticket's own queue (read from the data) except for every fifth request."""

    def __init__(self, queues: dict[str, str]):
        self.queues, self.calls = queues, []

    def converse(self, **params):
        self.calls.append(params["modelId"])
        text = params["messages"][-1]["content"][0]["text"]
        custom = params["modelId"].startswith("arn:")
        answer = self.queues.get(text, "billing") if custom and len(self.calls) % 5 else "billing"
        return {"output": {"message": {"role": "assistant", "content": [{"text": answer}]}}, "stopReason": "end_turn"}


class Deployments:
    """The custom model deployment calls moto lacks, on top of moto's Bedrock client."""

    def __init__(self, bedrock):
        self.bedrock, self.live, self.deleted = bedrock, {}, []

    def __getattr__(self, name):
        return getattr(self.bedrock, name)

    def create_custom_model_deployment(self, **kw):
        arn = f"arn:aws:bedrock:{REGION}:123456789012:custom-model-deployment/{kw['modelDeploymentName']}"
        self.live[arn] = kw
        return {"customModelDeploymentArn": arn}

    def get_custom_model_deployment(self, customModelDeploymentIdentifier):
        return {"status": "Active", "customModelDeploymentArn": customModelDeploymentIdentifier}

    def delete_custom_model_deployment(self, customModelDeploymentIdentifier):
        self.live.pop(customModelDeploymentIdentifier)
        self.deleted.append(customModelDeploymentIdentifier)
        return {}


@pytest.fixture
def aws(moto_aws, monkeypatch, tmp_path):  # noqa: F811 - the fixture imported above
    from ftspec.backends.bedrock import aws as A
    from ftspec.backends.bedrock import job as J

    moto_aws["s3"].create_bucket(Bucket=BUCKET)
    rows = [json.loads(l) for l in (ROOT / "specs/data/support-tickets.jsonl").read_text().splitlines() if l.strip()]
    runtime = FakeRuntime({r["text"]: r["queue"] for r in rows})
    bedrock = Deployments(moto_aws["bedrock"])
    real_client = A.client

    def client(name, region, session_=None):
        return {"bedrock-runtime": runtime, "bedrock": bedrock}.get(name) or real_client(name, region, session_)

    monkeypatch.setattr(A, "client", client)
    # on_wait: what a test does each time ftspec waits for the job (while the job's record is on disk);
    # credentials: what each session ftspec made signs with.
    state = {"complete_on_wait": True, "fail_on_wait": False, "waits": 0, "on_wait": lambda: None, "credentials": []}
    real_session = A.session

    def session(region):
        made = real_session(region)
        state["credentials"].append(tuple(made.get_credentials().get_frozen_credentials())[:3])
        return made

    monkeypatch.setattr(A, "session", session)

    def wait(seconds):
        """Between two polls: the job finishes, leaving its loss files in the output bucket
        (or fails, or the user presses Ctrl-C)."""
        state["waits"] += 1
        state["on_wait"]()
        if not state["complete_on_wait"]:
            raise KeyboardInterrupt  # Ctrl-C while ftspec waits for the job
        for page in bedrock.list_model_customization_jobs()["modelCustomizationJobSummaries"]:
            job = moto_job(page["jobArn"])
            if job.status == "InProgress" and state["fail_on_wait"]:
                job.status, job.failure_message = "Failed", "Data validation failed:\n row 3 is not valid JSON"
            elif job.status == "InProgress":
                job.status = "Completed"
                folder = f"ftspec/output/model-customization-job-{job.job_arn.rsplit('/', 1)[-1]}"
                moto_aws["s3"].put_object(Bucket=BUCKET,
                                          Key=f"{folder}/training_artifacts/step_wise_training_metrics.csv",
                                          Body=b"step_number,epoch_number,training_loss,perplexity\n1,0,2.5,12.2\n2,0,1.25,3.5\n")
                moto_aws["s3"].put_object(
                    Bucket=BUCKET,
                    Key=f"{folder}/validation_artifacts/post_fine_tuning_validation/validation_metrics.csv",
                    Body=b"step_number,epoch_number,validation_loss,perplexity\n2,0,1.5,4.5\n")

    real_poll = J.poll

    def poll(bedrock_client, arn, echo, interval=J.POLL_SECONDS, **kw):  # waits go through `wait`, nothing else does
        return real_poll(bedrock_client, arn, echo, interval, **{**kw, "sleep": wait})

    monkeypatch.setattr(J, "poll", poll)
    shutil.copytree(ROOT / "specs", tmp_path / "specs")
    (tmp_path / ".git").mkdir()
    return {"s3": moto_aws["s3"], "bedrock": bedrock, "runtime": runtime, "state": state, "root": tmp_path}


def _run(root: Path, *profiles: str):
    from ftspec.backends.executor import execute

    plan, _ = compile_spec(root / "specs/bedrock-nova.yaml", list(profiles))
    lines: list[str] = []
    result = execute(plan, find_root(root / "specs/bedrock-nova.yaml"), echo=lines.append)
    return result, lines


def _jobs(bedrock) -> list[dict]:
    return bedrock.list_model_customization_jobs()["modelCustomizationJobSummaries"]


def _leaks(root: Path, names: set[str] | None = None) -> dict[str, int]:
    """Every file under ``root`` (the run directory, the step store, the report) that holds one of
    the fake credentials: its path and how many of them. ``names``: collects every file name searched."""
    found = {}
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            if names is not None:
                names.add(path.name)
            hits = sum(fake.encode() in data for fake in FAKES)
            if hits:
                found[str(path.relative_to(root))] = hits
    return found


def test_a_bedrock_spec_runs_from_upload_to_report_and_an_unchanged_rerun_pays_for_nothing(aws):
    result, lines = _run(aws["root"], "evaluate")
    text = "\n".join(lines)
    assert result.ran == ["prepare_data", "generate_base", "eval_base", "train", "generate_tuned", "eval_tuned",
                          "report"]

    # The data: uploaded under its sha256, byte for byte the rendered file.
    uploaded = json.loads((result.run_dir / "data/bedrock-data.json").read_text())
    for split, info in uploaded.items():
        key = info["s3_uri"].split(f"s3://{BUCKET}/", 1)[1]
        assert key == f"ftspec/data/{split}-{info['sha256']}.jsonl"
        body = aws["s3"].get_object(Bucket=BUCKET, Key=key)["Body"].read()
        assert body == (result.run_dir / "data" / info["file"]).read_bytes()
        assert json.loads(body.splitlines()[0])["schemaVersion"] == "bedrock-conversation-2024"

    # One job, created from the plan's request with the train step's key as its token.
    jobs = _jobs(aws["bedrock"])
    assert len(jobs) == 1
    job = aws["bedrock"].get_model_customization_job(jobIdentifier=jobs[0]["jobArn"])
    train_key = result.plan.step("train").key
    assert job["clientRequestToken"] == train_key
    assert job["hyperParameters"] == dict(result.plan.compute.bedrock.hyperparameters)
    model = json.loads((result.run_dir / "model/bedrock-model.json").read_text())
    assert model["custom_model_arn"] == job["outputModelArn"]
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["bedrock"]["custom_model_arn"] == job["outputModelArn"]
    assert manifest["bedrock"]["job_arn"] == jobs[0]["jobArn"]
    metrics = [json.loads(l) for l in (result.run_dir / "model/metrics.jsonl").read_text().splitlines()]
    assert [m.get("loss") for m in metrics if "loss" in m] == [2.5, 1.25]
    assert [m["eval_loss"] for m in metrics if "eval_loss" in m] == [1.5]

    # Both models answered through Converse; the deployment made for it is gone.
    assert aws["bedrock"].deleted and not aws["bedrock"].live
    report = json.loads((result.run_dir / "report/metrics.json").read_text())
    base, tuned = report["base"]["accuracy"], report["tuned"]["accuracy"]
    assert tuned > base, (base, tuned)
    assert "job" in text and "Amazon Bedrock, us-east-1" in text

    # The same command again: nothing uploaded, created or served.
    calls = len(aws["runtime"].calls)
    again, _ = _run(aws["root"], "evaluate")
    assert again.ran == [] and len(_jobs(aws["bedrock"])) == 1 and len(aws["runtime"].calls) == calls

    # No file the run wrote holds the fake keys from the environment.
    assert _leaks(aws["root"]) == {}


def test_ctrl_c_detaches_the_job_keeps_running_and_the_same_command_attaches_again(aws):
    from ftspec.backends.bedrock.job import Detached

    aws["state"]["complete_on_wait"] = False
    with pytest.raises(Detached) as detached:
        _run(aws["root"])
    assert "keeps running on AWS" in str(detached.value) and "ftspec stop" in str(detached.value)
    (job,) = _jobs(aws["bedrock"])
    assert job["status"] == "InProgress"

    aws["state"]["complete_on_wait"] = True
    result, lines = _run(aws["root"])
    assert any("attached to the existing job" in l for l in lines)
    assert len(_jobs(aws["bedrock"])) == 1 and (result.run_dir / "model/bedrock-model.json").exists()
    # serve: none: the custom model was never deployed, and not evaluated.
    assert "generate_tuned" not in result.ran and not aws["bedrock"].deleted


def test_ftspec_stop_stops_the_job_and_the_next_run_starts_a_new_attempt(aws, monkeypatch):
    from click.testing import CliRunner

    from ftspec.cli import main

    aws["state"]["complete_on_wait"] = False
    monkeypatch.chdir(aws["root"])
    out = CliRunner().invoke(main, ["run", "specs/bedrock-nova.yaml"])
    assert out.exit_code == 130 and "ftspec stop specs/bedrock-nova.yaml" in out.output
    out = CliRunner().invoke(main, ["stop", "specs/bedrock-nova.yaml"])
    assert out.exit_code == 0, out.output
    (first,) = _jobs(aws["bedrock"])
    moto_job(first["jobArn"]).status = "Stopped"  # moto says Stopping; Bedrock reaches Stopped

    aws["state"]["complete_on_wait"] = True
    result, lines = _run(aws["root"])
    assert any("stopped: starting attempt 2" in l for l in lines)
    jobs = _jobs(aws["bedrock"])
    assert len(jobs) == 2 and any(j["jobName"].endswith("-a2") for j in jobs)


def test_a_failed_job_is_one_line(aws):
    aws["state"]["fail_on_wait"] = True
    with pytest.raises(RunFailed) as failed:
        _run(aws["root"])
    assert "failed: Data validation failed: row 3 is not valid JSON" in str(failed.value)
    assert "\n" not in str(failed.value)


def test_no_credential_reaches_any_file_the_run_writes(aws):
    """The fake keys are what ftspec signs with; every file under the spec's repository is searched
    for them while the job runs (the train step's job record exists only then) and after the run
    (the run directory and its manifest, the step store, the report)."""
    during, searched = {}, set()
    aws["state"]["on_wait"] = lambda: during.update(_leaks(aws["root"], searched))
    result, lines = _run(aws["root"], "evaluate")
    assert aws["state"]["credentials"] and set(aws["state"]["credentials"]) == {FAKES}
    assert during == {} and "job.json" in searched  # searched while the job's record was on disk
    after = _leaks(aws["root"], searched)
    assert after == {} and {"manifest.json", "report.md", "bedrock-model.json", "plan.json"} <= searched
    assert not [line for line in lines if any(fake in line for fake in FAKES)]


def test_a_failed_job_counts_as_ended_and_the_next_run_starts_attempt_2(aws):
    aws["state"]["fail_on_wait"] = True
    with pytest.raises(RunFailed):
        _run(aws["root"])
    (first,) = _jobs(aws["bedrock"])
    assert first["status"] == "Failed"

    aws["state"]["fail_on_wait"] = False
    result, lines = _run(aws["root"])
    assert any("failed: starting attempt 2" in line for line in lines), lines
    jobs = {j["jobArn"]: j for j in _jobs(aws["bedrock"])}
    assert len(jobs) == 2
    (second,) = [j for arn, j in jobs.items() if arn != first["jobArn"]]
    assert second["jobName"] == first["jobName"] + "-a2" and second["status"] == "Completed"
    assert jobs[first["jobArn"]]["status"] == "Failed"  # left as it was, not attached to
    # The record of attempt 1 is kept beside attempt 2's, in the run and its manifest.
    model = json.loads((result.run_dir / "model/bedrock-model.json").read_text())
    assert model["job_arn"] == second["jobArn"] and model["attempt"] == 2
    assert model["earlier_attempts"] == [{"attempt": 1, "job_arn": first["jobArn"], "status": "Failed"}]
    manifest = json.loads((result.run_dir / "manifest.json").read_text())
    assert manifest["bedrock"]["earlier_attempts"] == model["earlier_attempts"]
