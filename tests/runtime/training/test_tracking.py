"""The spec's tracking section reaches the tracker: the W&B project and entity, the
MLflow experiment, TensorBoard's folder in the run directory, the run's name; only
while training (the environment is put back after), offline.

W&B runs in offline mode and writes its run log into a temporary folder; MLflow
writes to a file store. Both are read back to check what the tracker recorded.
"""

from __future__ import annotations

import glob
import json
import os
import struct
from pathlib import Path
from types import SimpleNamespace

import pytest

from ftspec.core.errors import SpecError
from ftspec.runtime.training import tracking as T
from ftspec.spec import schema as S

NAME = "tracked-job"


def _clean_env(monkeypatch):
    for name in T.VARIABLES:
        monkeypatch.delenv(name, raising=False)


def _settings() -> dict:
    """The tracker settings in the environment (not, say, W&B's socket to its service)."""
    return {name: os.environ.get(name) for name in T.VARIABLES}


# --------------------------------------------------------------------------- mapping


def test_tracking_arguments_name_the_tracker_and_the_run():
    assert T.tracking_arguments(S.NoTracking(kind="none"), NAME) == {"report_to": []}
    assert T.tracking_arguments(S.TensorboardTracking(kind="tensorboard"),
                                NAME) == {"report_to": ["tensorboard"], "run_name": NAME}
    wandb = S.WandbTracking(kind="wandb", project="p")
    assert T.tracking_arguments(wandb, NAME) == {"report_to": ["wandb"], "run_name": NAME}
    mlflow = S.MlflowTracking(kind="mlflow", experiment="e")
    assert T.tracking_arguments(mlflow, NAME) == {"report_to": ["mlflow"], "run_name": NAME}


def test_tracking_variables_carry_every_field(tmp_path):
    wandb = S.WandbTracking(kind="wandb", project="proj", entity="team")
    assert T.tracking_variables(wandb, tmp_path, environ={}) == {
        "WANDB_PROJECT": "proj", "WANDB_ENTITY": "team", "WANDB_DIR": str(tmp_path)}
    # An entity left out is left to the environment; a W&B folder set there is kept.
    bare = S.WandbTracking(kind="wandb", project="proj")
    assert T.tracking_variables(bare, tmp_path, environ={"WANDB_DIR": "/elsewhere"}) == {"WANDB_PROJECT": "proj"}
    mlflow = S.MlflowTracking(kind="mlflow", experiment="exp")
    assert T.tracking_variables(mlflow, tmp_path, environ={}) == {"MLFLOW_EXPERIMENT_NAME": "exp"}
    tb = S.TensorboardTracking(kind="tensorboard")
    assert T.tracking_variables(tb, tmp_path, environ={}) == {"TENSORBOARD_LOGGING_DIR": str(tmp_path / "tensorboard")}
    assert T.tracking_variables(S.NoTracking(kind="none"), tmp_path, environ={}) == {}
    # Any object read by attribute will do (the plan's section).
    plan_section = SimpleNamespace(kind="wandb", project="proj", entity=None)
    assert T.tracking_variables(plan_section, tmp_path, environ={"WANDB_DIR": "x"}) == {"WANDB_PROJECT": "proj"}


def test_the_spec_wins_over_the_environment_only_while_training_and_the_environment_is_restored(tmp_path, monkeypatch):
    _clean_env(monkeypatch)
    monkeypatch.setenv("WANDB_PROJECT", "from-the-shell")
    monkeypatch.setattr(T, "check_installed", lambda tracking: None)
    tracking = S.WandbTracking(kind="wandb", project="from-the-spec", entity="team")
    before = dict(os.environ)
    with T.tracking_environment(tracking, tmp_path / "run") as values:
        assert os.environ["WANDB_PROJECT"] == "from-the-spec" == values["WANDB_PROJECT"]
        assert os.environ["WANDB_ENTITY"] == "team"
        assert os.environ["WANDB_DIR"] == str(tmp_path / "run")
        os.environ["MLFLOW_EXPERIMENT_ID"] = "7"  # as mlflow.set_experiment does
    assert dict(os.environ) == before
    with pytest.raises(RuntimeError):
        with T.tracking_environment(tracking, tmp_path / "run"):
            raise RuntimeError("training failed")
    assert dict(os.environ) == before


def test_a_missing_tracker_package_is_one_error_at_tracking_kind(tmp_path, monkeypatch):
    monkeypatch.setitem(T.PACKAGES, "wandb", ("ftspec_no_such_package", "wandb"))
    with pytest.raises(SpecError) as err:
        with T.tracking_environment(S.WandbTracking(kind="wandb", project="p"), tmp_path):
            pass
    assert err.value.issues[0].key == "tracking.kind"
    assert "pip install wandb" in str(err.value)


# --------------------------------------------------------------------------- real trackers, offline


def _train(run_dir: Path, tracking, steps: int = 3) -> None:
    """A tiny model trained for a few steps by transformers' Trainer, reporting as the
    spec's tracking section says (what the recipes do)."""
    pytest.importorskip("torch")
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments, default_data_collator

    from ftspec.runtime.models import byte_tokenizer, tiny_config

    tok = byte_tokenizer()
    config = tiny_config(SimpleNamespace(architecture="llama", hidden_size=32, num_layers=1, num_heads=4,
                                         num_kv_heads=4, intermediate_size=64, max_position_embeddings=64), tok)
    model = AutoModelForCausalLM.from_config(config)
    rows = [tok(f"Request {i:03d}: billing")["input_ids"] for i in range(8)]
    data = Dataset.from_dict({"input_ids": rows, "labels": rows})
    args = TrainingArguments(output_dir=str(run_dir / "checkpoints"), max_steps=steps, per_device_train_batch_size=4,
                             logging_steps=1, save_strategy="no", use_cpu=True, disable_tqdm=True,
                             **T.tracking_arguments(tracking, NAME))
    with T.tracking_environment(tracking, run_dir):
        Trainer(model=model, args=args, train_dataset=data, data_collator=default_data_collator).train()


def wandb_records(path: Path):
    """The records of a W&B run log (``run-*.wandb``): blocks of 32 KiB holding chunks
    with a 7-byte header (crc32, length, type: 1 whole, 2 first, 3 middle, 4 last),
    after a 7-byte file header; each record is a protobuf ``Record``."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # the rest of a block is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


@pytest.fixture
def offline_wandb(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    _clean_env(monkeypatch)
    home = tmp_path / "wandb-home"
    for name, folder in (("WANDB_CACHE_DIR", "cache"), ("WANDB_CONFIG_DIR", "config"), ("WANDB_DATA_DIR", "data"),
                         ("WANDB_ARTIFACT_DIR", "artifacts")):
        (home / folder).mkdir(parents=True)
        monkeypatch.setenv(name, str(home / folder))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    yield wandb
    wandb.teardown()


def test_wandb_offline_run_has_the_specs_project_entity_and_name_and_logs_the_loss(tmp_path, offline_wandb):
    run_dir = tmp_path / "runs" / NAME
    before = _settings()
    _train(run_dir, S.WandbTracking(kind="wandb", project="ftspec-test-project", entity="ftspec-team"))
    assert _settings() == before
    assert offline_wandb.run is None, "the run is finished when training ends"
    offline_wandb.teardown()  # W&B's service writes the run log: let it finish

    logs = glob.glob(str(run_dir / "wandb" / "offline-run-*" / "run-*.wandb"))
    assert len(logs) == 1, "W&B wrote its run into the run directory"
    records = list(wandb_records(Path(logs[0])))
    runs = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert runs and runs[0].project == "ftspec-test-project"
    assert runs[0].entity == "ftspec-team"
    assert runs[0].display_name == NAME
    rows = [{"/".join(item.nested_key) or item.key: json.loads(item.value_json) for item in r.history.item}
            for r in records if r.WhichOneof("record_type") == "history"]
    assert [row["train/global_step"] for row in rows if "train/loss" in row] == [1, 2, 3]


def test_mlflow_file_store_has_the_specs_experiment_and_the_loss(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    _clean_env(monkeypatch)
    store = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # mlflow 3 wants a database; a folder is enough here
    before = _settings()
    _train(tmp_path / "runs" / NAME, S.MlflowTracking(kind="mlflow", experiment="ftspec-test-experiment"))
    assert _settings() == before

    client = MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("ftspec-test-experiment")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.run_name == NAME
    assert run.info.status == "FINISHED"
    assert "loss" in run.data.metrics
    # mlflow's file store returns a metric's history in no set order (points logged in the same
    # millisecond tie): which steps were logged is what ftspec decides.
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "loss")) == [1, 2, 3]


def test_tensorboard_writes_its_events_into_the_run_directory(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _clean_env(monkeypatch)
    run_dir = tmp_path / "runs" / NAME
    _train(run_dir, S.TensorboardTracking(kind="tensorboard"))
    assert "TENSORBOARD_LOGGING_DIR" not in os.environ
    events = EventAccumulator(str(T.tensorboard_dir(run_dir)))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3]
    assert not (run_dir / "checkpoints" / "runs").exists(), "not under checkpoints/, which is removed after training"


# --------------------------------------------------------------------------- through `ftspec run`

E2E_SPEC = """ftspec: 1
name: {name}
model: {{kind: tiny, hidden_size: 32, num_layers: 1, num_heads: 4, max_position_embeddings: 256}}
data: {{train: tickets.jsonl, limit: 16}}
format: {{kind: prompt_completion, prompt: "Request: {{{{ text }}}}\\nQueue:", completion: " {{{{ queue }}}}"}}
method: {{kind: sft, adapter: full}}
training: {{max_steps: 2, batch_size: 8, max_length: 256, logging_steps: 1}}
compute: {{device: cpu}}
tracking: {tracking}
"""


def _run_spec(folder: Path, tracking: str) -> Path:
    """`ftspec run` of a tiny spec with this tracking section (training only: no
    evaluation split); the run directory."""
    pytest.importorskip("trl")
    from conftest import ROOT

    from ftspec.backends.executor import execute
    from ftspec.plan.compile import compile_spec, find_root

    folder.mkdir(parents=True, exist_ok=True)
    lines = (ROOT / "specs/data/support-tickets.jsonl").read_text(encoding="utf-8").splitlines()[:16]
    (folder / "tickets.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    spec = folder / "job.yaml"
    spec.write_text(E2E_SPEC.format(name=NAME, tracking=tracking), encoding="utf-8")
    plan, _ = compile_spec(spec)
    result = execute(plan, find_root(spec), echo=lambda line: None)
    assert "train" in result.ran
    return result.run_dir


def test_ftspec_run_reports_to_the_specs_mlflow_experiment(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    _clean_env(monkeypatch)
    store = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    before = _settings()
    run_dir = _run_spec(tmp_path / "project", "{kind: mlflow, experiment: spec-experiment}")
    assert _settings() == before
    client = MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("spec-experiment")
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == run_dir.name == NAME
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2]


def test_ftspec_run_reports_to_the_specs_wandb_project(tmp_path, offline_wandb):
    run_dir = _run_spec(tmp_path / "project", "{kind: wandb, project: spec-project, entity: spec-team}")
    offline_wandb.teardown()
    [log] = glob.glob(str(run_dir / "wandb" / "offline-run-*" / "run-*.wandb"))
    records = list(wandb_records(Path(log)))
    [run] = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert (run.project, run.entity, run.display_name) == ("spec-project", "spec-team", NAME)
    rows = [{"/".join(item.nested_key) or item.key: json.loads(item.value_json) for item in r.history.item}
            for r in records if r.WhichOneof("record_type") == "history"]
    assert [row["train/global_step"] for row in rows if "train/loss" in row] == [1, 2]


def test_ftspec_run_writes_tensorboard_events_into_the_run_directory(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _clean_env(monkeypatch)
    run_dir = _run_spec(tmp_path / "project", "{kind: tensorboard}")
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2]
    assert not (run_dir / "checkpoints").exists()
