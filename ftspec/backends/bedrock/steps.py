"""The run's steps on Amazon Bedrock, read top to bottom.

    prepare_data   the splits, rendered into the family's JSONL (byte-for-byte the same for
                   the same data), uploaded to S3 under their sha256 (skipped when there)
    train          one model customization job: created with clientRequestToken = this
                   step's key, so running an unchanged spec again attaches to the same job;
                   polled to the end; its losses into metrics.jsonl, its model's ARN kept
    generate_*     the base model, or the custom model once served (only when the plan
                   says so: serving costs money), answers the held-out rows via Converse
    eval_*, report as on the local backend (its functions, in :data:`STEPS`): the same scoring,
                   gates and report

Credentials come from boto3's standard chain when a step needs AWS; nothing here writes
them anywhere.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

from ftspec.backends.bedrock import aws, converse, job, serve
from ftspec.backends.local import steps as local
from ftspec.catalog import bedrock_families as families
from ftspec.catalog import steps
from ftspec.core.errors import Pos, RunFailed, SpecError
from ftspec.core.io import read_json, write_json, write_jsonl
from ftspec.data import bedrock_jsonl as R
from ftspec.data import prepared
from ftspec.plan.bedrock_request import MAX_NAME, data_uri, fill
from ftspec.plan.model import thaw
from ftspec.runtime.training.splits import write_splits

DATA = "bedrock-data.json"  # prepare_data: each uploaded split's sha256, size, rows and S3 URI
MODEL = "bedrock-model.json"  # train: the job's ARN and the custom model's
SPLITS = ("train", "validation")  # what the job trains and validates on; the test split stays here


def prepare(plan, ctx, out: Path) -> dict:
    b = plan.compute.bedrock
    made = write_splits(plan.data, plan.format, ctx.root, out)
    # A Bedrock job takes thousands of rows, not millions: its splits are rendered in memory.
    splits = {split: prepared.read_records(out, split) for split in made.rows if split in SPLITS}
    skipped = made.skipped
    rendered: dict[str, dict] = {}
    for split in SPLITS:
        if split not in splits:
            continue
        try:
            # Distillation trains on the teacher's answers: its rows may end with the prompt.
            body = R.render(splits[split], b.data_format, answered=b.customization != "DISTILLATION")
        except ValueError as exc:
            raise RunFailed(f"prepare_data: the {split} split cannot be written as {b.data_format}: {exc}") from None
        path = out / f"{split}.{b.data_format}.jsonl"
        path.write_bytes(body)
        _within_limits(plan, split, body, list(prepared.iter_origins(out, split)))  # before anything is uploaded
        digest = hashlib.sha256(body).hexdigest()
        rendered[split] = {"rows": len(splits[split]), "bytes": len(body), "sha256": digest,
                           "file": path.name, "s3_uri": data_uri(b.s3.bucket, b.s3.prefix, split, digest)}
    with aws.one_line("prepare_data"):
        s3 = aws.client("s3", b.region)
        for info in rendered.values():
            bucket, key = job.split_uri(info["s3_uri"])
            job.upload(s3, bucket, key, (out / info["file"]).read_bytes(), ctx.echo)
    write_json(out / DATA, rendered)
    stats = {split: {"rows": rows} for split, rows in made.rows.items()}
    write_json(out / "stats.json", {"splits": stats, **skipped})
    ctx.echo("  rows " + " · ".join(f"{s} {v['rows']}" for s, v in stats.items()) + "; "
             + "; ".join(f"{s} {info['bytes']} bytes as {b.data_format} → {info['s3_uri']}"
                         for s, info in rendered.items()))
    return {"stats": stats, "uploaded": rendered}


def _within_limits(plan, split: str, body: bytes, origins: list) -> None:
    """The rendered split against its model's documented limits (ftspec.catalog.bedrock_families):
    a broken one is the spec's data's problem (exit 2), named with its row and origin."""
    found = families.find(plan.model.id)
    problem = found and families.data_problem(found[1], split, body, plan.compute.bedrock.customization)
    if not problem:
        return
    row, message = problem
    key = "data.validation" if split == "validation" and "validation" in plan.data.sources else "data.train"
    hint = "cut the data down with data.limit or data.filter"
    if row is not None:
        origin = f" ({origins[row - 1]})" if row <= len(origins) else ""
        message, hint = (f"the {split} split's row {row}{origin} {message}",
                         "fix the row, or leave it out with data.filter")
    raise SpecError.one(Pos(key), key, message, hint)


def filled_request(b: Any, key: str, data: dict, attempt: int = 1) -> dict:
    """The plan's request with its placeholders filled: the data's S3 URIs and this step's
    key (whole in clientRequestToken, shortened in the names). A later attempt (after a job
    that failed or was stopped) gets its own names and token."""
    request = fill(thaw(b.request), key, data["train"]["sha256"], data.get("validation", {}).get("sha256"))
    if "validation" not in data:
        request.pop("validationDataConfig", None)
    if attempt > 1:
        suffix = f"-a{attempt}"
        for field in ("jobName", "customModelName"):
            stem, _, short = request[field].rpartition("-")
            request[field] = f"{stem[: MAX_NAME - len(short) - len(suffix) - 1]}-{short}{suffix}"
        request["clientRequestToken"] += suffix
    return request


ENDED = ("Failed", "Stopped")


def train(plan, ctx, out: Path) -> dict:
    b = plan.compute.bedrock
    data = read_json(ctx.data_dir / DATA, dict)
    record_file = ctx.checkpoints() / "job.json"  # `ftspec stop` reads it; kept until the step is complete
    record_file.parent.mkdir(parents=True, exist_ok=True)
    # Checked on the way in: a record of the wrong shape is one not to trust (a new job), never a TypeError.
    record = job.read_record(record_file, lenient=True)
    attempt = record.attempt if record is not None else 1
    # The jobs of the attempts before this one, each {attempt, job_arn, status}: kept in the
    # record and in bedrock-model.json (so in the manifest), never forgotten by a new attempt.
    kept = getattr(record, "earlier", None)
    earlier = [e for e in kept if isinstance(e, dict)] if isinstance(kept, list) else []
    with aws.one_line("train"):
        bedrock = aws.client("bedrock", b.region)
        if record is not None:  # a job this step started before: running (attach), or ended without a model
            status = bedrock.get_model_customization_job(jobIdentifier=record.job_arn)["status"]
            if status in ENDED:
                earlier.append({"attempt": attempt, "job_arn": record.job_arn, "status": status})
                attempt += 1
                ctx.echo(f"  the previous job ({record.job_arn}) {status.lower()}: starting attempt {attempt}")
        request = filled_request(b, ctx.key, data, attempt)
        arn = job.create_or_attach(bedrock, request, ctx.echo)
        write_json(record_file, {"job_arn": arn, "attempt": attempt, "region": b.region, "earlier": earlier})
        ctx.echo(f"  job {arn}")
        started = time.time()
        final = job.poll(bedrock, arn, ctx.echo)  # Ctrl-C: job.Detached, which the CLI words with the spec's path
        records = job.metrics(aws.client("s3", b.region), request["outputDataConfig"]["s3Uri"], final)
    write_jsonl(out / "metrics.jsonl", records)
    model_arn = final.get("outputModelArn")
    if not model_arn:
        raise RunFailed(f"train: job {arn} completed without a custom model ARN")
    info = {"job_arn": arn, "custom_model_arn": model_arn, "custom_model_name": final.get("outputModelName"),
            "region": b.region, "attempt": attempt, "earlier_attempts": earlier,
            "seconds_polled": round(time.time() - started)}
    write_json(out / MODEL, info)
    losses = [r["loss"] for r in records if "loss" in r]
    evals = [r["eval_loss"] for r in records if "eval_loss" in r]
    result = {"steps": max((r.get("step", 0) for r in records), default=0),
              "train_loss": losses[-1] if losses else None,
              "eval_loss": evals[-1] if evals else None, "resumed_from": None, "stopped_early": False,
              "custom_model_arn": model_arn}
    write_json(out / "train.json", result)
    return result


def _generate(plan, ctx, out: Path, tuned: bool) -> dict:
    b, e = plan.compute.bedrock, plan.eval
    runtime = aws.client("bedrock-runtime", b.region)
    # Kept across a crash or Ctrl-C: a re-run asks only the rows not answered yet.
    answers = ctx.checkpoints() / "answers.jsonl"
    answers.parent.mkdir(parents=True, exist_ok=True)

    def ask(model_id: str, model_key: str | None = None):
        return converse.generate_outputs(runtime, model_id, e, plan.format.kind, ctx.data_dir, answers,
                                         baseline=not tuned, max_concurrency=b.max_concurrency, echo=ctx.echo,
                                         model_key=model_key)

    if tuned:
        model = read_json(ctx.step_dir(steps.TRAIN.name) / MODEL, dict)
        arn = model["custom_model_arn"]
        # Each run serves the model anew (a new deployment ARN): answers are matched by the model's own ARN.
        with serve.serving(aws.client("bedrock", b.region), arn, b, ctx.echo) as model_id:
            summary, rows = ask(model_id, model_key=arn)
    else:
        summary, rows = ask(plan.model.id)
    write_json(out / "outputs.json", summary)
    write_jsonl(out / "generations.jsonl", rows)
    ctx.echo(f"  {'custom' if tuned else 'base'} model, {summary['rows']} {summary['split']} rows: "
             "answered through Converse")
    return {k: v for k, v in summary.items() if k != "labels"}


def generate_base(plan, ctx, out: Path) -> dict:
    return _generate(plan, ctx, out, tuned=False)


def generate_tuned(plan, ctx, out: Path) -> dict:
    return _generate(plan, ctx, out, tuned=True)


# Bedrock prepares, trains and generates itself; the teacher, scoring, comparison and
# report are the local backend's, on what these steps saved.
STEPS = {
    **local.STEPS,
    steps.PREPARE_DATA.name: prepare,
    steps.TRAIN.name: train,
    steps.GENERATE_BASE.name: generate_base,
    steps.GENERATE_TUNED.name: generate_tuned,
}
