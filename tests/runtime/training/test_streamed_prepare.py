"""prepare_data at scale: splits dealt in a stream with exact, seeded sizes; a formatting
pass and a tokenization cut off part-way continue from their checkpoints with the same
result; statistics gathered batch by batch equal those of the whole list; the train step's
tokens are memory-mapped, cut to max_length, rows without loss dropped.

The splitting and formatting part needs no torch (ftspec.runtime.training.splits)."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest

from ftspec.core.errors import SpecError
from ftspec.data import prepared
from ftspec.data.splitting import apportion, split_counts
from ftspec.plan.compile import compile_spec, find_root
from ftspec.runtime.training import splits as S

SPEC = """ftspec: 1
name: job
model: {{kind: tiny, hidden_size: 32, num_layers: 1, num_heads: 4, max_position_embeddings: 256}}
data:
  train: rows.jsonl
  split: {{validation: 0.2, test: 0.1, seed: {seed}{stratify}}}
{extra}format:
  kind: prompt_completion
  prompt: "Request: {{{{ text }}}}\\nQueue:"
  completion: " {{{{ queue }}}}"
training: {{max_steps: 2, batch_size: 8, max_length: 64}}
eval: {{max_new_tokens: 4, limit: 4, metrics: [accuracy]}}
compute: {{device: cpu}}
"""

QUEUES = ["billing", "shipping", "returns", "account", "technical"]


def _repo(folder: Path, n: int = 137, seed: int = 3, stratify: bool = False, extra: str = "",
          weights: tuple = (5, 3, 1, 1, 1)) -> Path:
    rng = random.Random(11)
    rows = [{"text": f"request {i} " + "x" * rng.randrange(1, 30), "queue": rng.choices(QUEUES, weights)[0]}
            for i in range(n)]
    (folder / ".git").mkdir(exist_ok=True)
    (folder / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    spec = folder / "job.yaml"
    spec.write_text(SPEC.format(seed=seed, stratify=", stratify: queue" if stratify else "", extra=extra),
                    encoding="utf-8")
    return spec


_PLANS: dict = {}


def _write(spec: Path, out: Path, work: Path | None = None, **kwargs) -> S.Prepared:
    # Compiled once per spec file and content: compiling renders sample rows too.
    key = (spec, spec.read_text(), (spec.parent / "rows.jsonl").read_bytes())
    if key not in _PLANS:
        _PLANS[key] = compile_spec(spec)[0]
    plan = _PLANS[key]
    out.mkdir(parents=True, exist_ok=True)
    return S.write_splits(plan.data, plan.format, find_root(spec), out, work=work, **kwargs)


def _lines(out: Path, split: str) -> list[str]:
    return prepared.split_file(out, split).read_text(encoding="utf-8").splitlines()


def _numbers(out: Path, split: str) -> list[int]:
    return [int(o.rpartition(":")[2]) for o in prepared.iter_origins(out, split)]


@pytest.mark.parametrize("stratify", [False, True])
def test_every_row_lands_in_exactly_one_split_of_the_plans_size(tmp_path, stratify):
    spec = _repo(tmp_path, stratify=stratify)
    made = _write(spec, tmp_path / "out")
    plan, _ = compile_spec(spec)
    want = split_counts({"train": 137}, plan.data.split, None)
    assert made.rows == want == {s: getattr(plan.data.rows, s) for s in want}
    numbers = {s: _numbers(tmp_path / "out", s) for s in want}
    assert sorted(n for v in numbers.values() for n in v) == list(range(1, 138))
    for split, got in numbers.items():
        assert got == sorted(got)  # each split keeps the file's order
        assert len(_lines(tmp_path / "out", split)) == len(got)  # records and origins line up
    if stratify:  # each queue held out in proportion to its share, exactly as apportioned
        rows = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
        by_queue = Counter(r["queue"] for r in rows)
        keys = sorted(json.dumps(q) for q in by_queue)
        val_share = apportion(want["validation"], [by_queue[json.loads(k)] for k in keys])
        held = Counter(rows[n - 1]["queue"] for n in numbers["validation"])
        assert [held[json.loads(k)] for k in keys] == val_share


def test_the_split_is_the_same_under_the_same_seed_and_differs_under_another(tmp_path):
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
    first = _write(_repo(tmp_path / "a", seed=3), tmp_path / "a/out")
    _write(_repo(tmp_path / "b", seed=3), tmp_path / "b/out")
    _write(_repo(tmp_path / "c", seed=4), tmp_path / "c/out")
    assert first.rows["validation"] > 0
    assert _numbers(tmp_path / "a/out", "validation") == _numbers(tmp_path / "b/out", "validation")
    assert _numbers(tmp_path / "a/out", "validation") != _numbers(tmp_path / "c/out", "validation")


def test_data_limit_keeps_the_first_rows_of_each_split(tmp_path):
    (tmp_path / "full").mkdir()
    _write(_repo(tmp_path / "full"), tmp_path / "full/out")
    (tmp_path / "cut").mkdir()
    made = _write(_repo(tmp_path / "cut", extra="  limit: {train: 10, test: 3}\n"), tmp_path / "cut/out")
    assert made.rows["train"] == 10 and made.rows["test"] == 3
    assert _lines(tmp_path / "cut/out", "train") == _lines(tmp_path / "full/out", "train")[:10]
    assert _lines(tmp_path / "cut/out", "test") == _lines(tmp_path / "full/out", "test")[:3]
    assert _lines(tmp_path / "cut/out", "validation") == _lines(tmp_path / "full/out", "validation")


def test_a_formatting_pass_cut_off_continues_from_its_checkpoint(tmp_path, monkeypatch):
    spec = _repo(tmp_path, n=137, stratify=True)
    _write(spec, tmp_path / "whole")
    monkeypatch.setattr(S, "CHECKPOINT_ROWS", 20)
    rendered, cut = [], []
    real = S.RowFormatter.render

    def render(self, row, answer=True):
        rendered.append(row["text"])
        if len(rendered) == 75 and not cut:
            cut.append(1)
            raise KeyboardInterrupt  # killed between the checkpoints at rows 60 and 80
        return real(self, row, answer)

    monkeypatch.setattr(S.RowFormatter, "render", render)
    work = tmp_path / "scratch"
    with pytest.raises(KeyboardInterrupt):
        _write(spec, tmp_path / "cut", work=work)
    assert not prepared.split_file(tmp_path / "cut", "train").exists()  # nothing half-written counts
    rendered.clear()
    echoed = []
    _write(spec, tmp_path / "cut", work=work, echo=echoed.append)
    assert echoed == ["  data.train: continuing from row 60 (60 records kept)"]
    assert len(rendered) == 137 - 60  # only the rows after the checkpoint were formatted again
    for split in ("train", "validation", "test"):
        for name in (prepared.split_file, prepared.origins_file):
            assert name(tmp_path / "cut", split).read_bytes() == name(tmp_path / "whole", split).read_bytes()


def test_bad_rows_skipped_before_a_checkpoint_are_counted_once(tmp_path, monkeypatch):
    spec = _repo(tmp_path, n=50, extra="  on_bad_row: skip\n")
    lines = (tmp_path / "rows.jsonl").read_text().splitlines()
    lines[4] = "{broken"
    lines[30] = "not json"
    (tmp_path / "rows.jsonl").write_text("\n".join(lines) + "\n")
    whole = _write(spec, tmp_path / "whole")
    monkeypatch.setattr(S, "CHECKPOINT_ROWS", 10)
    calls = []
    real = S.RowFormatter.render

    def render(self, row, answer=True):
        calls.append(1)
        if len(calls) == 35:
            raise KeyboardInterrupt
        return real(self, row, answer)

    monkeypatch.setattr(S.RowFormatter, "render", render)
    with pytest.raises(KeyboardInterrupt):
        _write(spec, tmp_path / "cut", work=tmp_path / "scratch")
    monkeypatch.setattr(S.RowFormatter, "render", real)
    again = _write(spec, tmp_path / "cut", work=tmp_path / "scratch")
    assert whole.skipped["skipped_rows"] == again.skipped["skipped_rows"] == 2
    assert whole.skipped["skipped_examples"] == again.skipped["skipped_examples"]
    assert "rows.jsonl:5" in whole.skipped["skipped_examples"][0]
    assert whole.rows == again.rows


def test_a_split_left_empty_is_one_error_at_its_key(tmp_path):
    spec = _repo(tmp_path, n=40, extra="  filter: \"{{ queue == 'nothing' }}\"\n")
    with pytest.raises(SpecError) as err:
        _write(spec, tmp_path / "out")
    assert "data.filter" in str(err.value) and "drops every row" in str(err.value)


def test_build_splits_holds_the_same_records_as_the_files(tmp_path):
    spec = _repo(tmp_path)
    _write(spec, tmp_path / "out")
    plan, _ = compile_spec(spec)
    splits, info = S.build_splits(plan.data, plan.format, find_root(spec))
    for split, records in splits.items():
        assert [json.dumps(r, ensure_ascii=False) for r in records] == _lines(tmp_path / "out", split)
        assert info["origins"][split] == list(prepared.iter_origins(tmp_path / "out", split))


# --------------------------------------------------------------------------- tokens (torch)


def test_histogram_statistics_equal_the_whole_lists():
    pytest.importorskip("transformers")
    from ftspec.runtime.training import data as D

    rng = random.Random(5)
    for _ in range(50):
        n = rng.randrange(1, 60)
        ids = [[1] * rng.randrange(0, 40) for _ in range(n)]
        labels = [[rng.choice([-100, 7]) for _ in row] for row in ids]
        cut = rng.randrange(1, 40)
        whole = D.token_stats(ids, labels, cut)
        parts = D.TokenStats(cut)
        for start in range(0, n, 7):
            piece = D.TokenStats(cut)
            piece.add(ids[start:start + 7], labels[start:start + 7])
            parts.merge(piece.raw())
        lengths = sorted(len(r) for r in ids)
        assert parts.summary() == whole
        assert whole["tokens"]["p50"] == lengths[max(0, -(-50 * n // 100) - 1)]


def test_tokens_resume_after_the_last_complete_shard_and_are_memory_mapped(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    pytest.importorskip("datasets")
    from ftspec.runtime.models import byte_tokenizer
    from ftspec.runtime.training import data as D

    tok = byte_tokenizer()
    out = tmp_path / "data"
    out.mkdir()
    records = [{"prompt": f"Q{i}: " + "p" * (i % 50), "completion": " ok" if i % 9 else ""} for i in range(230)]
    prepared.split_file(out, "train").write_text("".join(json.dumps(r) + "\n" for r in records))
    monkeypatch.setattr(D, "SHARD_ROWS", 50)
    monkeypatch.setattr(D, "TOKENIZE_BATCH", 16)
    whole = D.tokenize_split(out, "train", "prompt_completion", tok, "completion", 40, tmp_path / "whole")

    encoded = []
    real = D._encode

    def encode(chunk, *args):
        encoded.append(len(chunk))
        if sum(encoded) > 130:
            raise KeyboardInterrupt  # cut off in the third shard
        return real(chunk, *args)

    monkeypatch.setattr(D, "_encode", encode)
    with pytest.raises(KeyboardInterrupt):
        D.tokenize_split(out, "train", "prompt_completion", tok, "completion", 40, tmp_path / "cut")
    assert sorted(p.name for p in (tmp_path / "cut").iterdir()) == [
        "shard-00000.arrow", "shard-00000.json", "shard-00001.arrow", "shard-00001.json"]
    encoded.clear()
    monkeypatch.setattr(D, "_encode", lambda chunk, *args: (encoded.append(len(chunk)), real(chunk, *args))[1])
    again = D.tokenize_split(out, "train", "prompt_completion", tok, "completion", 40, tmp_path / "cut")
    assert sum(encoded) == 230 - 100 and again == whole

    ids, labels = D.tokenize(records, "prompt_completion", tok, "completion")
    assert whole == D.token_stats(ids, labels, 40)
    want = [(i[:40], lab[:40]) for i, lab in zip(ids, labels) if any(t != -100 for t in lab[:40])]
    assert len(want) < len(records)  # some rows keep no answer token within 40 tokens
    for folder in ("whole", "cut"):
        dataset = D.load_tokens(tmp_path / folder)
        assert dataset.cache_files  # read from the files, not loaded into memory
        assert list(zip(dataset["input_ids"], dataset["labels"])) == want
        assert list(D.token_lengths(dataset)) == [len(i) for i, _ in want]


def test_fast_ids_are_the_tokenizers_own():
    pytest.importorskip("transformers")
    from ftspec.runtime.models import bpe_tokenizer
    from ftspec.runtime.training import data as D

    texts = ["héllo wörld  twice", "", "tabs\tand\nnewlines", "🙂 emoji"] * 5
    tok = bpe_tokenizer(texts, 300)
    ids_of = D.TextIds(tok)
    want = [list(i) for i in tok(texts)["input_ids"]]
    assert ids_of(texts) == want and ids_of.fast is True
    assert ids_of(texts) == want  # now through the backend's batch encoder


def test_fast_ids_are_not_used_where_they_differ():
    from ftspec.runtime.training import data as D

    class Odd:  # a tokenizer whose own call adds something its backend does not
        class backend_tokenizer:  # noqa: N801
            @staticmethod
            def encode_batch_fast(texts):
                return [type("E", (), {"ids": [1]})() for _ in texts]

        def __call__(self, texts):
            return {"input_ids": [[1, 2] for _ in texts]}

    ids_of = D.TextIds(Odd())
    assert ids_of(["a"]) == [[1, 2]] and ids_of.fast is False
    assert ids_of(["b", "c"]) == [[1, 2], [1, 2]]


def test_shards_tokenized_by_several_processes_are_those_of_one(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    from ftspec.runtime.models import byte_tokenizer
    from ftspec.runtime.training import data as D

    tok = byte_tokenizer()
    out = tmp_path / "data"
    out.mkdir()
    records = [{"prompt": f"Q{i}: " + "p" * (i % 37), "completion": f" a{i % 5}"} for i in range(260)]
    prepared.split_file(out, "train").write_text("".join(json.dumps(r) + "\n" for r in records))
    monkeypatch.setattr(D, "SHARD_ROWS", 40)
    seen = []
    one = D.tokenize_split(out, "train", "prompt_completion", tok, "completion", 30, tmp_path / "one")
    two = D.tokenize_split(out, "train", "prompt_completion", tok, "completion", 30, tmp_path / "two",
                           progress=seen.append, workers=2)
    assert one == two and sum(seen) == 260
    names = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert len(names) == 2 * 7 and names == sorted(p.name for p in (tmp_path / "two").iterdir())
    for name in names:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    stats_only = D.tokenize_split(out, "train", "prompt_completion", tok, "completion", 30, tmp_path / "three",
                                  keep=False, workers=2)
    assert stats_only == one and not list((tmp_path / "three").glob("*.arrow"))


def test_a_state_or_shard_file_of_another_shape_is_redone_not_trusted(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    from ftspec.runtime.models import byte_tokenizer
    from ftspec.runtime.training import data as D

    assert S._Source.load(tmp_path / "missing.json") == S._Source()
    for bad in ('{"version": 1, "last": "9"}', "[1]", '{"version": 1}', "not json"):
        (tmp_path / "state.json").write_text(bad)
        assert S._Source.load(tmp_path / "state.json") == S._Source()

    tok = byte_tokenizer()
    out = tmp_path / "data"
    out.mkdir()
    records = [{"prompt": f"Q{i}", "completion": " a"} for i in range(30)]
    prepared.split_file(out, "train").write_text("".join(json.dumps(r) + "\n" for r in records))
    monkeypatch.setattr(D, "SHARD_ROWS", 10)
    whole = D.tokenize_split(out, "train", "prompt_completion", tok, "completion", 30, tmp_path / "t")
    (tmp_path / "t" / "shard-00001.json").write_text('{"rows": "ten"}')
    (tmp_path / "t" / "shard-00002.arrow").unlink()
    encoded = []
    real = D._encode
    monkeypatch.setattr(D, "_encode", lambda chunk, *a: (encoded.append(len(chunk)), real(chunk, *a))[1])
    assert D.tokenize_split(out, "train", "prompt_completion", tok, "completion", 30, tmp_path / "t") == whole
    assert sum(encoded) == 20  # shards 1 and 2 done again, shard 0 kept
    (tmp_path / "t" / "shard-00001.arrow").unlink()
    with pytest.raises(SpecError, match="hold 20 rows where their statistics say 30"):
        D.load_tokens(tmp_path / "t")
