"""Whether a finished train step in the store holds a model to load: its marker says the
step finished, but the folder may since have lost its weights (a disk cleaned by hand, a
copy cut short). Export, generate and chat ask first, so that such an entry is one line
naming it instead of a loader's traceback. Light: no torch."""

from __future__ import annotations

from pathlib import Path

from ftspec.core.io import read_json

# One of these makes a folder a model transformers or peft can load (with its index's shards).
WEIGHTS = ("model.safetensors", "adapter_model.safetensors", "pytorch_model.bin", "adapter_model.bin")
INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def weights_problem(folder: Path) -> str | None:
    """What ``folder`` lacks to be a loadable model's weights, or None."""
    folder = Path(folder)
    if any((folder / name).is_file() for name in WEIGHTS):
        return None
    for name in INDEXES:
        index = read_json(folder / name, dict, lenient=True)
        if index is None:
            continue
        weight_map = index.get("weight_map")
        shards = list(dict.fromkeys(map(str, weight_map.values()))) if isinstance(weight_map, dict) else []
        missing = [s for s in shards if not (folder / s).is_file()]
        if not shards:
            return f"its {name} names no weight files"
        if missing:
            return f"its {name} names {missing[0]}, which is missing"
        return None
    return f"it holds no weights ({' or '.join(WEIGHTS[:2])})"
