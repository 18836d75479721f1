"""GRPO's rewards, built from the plan: the spec's own metrics scoring each completion against
its row's answer (the code that scores the held-out evaluation), or a Python function from a
file of the repository, checked against the sha256 the plan names, or an earlier stage's reward
model scoring prompt + completion (as its evaluation scored its held-out pairs).

Each completion is cut at the evaluation's stop strings before it is scored, as evaluation cuts
its answers: what is optimised is what is reported. A completion a reward cannot score — its row
has no answer to compare with, or the reward's extraction finds nothing in it — gets the reward's
``missing`` value, never an exception in the middle of training. A Python reward that raises or
returns something other than one number (or None) per completion stops the run in one line.

Every call also hands its scores to a :class:`Samples` log, which writes the prompts,
completions and rewards of every ``sample_every``-th step to ``completions.jsonl``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import numbers
import sys
from pathlib import Path
from typing import Any, Callable

from transformers import AutoModelForSequenceClassification, AutoTokenizer

from ftspec.catalog import metrics as metric_catalog
from ftspec.checks.rules.rewards import MAX_REWARD_FILE
from ftspec.core.errors import RunFailed
from ftspec.core.io import dumps, iter_jsonl
from ftspec.core.paths import read_regular
from ftspec.runtime.evaluation.reward_scores import text_scores
from ftspec.runtime.evaluation.scorers import score
from ftspec.runtime.evaluation.stopping import cut_at_stop

RewardFn = Callable[..., list[float]]


def thaw_metric(metric: Any) -> dict:
    """A plan's metric as the scorers take it (plain data, the schema's alias for its schema)."""
    return metric.model_dump(mode="json", by_alias=True)


def reward_names(rewards: Any) -> list[str]:
    """A name per reward, unique (TRL logs ``rewards/NAME/mean``): the metric's, the function's or the
    reward model's stage's."""
    names: list[str] = []
    for r in rewards:
        base = r.function if r.kind == "python" else r.stage if r.kind == "reward_model" else r.metric.name
        name, n = base, 2
        while name in names:
            name, n = f"{base}_{n}", n + 1
        names.append(name)
    return names


class Samples:
    """The completions of every ``every``-th step with their rewards, appended to ``path``
    (one JSON line per completion) by the main process; a resumed run drops what lies past
    its checkpoint's step first, as metrics.jsonl does."""

    def __init__(self, path: Path, every: int, names: list[str], resume_step: int = 0, main: bool = True):
        self.path, self.every, self.names, self.main = Path(path), every, names, main
        self.pending: dict[int, dict] = {}
        if main and self.path.exists():
            kept = [line.rstrip("\r\n") for _, line, record in iter_jsonl(self.path, lenient=True)
                    if isinstance(record.get("step"), int) and record["step"] <= resume_step]
            self.path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")

    def add(self, step: int, name: str, prompts: list, completions: list, references: list,
            scores: list[float]) -> None:
        if not self.main or (step + 1) % self.every:
            return
        batch = self.pending.setdefault(step + 1, {"prompts": prompts, "completions": completions,
                                                   "references": references, "rewards": {}})
        batch["rewards"][name] = scores
        if len(batch["rewards"]) == len(self.names):
            self._write(step + 1, self.pending.pop(step + 1))

    def _write(self, step: int, batch: dict) -> None:
        lines = []
        for i, completion in enumerate(batch["completions"]):
            lines.append(dumps({"step": step, "prompt": _text(batch["prompts"][i]), "completion": _text(completion),
                                "reference": batch["references"][i],
                                "rewards": {n: batch["rewards"][n][i] for n in self.names}}) + "\n")
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write("".join(lines))


def reward_model_dir(checkpoints: Path, stage: str) -> Path:
    """Where the train step puts an earlier stage's reward model, whole, for the recipe to load."""
    return Path(checkpoints) / "reward-models" / stage


def build_rewards(grpo: Any, root: Path, samples: Samples | None = None, checkpoints: Path | None = None,
                  device: str = "cpu", max_length: int | None = None) -> tuple[list[RewardFn], list[float]]:
    """The reward functions TRL's GRPOTrainer calls, and their weights, from the plan's ``grpo``
    (a reward model loads from :func:`reward_model_dir` of ``checkpoints``, onto ``device``)."""
    names = reward_names(grpo.rewards)
    functions = []
    for name, r in zip(names, grpo.rewards):
        inner = (_python(r, root) if r.kind == "python" else _metric(r) if r.kind == "metric"
                 else _reward_model(reward_model_dir(checkpoints, r.stage), device, max_length))
        functions.append(_wrapped(name, inner, r.missing, tuple(grpo.stop), samples))
    return functions, [float(r.weight) for r in grpo.rewards]


def _wrapped(name: str, inner: Callable[[list[str], list[str], list[str]], list[float | None]], missing: float,
             stop: tuple[str, ...], samples: Samples | None) -> RewardFn:
    def reward(prompts: list, completions: list, reference: list, trainer_state: Any = None, **_: Any) -> list[float]:
        texts = [cut_at_stop(_text(c), stop) for c in completions]
        refs = [r if isinstance(r, str) else None for r in reference]
        got = inner([_text(p) for p in prompts], texts, refs)
        scores = [float(missing) if v is None else float(v) for v in got]
        if samples is not None and trainer_state is not None:
            samples.add(trainer_state.global_step, name, prompts, texts, refs, scores)
        return scores

    reward.__name__ = name  # TRL logs rewards/<__name__>/mean and /std
    return reward


def _metric(r: Any) -> Callable[[list[str], list[str], list[str | None]], list[float | None]]:
    definition = thaw_metric(r.metric)
    name = definition["name"]
    needs_reference = metric_catalog.get(name).reference
    spec = definition.get("extract")

    def scores(prompts: list[str], completions: list[str], references: list[str | None]) -> list[float | None]:
        result = score([definition], completions, [ref or "" for ref in references])
        out: list[float | None] = []
        for i in range(len(completions)):
            if needs_reference and not (references[i] or "").strip():
                out.append(None)  # nothing to compare with
            elif spec and not result.extracted[i].get(name, {}).get("prediction"):
                out.append(None)  # the extraction (as the scoring made it) finds no answer in it
            else:
                out.append(result.per_example[i].get(name))
        return out

    return scores


def _reward_model(folder: Path, device: str, max_length: int | None
                  ) -> Callable[[list[str], list[str], list[str | None]], list[float | None]]:
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForSequenceClassification.from_pretrained(str(folder)).to(device)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.requires_grad_(False)

    def scores(prompts: list[str], completions: list[str], references: list[str | None]) -> list[float | None]:
        return text_scores(model, tokenizer, [p + c for p, c in zip(prompts, completions)], len(prompts),
                           max_length)

    return scores


def _python(r: Any, root: Path) -> Callable[[list[str], list[str], list[str | None]], list[float | None]]:
    path = Path(root) / r.path
    where = f"{r.path}:{r.function}"
    try:
        # As validate read it: a regular file (a FIFO put in its place would block the run), of bounded size.
        data = read_regular(path, MAX_REWARD_FILE)
    except OSError as exc:
        raise RunFailed(f"reward {where}: cannot read the file ({exc.strerror or exc})") from None
    if hashlib.sha256(data).hexdigest() != r.sha256:
        raise RunFailed(f"reward {where}: the file changed since the plan was made (its sha256 is not the plan's); "
                        "run the spec again to plan it anew")
    module_name = f"ftspec_reward_{r.sha256[:16]}"
    spec = importlib.util.spec_from_loader(module_name, loader=None, origin=str(path))
    module = importlib.util.module_from_spec(spec)
    module.__file__ = str(path)
    try:
        # The bytes whose sha256 was checked are what runs (not the file read again).
        exec(compile(data, str(path), "exec"), module.__dict__)  # noqa: S102
    except (Exception, SystemExit) as exc:  # sys.exit() in a reward file must not end the run as if it succeeded
        raise RunFailed(f"reward {where}: loading the file raised {type(exc).__name__}: {_first(exc)}") from None
    sys.modules.setdefault(module_name, module)
    function = getattr(module, r.function, None)
    if not callable(function):
        raise RunFailed(f"reward {where}: the file defines no function {r.function!r}")

    def scores(prompts: list[str], completions: list[str], references: list[str | None]) -> list[float | None]:
        try:
            # Copies: a function that changes its arguments changes neither what the other rewards
            # score nor what completions.jsonl records.
            got = function(prompts=list(prompts), completions=list(completions), references=list(references))
        except (Exception, SystemExit) as exc:  # SystemExit too: sys.exit(0) here would end the run with success
            raise RunFailed(f"reward {where} raised {type(exc).__name__}: {_first(exc)}") from None
        if not isinstance(got, (list, tuple)) and _is_array(got):
            got = got.tolist()  # a numpy array or tensor of numbers, as TRL takes
        if not isinstance(got, (list, tuple)) or len(got) != len(completions):
            raise RunFailed(f"reward {where} returned {type(got).__name__}"
                            + (f" of {len(got)}" if isinstance(got, (list, tuple)) else "")
                            + f"; it must return a list of {len(completions)} numbers, one per completion")
        out: list[float | None] = []
        for value in got:
            number = _number(value)
            if value is not None and number is None:
                raise RunFailed(f"reward {where} returned {_short(value)}; each reward is a finite number (or None "
                                "for its `missing` value)")
            out.append(number)
        return out

    return scores


def _is_array(value: Any) -> bool:
    """Whether ``value`` is a one-dimensional array (numpy's, torch's) whose ``tolist`` gives its numbers."""
    shape = getattr(value, "shape", None)
    return callable(getattr(value, "tolist", None)) and shape is not None and len(shape) == 1


def _number(value: Any) -> float | None:
    """``value`` as a finite float when it is a real number (Python's or numpy's, not a bool), else None."""
    if value is None or isinstance(value, bool) or type(value).__name__ == "bool_" \
            or not isinstance(value, numbers.Real):
        return None
    try:
        number = float(value)
    except (OverflowError, ValueError, TypeError):  # an int past float's range, and the like
        return None
    return number if math.isfinite(number) else None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _text(value: Any) -> str:
    """A prompt or completion as text: a conversational one (messages) as its last message's content."""
    if isinstance(value, list):
        return "".join(str(m.get("content", "")) for m in value if isinstance(m, dict))
    return "" if value is None else str(value)


def _first(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else ""
