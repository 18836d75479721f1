"""Stages run end to end on tiny models: SFT then DPO (the DPO stage's reference is
the SFT model), re-running only what a change reaches, and distillation."""

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")

import torch  # noqa: E402

from ftspec.compile import compile_spec, find_root  # noqa: E402
from ftspec.runtime.run import execute  # noqa: E402

from test_stages import DISTILL, HEAD, SFT_DPO, write  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SMALL = HEAD.replace("eval: {metrics: [accuracy], max_new_tokens: 4}",
                     "eval: {metrics: [accuracy], max_new_tokens: 4, limit: 8}")


@pytest.fixture
def repo(tmp_path):
    (tmp_path / ".git").mkdir()
    (tmp_path / "data").mkdir()
    lines = (ROOT / "specs" / "data" / "support-tickets.jsonl").read_text(encoding="utf-8").splitlines()[:120]
    (tmp_path / "data" / "tickets.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return tmp_path


def run(path, **kw):
    plan = compile_spec(path)[0]
    lines: list[str] = []
    return execute(plan, find_root(path), echo=lines.append, **kw), lines


def logits(folder: Path, ids: torch.Tensor) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    with torch.no_grad():
        return model(ids).logits


def test_sft_then_dpo_the_dpo_reference_is_the_sft_model(repo, monkeypatch):
    import trl

    seen = {}
    real_train = trl.DPOTrainer.train

    def train(self, *args, **kwargs):
        # What trl takes as the reference: no separate model, the policy with its adapter off.
        model = self.accelerator.unwrap_model(self.model)
        ids = torch.tensor([list(range(3, 40))])
        with torch.no_grad(), model.disable_adapter():
            seen["reference"] = model(ids).logits
        seen.update(ref_model=self.ref_model, ids=ids)
        return real_train(self, *args, **kwargs)

    monkeypatch.setattr(trl.DPOTrainer, "train", train)
    result, lines = run(write(repo, SFT_DPO, head=SMALL))
    sft = result.stages[0]
    assert [s.plan.stage for s in result.stages] == ["sft"] and result.plan.stage == "dpo"
    assert "stage 1/2: sft" in lines and "stage 2/2: dpo" in lines
    assert seen["ref_model"] is None, "trl uses the adapter-disabled policy as the reference"
    sft_model = logits(sft.run_dir / "model", seen["ids"])
    random_base = logits(sft.run_dir / "data" / "base-model", seen["ids"])
    assert torch.allclose(seen["reference"], sft_model, atol=1e-5), "the reference is the SFT stage's model"
    assert not torch.allclose(seen["reference"], random_base, atol=1e-3), "…not the base the SFT stage started from"
    # The DPO stage's base model (what its evaluation calls `base`) is the SFT model too.
    assert torch.allclose(logits(result.run_dir / "data" / "base-model", seen["ids"]), sft_model, atol=1e-6)
    # Each stage has its own run directory; the last is the spec's.
    assert (repo / "runs" / "staged.stage-sft" / "report.md").exists() and (repo / "runs" / "staged" / "report.md").exists()
    plan_json = json.loads((result.run_dir / "plan.json").read_text())
    assert [p["stage"] for p in plan_json["stages"]] == ["sft"]


def test_a_change_to_the_second_stage_re_runs_only_it(repo):
    first, _ = run(write(repo, SFT_DPO, head=SMALL))
    again, _ = run(write(repo, SFT_DPO, head=SMALL))
    assert again.ran == [] and again.stages[0].ran == []
    changed, _ = run(write(repo, SFT_DPO.replace("r: 4}}\n", "r: 4}}\n    training: {learning_rate: 3.0e-4}\n"), head=SMALL))
    assert changed.stages[0].ran == [], "stage sft is reused"
    assert "train" in changed.ran and "prepare_data" not in changed.ran


def test_a_lora_stage_is_merged_into_its_base_for_the_next(repo):
    spec = SFT_DPO.replace("  - name: sft\n", "  - name: sft\n    method: {kind: sft, adapter: {kind: lora, r: 4}}\n")
    result, lines = run(write(repo, spec, head=SMALL))
    sft = result.stages[0]
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([list(range(3, 30))])
    base = AutoModelForCausalLM.from_pretrained(str(sft.run_dir / "data" / "base-model"), dtype=torch.float32)
    tuned = PeftModel.from_pretrained(base, str(sft.run_dir / "model")).eval()
    with torch.no_grad():
        expected = tuned(ids).logits
    assert torch.allclose(logits(result.run_dir / "data" / "base-model", ids), expected, atol=1e-5)
    assert any("its LoRA adapter merged into its base" in line for line in lines)
