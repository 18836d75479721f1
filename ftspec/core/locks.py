"""Every lock ftspec takes, on a lock file, through the operating system (flock; msvcrt
where there is no fcntl), which drops a lock when its holder dies. Standard library only.

A lock file is never followed, truncated or written: it is opened without following a
symbolic link, created if missing (mode 0644 less the umask) and must then be a regular
file — a link, a FIFO or a device planted under a lock's name is refused with one line
instead of being opened, truncated or waited on. Asking whether a lock is held
(:func:`held`) creates nothing and takes no lock a writer would wait for.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from pathlib import Path

from ftspec.core.errors import Pos, SpecError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
    import msvcrt

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_FLAGS = _NOFOLLOW | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
_BUSY = {errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES, errno.EDEADLK}
MODE = 0o644


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def _not_a_lock(path: Path, what: str) -> SpecError:
    return SpecError.one(Pos(str(path)), "", f"is {what}, not a lock file ftspec made; it was not opened",
                         "remove it if no ftspec run is using this folder")


def _open(path: Path, create: bool) -> int | None:
    """A descriptor on the regular file ``path`` (None: missing and not ``create``), never
    through a link; SpecError when something else has the name."""
    if not _NOFOLLOW and os.path.islink(path):  # no O_NOFOLLOW (Windows): the best check there is
        raise _not_a_lock(path, "a symbolic link")
    flags = _FLAGS | (os.O_CREAT if create else 0) | (os.O_RDONLY if fcntl is not None else os.O_RDWR)
    try:
        fd = os.open(path, flags, MODE)
    except FileNotFoundError:
        if create:
            raise
        return None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK) or os.path.islink(path):
            raise _not_a_lock(path, "a symbolic link") from None
        if exc.errno in (errno.ENXIO, errno.EISDIR):  # a socket; a folder
            raise _not_a_lock(path, _kind(os.lstat(path).st_mode)) from None
        raise SpecError.one(Pos(str(path)), "", f"cannot open the lock file: {exc.strerror or exc}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise _not_a_lock(path, _kind(mode))
    return fd


def _lock(fd: int, path: Path, shared: bool, blocking: bool) -> bool:
    """Take the lock on ``fd``; False when another holds it and not ``blocking``."""
    try:
        if fcntl is not None:
            flag = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
            fcntl.flock(fd, flag if blocking else flag | fcntl.LOCK_NB)
        else:  # no shared locks there: a reader takes the writer's lock for as long as it looks
            while True:  # LK_LOCK gives up after ten seconds; a run waits for as long as it takes
                try:
                    msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
                    break
                except OSError as exc:
                    if not blocking or exc.errno not in _BUSY:
                        raise
                    time.sleep(0.5)
    except OSError as exc:
        if not blocking and exc.errno in _BUSY:
            return False
        raise SpecError.one(Pos(str(path)), "", f"cannot lock the lock file: {exc.strerror or exc} "
                            "(does this file system support locks?)") from None
    return True


def _unlock(fd: int) -> None:
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
        else:
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
    finally:
        os.close(fd)


class FileLock:
    """An exclusive (or ``shared``) lock on the file ``path``, created if missing; one
    object is one holder. ``acquire(blocking=False)`` says whether it was taken."""

    def __init__(self, path: Path | str, shared: bool = False):
        self.path = Path(path)
        self.shared = shared
        self._fd: int | None = None

    @property
    def is_locked(self) -> bool:
        return self._fd is not None

    def acquire(self, blocking: bool = True) -> bool:
        if self._fd is not None:
            return True
        fd = _open(self.path, create=True)
        try:
            taken = _lock(fd, self.path, self.shared, blocking)
        except BaseException:
            os.close(fd)
            raise
        if not taken:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            _unlock(fd)

    def __enter__(self) -> "FileLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def held(path: Path | str) -> bool:
    """Whether a live process holds the lock on ``path``, asked without creating, writing or
    following anything: a missing lock file, or one that is not a regular file ftspec
    made, is held by nobody."""
    try:
        fd = _open(Path(path), create=False)
    except (SpecError, OSError):
        return False
    if fd is None:
        return False
    try:
        free = _lock(fd, Path(path), shared=True, blocking=False)
    except SpecError:  # a file system without locks: nobody can hold one there
        os.close(fd)
        return False
    if free:
        _unlock(fd)
    else:
        os.close(fd)
    return not free
