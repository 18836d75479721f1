"""A step store shared by machines: the same entries as the local store (ftspec.store.rundir),
kept in an object store (S3) or a folder on a shared filesystem, so that CI, a colleague and
the production run compute each step once.

    <prefix>/<step>/<key>/entry.json                a finished entry: its files with sha256 and size
    <prefix>/<step>/<key>/<upload>/<file>           the files of one upload (``upload``: 32 hex)
    <prefix>/train/<key>/checkpoints/<upload>/...   an unfinished train step's newest checkpoint
    <prefix>/train/<key>/checkpoints/latest.json    which upload that is, written after its files

``key`` is the whole sha256 step key. An entry is uploaded whole or not at all: its files go
under a fresh upload name, then ``entry.json`` is created only if none exists (S3's conditional
put, a hard link on a filesystem). Two machines racing on one key leave one entry: the loser
removes its own upload and uses the winner's. Every file fetched is checked against the
manifest's sha256 before the local entry counts as complete; an entry that does not match is
refused, and the step is computed here and the entry replaced.

Nothing here knows S3 or boto3: an :class:`Objects` (ftspec.store.remote_fs for a folder,
ftspec.backends.remote_s3 for S3) moves bytes by name. A remote that cannot be reached or
refuses access raises :class:`RemoteUnavailable` (one line, never a credential in it).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Protocol

from ftspec import __version__
from ftspec.catalog import steps
from ftspec.core import jsonread
from ftspec.core.folders import remove_own
from ftspec.core.layout import MARKER
from ftspec.store.rundir import Store, finish_step, now

ENTRY = "entry.json"
CHECKPOINTS = "checkpoints"
LATEST = "latest.json"
ENTRY_VERSION = 1
MAX_MANIFEST = 64 * 1024 * 1024  # bytes of an entry.json read back (a million files fit)
MAX_FILES = 1_000_000
FULL_KEY = re.compile(r"[0-9a-f]{64}")
UPLOAD = re.compile(r"[0-9a-f]{32}")
_REL_PART = re.compile(r"[^/\\\x00-\x1f\x7f]{1,255}")
MAX_PART_BYTES = 255  # of one part of a file's name, in UTF-8 (what a filesystem takes)
MAX_REL_BYTES = 1024  # of a file's whole name in an entry (the store's own path comes on top)
# As the trainer names them: no leading zero, so that a name and its number are one thing.
CHECKPOINT = re.compile(r"checkpoint-(0|[1-9]\d{0,11})")
WORKERS = 8  # files moved at once (each large file is also split into parts by the S3 client)
# What writing a downloaded file here can fail with: this machine's disk, never the remote's
# (raised as OSError, as a run's own writes are, not taken for a store that is down).
LOCAL_WRITE_ERRORS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})


class RemoteUnavailable(Exception):
    """The remote store cannot be reached, or refuses access: one line, no credentials."""


class CorruptEntry(Exception):
    """A remote entry whose manifest or files are not what they should be: one line."""


@dataclass(frozen=True)
class Listed:
    name: str  # relative to the store's top, '/'-separated
    size: int
    modified: str  # ISO 8601, UTC


class Objects(Protocol):
    """Bytes by name ('/'-separated, relative to the store's top) in one remote store."""

    url: str

    def read(self, name: str, limit: int) -> bytes | None: ...  # None: no such object

    def write(self, name: str, data: bytes) -> None: ...  # replaces

    def create(self, name: str, data: bytes) -> bool: ...  # False: one exists already (left as it is)

    def upload(self, path: Path, name: str) -> None: ...

    def download(self, name: str, path: Path) -> None: ...  # FileNotFoundError: no such object

    def list(self, prefix: str) -> Iterator[Listed]: ...

    def delete(self, names: Iterable[str]) -> None: ...


# --------------------------------------------------------------------------- files and manifests


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def entry_files(folder: Path, skip: Iterable[str] = (MARKER,)) -> dict[str, Path]:
    """The regular files of ``folder``, by '/'-separated relative name (sorted), following no
    link: a link or anything else that is not a file or folder is refused (ValueError), since
    ftspec never makes one in a step's folder and uploading it would publish what it points at."""
    skip = set(skip)
    out: dict[str, Path] = {}
    for top, dirs, files in os.walk(folder, followlinks=False):
        for name in sorted(dirs):
            if os.path.islink(os.path.join(top, name)):
                raise ValueError(f"{os.path.join(top, name)} is a symbolic link; a step's folder holds none")
        dirs.sort()
        for name in sorted(files):
            path = Path(top) / name
            rel = path.relative_to(folder).as_posix()
            if rel in skip:
                continue
            if not stat.S_ISREG(path.lstat().st_mode):
                raise ValueError(f"{path} is not a regular file; a step's folder holds only files and folders")
            out[rel] = path
    return dict(sorted(out.items()))


def safe_rel(rel: object) -> str:
    """A manifest's file name, checked: relative, '/'-separated, no '.', '..' or empty part
    (a manifest is read from a store others can write to; it names no path outside the entry)."""
    if not isinstance(rel, str) or not rel:
        raise CorruptEntry(f"names a file {str(rel)[:80]!r} that is not a relative path")
    try:
        encoded = rel.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: no file can have that name
        raise CorruptEntry(f"names a file {rel[:80]!r} that is not valid UTF-8") from None
    parts = rel.split("/")
    if any(p in (".", "..") or not _REL_PART.fullmatch(p) for p in parts):
        raise CorruptEntry(f"names a file {rel[:80]!r} that is not a relative path inside the entry")
    if len(encoded) > MAX_REL_BYTES or any(len(p.encode("utf-8")) > MAX_PART_BYTES for p in parts):
        raise CorruptEntry(f"names a file {rel[:80]!r} longer than a filesystem takes ({MAX_PART_BYTES} bytes a "
                           f"part, {MAX_REL_BYTES} in all)")
    if parts[0] == MARKER:
        raise CorruptEntry(f"names {MARKER!r}, which ftspec writes itself once the entry is complete")
    return rel


def _manifest(step: str, key: str, upload: str, files: dict[str, dict]) -> bytes:
    body = {"ftspec_remote_entry": ENTRY_VERSION, "step": step, "key": key, "upload": upload, "files": files,
            "created_at": now(), "ftspec_version": __version__}
    return (json.dumps(body, sort_keys=True, indent=1) + "\n").encode()


def read_manifest(data: bytes, step: str, key: str, where: str) -> dict:
    """A manifest's content, checked for shape (CorruptEntry otherwise)."""
    try:
        body = jsonread.decode(data.decode("utf-8"), bounded_ints=True)
    except (UnicodeDecodeError, ValueError) as exc:
        raise CorruptEntry(f"{where}: not a manifest ({str(exc).splitlines()[0][:120]})") from None
    if not isinstance(body, dict) or body.get("ftspec_remote_entry") != ENTRY_VERSION:
        raise CorruptEntry(f"{where}: not a version {ENTRY_VERSION} manifest")
    if body.get("step") != step or body.get("key") != key:
        raise CorruptEntry(f"{where}: is the manifest of another step or key")
    upload, files = body.get("upload"), body.get("files")
    if not isinstance(upload, str) or not UPLOAD.fullmatch(upload):
        raise CorruptEntry(f"{where}: names no upload")
    if not isinstance(files, dict) or len(files) > MAX_FILES:
        raise CorruptEntry(f"{where}: lists no files")
    for rel, info in files.items():
        safe_rel(rel)
        parts = rel.split("/")
        folder = next(("/".join(parts[:i]) for i in range(1, len(parts)) if "/".join(parts[:i]) in files), None)
        if folder is not None:
            raise CorruptEntry(f"{where}: lists {folder!r} as a file and as a folder")
        if (not isinstance(info, dict) or not isinstance(info.get("sha256"), str)
                or not re.fullmatch(r"[0-9a-f]{64}", info["sha256"])
                or type(info.get("size")) is not int or info["size"] < 0):
            raise CorruptEntry(f"{where}: lists {rel!r} without its sha256 and size")
    return body


# --------------------------------------------------------------------------- the store


@dataclass
class RemoteStore:
    """One shared store (``objects``), for the entries of a local :class:`Store`."""

    objects: Objects

    @property
    def url(self) -> str:
        return self.objects.url

    @staticmethod
    def top(step: str, key: str) -> str:
        if step not in {s.name for s in steps.STEPS} or not FULL_KEY.fullmatch(key):
            raise ValueError(f"{step}/{key} is not a step and its key")
        return f"{step}/{key}"

    # ----------------------------------------------------------------- entries

    def manifest(self, step: str, key: str) -> dict | None:
        """The entry's checked manifest, None when there is none; CorruptEntry when it is unusable."""
        name = f"{self.top(step, key)}/{ENTRY}"
        data = self.objects.read(name, MAX_MANIFEST)
        return None if data is None else read_manifest(data, step, key, name)

    def has(self, step: str, key: str) -> bool:
        return self.objects.read(f"{self.top(step, key)}/{ENTRY}", MAX_MANIFEST) is not None

    def fetch(self, step: str, key: str, store: Store) -> bool:
        """Download the entry into ``store`` (complete only once every file matched its
        sha256); False when the remote has none. Raises CorruptEntry (nothing kept locally)."""
        partial = store.partial(step, key)
        remove_own(partial, store.root)
        partial.mkdir(parents=True)
        try:
            got = self.download(step, key, partial)
        except BaseException:
            remove_own(partial, store.root)
            raise
        if not got:
            remove_own(partial, store.root)
            return False
        finish_step(partial, store.path(step, key), step, key)
        return True

    def download(self, step: str, key: str, into: Path) -> bool:
        """The entry's files into the empty folder ``into``, each checked against its sha256
        (CorruptEntry otherwise: then ``into`` holds some of them); False when there is none."""
        body = self.manifest(step, key)
        if body is None:
            return False
        self._download(f"{self.top(step, key)}/{body['upload']}", body["files"], into)
        return True

    def push(self, step: str, key: str, folder: Path) -> bool:
        """Upload the finished entry in ``folder``; False when the remote has one already
        (then what this call uploaded is removed, and the remote's entry stands)."""
        top = self.top(step, key)
        if self.has(step, key):
            return False
        upload = secrets.token_hex(16)
        files = self._upload(folder, f"{top}/{upload}")
        if self.objects.create(f"{top}/{ENTRY}", _manifest(step, key, upload, files)):
            return True
        self.objects.delete(f"{top}/{upload}/{rel}" for rel in files)
        return False

    def replace(self, step: str, key: str, folder: Path) -> None:
        """Put the entry in ``folder`` in place of a corrupted one."""
        self.discard(step, key)
        self.push(step, key, folder)

    def discard(self, step: str, key: str) -> None:
        """Remove the entry's manifest, then every file under it (but its checkpoints)."""
        top = self.top(step, key)
        self.objects.delete([f"{top}/{ENTRY}"])
        self.objects.delete(o.name for o in self.objects.list(f"{top}/")
                            if not o.name.startswith(f"{top}/{CHECKPOINTS}/"))

    # ----------------------------------------------------------------- checkpoints

    def push_checkpoint(self, key: str, checkpoints: Path, name: str) -> None:
        """Upload the trainer's checkpoint ``name`` of the train step ``key`` (and the
        metrics logged so far beside it), then make it the remote's latest; the one it
        replaces is removed."""
        top = f"{self.top(steps.TRAIN.name, key)}/{CHECKPOINTS}"
        if not CHECKPOINT.fullmatch(name):
            raise ValueError(f"{name} is not a checkpoint's name")
        files = {f"{name}/{rel}": path for rel, path in entry_files(checkpoints / name).items()}
        if (checkpoints / "metrics.jsonl").is_file() and not (checkpoints / "metrics.jsonl").is_symlink():
            files["metrics.jsonl"] = checkpoints / "metrics.jsonl"
        upload = secrets.token_hex(16)
        listed = self._upload_files(files, f"{top}/{upload}")
        try:
            previous = self._latest(key)
        except CorruptEntry:  # written by no ftspec (or cut off): replaced, so sharing goes on
            previous = None
        self.objects.write(f"{top}/{LATEST}", _manifest(steps.TRAIN.name, key, upload, listed))
        if previous is not None and previous["upload"] != upload:
            self.objects.delete(f"{top}/{previous['upload']}/{rel}" for rel in previous["files"])

    def latest_checkpoint(self, key: str) -> int | None:
        body = self._latest(key)
        return None if body is None else _checkpoint_number(body)

    def fetch_checkpoint(self, key: str, checkpoints: Path) -> str | None:
        """Download the remote's latest checkpoint of train step ``key`` into ``checkpoints``
        when it is newer than any there; its name, or None when nothing was fetched."""
        body = self._latest(key)
        if body is None:
            return None
        number = _checkpoint_number(body)
        have = [int(m.group(1)) for p in (checkpoints.iterdir() if checkpoints.is_dir() else ())
                if (m := CHECKPOINT.fullmatch(p.name)) and (p / "trainer_state.json").is_file()]
        if have and max(have) >= number:
            return None
        top = f"{self.top(steps.TRAIN.name, key)}/{CHECKPOINTS}/{body['upload']}"
        scratch = checkpoints / f".fetch-{body['upload']}"
        checkpoints.mkdir(parents=True, exist_ok=True)
        remove_own(scratch, checkpoints)
        scratch.mkdir()
        try:
            self._download(top, body["files"], scratch)
            name = f"checkpoint-{number}"
            remove_own(checkpoints / name, checkpoints)
            os.replace(scratch / name, checkpoints / name)
            if (scratch / "metrics.jsonl").is_file():
                os.replace(scratch / "metrics.jsonl", checkpoints / "metrics.jsonl")
        finally:
            remove_own(scratch, checkpoints)
        return name

    def drop_checkpoints(self, key: str) -> None:
        top = f"{self.top(steps.TRAIN.name, key)}/{CHECKPOINTS}/"
        self.objects.delete([f"{top}{LATEST}"])
        self.objects.delete(o.name for o in self.objects.list(top))

    def _latest(self, key: str) -> dict | None:
        name = f"{self.top(steps.TRAIN.name, key)}/{CHECKPOINTS}/{LATEST}"
        data = self.objects.read(name, MAX_MANIFEST)
        if data is None:
            return None
        body = read_manifest(data, steps.TRAIN.name, key, name)
        _checkpoint_number(body)
        return body

    # ----------------------------------------------------------------- moving files

    def _upload(self, folder: Path, prefix: str) -> dict[str, dict]:
        try:
            files = entry_files(folder)
        except ValueError as exc:
            raise CorruptEntry(str(exc)) from None
        return self._upload_files(files, prefix)

    def _upload_files(self, files: dict[str, Path], prefix: str) -> dict[str, dict]:
        for rel in files:  # a name no machine could fetch back is not published
            safe_rel(rel)

        def one(item: tuple[str, Path]) -> tuple[str, dict]:
            rel, path = item
            info = {"sha256": sha256_file(path), "size": path.stat().st_size}
            self.objects.upload(path, f"{prefix}/{rel}")
            return rel, info

        with ThreadPoolExecutor(WORKERS) as pool:
            return dict(sorted(pool.map(one, files.items())))

    def _download(self, prefix: str, files: dict[str, dict], into: Path) -> None:
        # Before a byte is fetched: every file is there at the size its manifest lists (a file
        # swapped for a larger one is not downloaded whole to be refused), and it all fits here.
        listed = {o.name[len(prefix) + 1:]: o.size for o in self.objects.list(f"{prefix}/")}
        for rel, info in files.items():
            safe_rel(rel)
            if rel not in listed:
                raise CorruptEntry(f"{prefix}/{rel}: listed in the manifest, missing from the store")
            if listed[rel] != info["size"]:
                raise CorruptEntry(f"{prefix}/{rel}: is {listed[rel]} bytes, the manifest lists {info['size']}")
        need, free = sum(info["size"] for info in files.values()), shutil.disk_usage(into).free
        if need > free:
            raise OSError(errno.ENOSPC, f"No space left on device (the entry is {need} bytes, {free} free)",
                          str(into))

        def one(item: tuple[str, dict]) -> None:
            rel, info = item
            dest = into / safe_rel(rel)
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                self.objects.download(f"{prefix}/{rel}", dest)
            except FileNotFoundError:
                raise CorruptEntry(f"{prefix}/{rel}: listed in the manifest, missing from the store") from None
            if dest.stat().st_size != info["size"] or sha256_file(dest) != info["sha256"]:
                raise CorruptEntry(f"{prefix}/{rel}: its bytes are not those the manifest lists (sha256 differs)")

        with ThreadPoolExecutor(WORKERS) as pool:
            list(pool.map(one, files.items()))


def _checkpoint_number(body: dict) -> int:
    names = {rel.split("/", 1)[0] for rel in body["files"] if "/" in rel}
    numbers = [int(m.group(1)) for n in names if (m := CHECKPOINT.fullmatch(n))]
    if len(numbers) != 1 or len(names) != 1:
        raise CorruptEntry("the latest checkpoint's manifest names no single checkpoint")
    return numbers[0]
