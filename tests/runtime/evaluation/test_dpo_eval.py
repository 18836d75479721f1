"""A DPO run is evaluated on its held-out pairs: preference accuracy and log-prob
margin for the base and the tuned model, DPO's implicit reward accuracy and margin
for the tuned one (against the base model, its reference), any generation metric
the spec asks for, in the summary and in the report. The numbers are checked here
against a direct computation with the saved models."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from helpers import TINY, run_job, write_job  # noqa: E402

BETA = 0.5
BODY = TINY + f"""
data:
  train: tickets.jsonl
  split: {{test: 0.1, seed: 1}}
  derive:
    wrong: "{{{{ {{'billing': 'account', 'account': 'technical', 'technical': 'shipping', 'shipping': 'returns', \
'returns': 'billing'}}[queue] }}}}"
format:
  kind: preference
  prompt: "Request: {{{{ text }}}}\\nQueue:"
  chosen: " {{{{ queue }}}}"
  rejected: " {{{{ wrong }}}}"
method: {{kind: dpo, beta: {BETA}, adapter: {{kind: lora, r: 4}}}}
training: {{max_steps: 3, batch_size: 4, learning_rate: 5.0e-3, max_length: 128, logging_steps: 1}}
eval:
  limit: 6
  max_new_tokens: 3
  metrics: [preference_accuracy, logprob_margin, reward_accuracy, reward_margin, exact_match]
compute: {{device: cpu}}
"""


def _logprob(model, tok, prompt: str, answer: str) -> float:
    """log p(answer + EOS | prompt), from one forward pass over the whole text."""
    prompt_ids = tok(prompt)["input_ids"]
    full = tok(prompt + answer)["input_ids"] + [tok.eos_token_id]
    assert full[: len(prompt_ids)] == prompt_ids
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([full])).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    return sum(float(logp[i - 1, full[i]]) for i in range(len(prompt_ids), len(full)))


def test_a_dpo_run_reports_preference_and_reward_metrics_that_match_a_direct_computation(tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ctx, lines = run_job(write_job(tmp_path, BODY))
    run = ctx.run_dir
    assert [s.name for s in ctx.plan.steps] == ["prepare_data", "generate_base", "eval_base", "train",
                                                "generate_tuned", "eval_tuned", "report"]
    report = json.loads((run / "metrics.json").read_text())
    assert set(report["base"]) == {"preference_accuracy", "logprob_margin", "exact_match"}
    assert set(report["tuned"]) == {"preference_accuracy", "logprob_margin", "reward_accuracy", "reward_margin",
                                    "exact_match"}

    tok = AutoTokenizer.from_pretrained(str(run / "model"))
    base = AutoModelForCausalLM.from_pretrained(str(run / "data/base-model")).eval()
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(run / "data/base-model")),
                                      str(run / "model")).eval()
    pairs = [json.loads(l) for l in (run / "data/test.jsonl").read_text().splitlines()][:6]
    assert len(pairs) == 6 and report["rows"] == 6

    def direct(model):
        return [(_logprob(model, tok, p["prompt"], p["chosen"]), _logprob(model, tok, p["prompt"], p["rejected"]))
                for p in pairs]

    b, t = direct(base), direct(tuned)
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    for side, logps in (("base", b), ("tuned", t)):
        assert report[side]["preference_accuracy"] == pytest.approx(mean([1.0 if c > r else 0.0 for c, r in logps]))
        assert report[side]["logprob_margin"] == pytest.approx(mean([c - r for c, r in logps]), abs=1e-3)
    chosen_rewards = [BETA * (tc - bc) for (tc, _), (bc, _) in zip(t, b)]
    rejected_rewards = [BETA * (tr - br) for (_, tr), (_, br) in zip(t, b)]
    assert report["tuned"]["reward_accuracy"] == pytest.approx(
        mean([1.0 if c > r else 0.0 for c, r in zip(chosen_rewards, rejected_rewards)]))
    assert report["tuned"]["reward_margin"] == pytest.approx(
        mean([c - r for c, r in zip(chosen_rewards, rejected_rewards)]), abs=1e-3)
    assert abs(report["tuned"]["reward_margin"]) > 1e-4, "training moved the policy away from its reference"

    # The summary and the report say these numbers; the generation metric compared with the chosen answer.
    summary = "\n".join(lines)
    assert "held-out  test split, 6 rows" in summary
    assert "preference_accuracy" in summary and "reward_accuracy" in summary and "exact_match" in summary
    md = (run / "report.md").read_text()
    assert "no evaluation results" not in md.lower()
    assert "reward_accuracy" in md and "preference_accuracy" in md
    predictions = [json.loads(l) for l in (run / "eval-tuned/predictions.jsonl").read_text().splitlines()]
    assert all(p["reference"] == pair["chosen"].strip() for p, pair in zip(predictions, pairs))
    assert all({"chosen_logprob", "rejected_logprob"} <= set(p) for p in predictions)
