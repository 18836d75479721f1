"""Stages on a GPU: the small distillation (with logit distillation) and SFT then DPO of
tests/test_stages_run.py, on CUDA in bf16, each timed step by step.

    python bench/stages_gpu.py [--out FILE] [--quick]

It writes a throwaway repository (the first 500 support tickets) under a temporary
folder, runs both specs through `ftspec.backends.executor.execute`, and prints each stage's
steps with their seconds, the distillation's comparison table, and whether the DPO
stage's reference model is the SFT stage's model (trl's adapter-disabled policy
against the SFT model saved to disk, on the same tokens). Needs a CUDA device.

--quick: 2 steps a stage on 100 tickets; the figures mean nothing. Without a CUDA
device it compiles both specs, says "no GPU: skipped" and exits 0 (for CI: the script
still imports and its specs still compile); without --quick, no CUDA device is an error.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from string import Template

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _quick import add_quick, say_quick  # noqa: E402

FULL = {"tickets": 500, "distill_steps": 150, "every": 50, "log": 25, "sft_steps": 60, "dpo_steps": 20}
QUICK = {"tickets": 100, "distill_steps": 2, "every": 1, "log": 1, "sft_steps": 2, "dpo_steps": 2}

ON_GPU = "compute: {device: cuda, precision: bf16}\n"

DISTILL = Template("""\
ftspec: 1
name: distill
model: {kind: tiny, hidden_size: 64, num_layers: 2, num_heads: 4, max_position_embeddings: 256}
data:
  train: data/tickets.jsonl
  split: {validation: 0.1, test: 0.1, seed: 1, stratify: queue}
format:
  kind: prompt_completion
  prompt: "Request: {{ text }}\\nQueue:"
  completion: " {{ queue }}"
method: {kind: sft, adapter: full}
training: {max_steps: $distill_steps, batch_size: 16, max_length: 256, learning_rate: 3.0e-3, eval_every: $every,
           save_every: $every, logging_steps: $log}
eval: {metrics: [accuracy], max_new_tokens: 16}
stages:
  - name: teacher
  - name: student
    model: {kind: tiny, hidden_size: 48, num_layers: 1, num_heads: 4, max_position_embeddings: 256}
    method: {kind: distill, adapter: full, teacher: {stage: teacher}, batch_size: 32,
             logits: {alpha: 0.5, temperature: 2.0}}
""")

SFT_DPO = Template("""\
ftspec: 1
name: sft-dpo
model: {kind: tiny, hidden_size: 64, num_layers: 2, num_heads: 4, max_position_embeddings: 256}
data:
  train: data/tickets.jsonl
  split: {validation: 0.1, test: 0.1, seed: 1}
format:
  kind: prompt_completion
  prompt: "Request: {{ text }}\\nQueue:"
  completion: " {{ queue }}"
method: {kind: sft, adapter: full}
training: {max_steps: $sft_steps, batch_size: 16, max_length: 256, learning_rate: 3.0e-3}
eval: {metrics: [accuracy], max_new_tokens: 16, limit: 32}
stages:
  - name: sft
  - name: dpo
    data:
      train: data/tickets.jsonl
      split: {validation: 0.1, test: 0.1, seed: 1}
      derive: {wrong: "{{ 'billing' if queue != 'billing' else 'account' }}"}
    format: {kind: preference, prompt: "Request: {{ text }}\\nQueue:", chosen: " {{ queue }}", rejected: " {{ wrong }}"}
    method: {kind: dpo, adapter: {kind: lora, r: 8}}
    training: {max_steps: $dpo_steps, learning_rate: 5.0e-4}
    eval: {metrics: [preference_accuracy, reward_accuracy]}
""")


def steps_of(result) -> list[str]:
    lines = []
    for run in [*result.stages, result]:
        shown = ", ".join(f"{s.name} {s.seconds:.1f}s" for s in run.steps if s.seconds is not None)
        lines.append(f"  stage {run.plan.stage}: {shown}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    add_quick(parser)
    args = parser.parse_args()
    size = QUICK if args.quick else FULL
    import torch
    import trl

    from ftspec.backends.executor import execute
    from ftspec.plan.compile import compile_spec

    say_quick(args.quick)
    gpu = torch.cuda.is_available()
    if not gpu and not args.quick:
        sys.exit("bench/stages_gpu.py needs a CUDA device")
    out = [f"# {torch.cuda.get_device_name(0) if gpu else 'no GPU'}, torch {torch.__version__}, trl {trl.__version__}"]
    seen = {}
    real_train = trl.DPOTrainer.train

    def train(self, *a, **kw):  # the reference trl will use: the policy with its adapter off
        model = self.accelerator.unwrap_model(self.model)
        ids = torch.tensor([list(range(3, 40))], device=model.device)
        with torch.no_grad(), model.disable_adapter():
            seen["reference"] = model(ids).logits.float().cpu()
        seen["ids"], seen["ref_model"] = ids.cpu(), self.ref_model
        return real_train(self, *a, **kw)

    trl.DPOTrainer.train = train
    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp)
        (repo / ".git").mkdir()
        (repo / "data").mkdir()
        lines = (ROOT / "specs" / "data" / "support-tickets.jsonl").read_text(encoding="utf-8").splitlines()
        (repo / "data" / "tickets.jsonl").write_text("\n".join(lines[:size["tickets"]]) + "\n", encoding="utf-8")
        plans = {}
        for name, text in (("distill", DISTILL), ("sft-dpo", SFT_DPO)):
            spec = repo / f"{name}.yaml"
            spec.write_text(text.substitute(size) + ON_GPU, encoding="utf-8")
            plans[name] = compile_spec(spec)[0]
        if not gpu:
            print("no GPU: skipped (both specs compiled; the runs need a CUDA device)")
            return
        for name, plan in plans.items():
            started = time.perf_counter()
            result = execute(plan, repo, echo=lambda _: None)
            out.append(f"## {name}: {time.perf_counter() - started:.1f}s in all")
            out.extend(steps_of(result))
            if name == "distill":
                comparison = json.loads((result.run_dir / "stages" / "comparison.json").read_text())
                for m in comparison["models"]:
                    out.append(f"  {m['model']:<26} {m['parameters'] or 0:>9,} parameters  accuracy "
                               f"{m['metrics']['accuracy']:.3f}")
                log = [json.loads(x) for x in (result.run_dir / "model" / "metrics.jsonl").read_text().splitlines()]
                parts = [e for e in log if "kl" in e]
                if parts:
                    out.append(f"  student's last logged loss parts: ce {parts[-1]['ce']:.4f}, kl "
                               f"{parts[-1]['kl']:.4f}")
            else:
                from transformers import AutoModelForCausalLM

                sft = AutoModelForCausalLM.from_pretrained(str(result.stages[0].run_dir / "model"), dtype=torch.float32)
                with torch.no_grad():
                    expected = sft(seen["ids"]).logits
                diff = (seen["reference"] - expected).abs().max().item()
                out.append(f"  DPO reference: trl ref_model {seen['ref_model']!r}; adapter-disabled policy vs the SFT "
                           f"stage's saved model, max |Δ logit| {diff:.2e} (bf16 compute)")
    text = "\n".join(out)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
