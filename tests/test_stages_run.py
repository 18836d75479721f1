"""Stages run end to end on tiny models: SFT then DPO (the DPO stage's reference is
the SFT model), re-running only what a change reaches, and distillation."""

import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("torch")

import torch  # noqa: E402
from helpers import SFT_DPO, STAGES_HEAD, write_stages  # noqa: E402

from ftspec.backends.executor import execute  # noqa: E402
from ftspec.plan.compile import compile_spec, find_root  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SMALL = STAGES_HEAD.replace("eval: {metrics: [accuracy], max_new_tokens: 4}",
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
    result, lines = run(write_stages(repo, SFT_DPO, head=SMALL))
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
    assert (repo / "runs" / "staged.stage-sft" / "report.md").exists()
    assert (repo / "runs" / "staged" / "report.md").exists()
    plan_json = json.loads((result.run_dir / "plan.json").read_text())
    assert [p["stage"] for p in plan_json["stages"]] == ["sft"]


def test_a_change_to_the_second_stage_re_runs_only_it(repo):
    first, _ = run(write_stages(repo, SFT_DPO, head=SMALL))
    again, _ = run(write_stages(repo, SFT_DPO, head=SMALL))
    assert again.ran == [] and again.stages[0].ran == []
    changed, _ = run(write_stages(repo, SFT_DPO.replace("r: 4}}\n", "r: 4}}\n    training: {learning_rate: 3.0e-4}\n"),
                                  head=SMALL))
    assert changed.stages[0].ran == [], "stage sft is reused"
    assert "train" in changed.ran and "prepare_data" not in changed.ran
    # The last stage's model is the spec's: it exports (its LoRA merged into the SFT weights)
    # and the spec locks, as a spec without stages does.
    from ftspec.commands import lock as L
    from ftspec.runtime.tools.export import export_model

    exported = export_model(changed.plan, repo, repo / "exported", echo=lambda _: None)
    assert exported.kind == "merged" and (repo / "exported" / "model.safetensors").exists()
    assert "the model stage `sft` of this spec trained" in (repo / "exported" / "README.md").read_text()
    assert L.build(changed.plan, repo, None)["model"]["kind"] == "tiny"


def test_a_lora_stage_is_merged_into_its_base_for_the_next(repo):
    spec = SFT_DPO.replace("  - name: sft\n", "  - name: sft\n    method: {kind: sft, adapter: {kind: lora, r: 4}}\n")
    result, lines = run(write_stages(repo, spec, head=SMALL))
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


# ----------------------------------------------------------------------------- distillation

DISTILL_SMALL = """\
ftspec: 1
name: d
model: {kind: tiny, hidden_size: 64, num_layers: 2, num_heads: 4, max_position_embeddings: 256}
data:
  train: data/tickets.jsonl
  split: {validation: 0.1, test: 0.1, seed: 1, stratify: queue}
format:
  kind: prompt_completion
  prompt: "Request: {{ text }}\\nQueue:"
  completion: " {{ queue }}"
method: {kind: sft, adapter: full}
training: {max_steps: 150, batch_size: 16, max_length: 256, learning_rate: 3.0e-3, eval_every: 50, save_every: 50, \
logging_steps: 25}
eval: {metrics: [accuracy], max_new_tokens: 16}
compute: {device: cpu}
stages:
  - name: teacher
  - name: student
    model: {kind: tiny, hidden_size: 48, num_layers: 1, num_heads: 4, max_position_embeddings: 256}
    method: {kind: distill, adapter: full, teacher: {stage: teacher}, batch_size: 32}
"""

# Measured on a 2-core CPU: teacher 0.74, its student 0.64, the student's base 0.20 on the
# 50 held-out tickets (about 40 s for both stages). The margins below leave room for the
# bootstrap-sized noise of 50 rows, not for a student that did not learn.
STUDENT_OVER_BASE = 0.25


@pytest.fixture
def tickets(tmp_path):
    (tmp_path / ".git").mkdir()
    (tmp_path / "data").mkdir()
    lines = (ROOT / "specs" / "data" / "support-tickets.jsonl").read_text(encoding="utf-8").splitlines()[:500]
    (tmp_path / "data" / "tickets.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return tmp_path


def test_the_distilled_student_learns_from_the_teacher_alone(tickets):
    spec = tickets / "d.yaml"
    spec.write_text(DISTILL_SMALL, encoding="utf-8")
    result, lines = run(spec)
    comparison = json.loads((result.run_dir / "stages" / "comparison.json").read_text())
    acc = {(m["stage"], m["role"]): m["metrics"]["accuracy"] for m in comparison["models"]}
    assert acc[("student", "tuned")] >= acc[("student", "base")] + STUDENT_OVER_BASE, acc
    assert acc[("student", "teacher")] == acc[("teacher", "tuned")], (
        "the teacher scored here is the teacher stage's model")
    # The student trained on the teacher's answers, never on the data's labels.
    answers = [json.loads(line) for line in (result.run_dir / "teacher" / "answers.jsonl").read_text().splitlines()]
    train = [json.loads(line) for line in (result.run_dir / "data" / "train.jsonl").read_text().splitlines()]
    mine = sorted((a for a in answers if a["split"] == "train"), key=lambda a: a["index"])
    assert [r["completion"] for r in train] == [a["text"] for a in mine if a["kept"]]
    data_rows = [json.loads(line)
                 for line in (result.stages[0].run_dir / "data" / "train.jsonl").read_text().splitlines()]
    wrong = [i for i, (a, r) in enumerate(zip(mine, data_rows)) if a["text"].strip() != r["completion"].strip()]
    assert wrong, "a teacher as weak as this one gets some training rows wrong, and the student learns its answer"
    assert not any(a["split"] == "test" for a in answers), "the teacher never answers the held-out rows for training"
    report = (result.run_dir / "report.md").read_text()
    assert "teacher" in report and "student" in report


def test_logit_distillation_on_unlabelled_rows_leaves_the_teacher_unwritten(tickets):
    # The student's training rows have no answer column at all: the teacher's answers are all it has.
    rows = [json.loads(line) for line in (tickets / "data" / "tickets.jsonl").read_text().splitlines()]
    (tickets / "data" / "texts.jsonl").write_text("".join(json.dumps({"text": r["text"]}) + "\n" for r in rows[:300]))
    (tickets / "data" / "held-out.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[450:]))
    spec = tickets / "d.yaml"
    spec.write_text(DISTILL_SMALL.replace("max_steps: 150", "max_steps: 40").replace(
        "batch_size: 32}", "batch_size: 32, logits: {alpha: 0.5, temperature: 2.0}}\n    training: {max_steps: 4}\n"
        "    data: {train: data/texts.jsonl, test: data/held-out.jsonl, split: {validation: 0.1, seed: 1}}"),
        encoding="utf-8")
    plan = compile_spec(spec)[0]
    result, _ = run(spec)
    train = [json.loads(line) for line in (result.run_dir / "data" / "train.jsonl").read_text().splitlines()]
    assert len(train) == 270 and all(r["completion"] for r in train), "every training row holds a teacher answer"
    test = [json.loads(line) for line in (result.run_dir / "data" / "test.jsonl").read_text().splitlines()]
    assert [r["completion"] for r in test] == [f" {r['queue']}" for r in rows[450:]], "held-out rows keep their labels"
    teacher_dir = result.stages[0].run_dir / "model"
    before = {p.name: p.read_bytes() for p in teacher_dir.resolve().iterdir() if p.is_file()}
    log = [json.loads(line) for line in (result.run_dir / "model" / "metrics.jsonl").read_text().splitlines()]
    assert any("kl" in entry and "ce" in entry for entry in log), "the loss's two parts are logged"
    # Train the student again (its step removed from the store): the teacher's files, as
    # its stage saved them and as the teach step loads them, are exactly as they were.
    loaded = result.run_dir / "teacher" / "base-model"
    loaded_before = {p.name: p.read_bytes() for p in loaded.iterdir()}
    shutil.rmtree((result.run_dir / "model").resolve())
    again = execute(plan, find_root(spec), echo=lambda _: None)
    assert again.ran[:1] == ["train"] and again.stages[0].ran == []
    assert {p.name: p.read_bytes() for p in teacher_dir.resolve().iterdir() if p.is_file()} == before
    assert {p.name: p.read_bytes() for p in loaded.iterdir()} == loaded_before
