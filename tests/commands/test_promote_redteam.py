"""`ftspec export --from NAME` of a LoRA adapter (ftspec/commands/promote.py): the export writes
the adapter merged into its base model, so the record pins that base too — a base folder changed
after the promotion is refused, not merged with the promoted adapter into a model nobody promoted
(the parity check compares against the same changed base and would pass)."""

from __future__ import annotations

import json
import shutil

import pytest

pytest.importorskip("torch")

from helpers import BASE_BODY, TINY, run_job, write_job  # noqa: E402

from ftspec.catalog import steps  # noqa: E402
from ftspec.commands.export import export_promoted  # noqa: E402
from ftspec.commands.promote import promote  # noqa: E402
from ftspec.core.errors import SpecError  # noqa: E402
from ftspec.store.promotions import read_record  # noqa: E402
from ftspec.store.rundir import Store  # noqa: E402

SHORT = BASE_BODY.replace("max_steps: 4", "max_steps: 2")


def test_a_lora_base_changed_after_promotion_is_refused_at_export(tmp_path):
    # A real local base model: the tiny model a first run prepared, copied to ./base.
    first, _ = run_job(write_job(tmp_path, SHORT + "method: {kind: sft, adapter: full}\n", "first"))
    store = Store(tmp_path / "runs" / ".ftspec-store")
    prepared = store.path(steps.PREPARE_DATA.name, first.plan.step(steps.PREPARE_DATA.name).key) / "base-model"
    shutil.copytree(prepared, tmp_path / "base")
    lora = write_job(tmp_path, SHORT.replace(TINY, "\nmodel: {base: ./base}\n")
                     + "method: {kind: sft, adapter: {kind: lora, r: 2}}\n", "lora")
    run_job(lora)
    promote(lora, to="prod")
    assert read_record(tmp_path, "prod").base_sha256 is not None
    assert export_promoted("prod", tmp_path, output=tmp_path / "out", echo=lambda _: None).kind == "merged"

    config = tmp_path / "base" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "rms_norm_eps": 0.5}))
    with pytest.raises(SpecError) as err:
        export_promoted("prod", tmp_path, output=tmp_path / "out2", echo=lambda _: None)
    assert "the base model the adapter promoted as 'prod' is merged into" in str(err.value)
    assert "is not the one it was promoted with" in str(err.value)
    assert not (tmp_path / "out2").exists()


def test_a_full_fine_tune_records_no_base(tmp_path):
    spec = write_job(tmp_path, SHORT + "method: {kind: sft, adapter: full}\n")
    run_job(spec)
    promote(spec, to="prod")
    assert read_record(tmp_path, "prod").base_sha256 is None
