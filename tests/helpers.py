"""What test modules in different folders share: a small job to train on a tiny model, a spec
of stages, a model whose generations are known, and the probe that a command imports no heavy
library.

Test modules import these from here (`from helpers import …`), never from another test module:
tests/ is always on sys.path (pytest puts conftest.py's folder there before it imports any test),
while the folder of a test module is only there once pytest has imported something from it.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from conftest import ROOT

from ftspec.backends.executor import execute
from ftspec.plan.compile import compile_spec, find_root

TICKETS = ROOT / "specs" / "data" / "support-tickets.jsonl"

# --------------------------------------------------------------------------- a job on a tiny model

TINY = """
model:
  kind: tiny
  hidden_size: 32
  num_layers: 2
  num_heads: 4
  max_position_embeddings: 256
  init_seed: 1
"""

PROMPT_COMPLETION = """
format:
  kind: prompt_completion
  prompt: "Request: {{ text }}\\nQueue:"
  completion: " {{ queue }}"
"""

# A spec without its method: a test adds the one it trains (`method: {kind: sft, adapter: full}`).
BASE_BODY = TINY + """
data:
  train: tickets.jsonl
  split: {validation: 0.1, test: 0.1, seed: 1}
""" + PROMPT_COMPLETION + """
training: {max_steps: 4, batch_size: 8, learning_rate: 1.0e-3, max_length: 128, save_every: 2, eval_every: 2, \
logging_steps: 1}
eval: {max_new_tokens: 12, limit: 8, metrics: [accuracy]}
compute: {device: cpu}
"""


def write_job(folder: Path, body: str, name: str = "job") -> Path:
    """The spec `name`.yaml in `folder` (made if missing), beside the first 120 support tickets
    as tickets.jsonl."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = TICKETS.read_text(encoding="utf-8").splitlines()[:120]
    (folder / "tickets.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    path = folder / f"{name}.yaml"
    path.write_text(f"ftspec: 1\nname: {name}\n" + body, encoding="utf-8")
    return path


def run_job(spec: Path, *sets: str, callbacks=None):
    """Compile and run a spec in this process: its run context and the lines it printed."""
    plan, _ = compile_spec(spec, sets=sets)
    lines: list[str] = []
    ctx = execute(plan, find_root(spec), echo=lines.append, callbacks=callbacks)
    return ctx, lines


# --------------------------------------------------------------------------- a spec of stages

# The spec before its `stages:`: a tiny model trained on data/tickets.jsonl (write `stages` after it).
STAGES_HEAD = """\
ftspec: 1
name: staged
model: {kind: tiny, hidden_size: 32, num_layers: 1, num_heads: 2, max_position_embeddings: 256}
data:
  train: data/tickets.jsonl
  split: {validation: 0.1, test: 0.1, seed: 1}
format:
  kind: prompt_completion
  prompt: "Request: {{ text }}\\nQueue:"
  completion: " {{ queue }}"
method: {kind: sft, adapter: full}
training: {max_steps: 2, batch_size: 4, max_length: 256, learning_rate: 1.0e-3}
eval: {metrics: [accuracy], max_new_tokens: 4}
compute: {device: cpu}
"""

# The same tickets as preference pairs: the right queue chosen over a wrong one.
PAIRS = """\
    data:
      train: data/tickets.jsonl
      split: {validation: 0.1, test: 0.1, seed: 1}
      derive: {wrong: "{{ 'billing' if queue != 'billing' else 'account' }}"}
    format: {kind: preference, prompt: "Request: {{ text }}\\nQueue:", chosen: " {{ queue }}", rejected: " {{ wrong }}"}
"""

# SFT, then DPO from the SFT model with a LoRA adapter.
SFT_DPO = """\
  - name: sft
  - name: dpo
    method: {kind: dpo, adapter: {kind: lora, r: 4}}
""" + textwrap.indent(textwrap.dedent(PAIRS), "    ")


def write_stages(repo: Path, stages: str, head: str = STAGES_HEAD, name: str = "spec.yaml") -> Path:
    """The spec `head` followed by `stages` (a YAML list, indented as under `stages:`), in `repo`."""
    path = repo / name
    path.write_text(head + "stages:\n" + textwrap.dedent(stages), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- a model that writes a known answer

CHAIN = ": shop\nxyz"  # after the prompt's ':' the successor model writes " shop\nxyz", then its `end`


def token_id(tok, text: str) -> int:
    """The id of the one token that `text` is."""
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == 1, (text, ids)
    return ids[0]


def successor_model(tok, end: int | None, eos: int | list[int] | None = None):
    """A llama whose next token depends only on the current one: token ids are one-hot
    embeddings, attention and MLP write nothing, and the head maps each token to its
    successor. ``end`` follows the chain's last token (``None``: the filler ``.``)."""
    import torch  # heavy: only the tests that build this model need it
    from transformers import LlamaConfig, LlamaForCausalLM  # heavy, as torch

    vocab = len(tok)
    hidden = -(-vocab // 4) * 4  # one dimension per token, a multiple of the heads
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=8, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
                         tie_word_embeddings=False, pad_token_id=tok.pad_token_id,
                         eos_token_id=tok.eos_token_id if eos is None else eos, bos_token_id=tok.bos_token_id)
    model = LlamaForCausalLM(config).eval()
    filler = token_id(tok, ".")
    successor = {t: filler for t in range(vocab)}
    for a, b in zip(CHAIN, CHAIN[1:]):
        successor[token_id(tok, a)] = token_id(tok, b)
    successor[token_id(tok, CHAIN[-1])] = filler if end is None else end
    with torch.no_grad():
        model.model.embed_tokens.weight.zero_()
        model.model.embed_tokens.weight[torch.arange(vocab), torch.arange(vocab)] = 1.0
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.lm_head.weight.zero_()
        for t, nxt in successor.items():
            model.lm_head.weight[nxt, t] = 1.0
    model.generation_config.eos_token_id = config.eos_token_id
    return model


class Spy:
    """Records how many tokens each ``model.generate`` call wrote (prompt excluded)."""

    def __init__(self, model, monkeypatch):
        self.generated: list[int] = []
        real = model.generate

        def generate(*args, **kwargs):
            out = real(*args, **kwargs)
            self.generated.append(out.shape[1] - kwargs["input_ids"].shape[1])
            return out

        monkeypatch.setattr(model, "generate", generate)


# --------------------------------------------------------------------------- light commands stay light

HEAVY = ("torch", "transformers", "trl", "peft", "datasets", "accelerate")

# Run with `python -c PROBE.format(args=[…], heavy=HEAVY)`: runs the command in-process, then
# prints `HEAVY:` and the heavy libraries it imported, comma-separated (nothing: it stayed light).
PROBE = """
import sys
from ftspec.cli import main
try:
    main({args!r}, standalone_mode=False)
except SystemExit:
    pass
heavy = sorted(m for m in {heavy!r} if m in sys.modules)
print("HEAVY:" + ",".join(heavy))
"""


# --------------------------------------------------------------------------- trainer callbacks the tests share


def preempted_at(step: int):
    """A trainer callback that takes the machine away at the end of ``step`` (SystemExit, as a
    preempted job dies): what a checkpoint before it must let the next run resume from."""
    from transformers import TrainerCallback

    class Preempted(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == step:
                raise SystemExit("preempted")

    return Preempted()


def seen_args():
    """A trainer callback whose ``args`` is what the trainer was really given (its config)."""
    from transformers import TrainerCallback

    class Seen(TrainerCallback):
        args = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.args = args

    return Seen()
