"""The shared step store (ftspec.store.remote) on both kinds of store it supports: a folder
on a shared filesystem, and S3 — a real S3 API served on a local port by moto's server
(tests/conftest.py), spoken to by boto3 as it would speak to AWS.

An entry goes up whole or not at all and one key keeps one entry however many machines
race on it; every byte fetched is checked against the manifest; a manifest cannot name a
path outside its entry; a store that is down or refuses access is one line, quickly."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import pytest

from ftspec.backends.remotes import open_store
from ftspec.core import storeurl
from ftspec.core.layout import MARKER
from ftspec.store.remote import CorruptEntry, RemoteStore, RemoteUnavailable
from ftspec.store.rundir import Store, finish_step

KEY = "ab" * 32
OTHER = "cd" * 32


@pytest.fixture(params=["folder", "s3"])
def remote(request, tmp_path) -> RemoteStore:
    if request.param == "folder":
        shared = tmp_path / "shared"
        shared.mkdir()
        return open_store(str(shared), tmp_path)
    return open_store(request.getfixturevalue("s3_store"), tmp_path)


def entry(store: Store, step: str, key: str, files: dict[str, bytes]) -> Path:
    """A finished entry of ``step`` under ``key`` in ``store``, holding ``files``."""
    partial = store.partial(step, key)
    for rel, data in files.items():
        (partial / rel).parent.mkdir(parents=True, exist_ok=True)
        (partial / rel).write_bytes(data)
    finish_step(partial, store.path(step, key), step, key)
    return store.path(step, key)


FILES = {"metrics.json": b'{"accuracy": 0.75}\n', "predictions.jsonl": b'{"a": 1}\n' * 100,
         "model/weights.bin": bytes(range(256)) * 64}


def upload_folders(remote: RemoteStore, step: str, key: str) -> set[str]:
    top = f"{step}/{key}/"
    return {o.name[len(top):].split("/", 1)[0] for o in remote.objects.list(top)} - {"entry.json"}


def tamper(remote: RemoteStore, name: str, data: bytes) -> None:
    remote.objects.write(name, data)


def test_an_entry_pushed_is_fetched_byte_for_byte(remote, tmp_path):
    a, b = Store(tmp_path / "a" / ".ftspec-store"), Store(tmp_path / "b" / ".ftspec-store")
    folder = entry(a, "eval_base", KEY, FILES)
    assert remote.push("eval_base", KEY, folder) is True
    manifest = remote.manifest("eval_base", KEY)
    assert sorted(manifest["files"]) == sorted(FILES)  # the marker is the local store's own, not uploaded
    assert MARKER not in manifest["files"]
    assert remote.fetch("eval_base", KEY, b) is True
    assert b.complete("eval_base", KEY)
    for rel, data in FILES.items():
        assert (b.path("eval_base", KEY) / rel).read_bytes() == data
    assert remote.fetch("eval_base", OTHER, b) is False  # not there: nothing made
    assert not b.partial("eval_base", OTHER).exists()


def test_a_key_keeps_its_first_entry(remote, tmp_path):
    first = entry(Store(tmp_path / "a" / ".ftspec-store"), "train", KEY, {"w": b"first"})
    second = entry(Store(tmp_path / "b" / ".ftspec-store"), "train", KEY, {"w": b"second"})
    assert remote.push("train", KEY, first) is True
    assert remote.push("train", KEY, second) is False
    fetched = Store(tmp_path / "c" / ".ftspec-store")
    remote.fetch("train", KEY, fetched)
    assert (fetched.path("train", KEY) / "w").read_bytes() == b"first"
    assert len(upload_folders(remote, "train", KEY)) == 1


def test_racing_uploads_leave_one_entry_and_no_stray_files(remote, tmp_path, monkeypatch):
    folders = [entry(Store(tmp_path / f"m{i}" / ".ftspec-store"), "train", KEY, {"w": f"machine {i}".encode()})
               for i in range(4)]
    # Every racer finds no entry, then all upload at once: only the conditional create decides.
    monkeypatch.setattr(RemoteStore, "has", lambda self, step, key: False)
    start = threading.Barrier(len(folders))
    results: list[bool] = []

    def race(folder: Path) -> None:
        start.wait()
        results.append(remote.push("train", KEY, folder))

    threads = [threading.Thread(target=race, args=(f,)) for f in folders]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False, False, False, True]
    assert len(upload_folders(remote, "train", KEY)) == 1
    got = Store(tmp_path / "x" / ".ftspec-store")
    assert remote.fetch("train", KEY, got)
    assert (got.path("train", KEY) / "w").read_bytes().startswith(b"machine ")


def test_changed_bytes_are_refused_and_nothing_is_kept(remote, tmp_path):
    folder = entry(Store(tmp_path / "a" / ".ftspec-store"), "eval_base", KEY, FILES)
    remote.push("eval_base", KEY, folder)
    upload = remote.manifest("eval_base", KEY)["upload"]
    data = bytearray(FILES["model/weights.bin"])
    data[100] ^= 1
    tamper(remote, f"eval_base/{KEY}/{upload}/model/weights.bin", bytes(data))
    b = Store(tmp_path / "b" / ".ftspec-store")
    with pytest.raises(CorruptEntry, match="sha256 differs"):
        remote.fetch("eval_base", KEY, b)
    assert not b.complete("eval_base", KEY)
    assert not b.partial("eval_base", KEY).exists()
    # Replaced by an entry computed again, it fetches.
    remote.replace("eval_base", KEY, folder)
    assert remote.fetch("eval_base", KEY, b)
    assert len(upload_folders(remote, "eval_base", KEY)) == 1


@pytest.mark.parametrize("rel", ["../../outside", "/etc/passwd", "a/../../b", "a//b", "./a", "a\\..\\b"])
def test_a_manifest_names_no_path_outside_its_entry(remote, tmp_path, rel):
    upload = "0" * 32
    remote.objects.write(f"report/{KEY}/{upload}/x", b"x")
    body = {"ftspec_remote_entry": 1, "step": "report", "key": KEY, "upload": upload,
            "files": {rel: {"sha256": "0" * 64, "size": 1}}}
    remote.objects.write(f"report/{KEY}/entry.json", json.dumps(body).encode())
    b = Store(tmp_path / "deep" / "b" / ".ftspec-store")
    with pytest.raises(CorruptEntry):
        remote.fetch("report", KEY, b)
    assert not (tmp_path / "deep" / "outside").exists() and not (tmp_path / "outside").exists()
    assert not b.complete("report", KEY)


@pytest.mark.parametrize("manifest", [b"not json", b"[]", b'{"ftspec_remote_entry": 1}', b"\0" * 10])
def test_a_broken_manifest_is_refused(remote, tmp_path, manifest):
    remote.objects.write(f"report/{KEY}/entry.json", manifest)
    with pytest.raises(CorruptEntry):
        remote.fetch("report", KEY, Store(tmp_path / "b" / ".ftspec-store"))


def test_a_manifest_listing_a_name_as_file_and_folder_is_refused(remote, tmp_path):
    upload = "1" * 32
    files = {"a": b"x", "a/b": b"y"}
    for rel, data in files.items():
        remote.objects.write(f"report/{KEY}/{upload}/{rel}" if rel == "a" else f"report/{KEY}/{upload}x/{rel}", data)
    body = {"ftspec_remote_entry": 1, "step": "report", "key": KEY, "upload": upload,
            "files": {rel: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
                      for rel, data in files.items()}}
    remote.objects.write(f"report/{KEY}/entry.json", json.dumps(body).encode())
    b = Store(tmp_path / "b" / ".ftspec-store")
    with pytest.raises(CorruptEntry):
        remote.fetch("report", KEY, b)
    assert not b.complete("report", KEY) and not b.partial("report", KEY).exists()


def test_a_file_missing_from_the_store_is_refused(remote, tmp_path):
    folder = entry(Store(tmp_path / "a" / ".ftspec-store"), "eval_base", KEY, FILES)
    remote.push("eval_base", KEY, folder)
    upload = remote.manifest("eval_base", KEY)["upload"]
    remote.objects.delete([f"eval_base/{KEY}/{upload}/metrics.json"])
    with pytest.raises(CorruptEntry, match="missing"):
        remote.fetch("eval_base", KEY, Store(tmp_path / "b" / ".ftspec-store"))


def test_a_link_in_an_entry_is_never_uploaded(remote, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the store")
    folder = entry(Store(tmp_path / "a" / ".ftspec-store"), "report", KEY, {"ok.json": b"{}"})
    (folder / "leak").symlink_to(secret)
    with pytest.raises(CorruptEntry, match="not a regular file|symbolic link"):
        remote.push("report", KEY, folder)
    assert not remote.has("report", KEY)


def test_checkpoints_go_up_as_written_and_come_down_where_none_is_newer(remote, tmp_path):
    here = tmp_path / "a" / "k.checkpoints"
    for n in (2, 4):
        ck = here / f"checkpoint-{n}"
        ck.mkdir(parents=True)
        (ck / "trainer_state.json").write_text(json.dumps({"global_step": n}))
        (ck / "model.safetensors").write_bytes(bytes([n]) * 1000)
        (here / "metrics.jsonl").write_text("".join(f'{{"step": {i}}}\n' for i in range(1, n + 1)))
        remote.push_checkpoint(KEY, here, f"checkpoint-{n}")
        assert remote.latest_checkpoint(KEY) == n
    # Only the newest stays in the store.
    top = f"train/{KEY}/checkpoints/"
    assert len({o.name[len(top):].split("/")[0] for o in remote.objects.list(top)} - {"latest.json"}) == 1
    there = tmp_path / "b" / "k.checkpoints"
    assert remote.fetch_checkpoint(KEY, there) == "checkpoint-4"
    assert (there / "checkpoint-4" / "model.safetensors").read_bytes() == bytes([4]) * 1000
    assert (there / "metrics.jsonl").read_text().count("\n") == 4
    assert [p.name for p in there.iterdir() if p.name.startswith(".")] == []
    assert remote.fetch_checkpoint(KEY, there) is None  # nothing newer than what is here
    remote.drop_checkpoints(KEY)
    assert remote.latest_checkpoint(KEY) is None
    assert list(remote.objects.list(top)) == []


def test_a_store_that_is_down_is_one_line_quickly(tmp_path, monkeypatch, s3_store):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{port}")
    remote = open_store(s3_store, tmp_path)
    started = time.monotonic()
    with pytest.raises(RemoteUnavailable) as exc:
        remote.has("train", KEY)
    assert time.monotonic() - started < 60  # retried a little, never hung
    assert "\n" not in str(exc.value) and s3_store.split("/")[2] in str(exc.value)


def test_a_store_that_refuses_access_is_one_line(tmp_path, s3_store, monkeypatch):
    import moto.settings

    remote = open_store(s3_store, tmp_path)
    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)  # the server checks keys: ours are unknown
    with pytest.raises(RemoteUnavailable, match="InvalidAccessKeyId") as exc:
        remote.has("train", KEY)
    assert "\n" not in str(exc.value) and "testing" not in str(exc.value)


def test_a_bucket_that_does_not_exist_is_one_line(tmp_path, s3_store):
    remote = open_store("s3://no-such-bucket-here/x", tmp_path)
    with pytest.raises(RemoteUnavailable, match="NoSuchBucket"):
        remote.has("train", KEY)


def test_a_folder_store_that_is_not_there_is_said_not_made(tmp_path):
    remote = open_store(str(tmp_path / "not-mounted"), tmp_path)
    with pytest.raises(RemoteUnavailable, match="mounted"):
        remote.has("train", KEY)
    folder = entry(Store(tmp_path / "a" / ".ftspec-store"), "train", KEY, {"w": b"1"})
    with pytest.raises(RemoteUnavailable):
        remote.push("train", KEY, folder)
    assert not (tmp_path / "not-mounted").exists()


@pytest.mark.parametrize("url, problem", [
    ("s3://AKIAEXAMPLE:secret@bucket/x", "no user name or password"),
    ("s3://bucket/x?X-Amz-Credential=abc", "no ?query"),
    ("gs://bucket/x", "not supported"),
    ("hf://datasets/x", "not supported"),
    ("file://relative/path", "file:///absolute"),
    ("s3://Bad_Bucket/x", "bucket name"),
    ("s3://bucket/../x", "not allowed"),
    ("", "URL such as"),
])
def test_store_urls_ftspec_cannot_use_are_refused(url, problem):
    with pytest.raises(storeurl.StoreURLError, match=problem.replace("?", r"\?")):
        storeurl.parse(url)


@pytest.mark.parametrize("url, shown", [
    ("s3://team-models/ftspec/", "s3://team-models/ftspec"),
    ("s3://team-models", "s3://team-models"),
    ("file:///mnt/shared/ftspec", "/mnt/shared/ftspec"),
    ("../shared-store", "../shared-store"),
])
def test_store_urls_ftspec_uses(url, shown):
    assert str(storeurl.parse(url)) == shown
