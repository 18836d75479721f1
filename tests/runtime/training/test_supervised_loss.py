"""The LM head run only at the supervised positions changes no result: the loss and the
gradients equal the full-logits loss (transformers' own, with gradient accumulation's token
count), a short training run logs the same losses, padding-free batches the same loss as
padded ones; a model whose forward does more than decoder + head keeps its own forward."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from datasets import Dataset  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402
from trl import SFTConfig  # noqa: E402

from ftspec.runtime.models import byte_tokenizer, tiny_config  # noqa: E402
from ftspec.runtime.training import supervised  # noqa: E402
from ftspec.runtime.training.trainer import TokensTrainer  # noqa: E402

IGNORE = -100


def _model(arch: str, attention: str = "sdpa"):
    tok = byte_tokenizer()
    spec = {"architecture": arch, "hidden_size": 32, "num_layers": 2, "num_heads": 4,
            "num_kv_heads": 2 if arch != "gpt2" else 4, "intermediate_size": 64, "max_position_embeddings": 256}
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config(SimpleNamespace(**spec), tok), attn_implementation=attention)
    return model.float(), tok


def _rows(tok, answers: list[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
    """(input ids, labels) per row: the prompt's tokens carry no loss, the answer's do."""
    out = []
    for prompt, answer in answers:
        p, full = tok(prompt)["input_ids"], tok(prompt + answer)["input_ids"]
        out.append((full, [IGNORE] * len(p) + full[len(p):]))
    return out


# Uneven supervised counts per row (1, 5, 2, 9 answer tokens), uneven lengths: two micro-batches.
ANSWERS = [("Review: a fine film\nLabel:", " p"), ("Review: dull\nLabel:", " negat"),
           ("Review: what a joy to watch, truly\nLabel:", " po"), ("Review: no\nLabel:", " negative!")]


def _batch(rows, pad: int):
    n = max(len(ids) for ids, _ in rows)
    ids = torch.tensor([i + [pad] * (n - len(i)) for i, _ in rows])
    labels = torch.tensor([lab + [IGNORE] * (n - len(lab)) for _, lab in rows])
    mask = torch.tensor([[1] * len(i) + [0] * (n - len(i)) for i, _ in rows])
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _accumulate(model, batches, supervised_path: bool):
    """The loss over a gradient-accumulation step of ``batches``, as the trainer computes it
    (each micro-batch's summed loss over the step's supervised-token count), and the gradients."""
    model.zero_grad()
    items = sum(int((b["labels"][:, 1:] != IGNORE).sum()) for b in batches)
    total = 0.0
    for b in batches:
        if supervised_path:
            out = model(**b, use_cache=False, supervised_head=True)
            loss = supervised.supervised_loss(out.log_probs, out.label_mask.sum(), items)
        else:  # transformers' own causal-LM loss, on the full logits
            loss = model(**b, use_cache=False, num_items_in_batch=items).loss
        loss.backward()
        total += loss.item()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return total, grads


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
@pytest.mark.parametrize("adapter", ["full", "lora"])
def test_loss_and_gradients_equal_the_full_logits(arch, adapter):
    model, tok = _model(arch)
    if adapter == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                                 task_type="CAUSAL_LM", init_lora_weights=False))
    model.eval()  # no dropout: both paths see the same network (gradients are still computed)
    rows = _rows(tok, ANSWERS)
    batches = [_batch(rows[:2], tok.pad_token_id), _batch(rows[2:], tok.pad_token_id)]
    full_loss, full_grads = _accumulate(model, batches, supervised_path=False)
    assert supervised.install(model) is None
    assert supervised.installed(model)
    loss, grads = _accumulate(model, batches, supervised_path=True)
    assert loss == pytest.approx(full_loss, abs=1e-5)
    assert grads.keys() == full_grads.keys() and grads
    for name, grad in grads.items():
        assert torch.allclose(grad, full_grads[name], atol=1e-5), name
    # Without the flag the forward is the model's own.
    assert model(**batches[0], use_cache=False).logits.shape[-1] == model.config.vocab_size


def test_head_rows_in_chunks_equal_one_pass():
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=False)
    hidden = torch.randn(37, 16, requires_grad=True)
    targets = torch.randint(0, 50, (37,))
    whole = supervised.head_rows(head, hidden, targets, chunk=1000)
    (-whole[0].sum()).backward()
    grad_whole = (hidden.grad.clone(), head.weight.grad.clone())
    hidden.grad, head.weight.grad = None, None
    parts = supervised.head_rows(head, hidden, targets, chunk=8)
    (-parts[0].sum()).backward()
    for a, b in zip(whole[:3], parts[:3]):
        assert torch.allclose(a.float(), b.float(), atol=1e-6)
    assert torch.allclose(hidden.grad, grad_whole[0], atol=1e-6)
    assert torch.allclose(head.weight.grad, grad_whole[1], atol=1e-6)


def test_padding_free_batch_gives_the_padded_loss():
    model, tok = _model("llama")
    rows = _rows(tok, ANSWERS)
    assert supervised.install(model) is None
    model.eval()
    items = sum(sum(1 for t in lab[1:] if t != IGNORE) for _, lab in rows)
    with torch.no_grad():
        out = model(**_batch(rows, tok.pad_token_id), use_cache=False, supervised_head=True)
        padded = supervised.supervised_loss(out.log_probs, out.label_mask.sum(), items)
        # As TRL's padding-free collator: one sequence, position ids restarting per row, and no
        # label on each row's first token (so no row predicts the next row's start).
        ids = torch.tensor([sum((i for i, _ in rows), [])])
        position_ids = torch.cat([torch.arange(len(i)) for i, _ in rows])[None]
        labels = torch.tensor([sum(([IGNORE] + lab[1:] for _, lab in rows), [])])
        out = model(input_ids=ids, position_ids=position_ids, labels=labels, use_cache=False, supervised_head=True)
        packed = supervised.supervised_loss(out.log_probs, out.label_mask.sum(), items)
    assert out.label_mask.sum() == items
    assert packed.item() == pytest.approx(padded.item(), abs=1e-5)


class FullLogits(TokensTrainer):
    """The reference: transformers' own causal-LM loss on the full logits, with the trainer's
    count of supervised tokens over the accumulation step."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        return model(**inputs, use_cache=False, num_items_in_batch=num_items_in_batch).loss


def _train(tmp_path, loss_positions: str, accumulation: int = 2, trainer_class=TokensTrainer):
    model, tok = _model("llama")
    rows = _rows(tok, ANSWERS * 4)
    data = Dataset.from_dict({"input_ids": [i for i, _ in rows], "labels": [lab for _, lab in rows]})
    folder = tmp_path / f"{trainer_class.__name__}-{loss_positions}"
    config = SFTConfig(output_dir=str(folder), max_steps=4, per_device_train_batch_size=2,
                       gradient_accumulation_steps=accumulation, learning_rate=1e-3, logging_steps=1,
                       use_cpu=True, report_to="none", completion_only_loss=False, seed=1, data_seed=1,
                       save_strategy="no", disable_tqdm=True, max_length=128, lr_scheduler_type="constant")
    trainer = trainer_class(model=model, args=config, train_dataset=data, processing_class=tok,
                            loss_positions=loss_positions)
    trainer.train()
    logs = [x for x in trainer.state.log_history if "loss" in x]
    return trainer, logs


def test_training_logs_the_losses_of_the_full_logits(tmp_path):
    """Four steps of two accumulated micro-batches: the losses are transformers' full-logits losses
    (to fp32 noise), and TRL's own loss on every position (whose chunked head rounds differently)
    within a small tolerance, with the same logged metrics."""
    _, reference = _train(tmp_path, "all", trainer_class=FullLogits)
    trl, trl_logs = _train(tmp_path, "all")
    ours, logs = _train(tmp_path, "supervised")
    assert trl.loss_positions == "all" and ours.loss_positions == "supervised"
    assert len(logs) == len(trl_logs) == len(reference) == 4
    for a, b, ref in zip(logs, trl_logs, reference):
        assert a["loss"] == pytest.approx(ref["loss"], abs=1e-5)
        assert a["grad_norm"] == pytest.approx(ref["grad_norm"], rel=1e-5)
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-3)
        assert a["mean_token_accuracy"] == pytest.approx(b["mean_token_accuracy"], abs=1e-6)
        assert a["entropy"] == pytest.approx(b["entropy"], abs=1e-3)
        assert a["num_tokens"] == b["num_tokens"]


def test_a_model_that_caps_its_logits_keeps_its_forward():
    model, _ = _model("llama")
    model.config.final_logit_softcapping = 30.0
    assert "final_logit_softcapping" in supervised.install(model)
    assert not supervised.installed(model)


def test_a_forward_that_differs_from_decoder_and_head_is_caught():
    model, _ = _model("qwen2")
    original = model.forward

    def scaled(*args, **kwargs):  # a model that scales its logits where no config says so
        out = original(*args, **kwargs)
        out.logits = out.logits * 2
        return out

    model.forward = scaled
    assert "other log-probabilities" in supervised.install(model)
    assert not supervised.installed(model)
