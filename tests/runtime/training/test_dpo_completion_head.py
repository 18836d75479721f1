"""DPO with the LM head run only at the answers' tokens changes no result: on the same batch the
loss, the chosen and rejected rewards and log-probabilities, the logged metrics and the gradients
equal TRL's own DPO trainer's (full fine-tuning with a reference model, and LoRA whose reference
is the base with the adapter off), for the loss types ftspec offers; the head sees only the
answer tokens; and where this path cannot stand in for TRL's head, TRL's head runs and the
trainer says why."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from datasets import Dataset  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402
from trl import DPOConfig, DPOTrainer  # noqa: E402

from ftspec.runtime.models import byte_tokenizer, tiny_config  # noqa: E402
from ftspec.runtime.training import dpo_trainer  # noqa: E402
from ftspec.runtime.training.dpo_trainer import PreferenceTrainer  # noqa: E402

# Uneven prompts and answers (the chosen longer or shorter than the rejected), so that padding,
# prompt and answer positions all occur in each half of the batch.
PAIRS = [("Request: my card was charged twice\nQueue:", " billing", " account"),
         ("Request: reset my password\nQueue:", " account", " technical support"),
         ("Request: the parcel never came\nQueue:", " shipping", " returns"),
         ("Q:", " returns, please", " billing")]

METRICS = ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen",
           "logps/rejected", "logits/chosen", "logits/rejected", "entropy", "mean_token_accuracy", "num_tokens")


def _model(seed: int = 0, **config):
    tok = byte_tokenizer()
    spec = {"architecture": "llama", "hidden_size": 32, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2,
            "intermediate_size": 64, "max_position_embeddings": 256}
    cfg = tiny_config(SimpleNamespace(**spec), tok)
    for key, value in config.items():
        setattr(cfg, key, value)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(cfg).float(), tok


def _trainer(tmp_path, cls, adapter: str, loss_type: str = "sigmoid", model_config=None, bf16=False, **kwargs):
    model, tok = _model(**(model_config or {}))
    # Another initialisation: a reference the policy has moved away from, so the rewards are not zero.
    reference = _model(1, **(model_config or {}))[0] if adapter == "full" else None
    peft_config = None
    if adapter == "lora":
        from peft import LoraConfig

        # Random B: the policy is not its reference, so the rewards are not zero.
        peft_config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM",
                                 init_lora_weights=False)
    data = Dataset.from_list([{"prompt": p, "chosen": c, "rejected": r} for p, c, r in PAIRS])
    config = DPOConfig(output_dir=str(tmp_path / cls.__name__), beta=0.3, loss_type=[loss_type],
                       label_smoothing=0.1 if loss_type in ("robust", "exo_pair") else 0.0,
                       per_device_train_batch_size=4, max_steps=2, learning_rate=1e-2, logging_steps=1,
                       use_cpu=True, bf16=bf16, report_to="none", seed=1, data_seed=1, save_strategy="no",
                       disable_tqdm=True, max_length=128, lr_scheduler_type="constant")
    return cls(model=model, ref_model=reference, args=config, train_dataset=data, processing_class=tok,
               peft_config=peft_config, **kwargs)


def _step(trainer):
    """The loss of one batch of all the pairs, its logged metrics, and the gradients."""
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(PAIRS))])
    trainer.model.train()
    trainer.model.zero_grad()
    trainer._metrics["train"].clear()
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    grads = {n: p.grad.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    return loss.item(), metrics, grads, batch


@pytest.mark.parametrize("adapter", ["full", "lora"])
@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo", "robust", "sft", "apo_zero"])
def test_loss_rewards_and_gradients_equal_trls(tmp_path, adapter, loss_type):
    trl = _trainer(tmp_path, DPOTrainer, adapter, loss_type)
    ours = _trainer(tmp_path, PreferenceTrainer, adapter, loss_type)
    assert ours.loss_positions == "supervised" and dpo_trainer.installed(ours.model)
    if adapter == "full":
        assert dpo_trainer.installed(ours.ref_model)
    loss_trl, metrics_trl, grads_trl, _ = _step(trl)
    loss, metrics, grads, _ = _step(ours)
    assert loss == pytest.approx(loss_trl, abs=1e-5)
    assert metrics.keys() == metrics_trl.keys()
    for key in METRICS:
        assert metrics[key] == pytest.approx(metrics_trl[key], abs=1e-5), key
    assert metrics["rewards/chosen"] != 0.0 and metrics["rewards/chosen"] != metrics["rewards/rejected"]
    assert grads.keys() == grads_trl.keys() and grads
    for name, grad in grads.items():
        assert torch.allclose(grad, grads_trl[name], atol=1e-5), name
    assert any(g.abs().sum() > 0 for g in grads.values())


def test_the_head_runs_only_at_the_answer_tokens(tmp_path):
    """Policy and reference each score exactly the answers' tokens: the positions whose next token
    is a chosen or rejected token, none of the prompt or the padding."""
    ours = _trainer(tmp_path, PreferenceTrainer, "full")
    rows = []
    for model in (ours.model, ours.ref_model):
        model.get_output_embeddings().register_forward_hook(lambda m, i, o: rows.append(i[0].shape[0]))
    _, _, _, batch = _step(ours)
    answers = sum(len(c) + len(r) + 2 for _, c, r in PAIRS)  # one byte one token, and an EOS after each answer
    assert int(batch["completion_mask"].sum()) == answers
    assert rows == [answers, answers]  # the policy's, then the reference's
    assert batch["input_ids"].numel() > 3 * answers  # so most of the head's work is skipped


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_a_short_training_run_logs_trls_losses(tmp_path, bf16):
    """Two optimiser steps: the losses and rewards logged match TRL's, so the path holds after the
    weights moved (the reference stays put). With bf16 the accelerator runs the policy and the
    reference under autocast (the reference from the start, beneath this path): both still do, so
    the first step's loss and rewards are TRL's; after it, the two heads' backward passes, which
    round bf16 gradients differently, have moved Adam's weights apart."""
    logs = []
    for cls in (DPOTrainer, PreferenceTrainer):
        trainer = _trainer(tmp_path, cls, "full", bf16=bf16)
        trainer.train()
        logs.append([x for x in trainer.state.log_history if "loss" in x])
    assert len(logs[0]) == len(logs[1]) == 2
    for a, b in zip(*logs) if not bf16 else [(logs[0][0], logs[1][0])]:
        for key in ("loss", "rewards/chosen", "rewards/rejected", "logps/rejected"):
            assert b[key] == pytest.approx(a[key], abs=1e-5), key
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-3 if bf16 else 1e-5)


def test_all_positions_is_trls_own_head(tmp_path):
    ours = _trainer(tmp_path, PreferenceTrainer, "lora", loss_positions="all")
    assert ours.loss_positions == "all" and not dpo_trainer.installed(ours.model)


@pytest.mark.parametrize(("setting", "why"), [
    ({"model_config": {"final_logit_softcapping": 30.0}}, "final_logit_softcapping"),
    ({"model_config": {"logit_scale": 0.5}}, "logit_scale"),
])
def test_a_model_whose_logits_are_changed_keeps_trls_head(tmp_path, caplog, setting, why):
    with caplog.at_level(logging.WARNING, logger=dpo_trainer.__name__):
        ours = _trainer(tmp_path, PreferenceTrainer, "full", **setting)
    assert ours.loss_positions == "all" and why in ours.loss_positions_reason
    assert not dpo_trainer.installed(ours.model) and not dpo_trainer.installed(ours.ref_model)
    assert f"the LM head runs at every position: {ours.loss_positions_reason}" in caplog.text


def test_wpo_weighting_keeps_trls_head(tmp_path):
    model, tok = _model()
    data = Dataset.from_list([{"prompt": p, "chosen": c, "rejected": r} for p, c, r in PAIRS])
    config = DPOConfig(output_dir=str(tmp_path), use_weighting=True, use_cpu=True, bf16=False,
                       report_to="none", max_length=128)
    ours = PreferenceTrainer(model=model, ref_model=_model(1)[0], args=config, train_dataset=data,
                             processing_class=tok)
    assert ours.loss_positions == "all" and "use_weighting" in ours.loss_positions_reason
    assert not dpo_trainer.installed(ours.model)


def test_a_reference_whose_head_differs_is_caught(tmp_path):
    """A reference whose log-probabilities differ from its decoder and head run apart: neither
    model is wrapped, so policy and reference never take different paths."""
    trainer = _trainer(tmp_path, PreferenceTrainer, "full", loss_positions="all")
    reference = trainer.ref_model
    fused = reference.forward

    def doubled(*args, **kwargs):  # a head that changes its output where no config says so
        out = fused(*args, **kwargs)
        out.log_probs = out.log_probs * 2
        return out

    reference.forward = doubled
    assert trainer._install().startswith("the reference model: ")
    assert not dpo_trainer.installed(trainer.model) and not dpo_trainer.installed(reference)
