"""The FSDP branch of ftspec.runtime.distributed.ranks.record_expected, for real, on the CPU.

accelerate does not run FSDP on the CPU (it builds plain DDP without a word), so a run with
strategy fsdp cannot reach that branch here. torch's own FSDP2 (fully_shard) does run on
the CPU with gloo: two processes shard the same tiny Llama, train two AdamW steps, and call
record_expected with a stand-in trainer. The fingerprint must hold the FULL shapes (the
gather gathered), a whole save of the gathered weights must pass verify_saved, and a save
of rank 0's shards alone must fail it with one line.

This file is also the worker: `python tests/runtime/distributed/test_fsdp_gather.py RANK WORLD PORT OUT`.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
WORLD = 2
# Every sharded dimension (dim 0) is even, so each rank holds exactly half of it.
CONFIG = {"vocab_size": 64, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
          "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64,
          "tie_word_embeddings": False}


def _config():
    from transformers import LlamaConfig

    return LlamaConfig(**CONFIG)


class _Accelerator:
    @staticmethod
    def unwrap_model(model):
        return model


class _Trainer:
    """What record_expected reads from a transformers Trainer, and nothing more."""

    is_fsdp_enabled = True
    is_deepspeed_enabled = False
    accelerator = _Accelerator()

    def __init__(self, model, rank: int):
        self.model, self._rank = model, rank

    def is_world_process_zero(self) -> bool:
        return self._rank == 0


def _worker(rank: int, world: int, port: int, out: Path) -> None:
    import torch
    import torch.distributed as dist
    from safetensors.torch import save_file
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
    )
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor
    from transformers import LlamaForCausalLM

    from ftspec.runtime.distributed.ranks import record_expected

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        model = LlamaForCausalLM(_config())
        mesh = init_device_mesh("cpu", (world,))
        for layer in model.model.layers:
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        batch = torch.arange(2 * 16).reshape(2, 16) % CONFIG["vocab_size"]  # the same on every rank
        for _ in range(2):
            loss = model(input_ids=batch, labels=batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()

        record_expected(_Trainer(model, rank), out / "expected.json")
        # The whole weights, gathered here independently of record_expected (a collective).
        full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if rank == 0:
            whole = LlamaForCausalLM(_config())
            whole.save_pretrained(str(out / "whole"), state_dict={k: v.contiguous() for k, v in full.items()})
            shards = {name: (t.to_local() if isinstance(t, DTensor) else t).detach().clone().contiguous()
                      for name, t in model.state_dict().items()}
            (out / "sharded").mkdir()
            save_file(shards, str(out / "sharded" / "model.safetensors"), metadata={"format": "pt"})
            shutil.copy(out / "whole" / "config.json", out / "sharded" / "config.json")
            (out / "shard_shapes.json").write_text(json.dumps({k: list(v.shape) for k, v in shards.items()}))
        dist.barrier()
    finally:
        dist.destroy_process_group()


# --------------------------------------------------------------------------- the test

if __name__ != "__main__":
    import pytest

    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    try:
        from torch.distributed.fsdp import fully_shard  # noqa: F401
    except ImportError:
        pytest.skip(f"torch {torch.__version__} has no torch.distributed.fsdp.fully_shard (FSDP2)",
                    allow_module_level=True)
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with the gloo backend is not available", allow_module_level=True)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_sharded(out: Path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    port = _free_port()
    logs = [out / f"rank{r}.log" for r in range(WORLD)]
    procs = [subprocess.Popen([sys.executable, __file__, str(r), str(WORLD), str(port), str(out)], cwd=ROOT, env=env,
                              stdout=logs[r].open("w"), stderr=subprocess.STDOUT) for r in range(WORLD)]
    try:
        codes = [p.wait(timeout=120) for p in procs]
    except subprocess.TimeoutExpired:
        codes = None
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    if codes != [0] * WORLD:
        tails = "\n".join(f"--- rank {r} ({'timed out' if codes is None else codes[r]}):\n{logs[r].read_text()[-3000:]}"
                          for r in range(WORLD))
        pytest.fail(f"the FSDP2 workers failed:\n{tails}")


def _job(out_dir: Path, expected: Path, tmp: Path):
    from ftspec.runtime.training.job import TrainJob

    return TrainJob(plan=None, root=tmp, data_dir=tmp, checkpoints=tmp / "checkpoints", out_dir=out_dir,
                    metrics=tmp / "metrics.jsonl", expected=expected)


def test_fsdp2_gather_records_full_weights_and_catches_a_sharded_save(tmp_path):
    from ftspec.core.errors import RunFailed
    from ftspec.runtime.distributed.launcher import verify_saved

    _train_sharded(tmp_path)
    expected = tmp_path / "expected.json"
    record = json.loads(expected.read_text())
    assert record["kind"] == "full"
    tensors = record["tensors"]

    # The gather gathered: full parameter shapes, and every parameter of the model is there.
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        reference = LlamaForCausalLM(_config())
    full_shapes = {k: list(v.shape) for k, v in reference.state_dict().items()}
    assert {k: v[0] for k, v in tensors.items()} == full_shapes
    c = CONFIG
    assert tensors["model.embed_tokens.weight"][0] == [c["vocab_size"], c["hidden_size"]]
    assert tensors["lm_head.weight"][0] == [c["vocab_size"], c["hidden_size"]]
    # ...and rank 0 really held only half of each (the sharded save below is a real shard).
    shard_shapes = json.loads((tmp_path / "shard_shapes.json").read_text())
    assert shard_shapes["model.embed_tokens.weight"] == [c["vocab_size"] // WORLD, c["hidden_size"]]

    # The weights moved: the fingerprint is not that of the seeded, untrained model.
    from ftspec.runtime.distributed.ranks import fingerprint

    torch.manual_seed(0)
    untrained = fingerprint(LlamaForCausalLM(_config()).state_dict())
    moved = [k for k in tensors if tensors[k] != untrained[k]]
    assert len(moved) > len(tensors) // 2

    # The whole save of the gathered weights matches the fingerprint.
    verify_saved(_job(tmp_path / "whole", expected, tmp_path))

    # Rank 0's shards alone do not: one line, naming the problem.
    with pytest.raises(RunFailed) as err:
        verify_saved(_job(tmp_path / "sharded", expected, tmp_path))
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("train: the saved model ")
    assert "nothing was kept" in message


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    _worker(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]))
