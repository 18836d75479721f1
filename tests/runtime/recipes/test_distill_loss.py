"""Logit distillation (ftspec.runtime.recipes.distill): the loss against a hand computation, its
two limits (alpha 0 and 1), no gradient into the teacher; the recipe trains the student
with a frozen teacher that is never written, and refuses a teacher whose tokenizer
vocabulary is not the student's before any step."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

# Without torch this module is skipped: the imports below need it.
torch = pytest.importorskip("torch")

from helpers import STAGES_HEAD  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from transformers import AutoModelForCausalLM, TrainerCallback  # noqa: E402

from ftspec.catalog import steps  # noqa: E402
from ftspec.core.errors import SpecError  # noqa: E402
from ftspec.plan import keys  # noqa: E402
from ftspec.plan.compile import compile_spec  # noqa: E402
from ftspec.runtime.models import bpe_tokenizer, build_tiny, byte_tokenizer, tiny_config  # noqa: E402
from ftspec.runtime.recipes import distill as D  # noqa: E402
from ftspec.runtime.training.job import TrainJob  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]

# --------------------------------------------------------------------------- the loss by hand

# Vocabulary of 3, two sequences of 3 tokens. The logits at position t predict the label at
# t + 1: sequence 0 is scored at t = 0 (label 2) and t = 1 (label 0); sequence 1 at t = 0
# (label 1) only, its last label is masked. The logits at t = 2 predict nothing.
STUDENT = [[[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [9.0, 9.0, 9.0]],
           [[0.0, 0.0, 1.0], [5.0, -5.0, 5.0], [9.0, 9.0, 9.0]]]
TEACHER = [[[0.0, 1.0, 0.0], [0.0, 2.0, 0.0], [3.0, 1.0, 7.0]],
           [[2.0, 0.0, 0.0], [0.0, 0.0, 9.0], [3.0, 1.0, 7.0]]]
LABELS = [[-100, 2, 0], [-100, 1, -100]]
SCORED = [(0, 0, 2), (0, 1, 0), (1, 0, 1)]  # (sequence, position, label) of the answer tokens


def _softmax(xs, t=1.0):
    z = sum(math.exp(x / t) for x in xs)
    return [math.exp(x / t) / z for x in xs]


def _hand_ce():
    # -log softmax(s)[label] = log Σ exp(s) − s[label], averaged over the 3 answer tokens
    return sum(math.log(sum(math.exp(x) for x in STUDENT[b][t])) - STUDENT[b][t][y] for b, t, y in SCORED) / 3


def _hand_kl(temperature):
    # KL(p ‖ q) = Σ_v p_v (log p_v − log q_v), p the teacher's and q the student's softened distribution
    total = 0.0
    for b, t, _ in SCORED:
        p, q = _softmax(TEACHER[b][t], temperature), _softmax(STUDENT[b][t], temperature)
        total += sum(pv * (math.log(pv) - math.log(qv)) for pv, qv in zip(p, q))
    return total / 3


def _tensors(grad=False):
    return (torch.tensor(STUDENT, requires_grad=grad), torch.tensor(TEACHER, requires_grad=grad), torch.tensor(LABELS))


def test_kd_loss_equals_the_hand_computation():
    s, t, y = _tensors()
    # The numbers written out for the first answer token, to pin the formula's pieces.
    assert _hand_ce() == pytest.approx((math.log(math.e + 2) + math.log(2 + math.e**2) + math.log(2 + math.e)) / 3)
    for alpha, temperature in [(0.5, 2.0), (0.3, 1.0), (0.8, 4.0)]:
        got = D.kd_loss(s, t, y, alpha, temperature).item()
        want = (1 - alpha) * _hand_ce() + alpha * temperature**2 * _hand_kl(temperature)
        assert got == pytest.approx(want, rel=1e-5), (alpha, temperature)
    ce, kl = D.kd_terms(s, t, y, 2.0)
    assert (ce.item(), kl.item()) == (pytest.approx(_hand_ce(), rel=1e-5), pytest.approx(_hand_kl(2.0), rel=1e-5))


def test_alpha_0_is_plain_cross_entropy_and_alpha_1_is_the_scaled_kl():
    s, t, y = _tensors()
    ce = torch.nn.functional.cross_entropy(s[:, :-1].reshape(-1, 3), y[:, 1:].reshape(-1), ignore_index=-100)
    assert D.kd_loss(s, t, y, 0.0, 3.0).item() == pytest.approx(ce.item(), rel=1e-6)
    assert D.kd_loss(s, t, y, 1.0, 3.0).item() == pytest.approx(9.0 * _hand_kl(3.0), rel=1e-5)
    # The teacher's own distribution costs nothing in the KL term.
    assert D.kd_loss(t, t, y, 1.0, 2.0).item() == pytest.approx(0.0, abs=1e-6)


def test_no_gradient_reaches_the_teacher_logits():
    s, t, y = _tensors(grad=True)
    D.kd_loss(s, t, y, 0.5, 2.0).backward()
    assert t.grad is None
    assert s.grad is not None and s.grad.abs().sum() > 0
    # Masked positions and the last position carry no gradient.
    assert s.grad[1, 1].abs().sum() == 0 and s.grad[:, 2].abs().sum() == 0


def test_num_items_divides_as_the_sft_loss_does():
    s, t, y = _tensors()
    mean = D.kd_loss(s, t, y, 0.5, 2.0)
    assert D.kd_loss(s, t, y, 0.5, 2.0, num_items=6).item() == pytest.approx(mean.item() * 3 / 6, rel=1e-6)


def test_vocabulary_differences_are_one_line():
    assert D.vocabulary_difference({"a": 0, "b": 1}, {"a": 0, "b": 1}) is None
    line = D.vocabulary_difference({"a": 0, "b": 1}, {"a": 0, "b": 1, "ab": 2, "ba": 3})
    assert line == ("the teacher's tokenizer has 4 tokens, the student's 2; "
                    "'ab' (teacher id 2) is not in the student's, nor 1 more")
    line = D.vocabulary_difference({"a": 0, "b": 1}, {"b": 0, "a": 1})
    assert line == ("the teacher's tokenizer has 2 tokens, the student's 2; "
                    "'b' is id 0 in the teacher's and 1 in the student's (2 tokens numbered differently)")


# --------------------------------------------------------------------------- the recipe

# The stages' spec of tests/plan/test_stages.py (helpers.STAGES_HEAD), its student stage distilling with logits.
HEAD = STAGES_HEAD.replace("name: staged", "name: kd") + """\
stages:
  - name: teacher
  - name: student
    model: {kind: tiny, hidden_size: 16, num_layers: 1, num_heads: 2, max_position_embeddings: 256}
    method: {kind: distill, adapter: full, teacher: {stage: teacher}, logits: {alpha: 0.5, temperature: 2.0}}
    training: {max_steps: 8, batch_size: 4, max_length: 256, learning_rate: 1.0e-2, logging_steps: 1, \
save_every: 1000, batching: padded}
"""
ROWS = [("a gift card", "billing"), ("lost my key", "account"),  # the first two: validation
        ("my card was charged twice", "billing"), ("where is order 12?", "shipping"), ("reset my password", "account"),
        ("the app crashes on start", "technical"), ("I want my money back", "returns"), ("invoice is wrong", "billing"),
        ("parcel never arrived", "shipping"), ("cannot log in", "account")]


def _teacher_model(folder: Path, tokenizer, pad: int = 0) -> Path:
    """A tiny teacher, larger than the student, its embedding padded ``pad`` rows past its tokenizer."""
    config = tiny_config(SimpleNamespace(architecture="llama", hidden_size=32, num_layers=2, num_heads=2,
                                         num_kv_heads=2, intermediate_size=64, max_position_embeddings=256), tokenizer)
    config.vocab_size += pad
    torch.manual_seed(7)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def _job(tmp_path: Path, teacher_tokenizer=None, pad: int = 6, body: str = HEAD) -> TrainJob:
    """The student stage's train view of a compiled plan, its prepared data made by hand:
    the tiny student, and a handful of rows tokenized with loss on the answer only."""
    (tmp_path / ".git").mkdir()
    (tmp_path / "data").mkdir()
    lines = (ROOT / "specs" / "data" / "support-tickets.jsonl").read_text(encoding="utf-8").splitlines()[:100]
    (tmp_path / "data" / "tickets.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "spec.yaml").write_text(body, encoding="utf-8")
    plan = compile_spec(tmp_path / "spec.yaml")[0]
    view = keys.view(plan, steps.TRAIN)
    assert view.method.distill.logits is not None
    data_dir = tmp_path / "prepared"
    build_tiny(view.model, [], data_dir / "base-model")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(data_dir / "base-model")
    ids, labels = [], []
    for text, queue in ROWS:
        prompt = tok(f"Request: {text}\nQueue:")["input_ids"]
        answer = tok(f" {queue}")["input_ids"] + [tok.eos_token_id]
        ids.append(prompt + answer)
        labels.append([-100] * len(prompt) + answer)
    from ftspec.runtime.training.data import save_tokens

    save_tokens(data_dir / "train-tokens", ids[2:], labels[2:])
    save_tokens(data_dir / "validation-tokens", ids[:2], labels[:2])
    (data_dir / "stats.json").write_text(json.dumps({"splits": {"train": {}}}), encoding="utf-8")
    # Where the teach step leaves a stage teacher: its folder's base-model.
    _teacher_model(tmp_path / "teach" / "base-model", teacher_tokenizer or byte_tokenizer(), pad)
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    return TrainJob(view, tmp_path, data_dir, checkpoints, tmp_path / "out", checkpoints / "metrics.jsonl",
                    teach_dir=tmp_path / "teach")


class _Watch(TrainerCallback):
    def __init__(self):
        self.logs, self.optimized = [], None

    def on_train_begin(self, args, state, control, optimizer=None, **kwargs):
        self.optimized = {id(p) for group in optimizer.param_groups for p in group["params"]} if optimizer else None

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append(dict(logs or {}))


def test_the_student_learns_from_a_frozen_teacher_that_is_never_written(tmp_path, monkeypatch):
    job = _job(tmp_path)
    watch = _Watch()
    job.callbacks.append(watch)
    loaded = []
    real = D.load_teacher
    monkeypatch.setattr(D, "load_teacher", lambda *a: loaded.append(real(*a)) or loaded[-1])
    before = load_file(str(tmp_path / "teach" / "base-model" / "model.safetensors"))
    student_before = load_file(str(job.data_dir / "base-model" / "model.safetensors"))

    result = D.train_distill(job)

    assert result.steps == 8
    (teacher,) = loaded
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    # The teacher's weights, in memory and on disk, are bit-identical after training.
    state = teacher.state_dict()
    for name, value in before.items():
        assert torch.equal(state[name], value), name
    assert load_file(str(tmp_path / "teach" / "base-model" / "model.safetensors")).keys() == before.keys()
    # Never in the optimizer, never in the saved student.
    assert watch.optimized and not watch.optimized & {id(p) for p in teacher.parameters()}
    saved = load_file(str(job.out_dir / "model.safetensors"))
    assert saved.keys() == student_before.keys()
    assert any(not torch.equal(saved[k], student_before[k]) for k in saved)
    # The loss fell, and its two parts were logged.
    losses = [log["loss"] for log in watch.logs if "loss" in log]
    assert len(losses) >= 4 and losses[-1] < losses[0], losses
    parts = [log for log in watch.logs if "kl" in log and "ce" in log]
    assert parts and all(log["kl"] >= 0 for log in parts)
    # The KD loss is (1 − α)·ce + α·T²·kl of the same batch (padded rows of the embedding cut off).
    first = parts[0]
    assert first["loss"] == pytest.approx(0.5 * first["ce"] + 0.5 * 4 * first["kl"], rel=1e-3)
    # Validation scores the same loss, against the teacher too.
    evals = [log for log in watch.logs if "eval_loss" in log]
    assert evals and all(log["eval_loss"] == pytest.approx(0.5 * log["eval_ce"] + 2 * log["eval_kl"],
                                                           rel=1e-3) for log in evals)


def test_a_teacher_with_another_vocabulary_is_refused_before_training(tmp_path, monkeypatch):
    bpe = bpe_tokenizer([f"Request: {t}\nQueue: {q}" for t, q in ROWS] * 4, 300)
    job = _job(tmp_path, teacher_tokenizer=bpe, pad=0)
    monkeypatch.setattr(D, "load_teacher", lambda *a: pytest.fail("the teacher model was loaded before the check"))
    from ftspec.runtime.recipes import sft

    monkeypatch.setattr(sft, "load_model", lambda *a, **k: pytest.fail("the student was loaded before the check"))
    with pytest.raises(SpecError) as err:
        D.train_distill(job)
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith("method.logits: needs one tokenizer vocabulary for teacher and student, but the teacher's "
                           f"tokenizer has {len(bpe)} tokens, the student's 262; "), text
    assert not any(job.checkpoints.glob("checkpoint-*")) and not job.out_dir.exists()


def test_without_logits_the_recipe_is_sft(tmp_path, monkeypatch):
    body = HEAD.replace(", logits: {alpha: 0.5, temperature: 2.0}", "")
    (tmp_path / ".git").mkdir()
    (tmp_path / "data").mkdir()
    lines = (ROOT / "specs" / "data" / "support-tickets.jsonl").read_text(encoding="utf-8").splitlines()[:100]
    (tmp_path / "data" / "tickets.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "spec.yaml").write_text(body, encoding="utf-8")
    view = keys.view(compile_spec(tmp_path / "spec.yaml")[0], steps.TRAIN)
    calls = []
    monkeypatch.setattr(D, "train_sft", lambda job, **kw: calls.append(kw) or "trained")
    job = TrainJob(view, tmp_path, tmp_path, tmp_path, tmp_path / "out", tmp_path / "m.jsonl")
    assert D.train_distill(job) == "trained" and calls == [{}]


def test_packed_batches_reach_the_teacher_as_the_student_gets_them(tmp_path, monkeypatch):
    """Padding-free packing keeps rows apart by their position ids: the teacher is given
    the same ones (and no attention mask), so it scores each row alone as the student does."""
    body = HEAD.replace("max_steps: 8", "max_steps: 2").replace("batching: padded", "batching: packed")
    job = _job(tmp_path, body=body)
    seen = []
    real = D.load_teacher

    def load(*a):
        teacher = real(*a)
        teacher.register_forward_pre_hook(lambda module, args, kwargs: seen.append(dict(kwargs)), with_kwargs=True)
        return teacher

    monkeypatch.setattr(D, "load_teacher", load)
    D.train_distill(job)
    # Before training, the supervised head's probe checks the teacher on a few bare token ids.
    seen = [k for k in seen if set(k) != {"input_ids", "use_cache"}]
    # Labels only to pick the answer positions its head runs at (the supervised head), never a loss.
    assert seen and all("position_ids" in k and "attention_mask" not in k for k in seen)
    assert all("labels" not in k or k.get("supervised_head") == "logits" for k in seen)
    first = seen[0]
    assert first["input_ids"].shape[0] == 1  # one packed sequence of several rows
    assert int((first["position_ids"][0] == 0).sum()) > 1


# --------------------------------------------------------------------------- only the answer tokens


def _tiny(seed: int):
    tok = byte_tokenizer()
    spec = {"architecture": "llama", "hidden_size": 32, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2,
            "intermediate_size": 64, "max_position_embeddings": 256}
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(tiny_config(SimpleNamespace(**spec), tok)).float(), tok


def _kd_loss_and_grads(tmp_path, loss_positions: str, batch: dict, items: int):
    from datasets import Dataset
    from trl import SFTConfig

    student, tok = _tiny(0)
    teacher, _ = _tiny(1)
    config = SFTConfig(output_dir=str(tmp_path / loss_positions), use_cpu=True, report_to="none",
                       completion_only_loss=False, max_length=128)
    data = Dataset.from_dict({"input_ids": [[3, 4, 5]], "labels": [[-100, 4, 5]]})
    trainer = D.DistillTrainer(model=student, args=config, train_dataset=data, processing_class=tok, teacher=teacher,
                               alpha=0.5, temperature=2.0, vocab_size=len(tok), loss_positions=loss_positions)
    assert trainer.loss_positions == loss_positions and trainer.teacher_rows == (loss_positions == "supervised")
    trainer.model.eval()
    loss = trainer.compute_loss(trainer.model, dict(batch), num_items_in_batch=items)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    return loss.item(), grads, trainer._metrics["eval"]


def test_kd_loss_on_the_answer_tokens_alone_equals_the_full_logits(tmp_path):
    """The student's and the teacher's heads run only at the answer tokens: the KD loss, its
    gradients and its logged parts are those of the full logits (uneven answers, padding, and a
    gradient-accumulation token count)."""
    batch = {"input_ids": torch.tensor([[5, 6, 7, 8, 9, 0], [10, 11, 12, 13, 14, 15]]),
             "attention_mask": torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]]),
             "labels": torch.tensor([[-100, -100, -100, 8, 9, -100], [-100, 11, 12, 13, 14, 15]])}
    full, full_grads, full_logs = _kd_loss_and_grads(tmp_path, "all", batch, items=11)
    rows, grads, logs = _kd_loss_and_grads(tmp_path, "supervised", batch, items=11)
    assert rows == pytest.approx(full, abs=1e-5)
    assert grads.keys() == full_grads.keys() and grads
    for name, grad in grads.items():
        assert torch.allclose(grad, full_grads[name], atol=1e-5), name
    for key in ("ce", "kl", "mean_token_accuracy"):
        assert logs[key] == pytest.approx(full_logs[key], abs=1e-5)
