"""GGUF models: the pure-Python header reader (ftspec/data/gguf.py), what `validate`
reads from a GGUF file offline, the plan's fingerprint of it, and the prepare step's
one-time conversion to safetensors. The GGUF files here are tiny llama models written
on the spot with the `gguf` package (nothing is downloaded)."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys

import pytest
from conftest import ROOT

from ftspec.catalog.architectures import GGUF_LOADABLE
from ftspec.core.errors import SpecError
from ftspec.data import gguf as G
from ftspec.plan.compile import check_spec, compile_spec

gguf = pytest.importorskip("gguf")
np = pytest.importorskip("numpy")

# ChatML, with the {% generation %} markers that assistant-only loss (format.loss's default) needs.
TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['role'] == 'assistant' %}{% generation %}"
            "{{ m['content'] }}<|im_end|>{% endgeneration %}{% else %}{{ m['content'] }}<|im_end|>{% endif %}\n"
            "{% endfor %}")
# The same without the markers: trl cannot add them to it, so assistant-only loss cannot use it.
UNMARKED = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"


def write_tiny_gguf(path, arch="llama", context=256, chat_template=TEMPLATE, tokens=True, seed=0, hidden=32, layers=2):
    """A tiny llama-layout model in GGUF (float32 tensors), with a byte-level BPE vocabulary."""
    from tokenizers import pre_tokenizers

    rng = np.random.default_rng(seed)
    vocab = ["<|im_start|>", "<|im_end|>"] + sorted(pre_tokenizers.ByteLevel.alphabet()) + ["Ġt"]
    heads, ffn = 4, 64
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name("tiny test model")
    w.add_context_length(context)
    w.add_block_count(layers)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(hidden // heads)
    if tokens:
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("default")
        w.add_token_list(vocab)
        w.add_token_types([3, 3] + [1] * (len(vocab) - 2))
        w.add_token_merges(["Ġ t"])
        w.add_bos_token_id(0)
        w.add_eos_token_id(1)
    if chat_template:
        w.add_chat_template(chat_template)

    def t(*shape):
        return (rng.standard_normal(shape) * 0.05).astype(np.float32)

    w.add_tensor("token_embd.weight", t(len(vocab), hidden))
    w.add_tensor("output_norm.weight", np.ones(hidden, np.float32))
    for i in range(layers):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(hidden, np.float32))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(hidden, np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            w.add_tensor(f"blk.{i}.{name}.weight", t(hidden, hidden))
        w.add_tensor(f"blk.{i}.ffn_gate.weight", t(ffn, hidden))
        w.add_tensor(f"blk.{i}.ffn_up.weight", t(ffn, hidden))
        w.add_tensor(f"blk.{i}.ffn_down.weight", t(hidden, ffn))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


# --------------------------------------------------------------------------- the header reader


def test_header_reader_reads_what_the_gguf_package_wrote(tmp_path):
    h = G.read_header(write_tiny_gguf(tmp_path / "m.gguf", context=384))
    assert (h.version, h.architecture, h.name) == (3, "llama", "tiny test model")
    assert (h.context_length, h.block_count, h.vocab_size, h.tensor_count) == (384, 2, 259, 20)
    assert h.chat_template == TEMPLATE and h.loadable and h.model_type == "llama"


def test_header_reader_without_chat_template_or_tokens(tmp_path):
    h = G.read_header(write_tiny_gguf(tmp_path / "m.gguf", chat_template=None, tokens=False))
    assert h.chat_template is None and h.vocab_size is None


def test_header_reader_agrees_with_the_real_model_when_present():
    path = ROOT.parent / "shared" / "models" / "smollm2-135m-instruct" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        pytest.skip(f"the real model is not here ({path})")
    h = G.read_header(path)
    assert (h.architecture, h.context_length, h.block_count, h.vocab_size) == ("llama", 8192, 30, 49152)
    assert "<|im_start|>" in h.chat_template


@pytest.mark.parametrize("data,message", [
    (b"GGML" + b"\0" * 32, "not a GGUF file"),
    (b"GGUF" + struct.pack("<I", 7) + b"\0" * 16, "GGUF version 7"),
    (b"GGUF" + struct.pack(">I", 3) + b"\0" * 16, "big-endian"),
    (b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 1 << 40), "bytes long"),
    (b"GGUF" + struct.pack("<IQQ", 3, 0, 1 << 40), "metadata keys"),
    (b"GGUF" + struct.pack("<IQQ", 3, 0, 2) + struct.pack("<Q", 3) + b"abc" + struct.pack("<I", 4), "ends inside"),
    (b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 1) + b"a" + struct.pack("<I", 99), "unknown type 99"),
])
def test_header_reader_refuses_a_bad_file_in_words(tmp_path, data, message):
    path = tmp_path / "bad.gguf"
    path.write_bytes(data)
    with pytest.raises(G.GGUFError, match=message):
        G.read_header(path)


def _kv(key: bytes, value: bytes) -> bytes:
    return struct.pack("<Q", len(key)) + key + struct.pack("<IQ", G.STRING, len(value)) + value


def _header(*pairs: bytes) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, 0, len(pairs)) + b"".join(pairs)


def test_header_reader_refuses_what_the_loader_refuses(tmp_path):
    """A chat template that is not UTF-8, or a key twice, fails transformers' GGUF loader at run
    time: validate refuses it too (it used to read the first as U+FFFD and keep the last)."""
    path = tmp_path / "bad.gguf"
    path.write_bytes(_header(_kv(b"general.architecture", b"llama"), _kv(b"tokenizer.chat_template", b"\xff{{ x }}")))
    with pytest.raises(G.GGUFError, match="not UTF-8 text .*'tokenizer.chat_template'"):
        G.read_header(path)
    path.write_bytes(_header(_kv(b"general.architecture", b"llama"), _kv(b"general.architecture", b"gpt2")))
    with pytest.raises(G.GGUFError, match="key 'general.architecture' twice"):
        G.read_header(path)


def test_header_reader_holds_only_the_values_it_uses_within_the_header_limit(tmp_path, monkeypatch):
    """Strings read count against MAX_HEADER as skipped ones do, and a value validate does not use
    is skipped: a header of many long strings costs neither memory nor an unbounded read."""
    big = b"x" * 4000
    path = tmp_path / "big.gguf"
    path.write_bytes(_header(_kv(b"general.architecture", b"llama"), *(_kv(b"junk.%d" % i, big) for i in range(8))))
    assert G.read_header(path).architecture == "llama"
    monkeypatch.setattr(G, "MAX_HEADER", 10_000)
    with pytest.raises(G.GGUFError, match="header is over"):
        G.read_header(path)
    path.write_bytes(_header(_kv(b"tokenizer.chat_template", b"y" * 12_000)))
    with pytest.raises(G.GGUFError, match="header is over"):
        G.read_header(path)


def test_header_reader_is_light():
    """validate reads GGUF headers without torch, numpy or the gguf package."""
    code = ("import sys, ftspec.data.gguf, ftspec.checks, ftspec.plan.build; "
            "print(sorted(m for m in ('torch', 'numpy', 'gguf', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_gguf_architectures_match_transformers():
    """ftspec's copy of the architectures transformers de-quantises from GGUF is transformers' list."""
    pytest.importorskip("torch")
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    theirs = set(GGUF_SUPPORTED_ARCHITECTURES) - {"general", "tokenizer"}  # metadata prefixes, not architectures
    assert sorted(GGUF_LOADABLE) == sorted(theirs)


@pytest.mark.parametrize("arch,name,expected", [
    ("qwen2moe", None, "qwen2_moe"), ("gpt-oss", None, "gpt_oss"), ("llama", "mistral 7b", "mistral"),
    ("llama", None, "llama"),
])
def test_gguf_names_are_put_as_transformers_does(arch, name, expected):
    assert G.transformers_architecture(arch, name) == expected


@pytest.mark.parametrize("base,gguf_file,expected", [
    ("./m", "x.gguf", ("./m", "x.gguf")),
    ("./m/x.gguf", None, ("./m", "x.gguf")),
    ("x.gguf", None, (".", "x.gguf")),
    ("org/model", None, ("org/model", None)),
])
def test_gguf_location(base, gguf_file, expected):
    assert G.gguf_location(base, gguf_file) == expected


# --------------------------------------------------------------------------- validate and plan

SPEC = """\
ftspec: 1
name: gguf-demo
model:
  base: {base}
{extra}data:
  train: train.jsonl
  split: {{validation: 0.2}}
format:
  kind: chat
  messages:
    - {{role: user, content: "{{{{ text }}}}"}}
    - {{role: assistant, content: "{{{{ queue }}}}"}}
method:
  kind: sft
  adapter: {{kind: lora, r: 4, target_modules: {targets}}}
training: {{max_length: {max_length}, max_steps: 2, batch_size: 4}}
"""


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A spec folder with training rows and a model folder holding a tiny GGUF file."""
    monkeypatch.chdir(tmp_path)
    rows = [{"text": f"request {i} about my {q}", "queue": q} for i in range(12) for q in ("billing", "shipping")]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "model").mkdir()
    write_tiny_gguf(tmp_path / "model" / "tiny.gguf")
    return tmp_path


def write_spec(project, base="./model", gguf_file="tiny.gguf", targets="[q_proj, v_proj]", max_length=128):
    extra = f"  gguf_file: {gguf_file}\n" if gguf_file else ""
    (project / "spec.yaml").write_text(SPEC.format(base=base, extra=extra, targets=targets, max_length=max_length))
    return project / "spec.yaml"


def errors(spec):
    with pytest.raises(SpecError) as info:
        check_spec(spec)
    return [(i.key, i.message, i.hint) for i in info.value.issues if i.is_error]


def test_a_gguf_model_validates_and_its_plan_fingerprints_the_file(project):
    plan, _ = compile_spec(write_spec(project))
    m = plan.model
    assert (m.source, m.name_or_path, m.gguf_file) == ("local", "model", "tiny.gguf")
    assert m.gguf_sha256 == hashlib.sha256((project / "model" / "tiny.gguf").read_bytes()).hexdigest()


def test_base_may_name_the_gguf_file_itself(project):
    plan, _ = compile_spec(write_spec(project, base="./model/tiny.gguf", gguf_file=None))
    assert (plan.model.name_or_path, plan.model.gguf_file) == ("model", "tiny.gguf")


def test_another_gguf_file_re_keys_every_step_that_reads_the_model(project):
    spec = write_spec(project)
    before, _ = compile_spec(spec)
    write_tiny_gguf(project / "model" / "tiny.gguf", seed=1)  # same name, other weights
    after, _ = compile_spec(spec)
    assert before.model.gguf_sha256 != after.model.gguf_sha256 and before.id != after.id
    assert before.steps[0].name == "prepare_data" and before.steps[0].key != after.steps[0].key


def test_context_length_from_the_header_bounds_max_length(project):
    found = errors(write_spec(project, max_length=512))
    assert ("training.max_length", "longer than the model's 256 positions (got 512)", None) in found


def test_lora_targets_are_checked_against_the_gguf_architecture(project):
    found = errors(write_spec(project, targets="[q_prj]"))
    assert [(k, h) for k, m, h in found] == [("method.adapter.target_modules.0", "did you mean 'q_proj'?")]


def test_an_architecture_transformers_cannot_load_is_an_error_at_the_key(project):
    write_tiny_gguf(project / "model" / "tiny.gguf", arch="bert")
    [(key, message, hint)] = errors(write_spec(project))
    assert key == "model.gguf_file"
    assert message == "'tiny.gguf' holds a model of architecture 'bert', which transformers cannot load from GGUF"
    assert "llama" in hint


def test_a_chat_spec_needs_a_chat_template_in_the_gguf(project):
    write_tiny_gguf(project / "model" / "tiny.gguf", chat_template=None)
    assert [k for k, _, _ in errors(write_spec(project))] == ["format.kind"]


def test_a_gguf_without_a_vocabulary_is_an_error(project):
    write_tiny_gguf(project / "model" / "tiny.gguf", tokens=False)
    assert ("model.gguf_file", "'tiny.gguf' holds no tokenizer (no tokenizer.ggml.tokens in its header)",
            "name one in model.tokenizer") in errors(write_spec(project))


def test_a_missing_gguf_file_is_named_with_a_suggestion(project):
    assert errors(write_spec(project, gguf_file="tiny.ggfu.gguf")) == [
        ("model.gguf_file", "no GGUF file 'tiny.ggfu.gguf' in './model'", "did you mean 'tiny.gguf'?")]


def test_a_gguf_file_that_is_a_folder_or_a_fifo_is_said_as_what_it_is(project):
    (project / "model" / "dir.gguf").mkdir()
    assert errors(write_spec(project, gguf_file="dir.gguf")) == [
        ("model.gguf_file", "the GGUF file 'dir.gguf' in './model' is a directory", None)]
    if hasattr(os, "mkfifo"):
        os.mkfifo(project / "model" / "pipe.gguf")
        assert errors(write_spec(project, base="./model/pipe.gguf", gguf_file=None)) == [
            ("model.base", "the GGUF file 'pipe.gguf' in './model' is a FIFO (named pipe), not a regular file", None)]


def test_the_header_reader_refuses_a_fifo_without_blocking(tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    os.mkfifo(tmp_path / "pipe.gguf")
    with pytest.raises(OSError, match="FIFO"):
        G.read_header(tmp_path / "pipe.gguf")


def test_assistant_only_loss_on_a_gguf_template_without_markers_is_refused_at_validate(project):
    """What the run refuses after converting the model (ftspec.runtime.training.data), validate refuses."""
    write_tiny_gguf(project / "model" / "tiny.gguf", chat_template=UNMARKED)
    spec = write_spec(project)
    [(key, message, hint)] = errors(spec)
    assert key == "format.chat_template"
    assert message == ("the chat template in the model's GGUF file has no {% generation %} markers, which "
                       "assistant-only loss needs to find the assistant's tokens, and trl cannot add them to it")
    assert "format.loss: all" in hint and "{builtin: chatml}" in hint
    # Loss on the whole conversation, or a template of the spec's own with the markers, is fine.
    text = spec.read_text()
    spec.write_text(text.replace("format:\n  kind: chat\n", "format:\n  kind: chat\n  loss: all\n"))
    check_spec(spec)
    spec.write_text(text.replace("format:\n  kind: chat\n",
                                 "format:\n  kind: chat\n  chat_template: {builtin: chatml}\n"))
    check_spec(spec)
    # The spec's own template without the markers is refused the same way, at its line.
    spec.write_text(text.replace("format:\n  kind: chat\n", "format:\n  kind: chat\n  chat_template: "
                                 + json.dumps(UNMARKED) + "\n"))
    [(key, message, _)] = errors(spec)
    assert key == "format.chat_template" and message.startswith("this chat template has no {% generation %} markers")


def test_assistant_only_loss_on_a_model_folders_template_without_markers_is_refused(project):
    folder = project / "hf-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "max_position_embeddings": 256}))
    (folder / "model.safetensors").write_bytes(b"")
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": UNMARKED}))
    spec = write_spec(project, base="./hf-model", gguf_file=None)
    assert [(k, m.split(" has no")[0]) for k, m, _ in errors(spec)] == [
        ("format.chat_template", "the model's own chat template")]
    (folder / "tokenizer_config.json").write_text(json.dumps({"chat_template": TEMPLATE}))
    check_spec(spec)


@pytest.mark.parametrize("name, content", [
    ("chat_template.jinja", UNMARKED.encode() + b"\xff"),
    ("tokenizer_config.json", b'{"chat_template": '),
])
def test_a_model_folders_template_that_cannot_be_read_is_not_passed_in_silence(project, name, content):
    # Unreadable, the template's markers cannot be checked, and the run would fail to load it:
    # validate says so at model.base instead of skipping the check without a word.
    folder = project / "hf-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "max_position_embeddings": 256}))
    (folder / "model.safetensors").write_bytes(b"")
    (folder / name).write_bytes(content)
    spec = write_spec(project, base="./hf-model", gguf_file=None)
    assert [(k, m.split(" cannot be read")[0]) for k, m, _ in errors(spec)] == [("model.base", f"its {name}")]


def test_gguf_file_is_a_name_in_the_folder(project):
    assert [k for k, _, _ in errors(write_spec(project, gguf_file="../model/tiny.gguf"))] == ["model.gguf_file"]
    assert [k for k, _, _ in errors(write_spec(project, base="./model/tiny.gguf"))] == ["model.base"]


def test_a_file_that_is_not_gguf_is_an_error(project):
    (project / "model" / "tiny.gguf").write_bytes(b"not a model")
    assert errors(write_spec(project)) == [
        ("model.gguf_file", "cannot read the GGUF file 'tiny.gguf': not a GGUF file (it does not start with 'GGUF')",
         None)]


def test_a_hub_gguf_that_is_not_cached_is_listed_as_not_checked(project, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(project / "empty-cache"))
    spec = write_spec(project, base="someone/tiny-GGUF", gguf_file="tiny.Q4_0.gguf")
    plan, _ = compile_spec(spec)
    assert (plan.model.source, plan.model.gguf_file, plan.model.gguf_sha256) == ("hub", "tiny.Q4_0.gguf", None)
    assert any(n.startswith("model.gguf_file: 'tiny.Q4_0.gguf' of hub repository 'someone/tiny-GGUF'")
               for n in plan.checks.not_checked)


# --------------------------------------------------------------------------- the conversion


def test_prepare_converts_the_gguf_once_to_an_ordinary_model(project):
    """prepare_data writes a safetensors folder with the tokenizer and chat template; it
    loads without the GGUF file and gives the logits transformers' own GGUF loader gives."""
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    from ftspec.runtime.models import base_model_path, convert_gguf

    plan, _ = compile_spec(write_spec(project))
    out = project / "prepared" / "base-model"
    done = convert_gguf(plan.model, project, out)
    assert done["architecture"] == "llama" and (out / "model.safetensors").is_file()
    assert base_model_path(plan.model, project, out.parent) == str(out)
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    converted = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.chat_template == TEMPLATE
    direct = AutoModelForCausalLM.from_pretrained(project / "model", gguf_file="tiny.gguf",
                                                  quantization_config=GgufConfig(dequantize=True))
    ids = torch.tensor([tokenizer("request 3 about my billing").input_ids])
    with torch.no_grad():
        assert torch.equal(converted(ids).logits, direct(ids).logits)


def test_prepare_refuses_a_gguf_that_changed_since_the_plan(project):
    pytest.importorskip("torch")
    from ftspec.runtime.models import convert_gguf

    plan, _ = compile_spec(write_spec(project))
    write_tiny_gguf(project / "model" / "tiny.gguf", seed=3)
    with pytest.raises(SpecError, match="changed since the plan was made"):
        convert_gguf(plan.model, project, project / "out")


def test_header_reader_refuses_a_file_cut_inside_its_vocabulary(tmp_path):
    whole = write_tiny_gguf(tmp_path / "m.gguf").read_bytes()
    cut = whole.index("Ġt".encode()) - 40  # inside tokenizer.ggml.tokens
    (tmp_path / "cut.gguf").write_bytes(whole[:cut])
    with pytest.raises(G.GGUFError, match="ends inside its header"):
        G.read_header(tmp_path / "cut.gguf")


def test_a_run_converts_the_gguf_in_prepare_data_and_reuses_it(project):
    """End to end on the tiny GGUF: prepare_data writes data/base-model, training and
    evaluation load it, and a second run converts nothing."""
    pytest.importorskip("torch")
    from ftspec.backends.executor import execute
    from ftspec.plan.compile import find_root

    spec = write_spec(project)
    text = spec.read_text().replace("  loss: assistant\n", "")
    text = text.replace("format:\n  kind: chat\n", "format:\n  kind: chat\n  chat_template: {builtin: chatml}\n")
    text += "eval: {mode: choices, limit: 4, metrics: [accuracy]}\ncompute: {device: cpu}\n"
    spec.write_text(text)
    plan, _ = compile_spec(spec)
    echoed: list[str] = []
    ctx = execute(plan, find_root(spec), echo=echoed.append)
    assert (ctx.run_dir / "data" / "base-model" / "model.safetensors").is_file()
    assert any(line.startswith("  converted tiny.gguf (llama") for line in echoed)
    stats = json.loads((ctx.run_dir / "data" / "stats.json").read_text())
    assert stats["gguf_conversion"]["gguf_file"] == "tiny.gguf"
    assert (ctx.run_dir / "model" / "adapter_model.safetensors").is_file()
    again: list[str] = []
    execute(plan, find_root(spec), echo=again.append)
    assert not any("converted" in line for line in again)


def test_a_local_gguf_file_can_be_the_judge(tmp_path, monkeypatch):
    """`{name: judge, model: path/to/model.gguf}`: the judge loads through transformers'
    GGUF support, so a real model shipped as GGUF judges offline."""
    pytest.importorskip("torch")
    from types import SimpleNamespace

    import ftspec.runtime.evaluation.evaluate as E
    from ftspec.backends.local.steps import judge as _judge
    from ftspec.runtime.context import StepContext

    (tmp_path / "judges").mkdir()
    write_tiny_gguf(tmp_path / "judges" / "tiny.gguf")
    seen = {}

    def fake_rows(definition, rows, predictions, model, tokenizer, batch_size):
        seen.update(model=model, tokenizer=tokenizer)
        return [0.5] * len(rows)

    monkeypatch.setattr(E, "judge_rows", fake_rows)
    plan = SimpleNamespace(compute=SimpleNamespace(device="cpu", precision="fp32"), eval=SimpleNamespace(batch_size=2))
    judge = _judge(plan, StepContext(tmp_path, tmp_path / "runs" / "x", "k"))
    definition = {"model": {"source": "local", "name_or_path": "judges/tiny.gguf"}}
    assert judge(definition, [{}], ["a"]) == [0.5]
    assert seen["model"].config.model_type == "llama" and seen["model"].config.num_hidden_layers == 2
    assert "<|im_end|>" in seen["tokenizer"].get_vocab()


def test_the_plan_names_the_gguf_file_and_does_not_call_it_unpinned(project):
    """A local GGUF file is pinned by its sha256; only a hub id's revision floats."""
    from ftspec.plan.describe import describe_model

    plan, _ = compile_spec(write_spec(project))
    sha = hashlib.sha256((project / "model" / "tiny.gguf").read_bytes()).hexdigest()
    assert describe_model(plan.model) == f"local model/tiny.gguf (GGUF, sha256 {sha[:12]}), dtype auto"
