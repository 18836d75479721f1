"""ftspec.checks.rules.stages: what only the stages together say (a teacher stage, a
teacher model checked as a model is), run on a spec without stages by check_single."""

from __future__ import annotations

from checks.conftest import BASE
from ftspec.checks import check_single

DISTILL = BASE + "method: {kind: distill, teacher: TEACHER}\n"


def test_a_spec_without_stages_has_no_teacher_stage(context):
    ctx = context(DISTILL.replace("TEACHER", "{stage: sft}"))
    found = list(check_single(ctx))
    assert [(i.key, i.message, i.hint) for i in found] == [(
        "method.teacher.stage", "this spec has no stages, so no stage 'sft'",
        "give the teacher as a model ({base: …}), or write the teacher's training as an earlier stage")]


def test_a_local_teacher_folder_is_checked_at_method_teacher(context, tmp_path):
    found = list(check_single(context(DISTILL.replace("TEACHER", "{base: ./teacher}"))))
    assert [(i.key, i.message) for i in found] == [
        ("method.teacher.base", "local model directory './teacher' not found")]
    assert [i.pos.line for i in found] == [12]


def test_a_spec_that_does_not_distil_has_nothing_to_say(context):
    assert list(check_single(context())) == []
