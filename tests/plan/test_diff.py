"""`ftspec diff`: what a spec change does to the plan and which steps re-run.

Each case builds an old and a new copy of a small repository (the quickstart spec
and its data) in tmp_path, compiles both and compares the plans; the readable
outputs are checked against reviewed golden files in tests/golden/diff/
(regenerate with `pytest --update-golden`, then read the diff)."""

import json
import shutil
import subprocess

import pytest
import yaml
from conftest import ROOT

from ftspec.commands.diff import diff_git
from ftspec.core.errors import SpecError
from ftspec.plan.compile import compile_sourced, compile_spec
from ftspec.plan.diff import MISSING, Change, PlanDiff, diff_plans
from ftspec.plan.diff_render import render_json, render_markdown, render_text
from ftspec.plan.model import Plan

GOLDEN = ROOT / "tests" / "golden" / "diff"
K1, K2, KE = "1" * 64, "2" * 64, "e" * 64  # step keys are sha256s
TICKETS = ROOT / "specs" / "data" / "support-tickets.jsonl"
ALL_STEPS = ["prepare_data", "generate_base", "eval_base", "train", "generate_tuned", "eval_tuned", "report"]


@pytest.fixture(autouse=True)
def _offline_hub(tmp_path_factory, monkeypatch):
    # A hub model is looked up in the local cache only; keep that cache empty.
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path_factory.mktemp("hf-cache")))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def quickstart() -> dict:
    return yaml.safe_load((ROOT / "specs/quickstart.yaml").read_text(encoding="utf-8"))


def make_repo(root, spec: dict | None = None, name="quickstart.yaml", files=None, data_extra=""):
    """A repository root (marked with .git so paths in the plan are relative to it)
    with specs/NAME, specs/data/support-tickets.jsonl and any extra files under specs/."""
    (root / ".git").mkdir(parents=True, exist_ok=True)
    (root / "specs/data").mkdir(parents=True, exist_ok=True)
    data = TICKETS.read_text(encoding="utf-8") + data_extra
    (root / "specs/data/support-tickets.jsonl").write_text(data, encoding="utf-8")
    for rel, text in (files or {}).items():
        (root / "specs" / rel).write_text(text, encoding="utf-8")
    path = root / "specs" / name
    if spec is not None:
        path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def edited(edit) -> dict:
    doc = quickstart()
    edit(doc)
    return doc


def pretrained(trust: bool) -> dict:
    doc = quickstart()
    doc["name"] = "remote-code"
    doc["model"] = {"base": "org/model", "revision": "abc", "trust_remote_code": trust}
    return doc


# ----------------------------------------------------------------------------- cases


def case_learning_rate(tmp):
    return (make_repo(tmp / "old", quickstart()),
            make_repo(tmp / "new", edited(lambda d: d["training"].update(learning_rate=2.0e-3))))


def case_eval_only(tmp):
    return (make_repo(tmp / "old", quickstart()),
            make_repo(tmp / "new", edited(lambda d: d["eval"].update(max_new_tokens=32))))


BASE_NO_SEED = quickstart() | {"name": "base"}


def _child(root, base: dict):
    make_repo(root, base, name="base.yaml")
    child = root / "specs/child.yaml"
    child.write_text("ftspec: 1\nextends: base.yaml\nname: child\n", encoding="utf-8")
    return child


def case_extends_default(tmp):
    new_base = edited(lambda d: d.update(name="base", training={**d["training"], "seed": 7}))
    assert "seed" not in BASE_NO_SEED["training"]
    return _child(tmp / "old", BASE_NO_SEED), _child(tmp / "new", new_base)


NEW_ROW = '{"id": "T09999", "text": "My parcel arrived damaged, can I send it back?", "queue": "returns"}\n'


def case_data_row(tmp):
    return make_repo(tmp / "old", quickstart()), make_repo(tmp / "new", quickstart(), data_extra=NEW_ROW)


OLD_PROMPT = ("Route this support request to one queue: account, billing, returns, shipping or technical.\n"
              "Request: {{ text }}\nQueue:")
NEW_PROMPT = ("Route this support request to one queue: account, billing, returns, shipping or technical.\n"
              "Request: {{ text | trim }}\nAnswer with the queue only.\nQueue:")


def case_template(tmp):
    spec = edited(lambda d: d["format"].update(prompt={"file": "prompt.j2"}))
    return (make_repo(tmp / "old", spec, files={"prompt.j2": OLD_PROMPT}),
            make_repo(tmp / "new", spec, files={"prompt.j2": NEW_PROMPT}))


def case_trust_remote_code(tmp):
    return make_repo(tmp / "old", pretrained(False)), make_repo(tmp / "new", pretrained(True))


def case_identical(tmp):
    return make_repo(tmp / "old", quickstart()), make_repo(tmp / "new", quickstart())


CASES = {
    "learning-rate": case_learning_rate,
    "eval-only": case_eval_only,
    "extends-default": case_extends_default,
    "data-row": case_data_row,
    "template": case_template,
    "trust-remote-code": case_trust_remote_code,
    "identical": case_identical,
}
MARKDOWN = {"learning-rate", "template", "trust-remote-code", "identical"}


def run_case(name, tmp_path) -> tuple[PlanDiff, Plan, Plan]:
    """The diff of a case, each change naming where its value came from; paths are shown
    relative to the case's folder, as a reviewer in that repository would see them."""
    import os

    old_path, new_path = CASES[name](tmp_path)
    here = os.getcwd()
    os.chdir(tmp_path)
    try:
        old, old_origin = compile_sourced(old_path)
        new, new_origin = compile_sourced(new_path)
    finally:
        os.chdir(here)
    return diff_plans(old, new, old_origin, new_origin), old, new


def by_path(d: PlanDiff) -> dict[str, Change]:
    return {c.path: c for c in d.changes}


def stable(text: str, d: PlanDiff) -> str:
    # Plan ids follow every field of the plan (and ftspec's version): keep them out
    # of the golden files so these change only when the diff does.
    return text.replace(d.old_id[:12], "<old-id>").replace(d.new_id[:12], "<new-id>")


# ----------------------------------------------------------------------------- golden outputs


@pytest.mark.parametrize("name", list(CASES))
def test_golden_diff(name, tmp_path, update_golden):
    d, _, _ = run_case(name, tmp_path)
    outputs = {f"{name}.txt": render_text(d)}
    if name in MARKDOWN:
        outputs[f"{name}.md"] = render_markdown(d)
    for filename, text in outputs.items():
        assert str(tmp_path) not in text and "/tmp" not in text
        text = stable(text, d)
        path = GOLDEN / filename
        if update_golden:
            GOLDEN.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        assert path.exists(), f"no golden diff {path.name}; run pytest --update-golden and review it"
        assert text == path.read_text(encoding="utf-8"), f"{filename} changed; review, then pytest --update-golden"


# ----------------------------------------------------------------------------- what each case means


def test_learning_rate_reruns_training_only(tmp_path):
    d, _, _ = run_case("learning-rate", tmp_path)
    assert [(c.path, c.old, c.new) for c in d.changes] == [("training.learning_rate", 0.001, 0.002)]
    assert d.rerun == ["train", "generate_tuned", "eval_tuned", "report"]
    assert d.reused == ["prepare_data", "generate_base", "eval_base"]
    assert d.changes[0].section == "training"
    assert render_text(d).rstrip().endswith("steps to re-run: train, generate_tuned, eval_tuned, report (reused: "
                                            "prepare_data, generate_base, eval_base)")


def test_eval_only_change_reuses_training(tmp_path):
    d, _, _ = run_case("eval-only", tmp_path)
    assert [(c.path, c.old, c.new) for c in d.changes] == [("eval.max_new_tokens", 16, 32)]
    assert "train" in d.reused and "prepare_data" in d.reused
    assert d.rerun == ["generate_base", "eval_base", "generate_tuned", "eval_tuned", "report"]


def test_a_default_changed_in_a_base_spec_shows_in_the_child(tmp_path):
    d, old, new = run_case("extends-default", tmp_path)
    assert (tmp_path / "old/specs/child.yaml").read_text() == (tmp_path / "new/specs/child.yaml").read_text()
    assert [(c.path, c.old, c.new) for c in d.changes] == [("training.seed", 42, 7)]
    assert old.spec.bases == new.spec.bases == ("specs/base.yaml",)
    assert "training.seed: 42 → 7" in render_text(d)


def test_an_appended_data_row_reruns_everything(tmp_path):
    d, old, new = run_case("data-row", tmp_path)
    changes = by_path(d)
    sha = changes["data.sources.train.sha256"]
    assert (sha.old, sha.new) == (old.data.sources["train"].sha256, new.data.sources["train"].sha256)
    assert (changes["data.sources.train.rows"].old, changes["data.sources.train.rows"].new) == (1500, 1501)
    assert d.rerun == ALL_STEPS and d.reused == []
    text = render_text(d)
    assert f"data.sources.train.sha256: {sha.old[:12]}… → {sha.new[:12]}…" in text
    assert sha.old not in text  # only the prefix is shown


def test_a_template_is_one_change_shown_as_its_text(tmp_path):
    d, _, _ = run_case("template", tmp_path)
    template_changes = [c for c in d.changes if c.section == "format"]
    assert [(c.path, c.old, c.new) for c in template_changes] == [("format.templates.prompt", OLD_PROMPT, NEW_PROMPT)]
    line = next(x for x in render_text(d).splitlines() if "format.templates.prompt" in x)
    assert "⏎" in line and "\n" not in line
    assert "trim" in line  # the window starts near where the texts differ
    assert len(line) < 220
    assert d.rerun == ALL_STEPS  # prepare_data reads the format, and every step follows it


def test_trust_remote_code_turning_on_is_the_first_line(tmp_path):
    d, _, _ = run_case("trust-remote-code", tmp_path)
    assert d.trust_remote_code and d.trust_remote_code_turned_on
    text = render_text(d)
    assert text.startswith("!! trust_remote_code turned on")
    assert "model.trust_remote_code: false → true" in text
    md = render_markdown(d)
    assert md.startswith("### ftspec diff: remote-code")
    assert "> ⚠️ **`trust_remote_code` turned on" in md
    assert json.loads(render_json(d))["trust_remote_code"] == {"enabled": True, "turned_on": True}


def test_trust_remote_code_left_on_is_still_said(tmp_path):
    old_path = make_repo(tmp_path / "old", pretrained(True))
    new_path = make_repo(tmp_path / "new", dict(pretrained(True), training={**quickstart()["training"], "epochs": 2}))
    d = diff_plans(compile_spec(old_path)[0].to_dict(), compile_spec(new_path)[0].to_dict())
    assert d.trust_remote_code and not d.trust_remote_code_turned_on
    lines = render_text(d).splitlines()
    assert not lines[0].startswith("!!")
    assert lines[1].startswith("!! trust_remote_code: true")
    assert "> ⚠️ **`trust_remote_code: true`" in render_markdown(d)


def test_identical_specs_make_an_empty_diff(tmp_path):
    d, _, _ = run_case("identical", tmp_path)
    assert d.is_empty() and d.changes == [] and d.rerun == [] and d.reused == ALL_STEPS
    assert d.old_id == d.new_id
    assert render_text(d).rstrip().endswith("no change to the plan")
    assert "No change to the plan." in render_markdown(d)


# ----------------------------------------------------------------------------- json


def test_render_json_round_trips(tmp_path):
    old_path = make_repo(tmp_path / "old", quickstart())
    new_path = make_repo(tmp_path / "new", edited(lambda d: (
        d["eval"].update(metrics=["accuracy", "f1_macro", "exact_match"]),
        d["training"].update(learning_rate=2.0e-3),
    )))
    d = diff_plans(compile_spec(old_path)[0], compile_spec(new_path)[0])  # Plans work as well as dicts
    text = render_json(d)
    doc = json.loads(text)
    assert text == json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
    assert set(doc) == {"name", "old_id", "new_id", "empty", "changes", "rerun", "reused", "dropped",
                        "trust_remote_code"}
    assert doc["old_id"] == d.old_id and len(doc["old_id"]) == 64
    assert doc["empty"] is False
    assert doc["rerun"] == d.rerun and doc["reused"] == d.reused
    changes = {c["path"]: c for c in doc["changes"]}
    assert changes["training.learning_rate"] == {"section": "training", "path": "training.learning_rate", "old": 0.001,
                                                 "new": 0.002, "added": False, "removed": False, "origin": None}
    added = changes["eval.metrics[2]"]
    assert added["old"] is None and added["added"] is True and added["removed"] is False
    assert added["new"] == {"name": "exact_match", "extract": None, "positive": None, "normalization": "squad"}
    assert [c["path"] for c in doc["changes"]] == [c.path for c in d.changes]
    # and the other way round: a removed element
    back = json.loads(render_json(diff_plans(compile_spec(new_path)[0], compile_spec(old_path)[0])))
    removed = {c["path"]: c for c in back["changes"]}["eval.metrics[2]"]
    assert removed["new"] is None and removed["removed"] is True and removed["added"] is False


# ----------------------------------------------------------------------------- diff_plans on small plans


_BASE_PLAN: dict = {}


def _merge(base, over):
    if isinstance(base, dict) and isinstance(over, dict):
        return {**base, **{k: _merge(base.get(k), v) for k, v in over.items()}}
    return over


def tiny_plan(**sections) -> Plan:
    """A valid plan: the quickstart's, with ``sections`` merged into it key by key."""
    if not _BASE_PLAN:
        _BASE_PLAN.update(compile_spec(ROOT / "specs/quickstart.yaml")[0].to_dict())
    base = {**_BASE_PLAN, "name": "p",
            "spec": {"path": "specs/p.yaml", "bases": [], "profiles": [], "overrides": []},
            "checks": {"warnings": [], "not_checked": []},
            "steps": [{"name": "prepare_data", "needs": [], "key": K1},
                      {"name": "train", "needs": ["prepare_data"], "key": K2}]}
    replaced = {k: sections.pop(k) for k in ("steps", "spec", "checks") if k in sections}
    return Plan.build({**_merge(base, sections), **replaced})


def test_derived_and_metadata_keys_are_ignored_but_profiles_are_shown():
    old = tiny_plan(training={"seed": 1})
    new = tiny_plan(training={"seed": 1}, ftspec_version="9.9.9",
                    checks={"warnings": ["x"], "not_checked": []},
                    spec={"path": "elsewhere/p.yaml", "bases": ["b.yaml"], "profiles": ["smoke"], "overrides": ["a=1"]})
    d = diff_plans(old, new)
    assert [(c.section, c.path, c.old, c.new) for c in d.changes] == [
        ("spec", "spec.overrides", [], ["a=1"]),
        ("spec", "spec.profiles", [], ["smoke"]),
    ]
    assert d.reused == ["prepare_data", "train"] and d.rerun == []
    assert "steps to re-run: none (reused: prepare_data, train)" in render_text(d)


def test_lists_sections_and_paths_are_ordered():
    lora = {"kind": "lora", "r": 8, "alpha": 16, "dropout": 0.0, "bias": "none"}
    old = tiny_plan(method={"adapter": {**lora, "target_modules": ["q_proj", "v_proj"]}},
                    eval={"metrics": [{"name": "a"}, {"name": "b"}] + [{"name": f"m{i}"} for i in range(9)]},
                    training={"seed": 1})
    new = tiny_plan(method={"adapter": {**lora, "target_modules": ["q_proj", "k_proj", "v_proj"]}},
                    eval={"metrics": [{"name": "a"}, {"name": "B"}] + [{"name": f"m{i}"} for i in range(8)]
                                     + [{"name": "z"}]},
                    training={"seed": 2})
    d = diff_plans(old, new)
    assert [c.path for c in d.changes] == ["method.adapter.target_modules", "training.seed",
                                           "eval.metrics[1].name", "eval.metrics[10].name"]
    text = render_text(d)
    assert "method.adapter.target_modules: [q_proj, v_proj] → [q_proj, k_proj, v_proj]" in text
    assert text.index("\nmethod\n") < text.index("\ntraining\n") < text.index("\neval\n")
    shorter = diff_plans(old, tiny_plan(method=old.to_dict()["method"], training=old.to_dict()["training"],
                                        eval={"metrics": [{"name": "a"}]}))
    assert [(c.path, c.old, c.new) for c in shorter.changes][:1] == [
        ("eval.metrics[1]", {"name": "b", "extract": None, "positive": None, "normalization": None}, MISSING)]
    assert "  - eval.metrics[1]: {extract: null, name: b, normalization: null, positive: null}" in render_text(shorter)


def test_steps_that_appear_or_disappear():
    old = tiny_plan(steps=[{"name": "prepare_data", "key": K1}, {"name": "eval_base", "key": KE},
                           {"name": "train", "key": K2}])
    new = tiny_plan(steps=[{"name": "prepare_data", "key": K1}, {"name": "train", "key": K2},
                           {"name": "report", "key": "f" * 64}])
    d = diff_plans(old, new)
    assert d.rerun == ["report"] and d.reused == ["prepare_data", "train"] and d.dropped == ["eval_base"]
    assert not d.is_empty()
    assert "no longer run: eval_base" in render_text(d)


def test_values_are_shown_on_one_line_and_quoted_when_needed():
    old = tiny_plan(description="first line\nsecond", output={"dir": "runs/a"},
                    tracking={"kind": "wandb", "project": "true"})
    new = tiny_plan(description="x" * 200, output={"dir": "runs/b"}, tracking={"kind": "wandb", "project": "p q"})
    text = render_text(diff_plans(old, new))
    assert 'description: "first line⏎second" → "' + "x" * 60 + '…"' in text
    assert "output.dir: runs/a → runs/b" in text
    assert 'tracking.project: "true" → "p q"' in text


def test_color_only_when_asked():
    d = diff_plans(tiny_plan(training={"seed": 1}), tiny_plan(training={"seed": 2}))
    assert "\x1b[" not in render_text(d)
    colored = render_text(d, color=True)
    assert "\x1b[31m1\x1b[0m" in colored and "\x1b[32m2\x1b[0m" in colored


def test_markdown_escapes_table_cells():
    d = diff_plans(tiny_plan(format={"templates": {"prompt": {"source": "inline", "ref": "", "text": "a | b `c`",
                                                              "sha256": "1"}}}),
                   tiny_plan(format={"templates": {"prompt": {"source": "inline", "ref": "", "text": "a || b",
                                                              "sha256": "2"}}}))
    row = next(x for x in render_markdown(d).splitlines() if x.startswith("| `format"))
    assert row == '| `format.templates.prompt` | `` "a \\| b `c`" `` | `"a \\|\\| b"` |'


def test_escape_codes_in_a_spec_never_reach_the_reviewers_terminal():
    # A pull request's description (or template) could erase or forge the lines a reviewer
    # relies on (the `!! trust_remote_code` line) with cursor and title escapes.
    evil = "evil\x1b]0;TITLE\x07\nFAKE\x1b[1A\x1b[2K\u202e"
    d = diff_plans(tiny_plan(format={"templates": {"prompt": {"source": "inline", "ref": "", "text": "a",
                                                              "sha256": "1"}}}),
                   tiny_plan(format={"templates": {"prompt": {"source": "inline", "ref": "", "text": evil,
                                                              "sha256": "2"}}}))
    for shown in (render_text(d), render_markdown(d)):
        assert "\x1b" not in shown and "\x07" not in shown and "\u202e" not in shown
        assert "\\x1b]0;TITLE\\x07" in shown and "\\u202e" in shown  # shown as escapes, not dropped


# ----------------------------------------------------------------------------- git


def git(root, *args):
    subprocess.run(["git", "-c", "user.name=ftspec", "-c", "user.email=ftspec@example.com", "-c",
                    "commit.gpgsign=false",
                    "-c", "init.defaultBranch=main", "-C", str(root), *args], check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    spec = make_repo(root, quickstart())
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "quickstart")
    return spec


def test_diff_git_compares_the_working_tree_with_a_revision(repo, tmp_path, monkeypatch):
    root = repo.parent.parent
    repo.write_text(yaml.safe_dump(edited(lambda d: d["training"].update(learning_rate=3.0e-3)), sort_keys=False))
    monkeypatch.chdir(tmp_path)  # the spec path need not be relative to the cwd
    old, new = diff_git("HEAD", repo)
    d = diff_plans(old, new)
    assert [(c.path, c.old, c.new) for c in d.changes] == [("training.learning_rate", 0.001, 0.003)]
    assert d.rerun == ["train", "generate_tuned", "eval_tuned", "report"]
    assert old.spec.path == new.spec.path == "specs/quickstart.yaml"
    assert old.data.sources["train"].path == "specs/data/support-tickets.jsonl"
    # a committed change is the same diff between two revisions' worth of history
    git(root, "commit", "-q", "-am", "faster")
    assert diff_git("HEAD", repo)[0] == new
    assert diff_git("HEAD~1", repo)[0] == old


def test_diff_git_with_profiles(repo):
    old, new = diff_git("HEAD", repo, profiles=["smoke"])
    assert diff_plans(old, new).is_empty()
    assert new.spec.profiles == ("smoke",) and new.training.total_steps == 5


def test_diff_git_unknown_revision(repo):
    with pytest.raises(SpecError, match="unknown git revision 'no-such-rev'"):
        diff_git("no-such-rev", repo)
    with pytest.raises(SpecError, match="is not a git revision"):
        diff_git("--output=/tmp/x", repo)


def test_diff_git_spec_absent_at_revision(repo):
    other = repo.parent / "other.yaml"
    shutil.copy(repo, other)
    with pytest.raises(SpecError, match="specs/other.yaml does not exist at revision 'HEAD'") as info:
        diff_git("HEAD", other)
    assert len(info.value.issues) == 1


def test_diff_git_outside_a_repository(tmp_path):
    spec = tmp_path / "plain" / "quickstart.yaml"
    spec.parent.mkdir()
    spec.write_text("ftspec: 1\n")
    with pytest.raises(SpecError, match="not in a git repository"):
        diff_git("HEAD", spec)


def test_diff_git_names_old_files_by_revision(repo):
    root = repo.parent.parent
    broken = edited(lambda d: d["training"].update(learning_rate="fast"))
    repo.write_text(yaml.safe_dump(broken, sort_keys=False))
    git(root, "commit", "-q", "-am", "broken")
    repo.write_text(yaml.safe_dump(quickstart(), sort_keys=False))
    with pytest.raises(SpecError) as info:
        diff_git("HEAD", repo)
    files = {i.pos.file for i in info.value.issues}
    assert files == {"HEAD:specs/quickstart.yaml"}, files


def test_each_change_names_where_its_value_came_from(tmp_path, monkeypatch):
    """A reviewer learns why a value is what it is without opening three files."""
    make_repo(tmp_path / "repo", quickstart())
    spec = tmp_path / "repo/specs/quickstart.yaml"
    monkeypatch.chdir(tmp_path / "repo")
    old, old_origin = compile_sourced(spec)
    new, new_origin = compile_sourced(spec, ["smoke"], ["training.learning_rate=0.003", "eval.few_shot=2"])
    d = diff_plans(old, new, old_origin, new_origin)
    got = {c.path: c.origin for c in d.changes}
    lines = spec.read_text().splitlines()
    max_steps_line = next(i for i, line in enumerate(lines, 1) if line.strip().startswith("max_steps:"))
    assert got["training.learning_rate"] == "--set training.learning_rate=0.003"
    assert got["training.max_steps"] == f"profile smoke specs/quickstart.yaml:{max_steps_line}"
    assert got["data.limit"].startswith("profile smoke specs/quickstart.yaml:")
    assert got["training.total_steps"] == "derived" and got["eval.few_shot_seed"] == "derived"
    assert got["eval.few_shot"] == "--set eval.few_shot=2"
    # A gate the smoke profile's `eval: {gates: {}}` removed is put down to that profile, not to the spec that had it.
    gates_line = next(i for i, line in enumerate(lines, 1) if "gates: {}" in line)
    assert got["eval.gates.accuracy"] == got['eval.gates["improvement.accuracy"]'] \
        == f"profile smoke specs/quickstart.yaml:{gates_line}", got
    text = render_text(d)
    assert "training.learning_rate: 0.001 → 0.003  (from --set training.learning_rate=0.003)" in text
    assert "training.total_steps: 225 → 5  (derived from epochs × steps_per_epoch, or max_steps)" in text
    assert "- gate accuracy: >= 0.8  (from profile smoke" in text
    # back to the plain spec: the removed and changed values name the plain spec's origins
    back = diff_plans(new, old, new_origin, old_origin)
    assert {c.path: c.origin for c in back.changes}["training.learning_rate"].startswith("spec specs/quickstart.yaml:")
    assert {c.path: c.origin for c in back.changes}["training.max_steps"] == "default"


def test_diff_git_is_not_stopped_by_a_link_out_of_the_repository_the_spec_never_reads(repo):
    """A pull request that adds `docs/latest -> /var/www` must not break the diff of every spec."""
    root = repo.parent.parent
    (root / "latest").symlink_to("/etc/passwd")
    (root / "up").symlink_to("../../../../../../etc")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "links")
    old, new = diff_git("HEAD", repo)
    assert diff_plans(old, new).is_empty()


def test_diff_git_refuses_a_spec_that_was_a_link_out_of_the_repository(repo, tmp_path):
    root = repo.parent.parent
    secret = tmp_path / "secret.yaml"
    secret.write_text("ftspec: 1\nname: secret-value\n", encoding="utf-8")
    text = repo.read_text(encoding="utf-8")
    repo.unlink()
    repo.symlink_to(secret)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "spec is a link")
    repo.unlink()
    repo.write_text(text, encoding="utf-8")
    with pytest.raises(SpecError) as info:
        diff_git("HEAD", repo)
    assert [(i.pos.file, i.message) for i in info.value.issues] == [
        ("HEAD:specs/quickstart.yaml", "is a symbolic link to outside the repository")]
    assert "secret" not in str(info.value)


# ----------------------------------------------------------------------------- where a reviewer reads it


def test_a_whole_number_is_never_shown_as_a_float(tmp_path):
    """The spec's `epochs: 3` is the plan's float 3.0 (epochs may be fractional): shown as 3."""
    old = make_repo(tmp_path / "o", quickstart())
    new = make_repo(tmp_path / "n", edited(lambda doc: doc["training"].update(epochs=4)))
    d = diff_plans(*(compile_sourced(p)[0] for p in (old, new)))
    assert "training.epochs: 3 → 4" in render_text(d)
    assert "| `training.epochs` | `3` | `4` |" in render_markdown(d)
    assert "3.0" not in render_text(d) and "4.0" not in render_text(d)
    # a fraction stays one, and values that differ but would read the same are shown exactly
    half = diff_plans(tiny_plan(training={"epochs": 1.0}), tiny_plan(training={"epochs": 1.5}))
    assert "training.epochs: 1 → 1.5" in render_text(half)
    same = Change("training", "training.eval_every", 3, 3.0)
    assert "training.eval_every: 3 → 3.0" in render_text(PlanDiff("a", "b", [same], [], []))


def test_a_gate_is_shown_by_its_name(tmp_path):
    old = make_repo(tmp_path / "o", quickstart())
    new = make_repo(tmp_path / "n", edited(lambda doc: doc["eval"].update(
        gates={"f1_macro": ">= 0.5", "accuracy": ">= 0.85", "improvement.accuracy": ">= 0.3"})))
    (o, oo), (n, no) = compile_sourced(old), compile_sourced(new)
    d = diff_plans(o, n, oo, no)
    text = render_text(d)
    assert "gate accuracy: >= 0.8 → >= 0.85  (from spec" in text
    assert "+ gate f1_macro: >= 0.5  (from spec" in text
    assert "improvement.accuracy" not in text  # unchanged, though it moved in the list
    assert "eval.gates[" not in text and "threshold" not in text
    assert "| `gate accuracy` | `>= 0.8` | `>= 0.85` |" in render_markdown(d)
    assert {c.path for c in d.changes} == {"eval.gates.accuracy", "eval.gates.f1_macro"}


def test_derived_values_are_not_called_defaults(tmp_path):
    old = make_repo(tmp_path / "o", quickstart())
    new = make_repo(tmp_path / "n", edited(lambda doc: doc["training"].update(epochs=4)))
    (o, oo), (n, no) = compile_sourced(old), compile_sourced(new)
    d = diff_plans(o, n, oo, no)
    origins = {c.path: render_text(PlanDiff("a", "b", [c], [], [])).splitlines()[3] for c in d.changes}
    assert "(a default)" not in render_text(d)
    assert origins["training.eval_every"].endswith("(derived from total_steps ÷ 10)")
    assert origins["training.warmup_steps"].endswith("(derived from warmup_ratio × total_steps)")
    assert origins["training.save_every"].endswith("(derived from eval_every, else total_steps ÷ 10)")
    # a default that did not move is still a default (the smoke profile's max_steps, removed)
    (s, so), (p, po) = compile_sourced(old, ["smoke"]), compile_sourced(old)
    back = diff_plans(s, p, so, po)
    assert {c.path: c.origin for c in back.changes}["training.max_steps"] == "default"
