"""Training in several processes on the CPU (gloo), as `ftspec run` launches them.

What must hold: two processes with batch 8 train as one process with batch 16 (the same
loss curve and final weights, within float tolerance); LoRA under DDP saves a complete
adapter; a save that is not whole fails the run; killing one worker stops them all and
the next run resumes to the same weights; two "nodes" of one process each meet on the
loopback address. FSDP and DeepSpeed do not run on the CPU (accelerate turns FSDP there
into plain DDP without a word): they are refused before any process starts.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")

from helpers import BASE_BODY, TINY, run_job, write_job  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from ftspec.core.errors import RunFailed, SpecError  # noqa: E402

TESTS = Path(__file__).resolve().parents[2]
# fp32: the equivalences below are of the process layout, not of precision (`auto` is bf16 on a CPU with it)
BODY = (BASE_BODY.replace("max_steps: 4, batch_size: 8", "max_steps: 6, batch_size: 16")
        .replace("save_every: 2, eval_every: 2", "save_every: 3, eval_every: 3")
        .replace("compute: {device: cpu}", "compute: {device: cpu, precision: fp32}"))
TWO = ("compute.num_processes=2", "compute.strategy=ddp", "training.batch_size=8")


@pytest.fixture(autouse=True)
def _workers_import_tests(monkeypatch):
    """Workers are new processes: they find the test callbacks through PYTHONPATH."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))


def _losses(run_dir: Path) -> tuple[list, list]:
    rows = [json.loads(l) for l in (run_dir / "model/metrics.jsonl").read_text().splitlines()]
    return ([(r["step"], r["loss"]) for r in rows if "loss" in r],
            [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r])


def _assert_same_training(one: Path, two: Path, weights: str) -> None:
    (train1, eval1), (train2, eval2) = _losses(one), _losses(two)
    assert [s for s, _ in train1] == [s for s, _ in train2] == [1, 2, 3, 4, 5, 6]
    for (_, a), (_, b) in zip(train1, train2):
        assert b == pytest.approx(a, rel=1e-5)  # measured: equal to 1e-7
    # Validation rows are split across the processes and each averages its own batches: the
    # mean of the means differs from one process's by how the rows fall into batches
    # (measured 2e-4 and 1.3e-3 on two draws of the validation rows).
    for (_, a), (_, b) in zip(eval1, eval2):
        assert b == pytest.approx(a, rel=5e-3)
    w1, w2 = load_file(one / "model" / weights), load_file(two / "model" / weights)
    assert w1.keys() == w2.keys() and len(w1) > 0
    worst = max((w1[k] - w2[k]).abs().max().item() for k in w1)
    assert worst < 1e-6, worst  # measured: 1e-8 (full), 4e-8 (LoRA)
    moved = max((w1[k] - load_file(one / "data/base-model/model.safetensors")[k]).abs().max().item()
                for k in w1) if weights == "model.safetensors" else 1.0
    assert moved > 1e-4  # the comparison is of trained weights, not of two untouched copies


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The full fine-tune in one process with batch 16: what every several-process run of
    the same spec is compared with (made once for the module)."""
    spec = write_job(tmp_path_factory.mktemp("one-process"), BODY + "method: {kind: sft, adapter: full}\n")
    return run_job(spec)[0].run_dir


def test_two_processes_with_batch_8_train_as_one_process_with_batch_16(tmp_path, one_process):
    spec = write_job(tmp_path, BODY + "method: {kind: sft, adapter: full}\n")
    import signal

    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)}
    two, lines = run_job(spec, *TWO)
    # torch's launcher sets handlers of its own and leaves them: ftspec puts the program's back
    assert {sig: signal.getsignal(sig) for sig in handlers} == handlers
    text = "\n".join(lines)
    assert "starting 2 processes on this machine, 2 in all" in text
    _assert_same_training(one_process, two.run_dir, "model.safetensors")
    # Only the main process wrote: one metrics line per logged step, not one per process.
    assert len(_losses(two.run_dir)[0]) == 6
    assert json.loads((two.run_dir / "model/train.json").read_text())["steps"] == 6


def test_lora_under_ddp_with_gradient_checkpointing_saves_a_complete_adapter(tmp_path):
    # Dropout off: its masks are drawn per process, so with it on the runs differ by design.
    # Gradient checkpointing with an adapter under DDP is where `use_reentrant` breaks.
    spec = write_job(tmp_path, BODY.replace("logging_steps: 1}", "logging_steps: 1, gradient_checkpointing: true}")
                     + "method: {kind: sft, adapter: {kind: lora, r: 4, dropout: 0.0}}\n")
    one, _ = run_job(spec)
    two, _ = run_job(spec, *TWO)
    _assert_same_training(one.run_dir, two.run_dir, "adapter_model.safetensors")

    from peft import PeftModel, get_peft_model_state_dict
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(two.run_dir / "data/base-model")
    loaded = get_peft_model_state_dict(PeftModel.from_pretrained(base, two.run_dir / "model"))
    saved = load_file(two.run_dir / "model/adapter_model.safetensors")
    assert set(loaded) == set(saved) and all(torch.equal(loaded[k], saved[k]) for k in saved)
    assert sum(1 for k in saved if "lora_A" in k) == sum(1 for k in saved if "lora_B" in k) > 0


def _workers_alive(folder: Path) -> list[str]:
    alive = []
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "ftspec.runtime.distributed.worker_main" in cmd and str(folder) in cmd:
            alive.append(cmd)
    return alive


def test_killing_one_worker_stops_them_all_and_the_next_run_resumes_to_the_same_weights(tmp_path, one_process):
    from distributed_callbacks import KillRankAt

    spec = write_job(tmp_path, BODY + "method: {kind: sft, adapter: full}\n")
    with pytest.raises(RunFailed) as failed:
        run_job(spec, *TWO, callbacks=[KillRankAt(rank=1, step=4)])
    message = str(failed.value)
    assert "worker rank 1 was killed by SIGKILL" in message and "every other worker was stopped" in message
    assert "\n" not in message
    assert _workers_alive(tmp_path) == []

    again, lines = run_job(spec, *TWO)
    assert "  resumed from checkpoint-3" in lines
    _assert_same_training(one_process, again.run_dir, "model.safetensors")


def _transposing_one_saved_weight(monkeypatch) -> None:
    """Between the workers' end and the launcher's check of their save: transpose one square
    weight in the saved file (the same values, so the same sum and sum of squares, in other
    places), as a save that mixed up its pieces would."""
    from ftspec.runtime.distributed import launcher

    real = launcher.elastic_launch

    def launch(config, entrypoint):
        run = real(config, entrypoint)

        def then_transpose(*args):
            result = run(*args)
            import pickle

            saved = pickle.loads(Path(args[-1]).read_bytes()).out_dir / "model.safetensors"
            weights = load_file(saved)
            weights[SCRAMBLED] = weights[SCRAMBLED].t().contiguous()
            save_file(weights, saved, metadata={"format": "pt"})
            return result

        return then_transpose

    monkeypatch.setattr(launcher, "elastic_launch", launch)


SCRAMBLED = "model.layers.0.self_attn.q_proj.weight"  # 32 x 32 in the tiny model


def test_ctrl_c_stops_every_worker_at_the_same_step_after_a_checkpoint(tmp_path, monkeypatch):
    from distributed_callbacks import StopFileAt

    from ftspec.backends.executor import execute
    from ftspec.plan.compile import compile_spec, find_root

    spec = write_job(tmp_path, BODY + "method: {kind: sft, adapter: full}\n")
    with pytest.raises(KeyboardInterrupt):
        run_job(spec, *TWO, callbacks=[StopFileAt(step=4)])
    assert max(int(p.name.rsplit("-", 1)[1]) for p in tmp_path.rglob("checkpoint-*")) == 5
    # The resumed run, through the real launcher, whose save is then scrambled: the whole-save
    # check refuses it in one line and keeps nothing.
    with monkeypatch.context() as m, pytest.raises(RunFailed) as failed:
        _transposing_one_saved_weight(m)
        execute(compile_spec(spec, sets=TWO)[0], find_root(spec), echo=lambda _: None)
    assert str(failed.value) == ("train: the saved model is not whole: 1 differ from the trained weights "
                                 f"({SCRAMBLED}); nothing was kept")
    assert not list((tmp_path / "runs").glob("*/model/model.safetensors"))
    again, lines = run_job(spec, *TWO)
    assert "  resumed from checkpoint-5" in lines, [l for l in lines if "resumed" in l]
    assert json.loads((again.run_dir / "model/train.json").read_text())["steps"] == 6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_of_one_process_each_meet_on_the_loopback_address(tmp_path, one_process):
    spec = write_job(tmp_path, BODY + "method: {kind: sft, adapter: full}\n")
    sets = ["compute.num_nodes=2", "compute.num_processes=1", "compute.strategy=ddp", "training.batch_size=8"]
    port = str(_free_port())
    nodes = []
    for rank in (1, 0):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "NODE_RANK": str(rank)}
        args = [sys.executable, "-m", "ftspec", "run", str(spec)] + [a for s in sets for a in ("--set", s)]
        nodes.append(subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    try:
        outputs = [p.communicate(timeout=400)[0] for p in nodes]
    except subprocess.TimeoutExpired:
        # One node waiting for the other forever: stop both, and show what each said.
        for p in nodes:
            p.kill()
        pytest.fail("the two nodes did not finish: " + " | ".join(p.communicate()[0][-2000:] for p in nodes))
    assert [p.returncode for p in nodes] == [0, 0], outputs
    node1, node0 = outputs
    assert "node 1 of 2" in node1 and "node 0 saves the model" in node1
    assert "report" in node0 and "done in" in node0
    two_nodes = next(p for p in (tmp_path / "runs").iterdir() if p.name.startswith("job@"))
    _assert_same_training(one_process, two_nodes, "model.safetensors")


def test_several_nodes_without_a_rendezvous_is_a_one_line_error_at_num_nodes(tmp_path, monkeypatch):
    for name in ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "SLURM_JOB_NODELIST", "SLURM_NODEID", "SLURM_NNODES"):
        monkeypatch.delenv(name, raising=False)
    spec = write_job(tmp_path, BODY + "method: {kind: sft, adapter: full}\n")
    with pytest.raises(SpecError) as err:
        run_job(spec, "compute.num_nodes=2", "compute.strategy=ddp")
    assert err.value.issues[0].key == "compute.num_nodes" and "MASTER_ADDR" in str(err.value)


def test_fsdp_where_accelerate_would_train_ddp_is_refused_before_a_process_starts(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: FSDP runs here")
    spec = write_job(tmp_path, BODY.replace("compute: {device: cpu, precision: fp32}", "compute: {device: auto}")
                     + "method: {kind: sft, adapter: full}\n")
    with pytest.raises(SpecError) as err:
        run_job(spec, "compute.num_processes=2", "compute.strategy=fsdp")
    assert err.value.issues[0].key == "compute.strategy" and "silently train plain DDP" in str(err.value)


class _Trainer:
    """Enough of a Trainer for check_engine: what accelerate set up."""

    def __init__(self, fsdp: bool):
        self.is_fsdp_enabled, self.is_deepspeed_enabled = fsdp, False

        class Acc:
            distributed_type = "MULTI_CPU"

        self.accelerator = Acc()


def test_a_trainer_not_set_up_as_the_plan_says_stops_before_training():
    from types import SimpleNamespace

    from ftspec.runtime.distributed.ranks import check_engine

    compute = SimpleNamespace(strategy="fsdp", launch=object())
    with pytest.raises(RunFailed, match="plan asks for fsdp but accelerate set up ddp"):
        check_engine(_Trainer(fsdp=False), compute)
    check_engine(_Trainer(fsdp=True), compute)  # as asked: nothing to say


def _saved_tiny(tmp_path: Path):
    from transformers import LlamaConfig, LlamaForCausalLM

    from ftspec.core.io import write_json
    from ftspec.runtime.distributed.ranks import fingerprint as _fingerprint
    from ftspec.runtime.training.job import TrainJob

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=False))
    out = tmp_path / "model"
    model.save_pretrained(out)
    expected = tmp_path / "expected.json"
    write_json(expected, {"kind": "full", "tensors": _fingerprint(model.state_dict())})
    return TrainJob(None, tmp_path, tmp_path, tmp_path, out, tmp_path / "m.jsonl", expected=expected), out


def test_the_saved_model_is_checked_whole_against_the_trained_weights(tmp_path):
    from ftspec.runtime.distributed.launcher import verify_saved

    job, out = _saved_tiny(tmp_path)
    verify_saved(job)  # whole: nothing to say
    weights = load_file(out / "model.safetensors")

    partial = {k: v for k, v in weights.items() if "layers.1." not in k}  # one process's layers only
    save_file(partial, out / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(RunFailed, match=r"the saved model is not whole: \d+ differ from the trained weights"):
        verify_saved(job)

    shard = {k: (v[: max(1, v.shape[0] // 2)].contiguous() if k.endswith("q_proj.weight") else v)
             for k, v in weights.items()}
    save_file(shard, out / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(RunFailed, match="the saved model does not load on one process"):  # a sharded save
        verify_saved(job)

    # Every value right, in the wrong place: one square weight transposed.
    name = "model.layers.0.self_attn.q_proj.weight"
    save_file({**weights, name: weights[name].t().contiguous()}, out / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(RunFailed) as err:
        verify_saved(job)
    assert str(err.value) == ("train: the saved model is not whole: 1 differ from the trained weights "
                              f"({name}); nothing was kept")

    from ftspec.core.io import write_json

    write_json(job.expected, {"kind": "full", "tensors": {}})
    with pytest.raises(RunFailed, match="has no weights to save"):
        verify_saved(job)


def test_the_weights_digest_sees_values_moved_to_other_places():
    from ftspec.runtime.distributed.ranks import digest

    torch.manual_seed(0)
    square = torch.randn(8, 8)
    assert digest(square) == digest(square.clone()) == digest(square.to(torch.float64).to(torch.float32))
    assert digest(square.t()) != digest(square)  # transposed: the same sum and sum of squares
    assert digest(square.flip(0)) != digest(square)  # rows permuted
    assert digest(square[:, torch.randperm(8)]) != digest(square)
    flat = torch.arange(12, dtype=torch.float32)
    assert digest(flat.reshape(3, 4)) != digest(flat.reshape(4, 3)) != digest(flat)  # the shape counts
    assert digest(flat[torch.tensor([1, 0, *range(2, 12)])]) != digest(flat)  # two values swapped
    # A bfloat16 save of bfloat16 weights, loaded back as float32, is the same weights.
    half = square.to(torch.bfloat16)
    assert digest(half) == digest(half.to(torch.float32))
    assert digest(square.to(torch.bfloat16)) != digest(square)  # ...but rounding them is not


DPO_BODY = """
data:
  train: tickets.jsonl
  split: {validation: 0.1, seed: 1}
  derive:
    wrong: "{{ {'billing': 'account', 'account': 'technical', 'technical': 'shipping', 'shipping': 'returns', \
'returns': 'billing'}[queue] }}"
format:
  kind: preference
  prompt: "Request: {{ text }}\\\\nQueue:"
  chosen: " {{ queue }}"
  rejected: " {{ wrong }}"
method: {kind: dpo, beta: 0.1, adapter: full}
training: {max_steps: 3, batch_size: 8, learning_rate: 1.0e-3, max_length: 128, eval_every: 3, save_every: 2, \
logging_steps: 1}
compute: {device: cpu, precision: fp32}
"""


def test_dpo_with_its_reference_model_under_ddp_trains_as_one_process(tmp_path):
    spec = write_job(tmp_path, TINY + DPO_BODY)
    one, _ = run_job(spec)
    two, _ = run_job(spec, "compute.num_processes=2", "compute.strategy=ddp", "training.batch_size=4")
    (train1, _), (train2, _) = _losses(one.run_dir), _losses(two.run_dir)
    assert len(train1) == len(train2) == 3
    assert train1[0][1] == pytest.approx(0.6931, abs=1e-3)  # at step 1 the policy is its reference
    for (_, a), (_, b) in zip(train1, train2):
        assert b == pytest.approx(a, rel=1e-4)
    w1, w2 = load_file(one.run_dir / "model/model.safetensors"), load_file(two.run_dir / "model/model.safetensors")
    assert max((w1[k] - w2[k]).abs().max().item() for k in w1) < 1e-5


def test_workers_do_not_outlive_a_killed_launcher(tmp_path):
    import signal
    import time

    spec = write_job(tmp_path, BODY.replace("max_steps: 6", "max_steps: 400") + "method: {kind: sft, adapter: full}\n")
    args = [sys.executable, "-m", "ftspec", "run", str(spec), *[a for s in TWO for a in ("--set", s)]]
    launcher = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while len(_workers_alive(tmp_path)) < 2 and time.time() < deadline and launcher.poll() is None:
            time.sleep(0.5)
        assert len(_workers_alive(tmp_path)) == 2, "the workers never started"
        launcher.send_signal(signal.SIGKILL)
        launcher.wait(timeout=30)
        deadline = time.time() + 60  # a hang detector: orphaned workers notice their launcher is gone and exit
        while _workers_alive(tmp_path) and time.time() < deadline:
            time.sleep(0.2)
        assert _workers_alive(tmp_path) == []
    finally:
        launcher.kill()


def test_the_plans_launch_and_quant_storage_reach_the_library_arguments():
    from types import SimpleNamespace

    from ftspec.plan.model import Launch
    from ftspec.runtime.training import builders

    adapter = SimpleNamespace(kind="qlora", bits=4, quant_type="nf4", double_quant=True, quant_storage="bfloat16")
    assert builders.quantization_config(adapter).bnb_4bit_quant_storage == torch.bfloat16
    fsdp = {"fsdp": True,
            "fsdp_config": {"version": 2, "reshard_after_forward": False,
                            "transformer_layer_cls_to_wrap": ["LlamaDecoderLayer"]}}
    launch = Launch(world_size=2, processes_per_node=2, nodes=1, backend="nccl", rendezvous="local", trainer=fsdp)
    given = builders.distributed_arguments(launch)
    assert given == fsdp  # exactly the plan's keyword arguments, as plain (mutable) data
    given["fsdp_config"]["version"] = 1
    assert launch.trainer["fsdp_config"]["version"] == 2  # the plan is not changed by what the library does
    assert builders.distributed_arguments(None) == {}
