"""`ftspec gc` removes only what ftspec made in its own store: it refuses a runs folder or a
store that is a link or lies outside the repository, follows no link inside the store, and
leaves (and lists) anything whose name or kind is not its own. `--dry-run` changes nothing."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

from ftspec.cli import main
from ftspec.core.layout import MARKER, STORE

KEY, OTHER = "0123456789abcdef", "fedcba9876543210"


def write(path, text="x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def repo(tmp_path):
    root = tmp_path / "repo"
    (root / ".git").mkdir(parents=True)
    return root


def step(store, name, key):
    """A finished step no run refers to: gc's to remove."""
    write(store / name / key / "rows.jsonl", "{}\n" * 10)
    write(store / name / key / MARKER, json.dumps({"step": name, "key": key, "finished_at": "2024-01-01T00:00:00"}))


def looks_like_a_store(folder):
    """What an old gc would have emptied: step folders under keys, and anything else in them."""
    step(folder, "prepare_data", KEY)
    write(folder / "prepare_data" / "notes.txt", "mine")
    write(folder / "thesis" / "chapter1.tex", "mine too")


def tree(folder) -> dict[str, tuple]:
    """Every name under ``folder`` (links not followed) with its kind, size, mtime and content."""
    out = {}
    for here, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = os.path.join(here, name)
            st = os.lstat(path)
            body = open(path, "rb").read() if os.path.isfile(path) and not os.path.islink(path) else None
            out[os.path.relpath(path, folder)] = (st.st_mode, st.st_size, st.st_mtime_ns, body,
                                                  os.readlink(path) if os.path.islink(path) else None)
    out["."] = os.lstat(folder).st_mtime_ns
    return out


def gc(*args):
    result = CliRunner().invoke(main, ["gc", *map(str, args)])
    assert "Traceback" not in result.output and not isinstance(result.exception, (AssertionError, OSError)), \
        result.output
    return result


def refused_in_one_line(result, path, words):
    assert result.exit_code == 2, result.output
    issues = [line for line in result.stderr.splitlines() if not line.startswith("ftspec: ")]
    assert len(issues) == 1 and issues[0].startswith(f"{path}: ") and words in issues[0], result.stderr


@pytest.mark.parametrize("dry_run", [False, True], ids=["gc", "gc --dry-run"])
def test_a_runs_folder_that_is_a_link_out_of_the_repository_is_refused(tmp_path, dry_run):
    root, outside = repo(tmp_path), tmp_path / "elsewhere"
    looks_like_a_store(outside / STORE)
    (root / "runs").symlink_to(outside, target_is_directory=True)
    before = tree(outside)
    result = gc(root / "runs", *(["--dry-run"] if dry_run else []))
    refused_in_one_line(result, root / "runs", "is a symbolic link")
    assert tree(outside) == before


def test_a_store_that_is_a_link_out_of_the_repository_is_refused(tmp_path):
    root, outside = repo(tmp_path), tmp_path / "home"
    looks_like_a_store(outside)
    (root / "runs").mkdir()
    (root / "runs" / STORE).symlink_to(outside, target_is_directory=True)
    before = tree(outside)
    refused_in_one_line(gc(root / "runs"), root / "runs" / STORE, "is a symbolic link")
    assert tree(outside) == before


def test_a_runs_folder_reached_through_a_linked_folder_outside_the_repository_is_refused(tmp_path):
    root, outside = repo(tmp_path), tmp_path / "elsewhere"
    looks_like_a_store(outside / "runs" / STORE)
    (root / "data").symlink_to(outside, target_is_directory=True)
    before = tree(outside)
    refused_in_one_line(gc(root / "data" / "runs"), root / "data" / "runs", "outside the repository")
    assert tree(outside) == before


def test_a_link_inside_the_store_is_left_and_never_followed(tmp_path):
    root, outside = repo(tmp_path), tmp_path / "elsewhere"
    looks_like_a_store(outside)
    store = root / "runs" / STORE
    step(store, "prepare_data", OTHER)  # gc's own: goes
    (store / "prepare_data" / KEY).symlink_to(outside / "prepare_data" / KEY, target_is_directory=True)
    (store / "prepare_data" / (KEY + ".partial")).symlink_to(outside / "thesis", target_is_directory=True)
    (store / "prepare_data" / (OTHER + ".lock")).symlink_to(outside / "prepare_data" / "notes.txt")
    (store / "train").symlink_to(outside, target_is_directory=True)
    before = tree(outside)
    result = gc(root / "runs")
    assert result.exit_code == 0, result.output
    assert tree(outside) == before
    assert not (store / "prepare_data" / OTHER).exists()
    links = [store / "prepare_data" / KEY, store / "prepare_data" / (KEY + ".partial"),
             store / "prepare_data" / (OTHER + ".lock"), store / "train"]
    assert all(link.is_symlink() for link in links)
    for link in links:
        label = link.relative_to(store).as_posix()
        assert f"left  {label}: a symbolic link, not followed" in result.stdout, result.stdout


def test_what_ftspec_did_not_make_in_the_store_is_left_and_listed(tmp_path):
    root = repo(tmp_path)
    store = root / "runs" / STORE
    step(store, "prepare_data", OTHER)
    write(store / "prepare_data" / (OTHER + ".lock"), "")
    (store / "prepare_data" / (OTHER + ".partial")).mkdir()
    foreign = {
        "prepare_data/notes.txt": "not a name ftspec gives a store entry",
        "prepare_data/backup": "not a name ftspec gives a store entry",
        f"prepare_data/{KEY.upper()}": "not a name ftspec gives a store entry",
        f"prepare_data/{KEY}": "not the folder ftspec makes under that name",
        f"prepare_data/{KEY}.lock": "not the file ftspec makes under that name",
        "thesis": "not a step's folder ftspec made",
        "README.md": "not a step's folder ftspec made",
    }
    write(store / "prepare_data" / "notes.txt")
    write(store / "prepare_data" / "backup" / "data.jsonl")
    write(store / "prepare_data" / KEY.upper() / "x")
    write(store / "prepare_data" / KEY)  # a file where ftspec makes a folder
    write(store / "prepare_data" / (KEY + ".lock") / "x")  # a folder where ftspec makes a file
    write(store / "thesis" / "chapter1.tex")
    write(store / "README.md")
    result = gc(root / "runs")
    assert result.exit_code == 0, result.output
    for name, why in foreign.items():
        assert (store / name).exists(), name
        assert f"left  {name}: {why} (not ftspec's; gc removes only what it made)" in result.stdout, result.stdout
    assert not any((store / "prepare_data" / (OTHER + s)).exists() for s in ("", ".lock", ".partial"))
    assert f"removed  prepare_data/{OTHER}  " in result.stdout


def test_gc_dry_run_changes_nothing_on_disk(tmp_path):
    root = repo(tmp_path)
    runs = root / "runs"
    store = runs / STORE
    step(store, "prepare_data", OTHER)
    write(store / "prepare_data" / (OTHER + ".lock"), "")
    (store / "prepare_data" / (OTHER + ".partial")).mkdir()
    write(runs / "job" / "manifest.json", json.dumps({"status": "finished"}))  # a run directory, never locked
    write(runs / "job" / "plan.json", json.dumps({"steps": []}))
    write(store / "notes.txt")
    before = tree(root)
    result = gc(runs, "--dry-run")
    assert result.exit_code == 0, result.output
    assert f"would remove  prepare_data/{OTHER}  " in result.stdout
    assert tree(root) == before


def test_gc_keeps_the_model_a_promotion_record_names(tmp_path):
    from ftspec.store.promotions import Promotion, Variant
    from ftspec.store.rundir import Store, finish_step

    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    store = Store(repo / "runs" / ".ftspec-store")
    keys = {"promoted": "a" * 64, "stale": "b" * 64}
    for key in keys.values():
        partial = store.partial("train", key)
        partial.mkdir(parents=True)
        (partial / "model.safetensors").write_bytes(b"w")
        finish_step(partial, store.path("train", key), "train", key)
    (repo / "promoted").mkdir()
    (repo / "promoted" / "prod.json").write_text(Promotion(
        name="prod", spec="job.yaml", variant=Variant(), plan_id="9" * 64, run_dir="runs/gone",
        train_key=keys["promoted"], gates_passed=True, forced=False, promoted_at="2026-01-01T00:00:00+00:00",
        ftspec_version="0").model_dump_json())
    assert gc(str(repo / "runs")).exit_code == 0
    assert store.complete("train", keys["promoted"])  # no run directory refers to it: the record does
    assert not store.path("train", keys["stale"]).exists()
