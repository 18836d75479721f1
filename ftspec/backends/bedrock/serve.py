"""Serving the custom model while it answers the evaluation rows, and nothing longer.

A custom model answers through Bedrock only once it is served, and serving costs money
while it exists: ``compute.bedrock.serve`` says how (the plan shows it), and nothing is
created unless it says ``on_demand`` or ``provisioned``.

- ``on_demand``: a custom model deployment (CreateCustomModelDeployment), waited for
  until ``Active``; the deployment's ARN is the ``modelId`` that Converse takes.
- ``provisioned``: provisioned throughput of ``model_units`` units with no commitment
  term (CreateProvisionedModelThroughput without ``commitmentDuration``: billed by the
  hour and deletable at any time), waited for until ``InService``; its ARN is the
  ``modelId``.

On leaving the ``with`` block, also on an error or Ctrl-C, what was created is deleted
and the run says so; if the deletion fails, one line says what to delete by hand.

Operation, field and status names: botocore's service model for bedrock
(botocore/data/bedrock/2023-04-20/service-2.json): CreateCustomModelDeployment
(modelDeploymentName, modelArn, description, tags, clientRequestToken ->
customModelDeploymentArn), GetCustomModelDeployment (status Creating | Active | Failed,
failureMessage), DeleteCustomModelDeployment (customModelDeploymentIdentifier);
CreateProvisionedModelThroughput (modelUnits, provisionedModelName, modelId, tags ->
provisionedModelArn), GetProvisionedModelThroughput (status Creating | InService |
Updating | Failed, failureMessage), DeleteProvisionedModelThroughput
(provisionedModelId). Names: 1 to 63 of [0-9a-zA-Z_-] (the same service model).
"""

from __future__ import annotations

import hashlib
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Callable, Iterator

from ftspec.core.errors import RunFailed

POLL_SECONDS = 30.0


def _name(custom_model_arn: str, serve: str, now: datetime | None = None) -> str:
    """A name to find the resource by in the console: the model's digest and the time."""
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%d-%H%M%S")
    digest = hashlib.sha256(custom_model_arn.encode("utf-8")).hexdigest()[:10]
    return f"ftspec-{'od' if serve == 'on_demand' else 'pt'}-{digest}-{stamp}"  # 35 characters


def _error(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and isinstance(response.get("Error"), dict):
        err = response["Error"]
        return f"{err.get('Code')}: {' '.join(str(err.get('Message') or '').split())}"
    return " ".join(str(exc).split()) or type(exc).__name__


_KINDS = {
    # serve: (what it is, status when ready, get operation, its id parameter, delete CLI command)
    "on_demand": ("on-demand deployment", "Active", "get_custom_model_deployment", "customModelDeploymentIdentifier",
                  "aws bedrock delete-custom-model-deployment --custom-model-deployment-identifier"),
    "provisioned": ("provisioned throughput", "InService", "get_provisioned_model_throughput", "provisionedModelId",
                    "aws bedrock delete-provisioned-model-throughput --provisioned-model-id"),
}


@contextmanager
def serving(bedrock_client, custom_model_arn: str, plan_bedrock, echo: Callable[[str], None], *,
            poll_seconds: float = POLL_SECONDS, sleep: Callable[[float], None] = time.sleep,
            name: str | None = None) -> Iterator[str]:
    """Serve the custom model as ``plan_bedrock.serve`` says; yields the model id to call
    (the deployment's or the provisioned throughput's ARN) and deletes it on exit."""
    serve = plan_bedrock.serve
    if serve not in _KINDS:
        raise ValueError(f"serving() called with compute.bedrock.serve {serve!r}: nothing to serve")
    what, _, _, _, delete_cli = _KINDS[serve]
    name = name or _name(custom_model_arn, serve)
    tags = [{"key": k, "value": v} for k, v in sorted(dict(plan_bedrock.tags).items())]
    where = f"--region {plan_bedrock.region}"
    if serve == "provisioned" and not plan_bedrock.model_units:
        raise RunFailed("compute.bedrock.model_units: serve provisioned needs a number of model units")

    arn = None
    echo(f"  serving the custom model: creating the {what} {name} (it costs money until it is deleted)")
    try:
        try:
            arn = _create(bedrock_client, serve, custom_model_arn, plan_bedrock, name, tags)
            _wait(bedrock_client, serve, arn, name, echo, poll_seconds, sleep)
        except RunFailed:
            raise
        except Exception as exc:  # botocore's ClientError, a connection error
            doing = "create" if arn is None else "wait for"
            raise RunFailed(f"compute.bedrock.serve {serve}: could not {doing} the {what} {name}: "
                            f"{_error(exc)}") from None
        except BaseException:
            if arn is None:  # Ctrl-C while the create call was in flight: it may exist
                echo(f"ftspec: interrupted while creating the {what} {name}: if the Bedrock console lists it, "
                     f"delete it by hand ({delete_cli} ARN {where})")
            raise
        yield arn
    finally:
        if arn is not None:
            _delete(bedrock_client, serve, arn, name, echo, f"{delete_cli} {arn} {where}")


def _create(bedrock_client, serve: str, custom_model_arn: str, plan_bedrock, name: str, tags: list[dict]) -> str:
    if serve == "on_demand":
        params = {"modelDeploymentName": name, "modelArn": custom_model_arn,
                  "description": "ftspec evaluation; deleted when the evaluation ends"}
        if tags:
            params["tags"] = tags
        return bedrock_client.create_custom_model_deployment(**params)["customModelDeploymentArn"]
    params = {"modelUnits": int(plan_bedrock.model_units), "provisionedModelName": name, "modelId": custom_model_arn}
    if tags:
        params["tags"] = tags
    return bedrock_client.create_provisioned_model_throughput(**params)["provisionedModelArn"]


def _wait(bedrock_client, serve: str, arn: str, name: str, echo: Callable[[str], None], poll_seconds: float,
          sleep: Callable[[float], None]) -> None:
    """Until the model is ready to answer; a Failed status is one line with its reason."""
    what, ready, get_op, id_param, _ = _KINDS[serve]
    seen = None
    while True:
        state = getattr(bedrock_client, get_op)(**{id_param: arn})
        status = state.get("status")
        if status != seen:
            echo(f"  {what} {name}: {status}")
            seen = status
        if status == ready:
            return
        if status == "Failed":
            reason = " ".join(str(state.get("failureMessage") or "no reason given").split())
            raise RunFailed(f"compute.bedrock.serve {serve}: the {what} {name} failed: {reason}")
        sleep(poll_seconds)


def _delete(bedrock_client, serve: str, arn: str, name: str, echo: Callable[[str], None], by_hand: str) -> None:
    what = _KINDS[serve][0]
    try:
        if serve == "on_demand":
            bedrock_client.delete_custom_model_deployment(customModelDeploymentIdentifier=arn)
        else:
            bedrock_client.delete_provisioned_model_throughput(provisionedModelId=arn)
    except BaseException as exc:  # Ctrl-C during the call included: say what is left, then go on leaving
        echo(f"ftspec: could not delete the {what} {name} ({_error(exc)}); it keeps costing money: "
             f"delete it by hand: {by_hand}")
        if not isinstance(exc, Exception):
            raise
        return
    echo(f"  deleted the {what} {name}")
