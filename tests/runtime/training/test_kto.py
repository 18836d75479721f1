"""KTO (method.kind: kto) on feedback rows, with a tiny model: on held-out rows the tuned model
finds the desirable completions likelier against the undesirable ones than the base model did
(feedback_margin, with its paired interval), and the method's fields reach TRL's KTOConfig."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("trl")

from helpers import run_job, seen_args  # noqa: E402

WORDS = ["alpha", "beta", "gamma", "delta", "omega", "kappa"]

HEAD = """\
ftspec: 1
name: toy
model: {kind: tiny, hidden_size: 32, num_layers: 2, num_heads: 4, max_position_embeddings: 256, init_seed: 1}
data:
  train: rows.jsonl
  split: {validation: 0.05, test: 0.1, seed: 1}
format:
  kind: feedback
  prompt: "{{ text }}:"
  completion: " {{ answer }}"
  label: "{{ thumbs_up }}"
compute: {device: cpu}
"""


def repo(tmp_path: Path, method: str, training: str, evaluation: str = "eval: {baseline: true}",
         rows: int = 200) -> Path:
    """Thumbs-up/down logs: every prompt answered either 'yes' (liked) or 'no' (disliked)."""
    (tmp_path / ".git").mkdir(parents=True, exist_ok=True)
    rnd = random.Random(0)
    with open(tmp_path / "rows.jsonl", "w", encoding="utf-8") as fh:
        for i in range(rows):
            liked = i % 2 == 0
            text = " ".join(rnd.choice(WORDS) for _ in range(3)) + f" {i}"
            fh.write(json.dumps({"text": text, "answer": "yes" if liked else "no", "thumbs_up": liked}) + "\n")
    spec = tmp_path / "job.yaml"
    spec.write_text(HEAD + method + "\n" + training + "\n" + evaluation + "\n", encoding="utf-8")
    return spec


def test_kto_makes_the_desirable_completions_likelier_than_the_undesirable_on_held_out_rows(tmp_path):
    spec = repo(tmp_path, "method: {kind: kto, adapter: {kind: full}, beta: 0.1}",
                "training: {max_steps: 30, batch_size: 8, learning_rate: 1.0e-3, max_length: 64, logging_steps: 5}")
    result, _ = run_job(spec)
    assert [m.name for m in result.plan.eval.metrics] == ["feedback_margin"]  # the default for feedback rows
    base, tuned = result.report["base"]["feedback_margin"], result.report["tuned"]["feedback_margin"]
    assert tuned > base + 2.0, (base, tuned)  # log p(liked) - log p(disliked) rose by more than 2 nats
    low, _high = result.report["intervals"]["tuned_minus_base"]["feedback_margin"]
    assert low > 0  # and the paired interval over the held-out rows says so
    # Each held-out row keeps its completion, its label and its log-probability under the model.
    rows = [json.loads(line) for line in (result.run_dir / "eval-tuned" / "predictions.jsonl").read_text().splitlines()]
    assert {r["label"] for r in rows} == {True, False} and all(r["completion_logprob"] < 0 for r in rows)
    assert (result.run_dir / "model" / "model.safetensors").exists()


@pytest.mark.parametrize("loss_type", ["kto", "apo_zero_unpaired"])
def test_beta_the_weights_and_the_loss_reach_the_trainer_with_a_lora_adapter(tmp_path, loss_type):
    seen = seen_args()
    spec = repo(tmp_path, f"""method:
  kind: kto
  adapter: {{kind: lora, r: 4}}
  beta: 0.3
  desirable_weight: 1.5
  undesirable_weight: 0.7
  loss_type: {loss_type}""", "training: {max_steps: 1, batch_size: 4, max_length: 64, logging_steps: 1}",
                evaluation="eval: {limit: 4}", rows=40)
    result, _ = run_job(spec, callbacks=[seen])
    args = seen.args
    assert (args.beta, args.desirable_weight, args.undesirable_weight, args.loss_type) == (0.3, 1.5, 0.7, loss_type)
    assert (result.run_dir / "model" / "adapter_model.safetensors").exists()
