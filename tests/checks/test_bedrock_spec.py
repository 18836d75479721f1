"""compute.backend bedrock, offline: the spec, the family table, the checks at their keys,
the hyperparameters, and the CreateModelCustomizationJob request the plan shows."""

import copy
import json
import shutil
import subprocess
import sys

import pytest
import yaml
from conftest import ROOT, run_cli

from ftspec.catalog import aws_patterns as aws
from ftspec.catalog import bedrock_families as families
from ftspec.core.errors import SpecError
from ftspec.plan import bedrock_request as request
from ftspec.plan.compile import check_spec, compile_spec
from ftspec.spec import schema as S

NOVA = yaml.safe_load((ROOT / "specs" / "bedrock-nova.yaml").read_text(encoding="utf-8"))


@pytest.fixture
def repo(tmp_path):
    """A repository holding the shipped specs' data, to write variations of the Bedrock spec in."""
    (tmp_path / ".git").mkdir()
    shutil.copytree(ROOT / "specs" / "data", tmp_path / "specs" / "data")
    return tmp_path


def _set(doc: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    for p in parents:
        doc = doc.setdefault(p, {})
    if value is _DROP:
        doc.pop(last, None)
    else:
        doc[last] = value


_DROP = object()


def write(repo, changes: dict | None = None, name: str = "spec.yaml") -> str:
    doc = copy.deepcopy(NOVA)
    doc.pop("profiles", None)
    for key, value in (changes or {}).items():
        _set(doc, key, value)
    path = repo / "specs" / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return str(path)


def errors(path) -> dict[str, str]:
    """The errors of a spec, by key (a spec that checks clean gives {})."""
    try:
        check_spec(path)
    except SpecError as exc:
        return {i.key: i.message + (f" ({i.hint})" if i.hint else "") for i in exc.issues if i.is_error}
    return {}


# --------------------------------------------------------------------------- the family table


@pytest.mark.parametrize("model_id,family", [
    ("amazon.nova-micro-v1:0:128k", "nova"),
    ("amazon.nova-lite-v1:0:300k", "nova"),
    ("amazon.nova-pro-v1:0:300k", "nova"),
    ("amazon.titan-text-express-v1:0:8k", "titan"),
    ("amazon.titan-text-lite-v1", "titan"),
    ("amazon.titan-text-premier-v1:0:32k", "titan"),
    ("meta.llama3-1-8b-instruct-v1:0:128k", "llama"),
    ("meta.llama3-2-1b-instruct-v1:0:128k", "llama"),
    ("meta.llama2-13b-v1:0:4k", "llama"),
    ("anthropic.claude-3-haiku-20240307-v1:0:200k", "claude"),
])
def test_family_is_inferred_from_the_model_id(model_id, family):
    assert families.find(model_id)[0].name == family


@pytest.mark.parametrize("model_id", ["amazon.nova-canvas-v1:0", "anthropic.claude-3-5-sonnet-20240620-v1:0",
                                      "amazon.nova-micro-v1:0:128kx", "nova-micro"])
def test_an_unknown_model_id_is_not_guessed(model_id):
    assert families.find(model_id) is None


def test_unknown_model_id_is_an_error_at_model_id_naming_the_families(repo):
    found = errors(write(repo, {"model.id": "amazon.nova-canvas-v1:0"}))
    assert set(found) == {"model.id"}
    assert all(f in found["model.id"] for f in families.FAMILIES)


def test_every_family_names_its_sources_and_formats():
    text = (ROOT / "ftspec" / "catalog" / "bedrock_families.py").read_text(encoding="utf-8")
    assert text.count("docs.aws.amazon.com") >= 4
    assert {f.data_format for f in families.BY_NAME.values()} == {"bedrock-conversation-2024", "prompt-completion",
                                                                  "claude-messages"}


# --------------------------------------------------------------------------- validation at its key


@pytest.mark.parametrize("changes,key,words", [
    ({"compute.bedrock.region": "US-EAST-1"}, "compute.bedrock.region", "region such as us-east-1"),
    ({"compute.bedrock.role_arn": "arn:aws:iam::1234:role/x"}, "compute.bedrock.role_arn", "12-digit account"),
    ({"compute.bedrock.role_arn": "arn:aws:iam::123456789012:user/x"}, "compute.bedrock.role_arn", "role ARN"),
    ({"compute.bedrock.s3.bucket": "My_Bucket"}, "compute.bedrock.s3.bucket", "lower-case"),
    ({"compute.bedrock.s3.bucket": "ab"}, "compute.bedrock.s3.bucket", "3 to 63"),
    ({"compute.bedrock.s3.bucket": "my..bucket"}, "compute.bedrock.s3.bucket", "adjacent"),
    ({"compute.bedrock.s3.bucket": "192.168.1.10"}, "compute.bedrock.s3.bucket", "IP address"),
    ({"compute.bedrock.s3.prefix": "a b/"}, "compute.bedrock.s3.prefix", "segment"),
    ({"compute.bedrock.vpc": {"subnets": ["subnet-12"], "security_groups": ["sg-0123abcd"]}},
     "compute.bedrock.vpc.subnets.0", "subnet id"),
    ({"compute.bedrock.vpc": {"subnets": ["subnet-0123abcd"], "security_groups": ["group-1"]}},
     "compute.bedrock.vpc.security_groups.0", "security group id"),
    ({"compute.bedrock.tags": {"k" * 129: "v"}}, "compute.bedrock.tags", "128"),
    ({"compute.bedrock.tags": {"team": "v" * 257}}, "compute.bedrock.tags.team", "256"),
    ({"compute.bedrock.tags": {"aws:owner": "me"}}, "compute.bedrock.tags", "reserved"),
    ({"compute.bedrock.kms_key_id": "not a key"}, "compute.bedrock.kms_key_id", "KMS key"),
    ({"compute.bedrock.serve": "always"}, "compute.bedrock.serve", "on_demand"),
])
def test_strict_formats_are_checked_at_their_key(repo, changes, key, words):
    found = errors(write(repo, changes))
    assert any(k.startswith(key) for k in found), found
    assert any(words in m for k, m in found.items() if k.startswith(key)), found


@pytest.mark.parametrize("secret", ["aws_access_key_id", "aws_secret_access_key", "secret_key", "session_token"])
def test_a_credential_has_no_place_in_the_spec(repo, secret):
    found = errors(write(repo, {f"compute.bedrock.{secret}": "AKIAFAKEFAKEFAKE"}))
    assert f"compute.bedrock.{secret}" in found and "unknown key" in found[f"compute.bedrock.{secret}"]
    assert not {"aws_access_key_id", "aws_secret_access_key", "credentials",
                "profile"} & set(S.BedrockSettings.model_fields)


def test_valid_formats_pass(repo):
    assert errors(write(repo, {
        "compute.bedrock.region": "eu-central-1",
        "compute.bedrock.role_arn": "arn:aws-us-gov:iam::123456789012:role/path/ftspec",
        "compute.bedrock.kms_key_id": "alias/ftspec",
        "compute.bedrock.vpc": {"subnets": ["subnet-0123abcd", "subnet-0123456789abcdef0"],
                                "security_groups": ["sg-0123abcd"]},
        "compute.bedrock.tags": {"team": "ml", "cost-center": "42"},
        "compute.bedrock.s3.prefix": "a/b",
    })) == {}
    plan, _ = compile_spec(write(repo, {"compute.bedrock.s3.prefix": "a/b"}))
    assert plan.compute.bedrock.s3.prefix == "a/b/"


def test_bedrock_model_needs_the_bedrock_backend_and_back(repo):
    found = errors(write(repo, {"compute": {"device": "cpu"}}))
    assert "model.kind" in found and "compute.backend: bedrock" in found["model.kind"]
    found = errors(write(repo, {"model": {"kind": "tiny"}}))
    assert "compute.backend" in found and "Bedrock base model" in found["compute.backend"]
    found = errors(write(repo, {"compute.backend": "bedrock", "compute.bedrock": _DROP}))
    assert "compute.backend" in found and "compute.bedrock" in found["compute.backend"]


def test_bedrock_settings_without_the_backend_are_an_error(repo):
    quick = yaml.safe_load((ROOT / "specs" / "quickstart.yaml").read_text(encoding="utf-8"))
    quick.pop("profiles")
    quick["compute"]["bedrock"] = NOVA["compute"]["bedrock"]
    path = repo / "specs" / "q.yaml"
    path.write_text(yaml.safe_dump(quick), encoding="utf-8")
    assert "compute.bedrock" in errors(path)


@pytest.mark.parametrize("changes,key,words", [
    ({"compute.bedrock.customization": "continued_pre_training"}, "compute.bedrock.customization",
     "offers fine_tuning and distillation"),
    ({"compute.bedrock.customization": "distillation"}, "compute.bedrock.customization", "teacher_model"),
    ({"compute.bedrock.customization": "distillation", "compute.bedrock.teacher_model": "amazon.nova-lite-v1:0"},
     "compute.bedrock.teacher_model", "amazon.nova-pro-v1:0"),
    ({"compute.bedrock.teacher_model": "amazon.nova-pro-v1:0"}, "compute.bedrock.teacher_model", "distillation"),
    ({"compute.bedrock.max_response_length": 100}, "compute.bedrock.max_response_length", "distillation"),
    ({"compute.bedrock.model_units": 1}, "compute.bedrock.model_units", "provisioned"),
    ({"compute.bedrock.serve": "provisioned"}, "compute.bedrock.serve", "model_units"),
    ({"method": {"kind": "dpo"}, "format": {"kind": "preference", "prompt": "{{ text }}", "chosen": "{{ queue }}",
                                            "rejected": "x"}}, "method.kind", "no DPO"),
    ({"method": {"kind": "sft", "adapter": "lora"}}, "method.adapter", "no choice of adapter"),
    ({"training.gradient_accumulation": 4}, "training.gradient_accumulation", "no such setting"),
    ({"training.max_steps": 10}, "training.max_steps", "no such setting"),
    ({"training.lr_scheduler": "linear"}, "training.lr_scheduler", "no such setting"),
    ({"training.optimizer": "adafactor"}, "training.optimizer", "no such setting"),
    ({"training.batch_size": 8}, "training.batch_size", "takes no batchSize"),
    ({"training.learning_rate": 0.01}, "training.learning_rate", "from 1e-06 to 0.0001"),
    ({"training.epochs": 6}, "training.epochs", "from 1 to 5"),
    ({"training.epochs": 1.5}, "training.epochs", "whole number"),
    ({"training.warmup_steps": 101}, "training.warmup_steps", "from 0 to 100"),
    ({"training.early_stopping": {"patience": 2}}, "training.early_stopping", "no early stopping"),
    ({"training.learning_rate_multiplier": 1.0}, "training.learning_rate_multiplier",
     "takes no learningRateMultiplier"),
    ({"compute.device": "cuda"}, "compute.device", "does not apply"),
    ({"compute.num_processes": 2, "compute.strategy": "ddp"}, "compute.num_processes", "does not apply"),
    ({"eval.mode": "choices"}, "eval.mode", "log-probabilities"),
])
def test_each_bedrock_rule_reports_at_its_key(repo, changes, key, words):
    found = errors(write(repo, changes))
    assert key in found, found
    assert words in found[key], found[key]


def test_claude_takes_a_multiplier_not_a_learning_rate(repo):
    claude = {"model.id": "anthropic.claude-3-haiku-20240307-v1:0:200k", "compute.bedrock.region": "us-west-2"}
    found = errors(write(repo, {**claude, "training.learning_rate": 1e-5}))
    assert "learning_rate_multiplier" in found["training.learning_rate"]
    found = errors(write(repo, {**claude, "training.learning_rate": _DROP, "training.warmup_steps": _DROP,
                                "training.learning_rate_multiplier": 3.0}))
    assert "from 0.1 to 2" in found["training.learning_rate_multiplier"]


def test_the_multiplier_is_refused_on_a_local_run(in_root, tmp_path):
    spec = (ROOT / "specs" / "quickstart.yaml").read_text(encoding="utf-8")
    path = ROOT / "specs" / ".tmp-multiplier.yaml"
    try:
        path.write_text(spec.replace("  learning_rate: 1.0e-3\n", "  learning_rate_multiplier: 1.0\n"),
                        encoding="utf-8")
        assert "training.learning_rate_multiplier" in errors(path)
    finally:
        path.unlink()


def test_continued_pre_training_for_titan_renders_its_input_lines(repo):
    plan, _ = compile_spec(write(repo, {"model.id": "amazon.titan-text-express-v1:0:8k", "training": {"epochs": 2},
                                        "compute.bedrock.customization": "continued_pre_training"}))
    assert plan.compute.bedrock.customization == "CONTINUED_PRE_TRAINING"
    assert plan.compute.bedrock.data_format == "input-text"


def test_row_limits_from_the_table_are_errors_at_data_train(repo, monkeypatch):
    family, model = families.find("amazon.nova-micro-v1:0:128k")
    index = family.models.index(model)
    tight = families.BaseModel(model.label, model.pattern, model.customizations, model.hyperparameters, model.teachers,
                               model.teachers_shown, families.Limits(train_rows_min=2000, validation_rows_max=100))
    models = family.models[:index] + (tight,) + family.models[index + 1:]
    monkeypatch.setitem(families.BY_NAME, "nova", families.Family(family.name, family.data_format, models))
    found = errors(write(repo))
    assert "1200 training rows" in found["data.train"] and "at least 2000" in found["data.train"]
    assert "150 validation rows" in found["data.split.validation"]


# --------------------------------------------------------------------------- hyperparameters


@pytest.mark.parametrize("model_id,expected", [
    ("amazon.nova-micro-v1:0:128k", {"epochCount": "2", "learningRate": "1e-05", "learningRateWarmupSteps": "10"}),
    ("amazon.titan-text-express-v1:0:8k", {"epochCount": "5", "batchSize": "1", "learningRate": "1e-05",
                                           "learningRateWarmupSteps": "5"}),
    ("amazon.titan-text-premier-v1:0:32k", {"epochCount": "2", "batchSize": "1", "learningRate": "1e-06",
                                            "learningRateWarmupSteps": "5"}),
    ("meta.llama3-1-8b-instruct-v1:0:128k", {"epochCount": "5", "batchSize": "1", "learningRate": "0.0001"}),
    ("anthropic.claude-3-haiku-20240307-v1:0:200k",
     {"epochCount": "2", "batchSize": "32", "learningRateMultiplier": "1.0",
                                                     "earlyStoppingThreshold": "0.001", "earlyStoppingPatience": "2"}),
])
def test_unset_hyperparameters_are_the_family_defaults(model_id, expected):
    values, problems = families.hyperparameters(S.Training(), families.find(model_id)[1])
    assert (values, problems) == (expected, [])


def test_ftspec_settings_map_onto_the_family_names():
    claude = families.find("anthropic.claude-3-haiku-20240307-v1:0")[1]
    t = S.Training(epochs=3, batch_size=64, learning_rate_multiplier=0.5,
                   early_stopping=S.EarlyStopping(patience=4, min_delta=0.01))
    values, problems = families.hyperparameters(t, claude)
    assert problems == []
    assert values == {"epochCount": "3", "batchSize": "64", "learningRateMultiplier": "0.5",
                      "earlyStoppingThreshold": "0.01", "earlyStoppingPatience": "4"}
    titan = families.find("amazon.titan-text-lite-v1")[1]
    values, problems = families.hyperparameters(S.Training(epochs=1, batch_size=16, learning_rate=3e-5,
                                                           warmup_steps=0), titan)
    assert problems == [] and values == {"epochCount": "1", "batchSize": "16", "learningRate": "3e-05",
                                         "learningRateWarmupSteps": "0"}


def test_plan_training_follows_the_job_hyperparameters(in_root):
    plan, _ = compile_spec("specs/bedrock-distill.yaml")
    assert plan.compute.bedrock.hyperparameters == {"epochCount": "2", "learningRate": "1e-05",
                                                    "learningRateWarmupSteps": "10"}
    assert (plan.training.epochs, plan.training.learning_rate, plan.training.warmup_steps) == (2.0, 1e-5, 10)
    assert plan.model.model_dump() == {"kind": "bedrock", "id": "amazon.nova-micro-v1:0:128k", "family": "nova"}
    assert plan.eval.mode == "generate"


# --------------------------------------------------------------------------- the request


@pytest.mark.parametrize("spec", ["bedrock-nova", "bedrock-distill"])
def test_the_request_is_the_golden_one(spec, in_root, update_golden):
    plan, _ = compile_spec(f"specs/{spec}.yaml")
    text = json.dumps(plan.to_dict()["compute"]["bedrock"]["request"], indent=2, sort_keys=True) + "\n"
    path = ROOT / "tests" / "golden" / f"{spec}.request.json"
    if update_golden:
        path.write_text(text, encoding="utf-8")
    assert path.read_text(encoding="utf-8") == text


def test_the_request_has_exactly_the_api_parameters(in_root):
    plan, _ = compile_spec("specs/bedrock-distill.yaml")
    r = plan.to_dict()["compute"]["bedrock"]["request"]
    members = {"jobName", "customModelName", "roleArn", "clientRequestToken", "baseModelIdentifier",
               "customizationType",
               "customModelKmsKeyId", "jobTags", "customModelTags", "trainingDataConfig", "validationDataConfig",
               "outputDataConfig", "hyperParameters", "vpcConfig", "customizationConfig"}  # botocore service-2.json
    assert set(r) <= members
    assert r["customizationConfig"] == {"distillationConfig": {"teacherModelConfig": {
        "teacherModelIdentifier": "amazon.nova-pro-v1:0", "maxResponseLengthForInference": 64}}}
    assert r["trainingDataConfig"]["s3Uri"] == "s3://my-ftspec-bucket/ftspec/distill/data/train-{train_sha256}.jsonl"
    assert r["clientRequestToken"] == "{train_key}"
    assert all(isinstance(v, str) for v in r["hyperParameters"].values())


def test_filled_request_respects_the_api_patterns(repo):
    import re

    plan, _ = compile_spec(write(repo, {"name": "a_very.long_name-" + "x" * 40, "compute.bedrock.kms_key_id": "alias/k",
                                        "compute.bedrock.vpc": {"subnets": ["subnet-0123abcd"],
                                                                "security_groups": ["sg-0123abcd"]}}))
    r = request.fill(plan.to_dict()["compute"]["bedrock"]["request"], "a" * 64, "b" * 64, "c" * 64)
    assert re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9\+\-\.])*", r["jobName"]) and len(r["jobName"]) <= 63
    assert re.fullmatch(r"([0-9a-zA-Z][_-]?){1,63}", r["customModelName"])
    assert r["jobName"].endswith("-" + "a" * 12) and r["clientRequestToken"] == "a" * 64
    assert r["trainingDataConfig"]["s3Uri"].endswith("/data/train-" + "b" * 64 + ".jsonl")
    assert r["validationDataConfig"]["validators"][0]["s3Uri"].endswith("/data/validation-" + "c" * 64 + ".jsonl")
    assert r["vpcConfig"] == {"subnetIds": ["subnet-0123abcd"], "securityGroupIds": ["sg-0123abcd"]}
    assert r["customModelKmsKeyId"] == "alias/k"
    s3uri = r"s3://[a-z0-9][-.a-z0-9]{1,61}[a-z0-9](?:/[-!_*'().a-z0-9A-Z]+(?:/[-!_*'().a-z0-9A-Z]+)*)?/?"
    assert all(re.fullmatch(s3uri, u) for u in (r["trainingDataConfig"]["s3Uri"], r["outputDataConfig"]["s3Uri"]))


def test_plan_text_has_one_line_for_the_backend(in_root):
    out = run_cli(["plan", "specs/bedrock-nova.yaml", "--profile", "evaluate"])
    assert out.returncode == 0, out.stderr
    line = [l for l in out.stdout.splitlines() if l.startswith("  compute")]
    assert len(line) == 1
    for words in ("bedrock us-east-1", "nova family", "fine_tuning", "serve on_demand", "billed"):
        assert words in line[0], line[0]


def test_diff_shows_the_request_change(repo):
    write(repo, name="a.yaml")
    write(repo, {"training.epochs": 3}, name="b.yaml")
    out = run_cli(["diff", "specs/a.yaml", "specs/b.yaml"], cwd=repo)
    assert "compute.bedrock.request.hyperParameters.epochCount" in out.stdout, out.stdout + out.stderr
    assert "train" in out.stdout


# --------------------------------------------------------------------------- light


@pytest.mark.parametrize("args", [["validate", "specs/bedrock-nova.yaml", "specs/bedrock-distill.yaml"],
                                  ["plan", "specs/bedrock-nova.yaml", "--json"],
                                  ["diff", "specs/bedrock-nova.yaml", "specs/bedrock-distill.yaml"]],
                         ids=lambda a: " ".join(a[:2]))
def test_validate_and_plan_import_neither_torch_nor_boto3(args):
    code = ("import sys\nfrom ftspec.cli import main\ntry:\n    main(%r, standalone_mode=False)\nexcept SystemExit:\n"
            "    pass\n"
            "print('HEAVY:' + ','.join(sorted(m for m in ('torch', 'boto3', 'botocore', "
            "'transformers') if m in sys.modules)))"
            % (args,))
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert [l for l in out.stdout.splitlines() if l.startswith("HEAVY:")][-1] == "HEAVY:"


def test_perplexity_on_bedrock_is_an_error_at_its_metric(tmp_path):
    import shutil

    from conftest import ROOT as _ROOT
    from conftest import run_cli as _run_cli

    shutil.copytree(_ROOT / "specs", tmp_path / "specs")
    spec = tmp_path / "specs/bedrock-nova.yaml"
    spec.write_text(spec.read_text().replace("metrics: [accuracy, f1_macro]", "metrics: [accuracy, perplexity]"))
    out = _run_cli(["validate", str(spec)], cwd=tmp_path)
    assert out.returncode == 2
    assert "eval.metrics.1: perplexity needs the model's token probabilities" in out.stderr + out.stdout


# --------------------------------------------------------------------------- AWS's patterns, whole values

NOVA_TEXT = (ROOT / "specs" / "bedrock-nova.yaml").read_text(encoding="utf-8")
# Keys the shipped spec leaves out, put after its last bedrock key (serve) to be given a bad value.
EXTRA = ('    serve: none\n    kms_key_id: alias/ftspec\n'
         '    vpc: {subnets: [subnet-0123abcd], security_groups: [sg-0123abcd]}\n')
TEACHER = "    serve: none\n    teacher_model: amazon.nova-pro-v1:0\n"


def _validate(repo, text: str):
    from click.testing import CliRunner

    from ftspec.cli import main

    path = repo / "specs" / "spec.yaml"
    path.write_text(text, encoding="utf-8")
    return path, CliRunner().invoke(main, ["validate", str(path)])


@pytest.mark.parametrize("old,new,key", [
    ("region: us-east-1", 'region: "us-east-1\\n"', "compute.bedrock.region"),
    ("role_arn: arn:aws:iam::123456789012:role/ftspec-bedrock",
     'role_arn: "arn:aws:iam::123456789012:role/ftspec-bedrock\\n"', "compute.bedrock.role_arn"),
    ("prefix: ftspec/}", 'prefix: "ftspec\\n"}', "compute.bedrock.s3.prefix"),
    ("bucket: my-ftspec-bucket", 'bucket: "my-ftspec-bucket\\n"', "compute.bedrock.s3.bucket"),
    ("tags: {project: ftspec,", 'tags: {"project\\n": ftspec,', "compute.bedrock.tags"),
    ("task: support-routing}", 'task: "support-routing\\n"}', "compute.bedrock.tags.task"),
    ("task: support-routing}", 'task: "support\\trouting"}', "compute.bedrock.tags.task"),
    ("kms_key_id: alias/ftspec", 'kms_key_id: "alias/ftspec\\n"', "compute.bedrock.kms_key_id"),
    ("teacher_model: amazon.nova-pro-v1:0", 'teacher_model: "amazon.nova-pro-v1:0\\n"',
     "compute.bedrock.teacher_model"),
    ("subnets: [subnet-0123abcd]", 'subnets: ["subnet-0123abcd\\n"]', "compute.bedrock.vpc.subnets.0"),
    ("security_groups: [sg-0123abcd]", 'security_groups: ["sg-0123abcd\\n"]',
     "compute.bedrock.vpc.security_groups.0"),
    ("id: amazon.nova-micro-v1:0:128k", 'id: "amazon.nova-micro-v1:0:128k\\n"', "model.id"),
    # The spec's name is where the job's and the custom model's names come from.
    ("name: bedrock-nova", 'name: "bedrock-nova\\n"', "name"),
], ids=lambda v: v if isinstance(v, str) and v.count(".") and " " not in v else None)
def test_a_value_with_a_trailing_newline_is_refused_at_its_line(repo, old, new, key):
    """AWS's patterns hold over the whole value: `$` in re.match took 'x\\n' for 'x'."""
    text = NOVA_TEXT
    if key.startswith(("compute.bedrock.kms", "compute.bedrock.vpc")):
        text = text.replace("    serve: none\n", EXTRA)
    if "teacher_model" in key:  # a teacher is for distillation
        text = text.replace("    serve: none\n", TEACHER).replace("fine_tuning", "distillation")
    assert text.count(old) == 1
    path, result = _validate(repo, text)
    assert result.exit_code == 0, result.output  # the valid value passes
    path, result = _validate(repo, text.replace(old, new))
    line = text.splitlines().index(next(l for l in text.splitlines() if old in l)) + 1
    assert result.exit_code == 2, result.output
    assert any(l.startswith(f"{path}:{line}:") and f" {key}" in l for l in result.output.splitlines()), result.output


@pytest.mark.parametrize("pattern,good,bad", [
    (aws.REGION, ["us-east-1", "us-gov-west-1", "eu-central-1", "cn-north-1", "us-isob-east-1"],
     ["us-east-1\n", "US-EAST-1", "us-east-1 ", "us-east-١", "xx-east-1"]),
    (aws.TAG_VALUE, ["", "a b", "team/ml=1@x+y:z_-."], ["a\n", "a\tb", "é"]),
    (aws.JOB_NAME, ["a", "bedrock-nova-0123abcdef12-a2"], ["-a", "a\n", "a_b"]),
    (aws.CUSTOM_MODEL_NAME, ["a", "bedrock-nova-0123abcdef12"], ["a--b", "a\n", "a.b"]),
    (aws.S3_URI, ["s3://my-bucket/ftspec/data/train-x.jsonl", "s3://my-bucket/"], ["s3://my-bucket/a b",
                                                                                   "s3://my-bucket/x\n"]),
])
def test_aws_patterns_hold_over_the_whole_value(pattern, good, bad):
    assert [v for v in good if pattern.problem(v)] == []
    assert [v for v in bad if not pattern.problem(v)] == []


def test_filled_names_and_uris_fit_the_aws_patterns(repo):
    """The names and URIs the run makes from the spec (its name, the bucket, the prefix) are ones AWS takes."""
    for name in ("a", "a.b_c-d", "x" * 64, "a..__--b", "9-_.z"):
        plan, _ = compile_spec(write(repo, {"name": name, "compute.bedrock.s3.prefix": "p/q_r!(1)"}))
        from ftspec.backends.bedrock.steps import filled_request

        data = {"train": {"sha256": "b" * 64}, "validation": {"sha256": "c" * 64}}
        for attempt in (1, 2, 12):
            r = filled_request(plan.compute.bedrock, "a" * 64, data, attempt)
            assert not aws.JOB_NAME.problem(r["jobName"]) and not aws.CUSTOM_MODEL_NAME.problem(r["customModelName"])
            for uri in (r["trainingDataConfig"]["s3Uri"], r["outputDataConfig"]["s3Uri"],
                        r["validationDataConfig"]["validators"][0]["s3Uri"]):
                assert not aws.S3_URI.problem(uri), uri


# --------------------------------------------------------------------------- data limits at validate


def _tickets_with(repo, line: int, change) -> None:
    """The shipped tickets with row ``line`` (1-based) changed."""
    path = repo / "specs" / "data" / "support-tickets.jsonl"
    rows = [json.loads(l) for l in path.read_text(encoding="utf-8").splitlines() if l.strip()]
    change(rows[line - 1])
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_a_nova_prompt_with_a_reserved_keyword_fails_validate_at_its_row(repo):
    _, result = _validate(repo, NOVA_TEXT)
    assert result.exit_code == 0, result.output
    _tickets_with(repo, 7, lambda r: r.update(text="User: " + r["text"]))
    _, result = _validate(repo, NOVA_TEXT)
    assert result.exit_code == 2
    assert "specs/data/support-tickets.jsonl:7: data.train: row 7: its user prompt starts with 'User:'" in \
        result.output, result.output


def _titan(text: str) -> str:
    """The shipped spec on Titan Text Express, whose records take prompt and completion."""
    head, rest = text.split("format:\n", 1)
    rest = rest.split("\ntraining:", 1)[1]
    return (head.replace("id: amazon.nova-micro-v1:0:128k", "id: amazon.titan-text-express-v1")
            + 'format:\n  kind: prompt_completion\n  prompt: "{{ text }}"\n  completion: " {{ queue }}"\n\ntraining:'
            + rest)


def test_a_titan_record_over_its_characters_fails_validate_at_its_row(repo):
    _tickets_with(repo, 12, lambda r: r.update(text="x" * (24_576 - len(" " + r["queue"]))))
    _, result = _validate(repo, _titan(NOVA_TEXT))
    assert result.exit_code == 0, result.output  # at the documented limit: taken
    _tickets_with(repo, 12, lambda r: r.update(text=r["text"] + "x"))
    _, result = _validate(repo, _titan(NOVA_TEXT))
    assert result.exit_code == 2
    assert ("specs/data/support-tickets.jsonl:12: data.train: row 12: has 24,577 characters of text; "
            "a Amazon Titan Text Express job takes at most 24,576 per record") in result.output, result.output
