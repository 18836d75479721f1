"""What a spec implies, read off its sections without looking at any file: which
held-out splits it has, which sources a distillation's teacher answers, which templates
render an answer, the dtype the base model loads in. The rules, the eval-mode
resolution and the compiler share them.
"""

from __future__ import annotations

from ftspec.data.formatting import teacher_sources
from ftspec.data.splitting import SPLITS
from ftspec.spec import schema as S


def has_validation(spec: S.Spec) -> bool:
    return spec.data.validation is not None or bool(spec.data.split and spec.data.split.validation > 0)


def has_test(spec: S.Spec) -> bool:
    return spec.data.test is not None or bool(spec.data.split and spec.data.split.test > 0)


def answered_by_teacher(spec: S.Spec) -> set[str]:
    """The sources whose rows a distillation's teacher answers (see formatting.teacher_sources)."""
    d = spec.data
    sources = [s for s in SPLITS if getattr(d, s) is not None]
    return teacher_sources(isinstance(spec.method, S.DistillMethod), sources,
                           d.split is not None and d.split.test > 0 and d.test is None)


def answer_templates(spec: S.Spec) -> set[str]:
    """The keys of the templates that render a row's answer."""
    f = spec.format
    if isinstance(f, S.ChatFormat):
        keys = set()
        for i in reversed(range(len(f.messages or []))):  # the assistant turns that end the conversation
            if f.messages[i].role != "assistant":
                break
            keys.add(f"format.messages.{i}.content")
        return keys
    return {"format.completion"} if isinstance(f, S.PromptCompletionFormat) else set()


def metric_names(spec: S.Spec) -> list[str]:
    return [m.name for m in spec.eval.metrics]


def held_out_fix(spec: S.Spec, split: str) -> str:
    """How to hold rows of the training file out for ``split``, in the spec's own words."""
    if spec.data.split is None:
        return f"remove data.{split} and hold rows out of data.train with data.split: {{{split}: 0.1}}"
    return f"remove data.{split} and add {split}: 0.1 to data.split"


def load_dtype(model_dtype: str | None) -> str:
    """The dtype the base model's weights load in (ftspec.runtime.training.builders.model_dtype):
    the spec's model.dtype, float32 for `auto` (mixed precision autocasts the rest)."""
    return "float32" if model_dtype in (None, "auto") else model_dtype
