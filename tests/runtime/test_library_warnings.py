"""No deprecation notices in a normal run, and none hidden wholesale.

A run used to silence every FutureWarning and DeprecationWarning, so a deprecated
argument ftspec passes to transformers, peft or trl would never be seen. Now only the
notices a library raises from inside itself are silenced, each by name
(``ftspec.runtime.quiet.LIBRARY_NOTICES``), and tiny runs of each objective and adapter
record every warning that reaches the user: there must be none.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("trl")

from conftest import ROOT  # noqa: E402

from ftspec.runtime import quiet as R  # noqa: E402

DEPRECATIONS = (DeprecationWarning, PendingDeprecationWarning, FutureWarning)


def test_a_deprecation_ftspec_causes_is_not_hidden():
    """After quiet_libraries(), a notice raised at a call ftspec makes still reaches the
    user; the library-internal notices it names are silenced."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        R.quiet_libraries()
        for category in DEPRECATIONS:  # as a library warns with stacklevel=2 about an argument ftspec passed
            warnings.warn_explicit(f"`old_argument` is deprecated ({category.__name__})", category,
                                   str(ROOT / "ftspec/runtime/recipes/sft.py"), 1, module="ftspec.runtime.recipes.sft",
                                   registry={})
        warnings.warn_explicit("`is_gradient_checkpointing` is deprecated and will be removed in v6.", FutureWarning,
                               "transformers/modeling_utils.py", 3312, module="transformers.modeling_utils",
                               registry={})
    shown = [str(w.message) for w in seen]
    assert shown == [f"`old_argument` is deprecated ({c.__name__})" for c in DEPRECATIONS], shown


TINY = """
model: {kind: tiny, hidden_size: 32, num_layers: 1, num_heads: 2, max_position_embeddings: 256, init_seed: 1}
compute: {device: cpu}
"""
SFT = TINY + """
data:
  train: tickets.jsonl
  split: {validation: 0.2, test: 0.2, seed: 1}
format: {kind: prompt_completion, prompt: "Request: {{ text }}\\nQueue:", completion: " {{ queue }}"}
training: {max_steps: 4, batch_size: 8, max_length: 128, eval_every: 2, save_every: 2, logging_steps: 1,
           early_stopping: {patience: 2}}
eval: {max_new_tokens: 4, limit: 6, metrics: [accuracy]}
"""
DPO = TINY + """
data:
  train: tickets.jsonl
  split: {validation: 0.2, seed: 1}
  derive:
    wrong: "{{ {'billing': 'account', 'account': 'technical', 'technical': 'shipping', 'shipping': 'returns', \
'returns': 'billing'}[queue] }}"
format: {kind: preference, prompt: "Request: {{ text }}\\nQueue:", chosen: " {{ queue }}", rejected: " {{ wrong }}"}
method: {kind: dpo, beta: 0.1, adapter: {kind: lora, r: 4}}
training: {max_steps: 2, batch_size: 4, max_length: 128, eval_every: 2, logging_steps: 1}
"""
RUNS = {
    "sft-full": SFT + "method: {kind: sft, adapter: full}\n",
    "sft-lora": SFT + "method: {kind: sft, adapter: {kind: lora, r: 4}}\n",
    "dpo-lora": DPO,
}


def _matches(notice: warnings.WarningMessage, entry: tuple) -> bool:
    message, category, module = entry
    return (issubclass(notice.category, category) and re.match(message, str(notice.message), re.I) is not None
            and re.search(module.replace(r"\.", "/"), notice.filename.replace("\\", "/")) is not None)


# A run in a process of its own: the warnings machinery is global to a process, and a test that
# ran before in the same one (threads a library left behind, a library first imported during the
# run) must not change what is recorded. Prints every warning the run raised, as JSON.
RECORD = """
import json, sys, warnings
from pathlib import Path
from ftspec.backends.executor import execute
from ftspec.plan.compile import compile_spec, find_root
from ftspec.runtime import quiet

spec = Path(sys.argv[1])
plan, _ = compile_spec(spec)
quiet.LIBRARY_NOTICES = ()  # the listed notices are recorded too, to see that each is still raised
with warnings.catch_warnings(record=True) as seen:
    warnings.simplefilter("always")  # everything a user running with -W default would see, and more
    execute(plan, find_root(spec), echo=lambda _: None)
json.dump([{"category": [w.category.__module__, w.category.__qualname__], "message": str(w.message),
            "filename": w.filename, "lineno": w.lineno} for w in seen], sys.stdout)
"""


def _category(module: str, qualname: str) -> type:
    found = importlib.import_module(module)
    for part in qualname.split("."):
        found = getattr(found, part)
    return found


def _recorded_run(spec: Path) -> list[warnings.WarningMessage]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", RECORD, str(spec)], cwd=spec.parent, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return [warnings.WarningMessage(w["message"], _category(*w["category"]), w["filename"], w["lineno"])
            for w in json.loads(done.stdout)]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> Callable[[str], list[warnings.WarningMessage]]:
    """The warnings each tiny run raised, each run made once for the tests of this module."""
    runs: dict[str, list[warnings.WarningMessage]] = {}

    def of(name: str) -> list[warnings.WarningMessage]:
        if name not in runs:
            folder = tmp_path_factory.mktemp(name)
            lines = (ROOT / "specs/data/support-tickets.jsonl").read_text(encoding="utf-8").splitlines()[:60]
            (folder / "tickets.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
            spec = folder / f"{name}.yaml"
            spec.write_text(f"ftspec: 1\nname: {name}\n" + RUNS[name], encoding="utf-8")
            runs[name] = [w for w in _recorded_run(spec) if issubclass(w.category, DEPRECATIONS)]
        return runs[name]
    return of


@pytest.mark.parametrize("name", list(RUNS))
def test_a_tiny_run_shows_no_deprecation_notice(name, recorded):
    """Every deprecation notice raised in the run is recorded (the silenced ones too); none
    but those listed may come."""
    unlisted = [f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})"
                for w in recorded(name) if not any(_matches(w, entry) for entry in R.LIBRARY_NOTICES)]
    assert unlisted == [], "\n".join(unlisted)


def test_every_listed_notice_is_still_raised(recorded):
    """Each entry that silences a library's notice is still needed: some run raises the
    notice where the entry says (which run depends on the library's version: peft before 0.22
    raises peft's when it wraps any model in an adapter, 0.22 on DPO's path only)."""
    raised = {name: recorded(name) for name in RUNS}
    for entry in R.LIBRARY_NOTICES:
        assert any(_matches(w, entry) for notices in raised.values() for w in notices), \
            (entry, {name: [str(w.message) for w in notices] for name, notices in raised.items()})
