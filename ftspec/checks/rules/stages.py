"""Checks across the stages of a spec, which no single stage can make on its own: what a
stage starts from, a teacher stage, one vocabulary for logit distillation, and a
pretrained teacher checked as a model is. They are not in the rule table: they look at
every stage's context together (:func:`check_stages`), or at a spec without stages
(:func:`check_single`), and run after each stage's own rules.
"""

from __future__ import annotations

from dataclasses import replace as copy
from typing import Any, Iterator

from ftspec.checks.facts import inspect_model, trl_patches
from ftspec.checks.rules.reward_model import reward_model_stages
from ftspec.core.errors import Issue
from ftspec.data import templates as tpl
from ftspec.data.gguf import gguf_location
from ftspec.spec import schema as S


def check_stages(stages: list) -> dict[int, list[Issue]]:
    """What no single stage can check on its own, by stage. ``stages``: (LoadedStage,
    checks.Context) pairs in order; a context is None where the stage's spec did not validate."""
    return {i: list(_check_stage(stages, i)) for i, (_, ctx) in enumerate(stages) if ctx is not None}


def _check_stage(stages: list, i: int) -> Iterator[Issue]:
    """One stage (or, ``stages`` being ``[(None, ctx)]``, a spec without stages)."""
    ctx = stages[i][1]
    staged = stages[i][0] is not None
    earlier = [st.name for st, _ in stages[:i]]
    if staged and ctx.spec.compute.backend != "local":
        yield ctx.error(("compute", "backend"), "stages run on the local backend "
                                                "(a Bedrock job is one stage of its own)",
                        "run the Bedrock job from a spec without stages")
    yield from _assistant_loss(stages, i)
    yield from reward_model_stages(stages, i)
    method = ctx.spec.method
    if not isinstance(method, S.DistillMethod):
        return
    yield from _check_teacher(ctx)
    if method.mode == "choices" and not ctx.spec.eval.choices:  # a teacher picking labels is told which
        yield ctx.error(("method", "mode"), "a teacher in choices mode picks among eval.choices, "
                                            "which the spec does not give",
                        "list the labels in eval.choices, or leave method.mode: auto")
    if isinstance(method.teacher, S.StageTeacher) and method.teacher.stage not in earlier:
        ref = method.teacher.stage
        yield (ctx.error(("method", "teacher", "stage"), f"'{ref}' is not an earlier stage; the teacher is a stage "
                         f"before this one ({', '.join(earlier) or 'none'}) or a pretrained model") if staged else
               ctx.error(("method", "teacher", "stage"), f"this spec has no stages, so no stage '{ref}'",
                         "give the teacher as a model ({base: …}), "
                         "or write the teacher's training as an earlier stage"))
    if method.logits is not None:
        yield from _vocabulary(stages, i)


def _assistant_loss(stages: list, i: int) -> Iterator[Issue]:
    """Assistant-only loss needs a chat template that marks the assistant's tokens
    (``{% generation %}``), or one trl knows how to mark: what the run would refuse once
    the data is prepared (and a GGUF model converted) is refused now, in the same words."""
    ctx = stages[i][1]
    f = ctx.spec.format
    if not isinstance(f, S.ChatFormat) or f.loss != "assistant":
        return
    found = _run_chat_template(stages, i)
    if found is not None and found[0] is None:  # the model has a template file that cannot be read
        yield ctx.error(("model", "base"), f"{found[1]}, so whether it marks the assistant's tokens (as assistant-only "
                        "loss needs) is not known, and the run would fail to load it",
                        "fix the model folder's file, or set format.chat_template")
        return
    if found is None or tpl.has_generation_markers(found[0]):
        return
    patched = trl_patches(found[0])
    if patched is None:
        ctx.not_checked.append("format.loss: whether trl can add the {% generation %} markers that assistant-only "
                               "loss needs to the chat template (trl is not installed)")
    elif not patched:
        yield copy(tpl.no_generation_markers(ctx.pos("format", "chat_template"), found[1]),
                   key=ctx.key("format", "chat_template"))


def _run_chat_template(stages: list, i: int) -> tuple[str | None, str] | None:
    """The chat template a stage's tokenizer has when its data is tokenized, and whose it
    is: the stage's own format.chat_template, else that of the model it starts from (an
    earlier stage's saved tokenizer keeps the template it trained with). None: not known;
    (None, why): the model has a template file that cannot be read."""
    names = [s.name for s, _ in stages if s is not None]
    st, ctx = stages[i]
    whose = "this chat template"
    while ctx is not None:
        f = ctx.spec.format
        if isinstance(f, S.ChatFormat) and f.chat_template is not None:
            resolved = ctx.templates.get("format.chat_template")  # None: it could not be read, reported already
            return (resolved.text, whose) if resolved is not None else None
        if st is None or st.start is None:
            break
        st, ctx = stages[names.index(st.start)]
        whose = f"stage {st.name}'s chat template"
    m = ctx.spec.model if ctx is not None else None
    if not isinstance(m, S.PretrainedModel) or m.tokenizer is not None or ctx.model is None:
        return None  # a tokenizer of its own: its template is read when the run loads it
    template = ctx.model.chat_template
    if template is None and ctx.model.chat_template_problem is not None:
        return None, ctx.model.chat_template_problem
    gguf = gguf_location(m.base, m.gguf_file)[1] is not None
    return (template, "the chat template in the model's GGUF file" if gguf else "the model's own chat template") \
        if template is not None else None


def _check_teacher(ctx: Any) -> Iterator[Issue]:
    """A pretrained teacher is checked as a spec's model is (a local folder or GGUF file
    exists and may be read, a hub id is well formed), its issues placed at method.teacher."""
    teacher = getattr(ctx.spec.method, "teacher", None)
    if not isinstance(teacher, S.PretrainedModel):
        return
    shadow = copy(ctx, spec=ctx.spec.model_copy(update={"model": teacher}), issues=[], not_checked=[], model=None)
    inspect_model(shadow)
    for issue in shadow.issues:
        rest = issue.key.split(".", 1)[1] if "." in issue.key else ""
        path = ("method", "teacher", *rest.split(".")) if rest else ("method", "teacher")
        yield Issue(ctx.pos(*path), ctx.key(*path), issue.message, issue.hint, issue.severity)
    ctx.not_checked.extend(n.replace("model.", "method.teacher.", 1) for n in shadow.not_checked)


def check_single(ctx: Any) -> Iterator[Issue]:
    """A spec without stages that distils: its teacher (which cannot be a stage)."""
    return _check_stage([(None, ctx)], 0)


def _starting_spec_model(stages: list, i: int) -> tuple[Any, str]:
    """The spec model a stage's chain began with, and the stage that built it."""
    st, ctx = stages[i]
    names = [s.name for s, _ in stages if s is not None]
    while st is not None and st.start is not None:
        st, ctx = stages[names.index(st.start)]
    return ctx.spec.model, (st.name if st is not None else "")


def _vocab_id(model: Any, built_in: str) -> tuple[str, str] | None:
    """What names a model's vocabulary, as far as the spec tells offline: a tiny byte
    tokenizer is the same everywhere; a tiny BPE one is trained on one stage's rows; a
    pretrained model's is its tokenizer's (or its own) id or path. None: cannot tell."""
    if isinstance(model, S.TinyModel):
        if model.tokenizer.kind == "byte":
            return ("a byte tokenizer", "byte")
        return (f"the BPE tokenizer trained in stage {built_in or 'of this spec'}", f"bpe:{built_in}")
    if isinstance(model, S.PretrainedModel):
        name = model.tokenizer or model.base
        return (f"the tokenizer of {name}", f"pretrained:{name}")
    return None


def _vocabulary(stages: list, i: int) -> Iterator[Issue]:
    """Logit distillation compares the two models' distributions token by token: both
    must have one vocabulary. Checked here as far as the spec says; the run compares the
    two tokenizers' vocabularies before training all the same."""
    st, ctx = stages[i]
    teacher = ctx.spec.method.teacher
    student = _vocab_id(*_starting_spec_model(stages, i))
    if isinstance(teacher, S.StageTeacher):
        names = [s.name for s, _ in stages]
        if teacher.stage not in names[:i] or stages[names.index(teacher.stage)][1] is None:
            return
        teacher_id = _vocab_id(*_starting_spec_model(stages, names.index(teacher.stage)))
    else:
        teacher_id = _vocab_id(teacher, "")
    if student is None or teacher_id is None:
        return
    if student[1] == teacher_id[1]:
        return
    both_pretrained = student[1].startswith("pretrained:") and teacher_id[1].startswith("pretrained:")
    if both_pretrained:
        # Two names may still be one vocabulary (a model and its quantised copy): compared when training starts.
        ctx.not_checked.append(f"method.logits: whether {teacher_id[0]} and {student[0]} share a vocabulary "
                               "(compared when training starts)")
        return
    yield ctx.error(("method", "logits"), "logit distillation needs one vocabulary, but the teacher has "
                    f"{teacher_id[0]} and the student {student[0]}",
                    "give both tiny models tokenizer: {kind: byte}, or the same pretrained tokenizer; "
                    "or leave out method.logits (the student then learns from the teacher's answers only)")
