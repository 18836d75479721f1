"""The cross-stage comparison (compare_stages) and the report's "Stages" section, on a
fake store: metrics.json files and tiny safetensors files where the steps would leave them."""

import json
import struct
from pathlib import Path

import pytest
import yaml

from ftspec.catalog.steps import COMPARE_STAGES
from ftspec.plan.compile import compile_spec
from ftspec.plan.keys import view
from ftspec.runtime.context import StepContext
from ftspec.runtime.report.compare import compare, folder_parameters, load_comparison, safetensors_parameters
from ftspec.store.rundir import Store, link_step

QUEUES = ("account", "billing", "returns", "shipping", "technical")


def _spec(tmp_path: Path, *, student_eval: dict | None = None, lora_teacher: bool = False) -> Path:
    rows = [{"text": f"request number {i} about the {q} queue", "queue": q}
            for i in range(12) for q in QUEUES]
    (tmp_path / "tickets.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    tiny = {"kind": "tiny", "architecture": "llama", "num_heads": 4, "max_position_embeddings": 320,
            "tokenizer": {"kind": "byte"}}
    student = {"name": "student", "model": {**tiny, "hidden_size": 32, "num_layers": 1},
               "method": {"kind": "distill", "adapter": "full", "teacher": {"stage": "teacher"}}}
    if student_eval:
        student["eval"] = student_eval
    teacher = {"name": "teacher"}
    if lora_teacher:
        teacher["method"] = {"kind": "sft", "adapter": {"kind": "lora", "r": 4}}
    doc = {
        "ftspec": 1, "name": "distil",
        "model": {**tiny, "hidden_size": 64, "num_layers": 2},
        "data": {"train": "tickets.jsonl", "split": {"validation": 0.2, "test": 0.2, "seed": 1, "stratify": "queue"}},
        "format": {"kind": "prompt_completion", "prompt": "Request: {{ text }}\nQueue:", "completion": " {{ queue }}"},
        "method": {"kind": "sft", "adapter": "full"},
        "training": {"epochs": 1, "batch_size": 8, "max_length": 128},
        "eval": {"metrics": ["accuracy", "f1_macro"], "max_new_tokens": 8},
        "compute": {"device": "cpu"},
        "stages": [teacher, student],
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _plan(tmp_path, **kw):
    plan, _ = compile_spec(_spec(tmp_path, **kw))
    return plan


def _safetensors(path: Path, shapes: dict[str, list[int]]) -> None:
    """A safetensors file written by hand: the header, then zeros for every float32 tensor."""
    header, offset = {}, 0
    for name, shape in shapes.items():
        n = 4
        for d in shape:
            n *= d
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    header["__metadata__"] = {"format": "pt"}
    text = json.dumps(header).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"\0" * offset)


def _metrics(folder: Path, accuracy: float, f1: float, rows: int = 12, split: str = "test",
             references: list[str] | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(
        {"metrics": {"accuracy": accuracy, "f1_macro": f1}, "details": {}, "rows": rows, "split": split,
         "few_shot": 0, "mode": "choices"}))
    refs = references or [QUEUES[i % 5] for i in range(rows)]
    (folder / "predictions.jsonl").write_text("".join(
        json.dumps({"index": i, "prompt": "p", "reference": r, "prediction": r, "scores": {}}) + "\n"
        for i, r in enumerate(refs)))


def Ctx(plan, store: Store) -> StepContext:
    """What the step is given: where the run directory and the store are, this plan's keys."""
    return StepContext(store.root.parent, store.root.parent / "distil", plan.step("compare_stages").key,
                       keys={s.name: s.key for s in plan.steps}, store=store)


TEACHER_BASE = {"model.embed_tokens.weight": [259, 64], "model.layers.0.mlp.up_proj.weight": [128, 64]}
TEACHER = 259 * 64 + 128 * 64
STUDENT = 259 * 32 + 64 * 32


def _layout(tmp_path, plan, *, student_rows=12, teach_model=True, lora_teacher=False):
    """The store as a run of ``plan`` (student stage) and its teacher stage would leave it."""
    store = Store(tmp_path / "runs" / ".ftspec-store")
    (teacher,) = plan.stages
    at = lambda p, name: store.path(name, p.step(name).key)  # noqa: E731
    _safetensors(at(teacher, "prepare_data") / "base-model" / "model.safetensors", TEACHER_BASE)
    if lora_teacher:
        _safetensors(at(teacher, "train") / "adapter_model.safetensors", {"a.lora_A.weight": [4, 64],
                                                                          "a.lora_B.weight": [64, 4]})
    else:
        _safetensors(at(teacher, "train") / "model.safetensors", TEACHER_BASE)
    _metrics(at(teacher, "eval_base"), 0.1, 0.05)
    _metrics(at(teacher, "eval_tuned"), 0.9, 0.88)
    _safetensors(at(plan, "prepare_data") / "base-model" / "model.safetensors",
                 {"model.embed_tokens.weight": [259, 32], "model.layers.0.mlp.up_proj.weight": [64, 32]})
    _safetensors(at(plan, "train") / "model.safetensors",
                 {"model.embed_tokens.weight": [259, 32], "model.layers.0.mlp.up_proj.weight": [64, 32]})
    if teach_model:  # the teacher stage's model, written whole by the teach step
        _safetensors(at(plan, "teach") / "base-model" / "model.safetensors", TEACHER_BASE)
    if "eval_base" in {s.name for s in plan.steps}:
        _metrics(at(plan, "eval_base"), 0.2, 0.1, rows=student_rows)
    _metrics(at(plan, "eval_tuned"), 0.72, 0.7, rows=student_rows)
    _metrics(at(plan, "eval_teacher"), 0.9, 0.88, rows=student_rows)
    return store


def _compare(tmp_path, plan, store):
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    ctx = Ctx(plan, store)
    result = compare(view(plan, COMPARE_STAGES), ctx, out)
    assert json.loads((out / "comparison.json").read_text()) == json.loads(json.dumps(result))
    return result


# --------------------------------------------------------------------------- parameters


def test_parameters_are_read_from_safetensors_headers(tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(3, 5), "b": torch.zeros(7), "c": torch.zeros(2, 3, 4, dtype=torch.float16)},
              str(tmp_path / "model.safetensors"))
    assert safetensors_parameters(tmp_path / "model.safetensors") == 15 + 7 + 24
    _safetensors(tmp_path / "adapter_model.safetensors", {"x": [2, 2]})
    assert folder_parameters(tmp_path) == 46  # the adapter is not the model
    assert folder_parameters(tmp_path, adapter=True) == 4
    assert folder_parameters(tmp_path / "missing") is None
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "model.safetensors").write_bytes(b"\xff" * 8)
    assert folder_parameters(tmp_path / "broken") is None


def test_start_parameters_of_local_and_hub_models(tmp_path):
    from ftspec.plan.model import PretrainedModel
    from ftspec.runtime.report.compare import start_parameters

    _safetensors(tmp_path / "models" / "mine" / "model.safetensors", {"w": [10, 10]})
    local = PretrainedModel(kind="pretrained", source="local", name_or_path="models/mine")
    hub = PretrainedModel(kind="pretrained", source="hub", name_or_path="org/model")
    store = Store(tmp_path / ".ftspec-store")
    assert start_parameters(local, tmp_path / "no-data", store, tmp_path) == 100
    assert start_parameters(local, tmp_path / "no-data", store, None) is None  # no root: not found
    assert start_parameters(hub, tmp_path / "no-data", store, tmp_path) is None  # on the hub: unknown
    _safetensors(tmp_path / "data" / "base-model" / "model.safetensors", {"w": [3, 3]})
    assert start_parameters(hub, tmp_path / "data", store, tmp_path) == 9  # prepared (a converted GGUF file)


# --------------------------------------------------------------------------- the rows


def test_every_model_of_every_stage_in_order(tmp_path):
    plan = _plan(tmp_path)
    result = _compare(tmp_path, plan, _layout(tmp_path, plan))
    models = result["models"]
    assert [(m["model"], m["stage"], m["role"]) for m in models] == [
        ("teacher base", "teacher", "base"),
        ("teacher", "teacher", "tuned"),
        ("student base", "student", "base"),
        ("student", "student", "tuned"),
        ("teacher (stage teacher)", "student", "teacher"),
    ]
    assert [m["parameters"] for m in models] == [TEACHER, TEACHER, STUDENT, STUDENT, TEACHER]
    assert [m["metrics"]["accuracy"] for m in models] == [0.1, 0.9, 0.2, 0.72, 0.9]
    assert all(m["comparable"] and "not_comparable" not in m for m in models)
    assert all(m["rows"] == 12 and m["split"] == "test" for m in models)
    assert result["metrics"] == ["accuracy", "f1_macro"] and result["split"] == "test" and result["rows"] == 12
    (d,) = result["distillation"]
    assert d["ratio"] == pytest.approx(0.72 / 0.9) and d["parameter_ratio"] == pytest.approx(STUDENT / TEACHER)
    assert "accuracy 0.720 against the teacher's 0.900, 80% of it" in d["text"]
    assert f"({STUDENT:,} against {TEACHER:,})" in d["text"] and "base model scored 0.200" in d["text"]


def test_teacher_counted_from_its_stage_without_teach_model(tmp_path):
    plan = _plan(tmp_path)
    result = _compare(tmp_path, plan, _layout(tmp_path, plan, teach_model=False))
    assert result["models"][-1]["parameters"] == TEACHER  # the teacher stage's trained weights


def test_lora_model_counts_base_plus_adapter(tmp_path):
    plan = _plan(tmp_path, lora_teacher=True)
    models = _compare(tmp_path, plan, _layout(tmp_path, plan, lora_teacher=True, teach_model=False))["models"]
    tuned = models[1]
    assert tuned["model"] == "teacher" and tuned["adapter_parameters"] == 4 * 64 * 2
    assert tuned["parameters"] == TEACHER + 4 * 64 * 2
    assert models[-1]["parameters"] == TEACHER + 4 * 64 * 2  # the teacher, through its stage
    assert "adapter_parameters" not in models[0]


def test_stage_evaluated_differently_is_flagged(tmp_path):
    plan = _plan(tmp_path)
    result = _compare(tmp_path, plan, _layout(tmp_path, plan, student_rows=10))
    by_model = {m["model"]: m for m in result["models"]}
    assert result["rows"] == 10
    for name in ("teacher base", "teacher"):
        assert by_model[name]["comparable"] is False
        assert by_model[name]["not_comparable"] == "evaluated on 12 rows, this stage on 10"
    assert by_model["student"]["comparable"] and by_model["teacher (stage teacher)"]["comparable"]


def test_other_held_out_rows_are_flagged(tmp_path):
    plan = _plan(tmp_path)
    store = _layout(tmp_path, plan)
    (teacher,) = plan.stages
    _metrics(store.path("eval_tuned", teacher.step("eval_tuned").key), 0.9, 0.88, references=["billing"] * 12)
    by_model = {m["model"]: m for m in _compare(tmp_path, plan, store)["models"]}
    assert "references differ" in by_model["teacher"]["not_comparable"]
    assert by_model["teacher base"]["comparable"]


def test_other_split_is_flagged(tmp_path):
    plan = _plan(tmp_path, student_eval={"split": "validation"})
    store = _layout(tmp_path, plan)
    for step in ("eval_base", "eval_tuned", "eval_teacher"):
        _metrics(store.path(step, plan.step(step).key), 0.5, 0.5, split="validation")
    by_model = {m["model"]: m for m in _compare(tmp_path, plan, store)["models"]}
    assert by_model["teacher"]["not_comparable"] == "evaluated on the test split, this stage on validation"
    assert by_model["student"]["comparable"]


def test_a_step_the_plan_lacks_is_skipped(tmp_path):
    plan = _plan(tmp_path, student_eval={"baseline": False})
    assert "eval_base" not in {s.name for s in plan.steps}
    store = _layout(tmp_path, plan)
    # A folder the step would have had, left in the run directory by an earlier run, is not this plan's.
    ctx = Ctx(plan, store)
    _metrics(ctx.run_dir / "eval-base", 0.3, 0.3)
    assert ctx.step_dir("eval_base") == ctx.run_dir / "eval-base"
    result = compare(view(plan, COMPARE_STAGES), ctx, tmp_path)
    assert [m["model"] for m in result["models"]] == ["teacher base", "teacher", "student",
                                                      "teacher (stage teacher)"]


def test_distillation_without_stages(tmp_path):
    """One stage distilling a hub model: base, student and teacher, the teacher's size unknown
    until the teach step keeps its weights."""
    doc = yaml.safe_load(_spec(tmp_path).read_text())
    del doc["stages"]
    doc["model"].update(hidden_size=32, num_layers=1)
    doc["method"] = {"kind": "distill", "adapter": "full", "teacher": {"base": "HuggingFaceTB/SmolLM2-135M-Instruct"}}
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(doc))
    plan, _ = compile_spec(tmp_path / "spec.yaml")
    assert plan.stage is None and not plan.stages
    store = Store(tmp_path / "runs" / ".ftspec-store")
    at = lambda name: store.path(name, plan.step(name).key)  # noqa: E731
    shapes = {"model.embed_tokens.weight": [259, 32], "model.layers.0.mlp.up_proj.weight": [64, 32]}
    _safetensors(at("prepare_data") / "base-model" / "model.safetensors", shapes)
    _safetensors(at("train") / "model.safetensors", shapes)
    for name, acc in (("eval_base", 0.2), ("eval_tuned", 0.6), ("eval_teacher", 0.8)):
        _metrics(at(name), acc, acc)
    result = _compare(tmp_path, plan, store)
    assert [(m["model"], m["stage"], m["role"], m["parameters"]) for m in result["models"]] == [
        ("base", None, "base", STUDENT), ("student", None, "tuned", STUDENT),
        ("teacher (HuggingFaceTB/SmolLM2-135M-Instruct)", None, "teacher", None)]
    (d,) = result["distillation"]
    assert d["parameter_ratio"] is None and d["teacher_parameters"] is None
    assert d["text"].startswith("student: accuracy 0.600 against the teacher's 0.800, 75% of it; "
                                f"parameters {STUDENT:,} against the teacher's ?")
    _safetensors(at("teach") / "base-model" / "model.safetensors", {"w": [1000, 100]})  # a converted GGUF teacher
    result = _compare(tmp_path, plan, store)
    assert result["models"][-1]["parameters"] == 100_000
    assert result["distillation"][0]["parameter_ratio"] == pytest.approx(STUDENT / 100_000)


# --------------------------------------------------------------------------- the report


def test_report_shows_the_stages_table(tmp_path):
    from ftspec.runtime.report.build import build_report

    plan = _plan(tmp_path)
    store = _layout(tmp_path, plan)
    run_dir = tmp_path / "runs" / "distil"
    run_dir.mkdir(parents=True)
    ctx = Ctx(plan, store)
    for name in ("eval_base", "eval_tuned"):
        link_step(run_dir, name.replace("_", "-"), ctx.step_dir(name))
    out = store.path("compare_stages", plan.step("compare_stages").key)
    out.mkdir(parents=True)
    compare(view(plan, COMPARE_STAGES), ctx, out)
    link_step(run_dir, COMPARE_STAGES.folder, out)
    assert load_comparison(run_dir) is not None

    report = tmp_path / "report"
    report.mkdir()
    build_report(run_dir, plan, report)
    md = (report / "report.md").read_text()
    assert "## Stages" in md
    assert "| model | stage | parameters | accuracy | f1_macro |" in md
    assert f"| student | student | {STUDENT:,} | 0.720 | 0.700 |" in md
    assert f"| teacher (stage teacher) | student | {TEACHER:,} | 0.900 | 0.880 |" in md
    assert "80% of it" in md
    assert md.index("## Metrics") < md.index("## Stages") < md.index("## Gates")
    html = (report / "report.html").read_text()
    assert "<h2>Stages</h2>" in html and f"{STUDENT:,}" in html
    if (report / "stages.png").exists():  # with matplotlib
        assert "Every model per metric" in html

    # The run directory later shows another evaluation: the comparison is not this run's.
    other = store.path("eval_tuned", "f" * 64)
    _metrics(other, 0.5, 0.5)
    link_step(run_dir, "eval-tuned", other)
    assert load_comparison(run_dir) is None
    build_report(run_dir, plan, report)
    assert "## Stages" not in (report / "report.md").read_text()


def test_a_later_stages_starting_model_is_listed_where_its_own_row_is_not_comparable(tmp_path):
    """SFT then DPO: the SFT stage scores accuracy on its rows, the DPO stage preference
    metrics on its pairs; the SFT model as the DPO stage scores it is then a row of its own."""
    doc = yaml.safe_load(_spec(tmp_path).read_text())
    doc["stages"] = [{"name": "sft"}, {"name": "more", "training": {"learning_rate": 1.0e-4}}]
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(doc))
    plan, _ = compile_spec(tmp_path / "spec.yaml")
    (sft,) = plan.stages
    store = Store(tmp_path / "runs" / ".ftspec-store")
    for p, name, acc in ((sft, "eval_base", 0.1), (sft, "eval_tuned", 0.9), (plan, "eval_base", 0.9),
                         (plan, "eval_tuned", 0.95)):
        _metrics(store.path(name, p.step(name).key), acc, acc)
    models = [m["model"] for m in _compare(tmp_path, plan, store)["models"]]
    assert models == ["sft base", "sft", "more"], "the SFT model is listed once, as its own stage's row"
    _metrics(store.path("eval_tuned", sft.step("eval_tuned").key), 0.9, 0.9, references=["billing"] * 12)
    models = [m["model"] for m in _compare(tmp_path, plan, store)["models"]]
    assert models == ["sft base", "sft", "more base (stage sft's model)", "more"]
