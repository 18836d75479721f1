"""A corpus of invalid specs, each with the exact lines a user should see.

Every case writes a spec (text or raw bytes) and the small files it needs into
pytest's ``tmp_path``, runs ``ftspec validate`` on it (in-process, through click's
CliRunner, from inside ``tmp_path`` so that files are named relative to it), and
compares stderr line by line: exact ``LINE:COL``, key path, message and hint, then
the ``ftspec: N errors`` summary and exit status 2. Cases that ``check_spec`` can
express are run through the API as well and must give the same issues.

Lines about the spec itself are written without its file name (``spec.yaml:`` is
stripped); lines about another file (a base spec, a data file, a template file,
``--set``/``--profile`` pseudo-files) keep the name, so the file is asserted too.

A case with ``bug=...`` asserts what a user *should* see and is marked
``xfail(strict=True)``: ftspec currently gets it wrong (see the reason).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest
import yaml
from click.testing import CliRunner
from conftest import ROOT

from ftspec.cli import main
from ftspec.core.errors import SpecError
from ftspec.plan.compile import check_spec

SPEC = "spec.yaml"
TMP = "@TMP@"  # replaced by the test's tmp_path in spec text

# A valid spec (it validates with one warning: only 8 training rows). Line numbers:
#  1 ftspec / 2 name / 3 model / 4 kind / 5 hidden_size / 6 num_heads / 7 data /
#  8 train / 9 split / 10 format / 11 kind / 12 prompt / 13 completion /
# 14 training / 15 max_length / 16 compute / 17 device
BASE = """\
ftspec: 1
name: demo
model:
  kind: tiny
  hidden_size: 64
  num_heads: 4
data:
  train: train.jsonl
  split: {validation: 0.2}
format:
  kind: prompt_completion
  prompt: "Request: {{ text }}"
  completion: " {{ queue }}"
training:
  max_length: 256
compute:
  device: cpu
"""


def edit(old: str, new: str, text: str = BASE) -> str:
    assert old in text, f"{old!r} is not in the spec"
    return text.replace(old, new, 1)


def jsonl(n: int = 10) -> str:
    queues = ["billing", "account"]
    return "".join(json.dumps({"id": f"T{i}", "text": f"ticket {i}", "queue": queues[i % 2]}) + "\n" for i in range(n))


ROWS = jsonl()

# The same job in chat format (messages at lines 12-15).
CHAT = edit(
    '  kind: prompt_completion\n  prompt: "Request: {{ text }}"\n  completion: " {{ queue }}"\n',
    '  kind: chat\n  messages:\n    - role: user\n      content: "{{ text }}"\n'
    '    - role: assistant\n      content: "{{ queue }}"\n',
)
# A hub model (never downloaded: validation only looks in the local cache).
HUB = edit("model:\n  kind: tiny\n  hidden_size: 64\n  num_heads: 4\n",
           "model:\n  base: org/model\n  revision: abc123\n")
ONLY_TRAIN = edit("  split: {validation: 0.2}\n", "")

# Nine levels of nine: a billion laughs if expanded.
BOMB = 'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n' + "".join(
    f"{cur}: &{cur} [{', '.join(['*' + prev] * 9)}]\n" for prev, cur in zip("abcdefgh", "bcdefghi")
) + BASE

# Merges of empty mappings, nine to a level: nothing to build, but each merge counts.
MERGE_BOMB = "m0: &m0 {}\n" + "".join(
    f"m{i}: &m{i} {{<<: [{', '.join([f'*m{i - 1}'] * 9)}]}}\n" for i in range(1, 10)
) + BASE


@dataclass(frozen=True)
class Case:
    id: str
    spec: str | bytes
    expected: tuple[str, ...]
    files: dict = field(default_factory=dict)
    args: tuple[str, ...] = ()  # options before the spec path: --profile, --set, --strict
    target: str = SPEC
    bug: str | None = None  # what is wrong today: the case is xfail(strict=True)
    bug_if: bool = True
    check: Callable[[Path], None] | None = None  # more assertions after the run


def _no_marker(tmp_path: Path) -> None:
    assert not (tmp_path / "pwned").exists(), "a YAML tag was constructed"


CASES = [
    # ------------------------------------------------------------------ YAML itself
    Case("yaml-unclosed-flow-mapping", edit("split: {validation: 0.2}", "split: {validation: 0.2"),
         ("9:10: this '{' is never closed: end the mapping with '}'",)),
    Case("yaml-unclosed-flow-sequence", BASE + "eval:\n  metrics: [accuracy, f1\n  max_new_tokens: 4\n",
         ("19:12: this '[' is never closed: end the list with ']'",)),
    Case("yaml-unclosed-at-end-of-file", BASE + "eval: {metrics: [accuracy]\n",
         ("18:7: this '{' is never closed: end the mapping with '}'",)),
    Case("yaml-over-indented", "ftspec: 1\nname: demo\nmodel:\n  kind: tiny\n    hidden_size: 64\n",
         ("5:5: this key is indented more than the key above it (line 4), which already has a value; "
          "indent it by 2 spaces, like the key above",)),
    Case("yaml-under-indented", "ftspec: 1\nname: demo\nmodel:\n    kind: tiny\n  hidden_size: 64\n",
         ("5:3: this key is indented less than line 4 above it (2 spaces, not 4): indent it by 4 spaces to stay "
          "in that block, or by 0 to end that block",)),
    Case("yaml-tab-indentation", edit("  hidden_size: 64", "\thidden_size: 64"),
         ("5:1: tab character in indentation; YAML indents with spaces only",)),
    Case("yaml-two-documents", BASE + "---\nname: other\n",
         ("18:1: more than one YAML document; a spec is a single document (remove '---')",)),
    Case("yaml-duplicate-top-level-key", BASE + "name: other\n",
         ("18:1: name: duplicate key 'name' (first at line 2); YAML would silently keep only the last one",)),
    Case("yaml-duplicate-nested-key", edit("  hidden_size: 64\n", "  hidden_size: 64\n  hidden_size: 128\n"),
         ("6:3: model.hidden_size: duplicate key 'hidden_size' (first at line 5); "
          "YAML would silently keep only the last one",)),
    Case("yaml-complex-key", BASE + "? [a]\n: 1\n",
         ("18:3: a key must be a plain string, not a list or mapping",)),
    Case("yaml-merge-of-a-scalar", edit("  max_length: 256", "  <<: [1]\n  max_length: 256"),
         ("15:8: training: '<<' merges mappings only",)),
    # ------------------------------------------------------------------ tags: refused, never constructed
    Case("tag-python-object-apply", edit("name: demo", f"name: !!python/object/apply:os.mkdir ['{TMP}/pwned']"),
         ("2:7: name: YAML tag '!!python/object/apply:os.mkdir' is not allowed; a spec holds plain YAML values only",),
         check=_no_marker),
    Case("tag-python-name", edit("  device: cpu", "  device: !!python/name:os.system"),
         ("17:11: compute.device: YAML tag '!!python/name:os.system' is not allowed; "
          "a spec holds plain YAML values only",)),
    Case("tag-custom-on-scalar", edit("  kind: tiny", "  kind: !foo tiny"),
         ("4:9: model.kind: YAML tag '!foo' is not allowed; a spec holds plain YAML values only",)),
    Case("tag-custom-on-mapping", edit("compute:\n  device: cpu", "compute: !foo\n  device: cpu"),
         ("16:10: compute: YAML tag '!foo' is not allowed; a spec holds plain YAML values only",)),
    # ------------------------------------------------------------------ aliases
    Case("alias-billion-laughs", BOMB,
         ("1:4: e.1.5.2.3: the document expands to more than 20000 values (an alias bomb?); refused",)),
    Case("alias-recursive", BASE + "extra: &r [*r]\n",
         ("18:12: extra.0: alias '*r' refers to a value that contains it (a cycle); refused",)),
    Case("alias-merge-of-itself", BASE + "extra: &e {<<: *e}\n",
         ("18:16: extra: merge '*e' refers to a value that contains it (a cycle); refused",)),
    Case("alias-merges-of-empty-mappings", MERGE_BOMB,
         ("1:5: m5: the document expands to more than 20000 values (an alias bomb?); refused",)),
    Case("alias-undefined", edit("  device: cpu", "  device: *cpu"),
         ("17:11: compute.device: alias to an undefined anchor 'cpu'",)),
    Case("alias-anchor-defined-twice", BASE + "a: &x 1\nb: &x 2\n",
         ("19:4: b: anchor '&x' is defined twice (first at line 18)",)),
    # ------------------------------------------------------- limits held while reading, before anything recursive
    Case("yaml-nested-5000-deep", edit("name: demo", "name: " + "[" * 5000 + "]" * 5000),
         ("2:71: name" + ".0" * 64 + ": nested more than 64 levels deep; refused",)),
    Case("yaml-nested-mappings-5000-deep", edit("name: demo", "name: " + "{a: " * 5000 + "1" + "}" * 5000),
         ("2:260: name" + ".a" * 63 + ": nested more than 64 levels deep; refused",)),
    Case("yaml-too-many-values", BASE + "extra: [" + ", ".join(["1"] * 20_001) + "]\n",
         ("18:59892: extra.19961: the document has more than 20000 values; a spec is a page or two of YAML; refused",)),
    # ------------------------------------------------------------------ numbers: finite and bounded, at their key
    Case("number-inf", edit("max_length: 256", "max_length: 256\n  learning_rate: .inf"),
         ("16:18: training.learning_rate: .inf is not allowed; every number in a spec must be finite",)),
    Case("number-negative-inf", edit("max_length: 256", "max_length: 256\n  weight_decay: -.inf"),
         ("16:17: training.weight_decay: -.inf is not allowed; every number in a spec must be finite",)),
    Case("number-nan", edit("max_length: 256", "max_length: 256\n  warmup_ratio: .nan"),
         ("16:17: training.warmup_ratio: .nan is not allowed; every number in a spec must be finite",)),
    Case("number-overflows-to-inf", edit("max_length: 256", "max_length: 256\n  learning_rate: 1e400"),
         ("16:18: training.learning_rate: number '1e400' is out of range; a spec's numbers must be finite and at most "
          "1e300 in size",)),
    Case("number-5000-digits", edit("max_length: 256", "max_length: 256\n  seed: " + "9" * 5000),
         ("16:9: training.seed: number '999999999999999999999999…' (5000 characters) is out of range; "
          "a spec's integers have at most 30 digits",)),
    Case("number-tagged-float-inf", edit("max_length: 256", "max_length: 256\n  learning_rate: !!float .inf"),
         ("16:18: training.learning_rate: .inf is not allowed; every number in a spec must be finite",)),
    Case("set-number-inf", BASE,
         ("--set training.learning_rate=.inf: training.learning_rate: .inf is not allowed; "
          "every number in a spec must be finite",),
         args=("--set", "training.learning_rate=.inf")),
    Case("set-number-1e999", BASE,
         ("--set training.learning_rate=1e999: training.learning_rate: number '1e999' is out of range; "
          "a spec's numbers must be finite and at most 1e300 in size",),
         args=("--set", "training.learning_rate=1e999")),
    Case("set-number-5000-digits", BASE,
         ("--set training.seed=9999999999999999999999999999999999999999…: training.seed: number "
          "'999999999999999999999999…' (5000 characters) is out of range; a spec's integers have at most 30 digits",),
         args=("--set", "training.seed=" + "9" * 5000)),
    # ------------------------------------------------------------------ text that cannot be encoded
    Case("text-lone-surrogate", BASE + 'description: "a\\ud800b"\n',
         ("18:14: description: text holds a lone surrogate \\ud800 (at character 2), which cannot be encoded; "
          "write characters beyond U+FFFF as \\UXXXXXXXX",)),
    Case("text-lone-surrogate-in-template",
         edit('prompt: "Request: {{ text }}"', 'prompt: "Request: {{ text }} \\udfff"'),
         ("12:11: format.prompt: text holds a lone surrogate \\udfff (at character 21), which cannot be encoded; "
          "write characters beyond U+FFFF as \\UXXXXXXXX",)),
    Case("text-surrogate-pair-escapes", BASE + 'description: "\\ud83d\\ude00"\n',
         ("18:14: description: text holds a lone surrogate \\ud83d (at character 1), which cannot be encoded; "
          "write characters beyond U+FFFF as \\UXXXXXXXX",)),
    Case("text-lone-surrogate-in-key", BASE + 'profiles: {"a\\udc00": {}}\n',
         ("18:12: profiles: a key holds a lone surrogate \\udc00 (at character 2), which cannot be encoded; "
          "write characters beyond U+FFFF as \\UXXXXXXXX",)),
    # ------------------------------------------------------------------ encoding and shape of the file
    Case("bytes-not-utf8", b"ftspec: 1\nname: d\xe9mo\n",
         ("2:8: not valid UTF-8 (byte 0xe9); save the file as UTF-8",)),
    Case("bytes-not-utf8-after-multibyte-text", BASE.encode() + "description: café ".encode() + b"\xff\n",
         ("18:19: not valid UTF-8 (byte 0xff); save the file as UTF-8",)),
    Case("file-empty", "",
         ("1:1: the spec is empty; it needs at least 'ftspec', 'name', 'model' and 'data'",)),
    Case("file-only-comments", "# a spec\n\n# to be written\n",
         ("1:1: the spec is empty; it needs at least 'ftspec', 'name', 'model' and 'data'",)),
    Case("file-top-level-list", "- ftspec: 1\n- name: demo\n",
         ("1:1: the spec must be a mapping of keys to values, not a list",)),
    Case("file-top-level-scalar", "just some text\n",
         ("1:1: the spec must be a mapping of keys to values, not a string",)),
    Case("file-not-found", BASE, ("nope.yaml: file not found",), target="nope.yaml"),
    # ------------------------------------------------------------------ wrong types
    Case("type-string-for-int", edit("hidden_size: 64", "hidden_size: sixty-four"),
         ("5:16: model.hidden_size: must be an integer (got 'sixty-four')",)),
    Case("type-list-for-mapping", edit("compute:\n  device: cpu", "compute: [cpu]"),
         ("16:10: compute: must be a mapping (got a list of 1 item)",)),
    Case("type-mapping-for-string", edit("name: demo", "name: {first: demo}"),
         ("2:7: name: must be a string (got a mapping)",)),
    Case("type-null-for-string", edit("name: demo", "name:"),
         ("2:6: name: must be a string (got null)",)),
    Case("type-float-for-int", edit("max_length: 256", "max_length: 256.5"),
         ("15:15: training.max_length: must be an integer (got 256.5)",)),
    Case("type-bool-for-int", edit("max_length: 256", "max_length: 256\n  batch_size: true"),
         ("16:15: training.batch_size: must be an integer (got true)",)),
    Case("type-string-for-list", BASE + "eval:\n  metrics: accuracy\n",
         ("19:12: eval.metrics: must be a list (got 'accuracy')",)),
    Case("type-number-for-gate", BASE + "eval:\n  metrics: [accuracy]\n  gates:\n    accuracy: 0.8\n",
         ("21:15: eval.gates.accuracy: must be a string (got 0.8)",)),
    Case("type-int-for-data-source", edit("train: train.jsonl", "train: 123"),
         ("8:10: data.train: expected a file path, {path: FILE, …}, {hub: DATASET_ID, …} or a list of them "
          "(got 123)",)),
    Case("type-short-list-for-pair", BASE + "eval:\n  metrics:\n    - name: judge\n      model: x\n"
         "      rubric: hi\n      scale: [1]\n",
         ("23:14: eval.metrics.0.scale: must be a list of at least 2 items (got a list of 1 item)",)),
    # ------------------------------------------------------------------ out of range
    Case("range-lora-r-zero", edit("compute:", "method:\n  kind: sft\n  adapter: {kind: lora, r: 0}\ncompute:"),
         ("18:28: method.adapter.r: must be at least 1 (got 0)",)),
    Case("range-dropout",
         edit("compute:", "method:\n  kind: sft\n  adapter:\n    kind: lora\n    dropout: 1.5\ncompute:"),
         ("20:14: method.adapter.dropout: must be less than 1.0 (got 1.5)",)),
    Case("range-split-sum", edit("split: {validation: 0.2}", "split: {validation: 0.5, test: 0.5}"),
         ("9:10: data.split: validation + test must leave rows to train on (got 0.5 + 0.5)",)),
    Case("range-negative-batch-size", edit("max_length: 256", "max_length: 256\n  batch_size: -4"),
         ("16:15: training.batch_size: must be at least 1 (got -4)",)),
    Case("range-heads-do-not-divide", edit("num_heads: 4", "num_heads: 5"),
         ("4:3: model: num_heads (5) must divide hidden_size (64)",)),
    # ------------------------------------------------------------------ unknown keys
    Case("unknown-top-level-key", BASE + "trainig:\n  epochs: 2\n",
         ("18:1: trainig: unknown key; did you mean 'training'?",)),
    Case("unknown-nested-key", edit("max_length: 256", "max_length: 256\n  learning_rte: 0.001"),
         ("16:3: training.learning_rte: unknown key; did you mean 'learning_rate'?",)),
    Case("unknown-key-nothing-close", BASE + "zzz: 1\n", ("18:1: zzz: unknown key",)),
    Case("unknown-anchor-holder-key",
         "defaults: &d {epochs: 2}\n" + edit("  max_length: 256", "  <<: *d\n  max_length: 256"),
         ("1:1: defaults: unknown key",)),
    # ------------------------------------------------------------------ bad choices
    Case("enum-lr-scheduler", edit("max_length: 256", "max_length: 256\n  lr_scheduler: cosin"),
         ("16:17: training.lr_scheduler: must be one of 'linear', 'cosine', 'constant' or "
          "'constant_with_warmup' (got 'cosin'); did you mean 'cosine'?",)),
    Case("enum-adapter-kind", edit("compute:", "method:\n  kind: sft\n  adapter: {kind: qlroa}\ncompute:"),
         ("18:19: method.adapter.kind: unknown kind 'qlroa'; expected 'full', 'lora' or 'qlora'; "
          "did you mean 'qlora'?",)),
    Case("enum-adapter-shorthand", edit("compute:", "method:\n  kind: sft\n  adapter: lorra\ncompute:"),
         ("18:12: method.adapter: unknown kind 'lorra'; expected 'full', 'lora' or 'qlora'; did you mean 'lora'?",)),
    Case("enum-format-kind", edit("kind: prompt_completion", "kind: prompt_completon"),
         ("11:9: format.kind: unknown kind 'prompt_completon'; expected 'prompt_completion', 'chat', "
          "'preference' or 'feedback'; did you mean 'prompt_completion'?",)),
    Case("enum-model-kind", edit("kind: tiny", "kind: tinny"),
         ("4:9: model.kind: unknown kind 'tinny'; expected 'pretrained', 'tiny' or 'bedrock'; did you mean 'tiny'?",)),
    Case("enum-metric-name", BASE + "eval:\n  metrics: [accuracy, f1_marco]\n",
         ("19:23: eval.metrics.1: must be one of 'accuracy', 'precision', 'recall', 'f1', 'f1_macro', "
          "'f1_micro', 'exact_match', 'token_f1', 'rouge_l', 'bleu', 'chrf', 'perplexity', 'json_valid', "
          "'preference_accuracy', 'logprob_margin', 'reward_accuracy', 'reward_margin', 'feedback_margin', "
          "'pair_accuracy' or 'pair_margin' "
          "(got 'f1_marco'); did you mean 'f1_macro'?",)),
    Case("enum-metric-name-in-mapping", BASE + "eval:\n  metrics:\n    - name: acuracy\n",
         ("20:13: eval.metrics.0.name: must be one of 'accuracy', 'precision', 'recall', 'f1', 'f1_macro', "
          "'f1_micro', 'exact_match', 'token_f1', 'rouge_l', 'bleu', 'chrf', 'perplexity', 'json_valid', "
          "'preference_accuracy', 'logprob_margin', 'reward_accuracy', 'reward_margin', 'feedback_margin', "
          "'pair_accuracy' or 'pair_margin' "
          "(got 'acuracy'); did you mean 'accuracy'?",)),
    Case("enum-method-kind-missing", edit("compute:", "method:\n  adapter: full\ncompute:"),
         ("17:3: method: needs 'kind:' to say which one ('sft', 'dpo', 'distill', 'grpo', 'kto' or 'reward_model')",)),
    # ------------------------------------------------------------------ required keys, name, version
    Case("missing-name", edit("name: demo\n", ""), ("1:1: name: required key is missing",)),
    Case("missing-data-train", edit("  train: train.jsonl\n", ""), ("7:1: data.train: required key is missing",)),
    Case("missing-format-prompt", edit('  prompt: "Request: {{ text }}"\n', ""),
         ("10:1: format.prompt: required key is missing",)),
    Case("missing-key-in-list-item", BASE + "eval:\n  metrics: [{name: json_schema}]\n",
         ("19:13: eval.metrics.0.schema: required key is missing",)),
    Case("bad-name", edit("name: demo", "name: My Job"),
         ("2:7: name: must be lower-case letters, digits, '.', '_' or '-', starting with a letter or digit "
          "(got 'My Job')",)),
    Case("bad-version", edit("ftspec: 1", "ftspec: 2"), ("1:9: ftspec: must be 1 (got 2)",)),
    Case("bad-version-yes", edit("ftspec: 1", "ftspec: yes"), ("1:9: ftspec: must be 1 (got 'yes')",)),
    Case("bad-version-true", edit("ftspec: 1", "ftspec: true"), ("1:9: ftspec: must be 1 (got true)",)),
    Case("bad-version-float", edit("ftspec: 1", "ftspec: 1.0"), ("1:9: ftspec: must be 1 (got 1.0)",)),
    Case("several-errors-at-once",
         edit("name: demo", "name: Demo").replace("hidden_size: 64", "hidden_size: big")
         .replace("max_length: 256", "max_length: 256\n  lr_scheduler: cosin") + "trainig: {}\n",
         ("2:7: name: must be lower-case letters, digits, '.', '_' or '-', starting with a letter or digit "
          "(got 'Demo')",
          "5:16: model.hidden_size: must be an integer (got 'big')",
          "16:17: training.lr_scheduler: must be one of 'linear', 'cosine', 'constant' or "
          "'constant_with_warmup' (got 'cosin'); did you mean 'cosine'?",
          "19:1: trainig: unknown key; did you mean 'training'?")),
    # ------------------------------------------------------------------ data files
    Case("data-file-missing", edit("train: train.jsonl", "train: data/nope.jsonl"),
         ("8:10: data.train: data file 'data/nope.jsonl' not found; there is no folder 'data'",)),
    Case("data-file-is-a-directory", edit("train: train.jsonl", "train: ."),
         ("8:10: data.train: data file '.' is a directory",)),
    Case("data-file-unknown-format", edit("train: train.jsonl", "train: train.txt"),
         ("8:10: data.train: cannot tell the format of 'train.txt' from its name; "
          "set format: jsonl, json, csv, tsv or parquet",),
         files={"train.txt": "hello\n"}),
    Case("data-jsonl-bad-line", BASE,
         ('train.jsonl:11: not valid JSON: Expecting property name enclosed in double quotes (column 28)',),
         files={"train.jsonl": ROWS + '{"id": "T99", "text": "x", queue: "billing"}\n' + ROWS}),
    Case("data-jsonl-not-an-object", BASE, ("train.jsonl:11: expected a JSON object per line, found a list",),
         files={"train.jsonl": ROWS + "[1, 2]\n"}),
    Case("data-jsonl-not-utf8", BASE, ("train.jsonl:11: not valid UTF-8; save the file as UTF-8",),
         files={"train.jsonl": ROWS.encode() + b'{"id": "x", "text": "\xff", "queue": "a"}\n'}),
    Case("data-jsonl-no-rows", BASE, ("8:10: data.train: data file 'train.jsonl' has no rows",),
         files={"train.jsonl": "\n"}),
    Case("data-csv-too-many-columns", edit("train: train.jsonl", "train: train.csv"),
         ("train.csv:3: expected 3 columns (id, text, queue), found 4",),
         files={"train.csv": "id,text,queue\nT1,hello,billing\nT2,hi there,account,extra\nT3,x,billing\n"}),
    Case("data-csv-too-few-columns", edit("train: train.jsonl", "train: train.csv"),
         ("train.csv:3: expected 3 columns (id, text, queue), found 2",),
         files={"train.csv": "id,text,queue\nT1,hello,billing\nT2,hi there\n"}),
    Case("data-csv-repeated-header", edit("train: train.jsonl", "train: t.csv"),
         ("t.csv:1: header repeats column names: text",), files={"t.csv": "text,text,queue\n1,2,3\n"}),
    Case("data-json-object-not-list", edit("train: train.jsonl", "train: t.json"),
         ("t.json: expected a JSON list of rows, found an object (set `field:` to the key that holds the rows)",),
         files={"t.json": '{"rows": [1]}'}),
    Case("data-gzip-not-gzip", edit("train: train.jsonl", "train: t.jsonl.gz"),
         ("t.jsonl.gz: not a valid gzip file",), files={"t.jsonl.gz": b"not gzip"}),
    Case("data-rename-missing-column",
         edit("  split: {validation: 0.2}", "  split: {validation: 0.2}\n  rename: {quee: label}"),
         ("10:12: data.rename.quee: no column 'quee' in train.jsonl; did you mean 'queue'?",)),
    Case("data-derive-missing-column",
         edit("  split: {validation: 0.2}", '  split: {validation: 0.2}\n  derive:\n    label: "{{ queu | upper }}"'),
         ("11:12: data.derive.label: template uses 'queu', which is not a column; did you mean 'queue'?",)),
    Case("data-stratify-missing-column", edit("split: {validation: 0.2}", "split: {validation: 0.2, stratify: queu}"),
         ("9:38: data.split.stratify: no column 'queu' to stratify on; did you mean 'queue'?",)),
    # ------------------------------------------------------------------ templates
    Case("template-file-missing", edit('prompt: "Request: {{ text }}"', "prompt: {file: x.j2}"),
         ("12:11: format.prompt: template file 'x.j2' not found",)),
    Case("template-unknown-builtin", edit('prompt: "Request: {{ text }}"', "prompt: {builtin: chatmll}"),
         ("12:11: format.prompt: no built-in template 'chatmll' (built-ins: chatml, instruction, plain-chat); "
          "did you mean 'chatml'?",)),
    Case("template-syntax-error-inline", edit('prompt: "Request: {{ text }}"', 'prompt: "Request: {{ text }"'),
         ("12:11: format.prompt: template syntax error: unexpected '}'",)),
    Case("template-syntax-error-inline-block",
         edit('prompt: "Request: {{ text }}"', "prompt: |\n    Request:\n    {{ text }}\n    {% if queue %}\n    x"),
         ("12:11: format.prompt: template syntax error: Unexpected end of template. Jinja was looking for the "
          "following tags: 'elif' or 'else' or 'endif'. The innermost block that needs to be closed is 'if'. "
          "(template line 3)",)),
    Case("template-syntax-error-in-file", edit('prompt: "Request: {{ text }}"', "prompt: {file: tpl/p.j2}"),
         ("tpl/p.j2:3: format.prompt: template syntax error: Unexpected end of template. Jinja was looking for "
          "the following tags: 'endfor' or 'else'. The innermost block that needs to be closed is 'for'.",),
         files={"tpl/p.j2": "Request:\n{{ text }}\n{% for x in y %}\n"}),
    Case("template-missing-column", edit('prompt: "Request: {{ text }}"', 'prompt: "Request: {{ txt }}"'),
         ("12:11: format.prompt: template uses 'txt', which is not a column; did you mean 'text'?",)),
    Case("template-file-missing-column", edit('prompt: "Request: {{ text }}"', "prompt: {file: p.j2}"),
         ("12:11: format.prompt: template uses 'txet', which is not a column; did you mean 'text'?",),
         files={"p.j2": "Request: {{ txet }}\n"}),
    Case("template-refused-by-sandbox", edit('prompt: "Request: {{ text }}"', 'prompt: "{{ text.__class__.__mro__ }}"'),
         ("train.jsonl:1: format.prompt: template refused by the sandbox: access to attribute "
          "'__class__' of 'str' object is unsafe.",)),
    Case("chat-messages-column-missing",
         edit('  messages:\n    - role: user\n      content: "{{ text }}"\n    - role: assistant\n'
              '      content: "{{ queue }}"\n',
              "  messages_column: convo\n  chat_template: '{{ messages }}{% generation %}{% endgeneration %}'\n", CHAT),
         ("12:20: format.messages_column: no column 'convo'; columns: id, text, queue",)),
    # ------------------------------------------------------------------ extends
    Case("extends-cycle", "extends: b.yaml\n" + BASE,
         ("b.yaml:1:10: extends: extends cycle: spec.yaml -> b.yaml -> spec.yaml",),
         files={"b.yaml": "extends: spec.yaml\nname: b\n"}),
    Case("extends-itself", "extends: spec.yaml\n" + BASE,
         ("1:10: extends: extends cycle: spec.yaml -> spec.yaml",)),
    Case("extends-missing-file", "extends: base.yaml\n" + BASE,
         ("1:10: extends: base spec 'base.yaml' not found",)),
    Case("extends-not-a-string", "extends: 3\n" + BASE,
         ("1:10: extends: must be the path of a base spec, relative to this file",)),
    Case("extends-error-in-base", "extends: base.yaml\nname: demo\n",
         ("base.yaml:16:15: training.batch_size: must be at least 1 (got 0)",),
         files={"base.yaml": edit("max_length: 256", "max_length: 256\n  batch_size: 0")}),
    Case("extends-unknown-key-in-base", "extends: base.yaml\nname: demo\n",
         ("base.yaml:16:3: training.epoch: unknown key; did you mean 'epochs'?",),
         files={"base.yaml": edit("max_length: 256", "max_length: 256\n  epoch: 2")}),
    Case("extends-duplicate-key-in-base", "extends: base.yaml\nname: demo\n",
         ("base.yaml:18:1: name: duplicate key 'name' (first at line 2); YAML would silently keep only the last one",),
         files={"base.yaml": BASE + "name: x\n"}),
    # ------------------------------------------------------------------ profiles
    Case("profile-unknown-name", BASE + "profiles:\n  smoke:\n    training: {max_steps: 5}\n",
         ("--profile smok: profiles: no profile named 'smok' (defined: smoke); did you mean 'smoke'?",),
         args=("--profile", "smok")),
    Case("profile-none-defined", BASE,
         ("--profile smoke: profiles: no profile named 'smoke' (the spec defines none)",),
         args=("--profile", "smoke")),
    Case("profile-errors-in-unused-profiles",
         BASE + "profiles:\n  smoke:\n    training:\n      max_steps: 0\n  other:\n    training: {epocs: 2}\n",
         ("21:18: profiles.smoke.training.max_steps: must be at least 1 (got 0)",
          "23:16: profiles.other.training.epocs: unknown key; did you mean 'epochs'?")),
    Case("profile-error-in-chosen-profile",
         BASE + "profiles:\n  smoke:\n    training:\n      max_steps: 0\n",
         ("21:18: profiles.smoke.training.max_steps: must be at least 1 (got 0)",),
         args=("-p", "smoke")),
    Case("profile-cross-field-error-in-unused-profile",
         edit("max_length: 256",
              "max_length: 256\n  warmup_ratio: 0.1") + "profiles:\n  x:\n    training: {warmup_steps: 3}\n",
         ("21:15: profiles.x.training: give warmup_ratio or warmup_steps, not both",)),
    Case("profile-missing-key-in-unused-profile",
         BASE + "profiles:\n  x:\n    eval:\n      metrics: [{name: json_schema}]\n",
         ("21:17: profiles.x.eval.metrics.0.schema: required key is missing",)),
    Case("profile-not-a-mapping", BASE + "profiles: {smoke: 3}\n",
         ("18:19: profiles.smoke: a profile must be a mapping of spec keys to override",)),
    Case("profile-with-extends", BASE + "profiles: {smoke: {extends: x.yaml}}\n",
         ("18:20: profiles.smoke.extends: not allowed inside a profile",)),
    # ------------------------------------------------------------------ --set
    Case("set-without-equals", BASE,
         ("--set training.epochs: expected KEY=VALUE with a dotted key, e.g. --set training.epochs=3",),
         args=("--set", "training.epochs")),
    Case("set-bad-key", BASE,
         ("--set training..epochs=3: expected KEY=VALUE with a dotted key, e.g. --set training.epochs=3",),
         args=("--set", "training..epochs=3")),
    Case("set-wrong-type", BASE, ("--set training.epochs=three: training.epochs: must be a number (got 'three')",),
         args=("--set", "training.epochs=three")),
    Case("set-unknown-key", BASE, ("--set training.epoch=3: training.epoch: unknown key; did you mean 'epochs'?",),
         args=("--set", "training.epoch=3")),
    Case("set-profiles", BASE, ("--set profiles.x=1: profiles.x: 'profiles' cannot be set from the command line",),
         args=("--set", "profiles.x=1")),
    Case("set-refused-tag", BASE,
         ("--set name=!!python/name:os.system: name: YAML tag '!!python/name:os.system' is not allowed; "
          "a spec holds plain YAML values only",),
         args=("--set", "name=!!python/name:os.system")),
    Case("set-list-item-by-index", BASE + "eval:\n  metrics: [accuracy, f1]\n",
         ("--set eval.metrics.0=f1_macro: eval.metrics.0: list items cannot be set by index; "
          "set the whole list, e.g. --set eval.metrics=[x, y]",),
         args=("--set", "eval.metrics.0=f1_macro")),
    Case("set-list-item-by-index-of-a-default", BASE,
         ("--set eval.metrics.0=f1_macro: eval.metrics.0: list items cannot be set by index; "
          "set the whole list, e.g. --set eval.metrics=[x, y]",),
         args=("--set", "eval.metrics.0=f1_macro")),
    Case("set-key-inside-a-list", BASE + "eval:\n  metrics: [accuracy, f1]\n",
         ("--set eval.metrics.name=f1: eval.metrics.name: 'eval.metrics' is a list; "
          "its items cannot be set one by one; "
          "set the whole list, e.g. --set eval.metrics=[x, y]",),
         args=("--set", "eval.metrics.name=f1")),
    Case("set-yaml-syntax-error", BASE,
         ("--set training.epochs=[1: training.epochs: this '[' is never closed: end the list with ']'",),
         args=("--set", "training.epochs=[1")),
    # ------------------------------------------------------------------ rules across sections
    Case("dpo-with-prompt-completion", edit("compute:", "method:\n  kind: dpo\ncompute:"),
         ("11:9: format.kind: DPO trains on preference pairs; format.kind must be 'preference' (got "
          "'prompt_completion')",)),
    Case("early-stopping-without-validation",
         edit("max_length: 256", "max_length: 256\n  early_stopping: {patience: 2}", ONLY_TRAIN),
         ("15:19: training.early_stopping: needs validation data (data.validation or data.split.validation)",)),
    Case("gate-on-undeclared-metric", BASE + "eval:\n  metrics: [accuracy]\n  gates:\n    acuracy: '>= 0.8'\n",
         ("21:14: eval.gates.acuracy: gate on 'acuracy', which is not among eval.metrics (accuracy); "
          "did you mean 'accuracy'?",)),
    Case("gate-improvement-without-baseline",
         BASE + "eval:\n  baseline: false\n  metrics: [accuracy]\n  gates:\n    improvement.accuracy: '>= 0.1'\n",
         ("22:27: eval.gates.improvement.accuracy: an improvement gate compares with the base model; "
          "set eval.baseline: true",)),
    Case("gate-bad-comparison",
         BASE + "eval:\n  metrics: [accuracy, f1]\n  gates:\n    accuracy: '>= 0.8'\n    f1: 'at least 0.8'\n",
         ("22:9: eval.gates.f1: expected a comparison such as \">= 0.85\" (got 'at least 0.8')",)),
    Case("eval-split-missing", BASE + "eval:\n  split: test\n",
         ("19:10: eval.split: no test split; add data.test or data.split.test",)),
    Case("eval-metric-twice", BASE + "eval:\n  metrics: [accuracy, accuracy]\n",
         ("19:23: eval.metrics.1: metric 'accuracy' is listed twice",)),
    Case("qlora-on-cpu", edit("compute:", "method:\n  kind: sft\n  adapter: qlora\ncompute:", HUB),
         ("17:12: method.adapter.kind: qlora needs a CUDA device (compute.device is 'cpu'); "
          "use lora, or compute.device: cuda",)),
    Case("qlora-on-cpu-tiny-model", edit("compute:", "method:\n  kind: sft\n  adapter: qlora\ncompute:"),
         ("18:12: method.adapter.kind: qlora needs a CUDA device (compute.device is 'cpu'); "
          "use lora, or compute.device: cuda",
          "18:12: method.adapter.kind: qlora quantises a pretrained model; a tiny model from config is trained with "
          "lora or full")),
    Case("lora-unknown-target-module",
         edit("compute:", "method:\n  kind: sft\n  adapter: {kind: lora, target_modules: [q_proj, v_prj]}\ncompute:"),
         ("18:50: method.adapter.target_modules.1: 'v_prj' is not a linear module of a llama model "
          "(q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj); did you mean 'v_proj'?",)),
    Case("fp16-on-cpu", edit("  device: cpu", "  device: cpu\n  precision: fp16"),
         ("18:14: compute.precision: fp16 training needs a GPU; on the CPU use bf16 or fp32",)),
    Case("processes-without-strategy", edit("  device: cpu", "  device: cpu\n  num_processes: 2"),
         ("18:18: compute.num_processes: 2 processes need a strategy to share the work: set compute.strategy: ddp "
          "(a whole model in each process), fsdp or deepspeed (sharded)",)),
    Case("warmup-ratio-and-steps", edit("max_length: 256", "max_length: 256\n  warmup_ratio: 0.1\n  warmup_steps: 10"),
         ("15:3: training: give warmup_ratio or warmup_steps, not both",)),
    Case("chat-tiny-model-without-chat-template", CHAT,
         ("11:9: format.kind: a tiny model's tokenizer has no chat template; set format.chat_template; "
          "e.g. chat_template: {builtin: chatml}",)),
    Case("chat-messages-and-messages-column", edit("  kind: chat\n", "  kind: chat\n  messages_column: conv\n", CHAT),
         ("11:3: format: give exactly one of 'messages' (templated turns) or 'messages_column'",)),
    Case("choices-not-covering-answers", BASE + "eval:\n  mode: choices\n  choices: [billing, shipping]\n",
         ("train.jsonl:2: eval.choices: the answer 'account' is not one of eval.choices (billing, shipping)",)),
    # ------------------------------------------------------------------ --strict
    Case("strict-warning-fails", BASE,
         ("8:10: data.train: warning: only 8 training rows; fine-tuning usually needs 500 or more to pay off",),
         args=("--strict",)),
]


def _params():
    for case in CASES:
        marks = [pytest.mark.xfail(case.bug_if, reason=case.bug, strict=True)] if case.bug else []
        yield pytest.param(case, id=case.id, marks=marks)


# --------------------------------------------------------------------------- running


def _write(tmp_path: Path, case: Case) -> None:
    files = {"train.jsonl": ROWS, **case.files, SPEC: case.spec}
    for name, content in files.items():
        if isinstance(content, str):
            content = content.replace(TMP, str(tmp_path)).encode("utf-8")
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


def _strip(line: str) -> str:
    return line[len(SPEC) + 1:] if line.startswith(SPEC + ":") else line


def _summary(expected: tuple[str, ...]) -> str:
    warnings = sum(1 for line in expected if ": warning: " in line)
    errors = len(expected) - warnings
    text = f"ftspec: {errors} error{'s' if errors != 1 else ''}"
    if warnings:
        text += f", {warnings} warning{'s' if warnings != 1 else ''} (--strict)"
    return text


def _invoke(args: list[str]):
    return CliRunner().invoke(main, args)


def _check_cli_failure(result, expected: tuple[str, ...]) -> None:
    assert "Traceback" not in result.output
    assert result.exit_code == 2, f"exit {result.exit_code} ({result.exception!r}):\n{result.output}"
    assert isinstance(result.exception, SystemExit), f"crashed: {result.exception!r}"
    lines = result.stderr.splitlines()
    assert [_strip(line) for line in lines[:-1]] == list(expected)
    assert lines[-1] == _summary(expected)
    assert result.stdout == ""


@pytest.mark.parametrize("case", list(_params()))
def test_cli(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path, case)
    monkeypatch.chdir(tmp_path)
    result = _invoke(["validate", *case.args, case.target])
    _check_cli_failure(result, case.expected)
    if case.check is not None:
        case.check(tmp_path)


def _api_args(args: tuple[str, ...]) -> dict:
    out: dict = {"profiles": [], "sets": [], "strict": False}
    items = list(args)
    while items:
        opt = items.pop(0)
        if opt in ("--profile", "-p"):
            out["profiles"].append(items.pop(0))
        elif opt in ("--set", "-s"):
            out["sets"].append(items.pop(0))
        elif opt == "--strict":
            out["strict"] = True
        else:  # pragma: no cover - a case with an option the API does not take
            raise AssertionError(opt)
    return out


@pytest.mark.parametrize("case", list(_params()))
def test_check_spec(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The API raises SpecError with the same issues the CLI prints."""
    _write(tmp_path, case)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpecError) as info:
        check_spec(case.target, **_api_args(case.args))
    assert [_strip(issue.format()) for issue in info.value.issues] == list(case.expected)
    if case.check is not None:
        case.check(tmp_path)


# --------------------------------------------------------------------------- controls and extras


def test_base_spec_is_valid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The corpus edits a spec that validates: each case fails for its own reason."""
    _write(tmp_path, Case("base", BASE, ()))
    monkeypatch.chdir(tmp_path)
    result = _invoke(["validate", SPEC])
    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        "spec.yaml:8:10: data.train: warning: only 8 training rows; fine-tuning usually needs 500 or more to pay off"
    ]
    assert result.stdout == "spec.yaml: ok (1 warning)\n"
    for spec in (CHAT.replace("  kind: chat\n", "  kind: chat\n  chat_template: '{{ messages }}{% generation %}"
                                  "{% endgeneration %}'\n"), HUB):
        (tmp_path / SPEC).write_text(spec)
        result = _invoke(["validate", SPEC])
        assert result.exit_code == 0, result.output


def test_issue_fields(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path, Case("unknown", BASE + "trainig:\n  epochs: 2\n", ()))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpecError) as info:
        check_spec(SPEC)
    [issue] = info.value.issues
    assert (issue.pos.file, issue.pos.line, issue.pos.col) == (SPEC, 18, 1)
    assert (issue.key, issue.message, issue.hint) == ("trainig", "unknown key", "did you mean 'training'?")
    assert issue.is_error


def test_python_tag_payload_is_live(tmp_path: Path) -> None:
    """Control for tag-python-object-apply: a constructing loader would create the marker."""
    [case] = [c for c in CASES if c.id == "tag-python-object-apply"]
    text = case.spec.replace(TMP, str(tmp_path))
    yaml.unsafe_load(text)
    assert (tmp_path / "pwned").exists()


def test_alias_bomb_is_a_bomb() -> None:
    """Control for alias-billion-laughs: the document really has 9 levels of 9."""
    node = yaml.safe_load(BOMB)["i"]
    for _ in range(9):
        assert isinstance(node, list) and len(node) == 9
        node = node[0]
    assert node == "lol"


def test_strict_control(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --strict the warning of strict-warning-fails is only a warning."""
    _write(tmp_path, Case("base", BASE, ()))
    monkeypatch.chdir(tmp_path)
    assert check_spec(SPEC).warnings
    result = _invoke(["validate", SPEC])
    assert result.exit_code == 0


def _listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def test_plan_writes_nothing_for_an_invalid_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path, Case("bad", edit("max_length: 256", "max_length: 256\n  lr_scheduler: cosin"), ()))
    monkeypatch.chdir(tmp_path)
    before = _listing(tmp_path)
    result = _invoke(["plan", SPEC, "-o", "out.json"])
    _check_cli_failure(result, (
        "16:17: training.lr_scheduler: must be one of 'linear', 'cosine', 'constant' or "
        "'constant_with_warmup' (got 'cosin'); did you mean 'cosine'?",
    ))
    assert not (tmp_path / "out.json").exists()
    assert _listing(tmp_path) == before  # no temporary file left behind
    # --strict: a spec with only warnings fails too, and writes nothing.
    (tmp_path / SPEC).write_text(BASE)
    result = _invoke(["plan", "--strict", SPEC, "-o", "sub/out.json"])
    assert result.exit_code == 2
    assert not (tmp_path / "sub" / "out.json").exists()
    assert {p for p in _listing(tmp_path) if "out.json" in p} == set()


def test_plan_control_writes_for_a_valid_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path, Case("ok", BASE, ()))
    monkeypatch.chdir(tmp_path)
    before = _listing(tmp_path)
    result = _invoke(["plan", SPEC, "-o", "out.json"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "out.json").read_text())["name"] == "demo"
    assert _listing(tmp_path) == before | {"out.json"}


@pytest.mark.parametrize("case_id",
                         ["yaml-tab-indentation", "yaml-duplicate-top-level-key", "tag-python-object-apply",
                          "set-wrong-type"])
def test_real_process(case_id: str, tmp_path: Path) -> None:
    """The installed entry point, as a user runs it: status 2, the lines on stderr, no traceback."""
    [case] = [c for c in CASES if c.id == case_id]
    _write(tmp_path, case)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-m", "ftspec", "validate", *case.args, case.target],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert "Traceback" not in proc.stderr
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert [_strip(line) for line in lines[:-1]] == list(case.expected)
    assert lines[-1] == _summary(case.expected)
    assert proc.stdout == ""
    if case.check is not None:
        case.check(tmp_path)
