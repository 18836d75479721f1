"""The shared step stores ftspec can use, by URL scheme: one row per kind of store
(ftspec.core.storeurl says which schemes there are and checks a URL)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ftspec.core.storeurl import StoreURL, parse
from ftspec.store.remote import Objects, RemoteStore, RemoteUnavailable
from ftspec.store.remote_fs import FolderObjects


def _s3(where: StoreURL, root: Path) -> Objects:
    # Deferred: boto3 is imported only where an S3 store is used (light commands never need it).
    try:
        from ftspec.backends.remote_s3 import S3Objects  # imports boto3 at its top
    except ImportError as exc:
        raise RemoteUnavailable(f"store {where}: s3:// stores need boto3 ({exc}): pip install 'ftspec[remote]'") \
            from None

    return S3Objects(where)


def _folder(where: StoreURL, root: Path) -> Objects:
    return FolderObjects(folder_of(where, root), str(where))


def folder_of(where: StoreURL, root: Path) -> Path:
    """A folder store's folder: as written when absolute, else under the repository ``root``."""
    path = Path(where.path).expanduser()
    return path if path.is_absolute() else Path(root) / path


STORES: dict[str, Callable[[StoreURL, Path], Objects]] = {
    "s3": _s3,
    "file": _folder,
}


def open_store(url: str, root: Path) -> RemoteStore:
    """The shared store at ``url`` (StoreURLError for a URL ftspec cannot use;
    RemoteUnavailable when its library cannot even start, e.g. a broken ~/.aws profile)."""
    where = parse(url)
    return RemoteStore(STORES[where.scheme](where, Path(root)))
