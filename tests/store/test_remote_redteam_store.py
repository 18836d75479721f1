"""The shared step store against a store someone else can write to, and a machine that runs
out of room: a manifest naming what no filesystem holds, a checkpoint named two ways, a
file bigger than its manifest says, a link planted in a shared folder, a full disk, an
endpoint written with a password. Each is refused in one line and nothing half-fetched is
kept; nothing outside the store is read, written or removed."""

from __future__ import annotations

import errno
import hashlib
import json
import os

import pytest

from ftspec.backends.remotes import open_store
from ftspec.core.layout import MARKER
from ftspec.store.remote import CorruptEntry, RemoteStore, RemoteUnavailable
from ftspec.store.rundir import Store, finish_step

KEY = "ab" * 32


@pytest.fixture(params=["folder", "s3"])
def remote(request, tmp_path) -> RemoteStore:
    if request.param == "folder":
        shared = tmp_path / "shared"
        shared.mkdir()
        return open_store(str(shared), tmp_path)
    return open_store(request.getfixturevalue("s3_store"), tmp_path)


def planted(remote: RemoteStore, name: str, step: str, files: dict[str, bytes], listed: dict | None = None,
            upload: str = "1" * 32) -> None:
    """An entry (or, ``name`` 'latest.json', a checkpoint) as someone with write access
    could put it: ``files`` uploaded, the manifest listing ``listed`` (default: them, truly)."""
    top = f"{step}/{KEY}/checkpoints" if name == "latest.json" else f"{step}/{KEY}"
    for rel, data in files.items():
        remote.objects.write(f"{top}/{upload}/{rel}", data)
    if listed is None:
        listed = {rel: {"sha256": hashlib.sha256(d).hexdigest(), "size": len(d)} for rel, d in files.items()}
    body = {"ftspec_remote_entry": 1, "step": step, "key": KEY, "upload": upload, "files": listed}
    remote.objects.write(f"{top}/{name}", json.dumps(body).encode())


def test_a_checkpoint_named_with_a_leading_zero_is_refused(remote, tmp_path):
    # checkpoint-0005 and checkpoint-5 are one number and two names: once fetched under one
    # and moved under the other, the run stopped with a traceback.
    planted(remote, "latest.json", "train", {"checkpoint-0005/trainer_state.json": b"{}"})
    checkpoints = tmp_path / "local" / "train.checkpoints"
    with pytest.raises(CorruptEntry, match="no single checkpoint"):
        remote.fetch_checkpoint(KEY, checkpoints)
    assert not checkpoints.exists() or not any(checkpoints.iterdir())


@pytest.mark.parametrize("rel", ["é" * 200,  # 200 characters, 400 bytes: more than a file's name holds
                                 "/".join(["d" * 200] * 20),  # more than a path holds
                                 "bad\ud800name"])  # no UTF-8 for it: no file can have that name
def test_a_manifest_naming_a_file_no_filesystem_holds_is_refused(remote, tmp_path, rel):
    planted(remote, "entry.json", "report", {}, {rel: {"sha256": "0" * 64, "size": 1}})
    local = Store(tmp_path / "local" / ".ftspec-store")
    with pytest.raises(CorruptEntry, match="longer than a filesystem takes|not valid UTF-8"):
        remote.fetch("report", KEY, local)  # the entry refused: not the store taken for down, nor a traceback
    assert not local.complete("report", KEY) and not local.partial("report", KEY).exists()


@pytest.mark.parametrize("rel", [MARKER, f"{MARKER}/x"])
def test_a_manifest_naming_the_marker_is_refused(remote, tmp_path, rel):
    # The marker says a local entry is complete; ftspec writes it last, itself. A manifest
    # listing it (as a folder: the marker could not be written, a traceback) is refused.
    planted(remote, "entry.json", "report", {rel: b'{"step": "report"}', "metrics.json": b"{}"})
    local = Store(tmp_path / "local" / ".ftspec-store")
    with pytest.raises(CorruptEntry, match="ftspec writes itself"):
        remote.fetch("report", KEY, local)
    assert not local.complete("report", KEY) and not local.partial("report", KEY).exists()


def test_a_file_larger_than_its_manifest_says_is_refused_before_it_is_downloaded(remote, tmp_path, monkeypatch):
    data = b"x" * 4096
    planted(remote, "entry.json", "report", {"metrics.json": data},
            {"metrics.json": {"sha256": hashlib.sha256(data[:10]).hexdigest(), "size": 10}})
    downloads: list[str] = []
    real = remote.objects.download
    monkeypatch.setattr(remote.objects, "download", lambda name, path: (downloads.append(name), real(name, path)))
    local = Store(tmp_path / "local" / ".ftspec-store")
    with pytest.raises(CorruptEntry, match="is 4096 bytes, the manifest lists 10"):
        remote.fetch("report", KEY, local)
    assert downloads == []
    assert not local.complete("report", KEY) and not local.partial("report", KEY).exists()


def test_an_entry_larger_than_the_room_here_is_refused_before_a_byte_is_written(remote, tmp_path, monkeypatch):
    planted(remote, "entry.json", "report", {"metrics.json": b"{}", "big.bin": b"y" * 10_000})
    local = Store(tmp_path / "local" / ".ftspec-store")
    import ftspec.store.remote as module

    monkeypatch.setattr(module.shutil, "disk_usage", lambda path: _Usage(5_000))
    with pytest.raises(OSError) as raised:
        remote.fetch("report", KEY, local)
    assert raised.value.errno == errno.ENOSPC and "10002 bytes" in str(raised.value)
    assert not local.complete("report", KEY) and not local.partial("report", KEY).exists()
    monkeypatch.undo()
    assert remote.fetch("report", KEY, local)  # room again: the same call fetches it whole


class _Usage:
    def __init__(self, free: int):
        self.free = free


def test_a_full_disk_here_is_not_taken_for_a_shared_folder_that_is_down(tmp_path, monkeypatch):
    shared = tmp_path / "shared"
    shared.mkdir()
    remote = open_store(str(shared), tmp_path)
    planted(remote, "entry.json", "report", {"metrics.json": b"{}"})
    import ftspec.store.remote_fs as module

    def full(src, dst, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(module.shutil, "copyfile", full)
    local = Store(tmp_path / "local" / ".ftspec-store")
    with pytest.raises(OSError) as raised:  # a run's own one line for a full disk, not "the store is down"
        remote.fetch("report", KEY, local)
    assert not isinstance(raised.value, RemoteUnavailable) and raised.value.errno == errno.ENOSPC
    assert str(local.root) in raised.value.filename
    assert not local.partial("report", KEY).exists()


def test_a_link_planted_in_a_shared_folder_is_never_followed(tmp_path):
    shared, victim = tmp_path / "shared", tmp_path / "victim"
    shared.mkdir()
    (victim / "checkpoints").mkdir(parents=True)
    (victim / "entry.json").write_text("precious")
    (victim / "checkpoints" / "latest.json").write_text("precious too")
    (shared / "train").mkdir()
    os.symlink(victim, shared / "train" / KEY)
    remote = open_store(str(shared), tmp_path)
    local = Store(tmp_path / "local" / ".ftspec-store")
    partial = local.partial("train", KEY)
    partial.mkdir(parents=True)
    (partial / "w.bin").write_bytes(b"weights")
    finish_step(partial, local.path("train", KEY), "train", KEY)
    before = sorted(str(p.relative_to(victim)) for p in victim.rglob("*"))
    for attempt in (lambda: remote.discard("train", KEY), lambda: remote.drop_checkpoints(KEY),
                    lambda: remote.push("train", KEY, local.path("train", KEY)),
                    lambda: remote.fetch("train", KEY, Store(tmp_path / "other" / ".ftspec-store"))):
        with pytest.raises(RemoteUnavailable, match="is a symbolic link"):
            attempt()
    assert sorted(str(p.relative_to(victim)) for p in victim.rglob("*")) == before
    assert (victim / "entry.json").read_text() == "precious"


def test_an_endpoint_written_with_a_password_is_never_shown(s3_store, monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://AKIAPLANTED:planted-secret@127.0.0.1:1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://AKIAPLANTED:planted-secret@127.0.0.1:1")
    remote = open_store(s3_store, tmp_path)
    with pytest.raises(RemoteUnavailable) as raised:
        remote.has("train", KEY)
    assert "planted-secret" not in str(raised.value) and "AKIAPLANTED" not in str(raised.value)
    assert "127.0.0.1:1" in str(raised.value) and "\n" not in str(raised.value)


def test_a_corrupted_latest_checkpoint_is_replaced_by_the_next_one_pushed(remote, tmp_path):
    # Refused when fetched (training starts from what is here), it must not also stop every
    # checkpoint this run writes from being shared.
    planted(remote, "latest.json", "train", {"checkpoint-3/trainer_state.json": b"{}",
                                             "checkpoint-4/trainer_state.json": b"{}"})
    with pytest.raises(CorruptEntry):
        remote.latest_checkpoint(KEY)
    checkpoints = tmp_path / "local" / "train.checkpoints"
    (checkpoints / "checkpoint-7").mkdir(parents=True)
    (checkpoints / "checkpoint-7" / "trainer_state.json").write_text("{}")
    remote.push_checkpoint(KEY, checkpoints, "checkpoint-7")
    assert remote.latest_checkpoint(KEY) == 7


@pytest.mark.parametrize("kind", ["folder", "fifo"])
def test_a_manifest_that_is_not_a_file_refuses_that_entry_only(tmp_path, kind):
    # Not the whole store taken for down (nothing shared this run), nor a read that blocks.
    shared = tmp_path / "shared"
    (shared / "report" / KEY).mkdir(parents=True)
    if kind == "folder":
        (shared / "report" / KEY / "entry.json").mkdir()
    else:
        os.mkfifo(shared / "report" / KEY / "entry.json")
    remote = open_store(str(shared), tmp_path)
    local = Store(tmp_path / "local" / ".ftspec-store")
    with pytest.raises(CorruptEntry, match="not a manifest"):
        remote.fetch("report", KEY, local)
    assert not local.partial("report", KEY).exists()
