"""The light commands show a spec's stages: `plan` (text and JSON) each stage in order
with its steps, `diff` each stage's changes and the steps that run again in every stage,
`status` each stage's run directory and step states, none of them importing torch.

Each case writes a small repository to tmp_path: a tiny model, a labelled jsonl and a
preference jsonl, and a spec with stages (SFT then DPO, and a teacher then its student)."""

import json
import subprocess
import sys

import yaml
from click.testing import CliRunner
from conftest import ROOT

from ftspec.cli import main
from ftspec.plan.compile import compile_spec
from ftspec.plan.describe import render_plan
from ftspec.plan.diff import diff_plans
from ftspec.plan.diff_render import render_json, render_markdown, render_text

QUEUES = ["account", "billing", "returns", "shipping", "technical"]
STAGE1 = ["prepare_data", "generate_base", "eval_base", "train", "generate_tuned", "eval_tuned", "report"]

TINY = {"kind": "tiny", "architecture": "llama", "hidden_size": 32, "num_layers": 1, "num_heads": 2,
        "max_position_embeddings": 128, "tokenizer": {"kind": "byte"}}


def sft_dpo() -> dict:
    return {
        "ftspec": 1, "name": "sftdpo",
        "model": dict(TINY),
        "data": {"train": "data/tickets.jsonl", "split": {"validation": 0.1, "test": 0.1, "seed": 1}},
        "format": {"kind": "prompt_completion", "prompt": "Request: {{ text }}\nQueue:", "completion": " {{ queue }}"},
        "method": {"kind": "sft", "adapter": "full"},
        "training": {"max_steps": 3, "learning_rate": 1.0e-3, "batch_size": 4, "max_length": 64},
        "eval": {"metrics": ["accuracy"], "max_new_tokens": 4},
        "compute": {"device": "cpu"},
        "stages": [
            {"name": "sft"},
            {"name": "dpo",
             "data": {"train": "data/pairs.jsonl", "split": {"validation": 0.1, "test": 0.1, "seed": 1}},
             "format": {"kind": "preference", "prompt": "{{ prompt }}", "chosen": "{{ chosen }}",
                        "rejected": "{{ rejected }}"},
             "method": {"kind": "dpo", "adapter": "full"},
             "training": {"learning_rate": 5.0e-4}},
        ],
    }


def distill() -> dict:
    doc = sft_dpo()
    doc["name"] = "distil"
    doc["stages"] = [
        {"name": "teacher"},
        {"name": "student", "model": dict(TINY, hidden_size=16),
         "method": {"kind": "distill", "adapter": "full", "teacher": {"stage": "teacher"},
                    "filter": {"extract": {"regex": "(" + "|".join(QUEUES) + ")"}},
                    "logits": {"alpha": 0.5, "temperature": 2.0}}},
    ]
    return doc


def write_repo(root, spec: dict, name="spec.yaml"):
    """A repository root (marked with .git) holding specs/NAME and its two data files."""
    (root / ".git").mkdir(parents=True, exist_ok=True)
    (root / "specs/data").mkdir(parents=True, exist_ok=True)
    tickets = [{"text": f"ticket {i} about {q}", "queue": q} for i, q in enumerate(QUEUES * 12)]
    pairs = [{"prompt": f"ticket {i} about {q}\nQueue:", "chosen": " " + q, "rejected": " " + QUEUES[(i + 1) % 5]}
             for i, q in enumerate(QUEUES * 12)]
    for file, rows in (("tickets.jsonl", tickets), ("pairs.jsonl", pairs)):
        (root / "specs/data" / file).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    path = root / "specs" / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def with_lr(stage: int, lr: float) -> dict:
    doc = sft_dpo()
    if stage == 0:
        doc["training"]["learning_rate"] = lr  # the spec's training, which stage sft keeps
    else:
        doc["stages"][1]["training"]["learning_rate"] = lr
    return doc


# ----------------------------------------------------------------------------- plan


def test_plan_text_shows_each_stage_in_order_with_its_steps(tmp_path):
    plan, _ = compile_spec(write_repo(tmp_path, sft_dpo()))
    text = render_plan(plan)
    assert "  stages    sft → dpo" in text
    first, second = text.index("stage 1/2 sft"), text.index("stage 2/2 dpo")
    assert first < second
    sft, dpo = text[first:second], text[second:]
    # Each stage: its model, method, training, output and steps, as a plan of its own.
    assert "tiny llama from config: 1 layers × 32 wide" in sft and "method    sft + full fine-tuning" in sft
    assert "lr 0.001 " in sft and "output    runs/sftdpo.stage-sft " in sft
    assert "  steps     " + " → ".join(f"{s.name} {s.key[:8]}" for s in plan.stages[0].steps) in sft
    assert "model     the model of stage sft (its full weights)" in dpo
    assert "method    dpo + full fine-tuning" in dpo and "lr 0.0005 " in dpo and "preference pairs" in dpo
    assert "output    runs/sftdpo  " in dpo
    assert "  steps     " + " → ".join(f"{s.name} {s.key[:8]}" for s in plan.steps) in dpo
    assert f"stage 1/2 sft  id {plan.stages[0].short_id}" in text and f"stage 2/2 dpo  id {plan.short_id}" in text


def test_plan_text_of_a_lora_stage_model_and_a_distill_method(tmp_path):
    doc = distill()
    doc["stages"][0]["method"] = {"kind": "sft", "adapter": "lora"}
    doc["stages"].insert(1, {"name": "more", "from": "teacher", "training": {"learning_rate": 2.0e-4}})
    plan, _ = compile_spec(write_repo(tmp_path, doc))
    text = render_plan(plan)
    assert [text.index(f"stage {i}/3 {n}") for i, n in enumerate(["teacher", "more", "student"], 1)] == sorted(
        text.index(f"stage {i}/3 {n}") for i, n in enumerate(["teacher", "more", "student"], 1))
    more = text[text.index("stage 2/3 more"):text.index("stage 3/3 student")]
    assert ("model     the model of stage teacher (its lora adapter; merged into its base when this stage's data "
            "is prepared)") in more
    student = text[text.index("stage 3/3 student"):]
    assert "method    distill + full fine-tuning" in student
    assert "teacher: the model of stage teacher (its lora adapter" in student
    assert "answers: picks the likeliest of 5 labels (account, billing, returns, shipping, technical)" in student
    assert "filter: keeps answers where regex '(account|billing|returns|shipping|technical)' matches" in student
    assert "logits: alpha 0.5 at temperature 2" in student
    assert "generate_teacher" in student and "compare_stages" in student


def test_plan_text_of_a_distill_method_without_logits(tmp_path):
    doc = distill()
    del doc["stages"][1]["method"]["logits"]
    plan, _ = compile_spec(write_repo(tmp_path, doc))
    assert "logits: none, the student learns from the answers only" in render_plan(plan)


def test_plan_json_holds_every_stage(tmp_path, monkeypatch):
    path = write_repo(tmp_path, sft_dpo())
    monkeypatch.chdir(tmp_path)
    out = CliRunner().invoke(main, ["plan", str(path), "--json"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert doc["stage"] == "dpo" and [s["stage"] for s in doc["stages"]] == ["sft"]
    assert doc["stages"][0]["output"]["dir"] == "runs/sftdpo.stage-sft"
    assert [s["name"] for s in doc["stages"][0]["steps"]] == STAGE1
    assert doc["model"]["kind"] == "stage" and doc["model"]["stage"] == "sft"


# ----------------------------------------------------------------------------- diff


def _diff(tmp_path, old: dict, new: dict):
    from ftspec.plan.compile import compile_sourced

    (a, ao), (b, bo) = (compile_sourced(write_repo(tmp_path / n, d)) for n, d in (("old", old), ("new", new)))
    return diff_plans(a, b, ao, bo)


def test_diff_of_the_first_stage_reruns_both_stages(tmp_path):
    d = _diff(tmp_path, sft_dpo(), with_lr(0, 2.0e-3))
    by = {st.name: st for st in d.stages}
    assert list(by) == ["sft", "dpo"]
    assert by["sft"].rerun == ["train", "generate_tuned", "eval_tuned", "report"]
    assert by["sft"].reused == ["prepare_data", "generate_base", "eval_base"]
    assert "train" in by["dpo"].rerun and "prepare_data" in by["dpo"].rerun and by["dpo"].reused == []
    assert "sft/train" in d.rerun and "dpo/train" in d.rerun
    # The change is named in the stage it was made in, with where it was written.
    lr = [c for c in d.changes if c.path == "training.learning_rate"]
    assert [(c.stage, c.old, c.new) for c in lr] == [("sft", 1.0e-3, 2.0e-3)]
    assert lr[0].origin.startswith("spec ") and "spec.yaml" in lr[0].origin
    # Nothing but derived keys changes in the second stage: its model is the first stage's.
    assert all(c.origin == "derived" for c in d.changes if c.stage == "dpo")
    text = render_text(d)
    assert "\nstage sft (1/2)\n  training\n    training.learning_rate: 0.001 → 0.002" in text
    assert ("  stage sft: train, generate_tuned, eval_tuned, report (reused: prepare_data, generate_base, eval_base)"
            in text)
    assert "  stage dpo: prepare_data, generate_base" in text
    # Nothing about a stage's id, steps or spec path is shown as a change.
    assert "stages[" not in text and ".key" not in text and "spec.path" not in text


def test_diff_of_the_last_stage_reruns_it_alone(tmp_path):
    d = _diff(tmp_path, sft_dpo(), with_lr(1, 6.0e-4))
    by = {st.name: st for st in d.stages}
    assert by["sft"].rerun == [] and by["sft"].reused == STAGE1
    assert by["dpo"].rerun == ["train", "generate_tuned", "eval_tuned", "compare_stages", "report"]
    assert not any(x.startswith("sft/") for x in d.rerun)
    assert [(c.stage, c.path) for c in d.changes] == [("dpo", "training.learning_rate")]
    assert ":" in d.changes[0].origin  # the line of the stage that writes it
    text = render_text(d)
    assert "  stage sft: none (all 7 steps reused)" in text
    assert "  stage dpo: train, generate_tuned, eval_tuned, compare_stages, report" in text
    md = render_markdown(d)
    assert "**stage dpo (2/2): training**" in md and "- stage sft: none (all 7 steps reused)" in md
    doc = json.loads(render_json(d))
    assert [s["name"] for s in doc["stages"]] == ["sft", "dpo"] and doc["stages"][0]["rerun"] == []
    assert doc["changes"][0]["stage"] == "dpo"


def test_diff_of_the_same_staged_spec_is_empty(tmp_path):
    d = _diff(tmp_path, sft_dpo(), sft_dpo())
    assert d.is_empty() and render_text(d).endswith("no change to the plan\n")


def test_diff_when_a_stage_is_added(tmp_path):
    old = sft_dpo()
    new = sft_dpo()
    new["stages"].insert(1, {"name": "more", "training": {"learning_rate": 2.0e-4}})
    d = _diff(tmp_path, old, new)
    assert [st.name for st in d.stages] == ["sft", "more", "dpo"]
    assert d.stages[1].added and d.stages[1].rerun == STAGE1 and d.stages[0].rerun == []
    assert "  stage more: " + ", ".join(STAGE1) + " (a new stage)" in render_text(d)


def test_diff_of_a_renamed_stage_reuses_what_it_computed(tmp_path):
    # Every stage's run directory shares the runs folder's step store: a renamed stage's
    # steps are found there under their keys.
    new = sft_dpo()
    new["stages"][0]["name"] = "first"
    d = _diff(tmp_path, sft_dpo(), new)
    by = {st.name: st for st in d.stages}
    assert list(by) == ["first", "sft", "dpo"] and by["sft"].removed and by["first"].added
    assert by["first"].reused == STAGE1 and by["first"].rerun == []
    assert "  stage first: none (a new stage; reused: " in render_text(d)


def test_diff_command_with_stages(tmp_path, monkeypatch):
    old, new = write_repo(tmp_path / "old", sft_dpo()), write_repo(tmp_path / "new", with_lr(0, 2.0e-3))
    monkeypatch.chdir(tmp_path)
    out = CliRunner().invoke(main, ["diff", str(old), str(new)])
    assert out.exit_code == 0, out.output
    assert "stage sft (1/2)" in out.stdout and "training.learning_rate: 0.001 → 0.002" in out.stdout
    assert "stage dpo: prepare_data" in out.stdout


def test_diff_git_of_a_staged_spec_names_each_stage(tmp_path):
    path = write_repo(tmp_path, sft_dpo())
    (tmp_path / ".git").rmdir()
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    path.write_text(yaml.safe_dump(with_lr(0, 2.0e-3), sort_keys=False), encoding="utf-8")
    from ftspec.commands.diff import diff_git

    old, new, oo, no = diff_git("HEAD", path, with_origins=True)
    d = diff_plans(old, new, oo, no)
    lr = [c for c in d.changes if c.path == "training.learning_rate"]
    assert [c.stage for c in lr] == ["sft"] and lr[0].origin.startswith("spec ")


# ----------------------------------------------------------------------------- explain


def test_explain_shows_each_stage_with_where_its_values_were_written(tmp_path, monkeypatch):
    path = write_repo(tmp_path, sft_dpo())
    monkeypatch.chdir(tmp_path)
    out = CliRunner().invoke(main, ["plan", str(path), "--explain"])
    assert out.exit_code == 0, out.output
    lines = out.stdout.splitlines()
    sft, dpo = lines.index("stage 1/2 sft"), lines.index("stage 2/2 dpo")
    lr = [l.split() for l in lines if l.split()[:1] == ["training.learning_rate"]]
    assert len(lr) == 2 and [l[1] for l in lr] == ["0.001", "0.0005"]
    # The second stage's rate is written in the stage, below the first stage's.
    line_of = [int(l[-1].rsplit(":", 1)[1]) for l in lr]
    assert line_of[0] < line_of[1]
    assert sft < next(i for i, l in enumerate(lines) if "0.001" in l and "learning_rate" in l) < dpo
    assert not any(l.split()[:1] == ["stages"] for l in lines)  # no `stages: null` row
    assert lines[-1].startswith(f"{len(lines) - 4} values in 2 stages: ")  # less the head, 2 stages, this line
    rows = json.loads(CliRunner().invoke(main, ["plan", str(path), "--explain", "--json"]).stdout)
    assert {r["stage"] for r in rows} == {"sft", "dpo"}
    assert [r["value"] for r in rows if r["key"] == "method.kind"] == ["sft", "dpo"]


def test_explain_of_a_spec_without_stages_has_no_stage(in_root):
    rows = json.loads(CliRunner().invoke(main, ["plan", "specs/quickstart.yaml", "--explain", "--json"]).stdout)
    assert rows and all("stage" not in r for r in rows)


# ----------------------------------------------------------------------------- status


def test_status_lists_each_stage_with_its_run_directory(tmp_path, monkeypatch):
    path = write_repo(tmp_path, sft_dpo())
    plan, _ = compile_spec(path)
    monkeypatch.chdir(tmp_path)
    out = CliRunner().invoke(main, ["status", str(path)])
    assert out.exit_code == 0, out.output
    lines = out.stdout.splitlines()
    assert lines[0].startswith("sftdpo  plan ") and lines[0].endswith("2 stages: sft → dpo")
    first = lines.index(f"stage 1/2 sft  plan {plan.stages[0].short_id}  run directory runs/sftdpo.stage-sft")
    second = lines.index(f"stage 2/2 dpo  plan {plan.short_id}  run directory runs/sftdpo")
    assert [l.split()[0] for l in lines[first + 1:second]] == STAGE1
    assert [l.split()[0] for l in lines[second + 1:]] == [s.name for s in plan.steps]
    assert all(l.split()[-1] == "missing" for l in lines[first + 1:second] + lines[second + 1:])


def test_status_shows_a_done_step_of_the_first_stage(tmp_path, monkeypatch):
    from ftspec.store.rundir import finish_step, store_of

    path = write_repo(tmp_path, sft_dpo())
    plan, _ = compile_spec(path)
    step = plan.stages[0].step("prepare_data")
    store = store_of(tmp_path / plan.stages[0].output.dir)
    partial = store.partial(step.name, step.key)
    partial.mkdir(parents=True)
    finish_step(partial, store.path(step.name, step.key), step.name, step.key)
    monkeypatch.chdir(tmp_path)
    out = CliRunner().invoke(main, ["status", str(path)]).stdout.splitlines()
    sft = out[out.index(next(l for l in out if l.startswith("stage 1/2 sft"))) + 1]
    assert sft.split()[0] == "prepare_data" and sft.split()[-1] == "done"
    dpo = out[out.index(next(l for l in out if l.startswith("stage 2/2 dpo"))) + 1]
    assert dpo.split()[0] == "prepare_data" and dpo.split()[-1] == "missing"


def test_status_of_a_spec_without_stages_is_unchanged(in_root):
    out = CliRunner().invoke(main, ["status", "specs/quickstart.yaml"])
    assert out.exit_code == 0, out.output
    assert out.stdout.splitlines()[0].startswith("quickstart  plan ") and "stage" not in out.stdout


# ----------------------------------------------------------------------------- light


HEAVY = ("torch", "transformers", "trl", "peft", "datasets", "accelerate")
PROBE = """
import sys
from ftspec.cli import main
for args in {commands!r}:
    try:
        main(args, standalone_mode=False)
    except SystemExit:
        pass
print("HEAVY:" + ",".join(sorted(m for m in {heavy!r} if m in sys.modules)))
"""


def test_staged_light_commands_do_not_import_the_training_stack(tmp_path):
    old = write_repo(tmp_path, sft_dpo(), "old.yaml")
    new = write_repo(tmp_path, with_lr(0, 2.0e-3), "new.yaml")
    dist = write_repo(tmp_path, distill(), "distil.yaml")
    commands = [["plan", str(old)], ["plan", str(dist), "--json"], ["plan", str(dist)], ["diff", str(old), str(new)],
                ["status", str(old)], ["status", str(dist)], ["plan", str(old), "--explain"]]
    code = PROBE.format(commands=commands, heavy=HEAVY)
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert "stage 1/2 sft" in out.stdout and "stage 2/2 student" in out.stdout
    assert out.stdout.splitlines()[-1] == "HEAVY:", out.stdout.splitlines()[-1]


def test_validate_says_the_warnings_of_every_stage(tmp_path):
    """A warning of an earlier stage (here: its completion is the same text for every row) is said by
    validate as the last stage's are, not only under --strict."""
    import json as _json

    from click.testing import CliRunner

    from ftspec.cli import main

    (tmp_path / ".git").mkdir()
    (tmp_path / "rows.jsonl").write_text("".join(_json.dumps({"q": f"question {i}", "a": f"answer {i}"}) + "\n"
                                                 for i in range(60)))
    (tmp_path / "s.yaml").write_text("""ftspec: 1
name: s
model: {kind: tiny, hidden_size: 32, num_layers: 2, num_heads: 4, max_position_embeddings: 256, init_seed: 1}
data: {train: rows.jsonl, split: {validation: 0.1, test: 0.1, seed: 1}}
format: {kind: prompt_completion, prompt: "{{ q }}:", completion: " {{ a }}"}
training: {max_steps: 2, batch_size: 4}
stages:
  - name: first
    format: {kind: prompt_completion, prompt: "{{ q }}:", completion: " same"}
  - name: second
""")
    said = CliRunner().invoke(main, ["validate", str(tmp_path / "s.yaml")]).output
    strict = CliRunner().invoke(main, ["validate", "--strict", str(tmp_path / "s.yaml")]).output
    first = [line for line in strict.splitlines() if "(stage first)" in line and "warning" in line]
    assert first, strict
    assert all(line in said for line in first), said
