"""A shared step store in a folder every machine mounts (NFS, a cluster's shared disk):
ftspec.store.remote's :class:`~ftspec.store.remote.Objects` on plain files.

A file is written under a temporary name in its folder and renamed into place, so a reader
never sees half of one; an entry's manifest is created with a hard link, which fails when
the name exists, so two machines racing on one key leave one manifest. The folder must
exist: a missing one is taken for a filesystem that is not mounted (nothing is written in
its place), and said in one line. Names are made by ftspec.store.remote only, from step
names, keys and upload ids; no link in the folder is followed.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator

from ftspec.core.io import copy_atomic, write_atomic
from ftspec.core.paths import NotRegularFile, TooLarge, read_regular
from ftspec.store.remote import LOCAL_WRITE_ERRORS, Listed, RemoteUnavailable


class FolderObjects:
    def __init__(self, folder: Path, url: str):
        self.root = Path(folder)
        self.url = url

    # ----------------------------------------------------------------- helpers

    def _path(self, name: str) -> Path:
        """The object's path, through no link below the store's top (someone who can write the
        shared folder could plant one pointing anywhere: nothing is read, written or removed
        through it); RemoteUnavailable when there is one."""
        parts = name.split("/")
        if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"{name!r} is not a name in the store")
        folder = self.root
        for part in parts[:-1]:
            folder = folder / part
            try:
                link = folder.is_symlink()
            except OSError as exc:
                raise self._unavailable(exc) from None
            if link:
                raise RemoteUnavailable(f"store {self.url}: {folder.relative_to(self.root).as_posix()} is a "
                                        "symbolic link, which a shared store's folder never holds (nothing is read, "
                                        "written or removed through it)")
            if not folder.exists():
                break
        return self.root / name

    def _ready(self) -> None:
        try:
            ok = self.root.is_dir()  # (the top may be a link: /mnt/shared often is)
        except OSError as exc:
            raise RemoteUnavailable(f"store {self.url}: {exc.strerror or exc}") from None
        if not ok:
            raise RemoteUnavailable(f"store {self.url}: no such folder (is the shared filesystem mounted? make the "
                                    "folder to start a new store)")

    def _unavailable(self, exc: OSError) -> RemoteUnavailable:
        return RemoteUnavailable(f"store {self.url}: {exc.strerror or exc}")

    def _tmp(self, target: Path) -> Path:
        return target.with_name(f".{target.name}.tmp-{secrets.token_hex(6)}")

    # ----------------------------------------------------------------- Objects

    def read(self, name: str, limit: int) -> bytes | None:
        self._ready()
        try:
            return read_regular(self._path(name), limit)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (TooLarge, IsADirectoryError, NotRegularFile):
            # Read back as a corrupted manifest (that entry refused), never as the real thing,
            # nor as a store that is down: a folder or a FIFO where the file should be.
            return b"\0"
        except OSError as exc:
            raise self._unavailable(exc) from None

    def write(self, name: str, data: bytes) -> None:
        self._ready()
        target = self._path(name)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(target, data)
        except OSError as exc:
            raise self._unavailable(exc) from None

    def create(self, name: str, data: bytes) -> bool:
        self._ready()
        target = self._path(name)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._tmp(target)
            write_atomic(tmp, data)  # whole, under a name of its own; then linked to the real name
            try:
                os.link(tmp, target)  # fails, atomically, when the name exists
                return True
            except FileExistsError:
                return False
            finally:
                tmp.unlink(missing_ok=True)
        except OSError as exc:
            raise self._unavailable(exc) from None

    def upload(self, path: Path, name: str) -> None:
        self._ready()
        target = self._path(name)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            copy_atomic(path, target)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise self._unavailable(exc) from None

    def download(self, name: str, path: Path) -> None:
        self._ready()
        src = self._path(name)
        try:
            if src.is_symlink():
                raise FileNotFoundError(errno.ENOENT, "a link, not an entry's file", str(src))
            shutil.copyfile(src, path, follow_symlinks=False)
        except FileNotFoundError:
            raise
        except OSError as exc:
            if exc.errno in LOCAL_WRITE_ERRORS:  # this machine's disk: said as a run's own writes are
                raise OSError(exc.errno, exc.strerror, str(path)) from None
            raise self._unavailable(exc) from None

    def list(self, prefix: str) -> Iterator[Listed]:
        self._ready()
        top = self._path(prefix.strip("/")) if prefix.strip("/") else self.root  # (through no link)
        if not top.is_dir() or top.is_symlink():
            return
        for folder, dirs, files in os.walk(top, followlinks=False):
            dirs.sort()
            for name in sorted(files):
                path = Path(folder) / name
                if name.startswith(".") and ".tmp-" in name:
                    continue
                st = path.lstat()
                rel = path.relative_to(self.root).as_posix()
                if rel.startswith(prefix):
                    yield Listed(rel, st.st_size,
                                 datetime.fromtimestamp(st.st_mtime, timezone.utc).isoformat(timespec="seconds"))

    def delete(self, names: Iterable[str]) -> None:
        self._ready()
        folders = set()
        for name in names:
            path = self._path(name)
            try:
                if path.is_symlink() or path.is_file():
                    path.unlink()
                    folders.add(path.parent)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise self._unavailable(exc) from None
        # Folders left empty go too, up to the store's top.
        for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
            while folder != self.root and self.root in folder.parents:
                try:
                    folder.rmdir()
                except OSError:
                    break
                folder = folder.parent
