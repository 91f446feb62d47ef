"""Bundle directories on disk: one writer at a time across processes, atomic switches, consistent reads.

A bundle is replaced whole: the new version is written into a temporary
directory beside it and switched in with one atomic rename (``renameat2``
with ``RENAME_EXCHANGE`` on Linux; elsewhere two renames, with a moment in
between when the path is missing). A reader opens the directory once and
reads every file relative to that handle, so it sees one version even if a
writer switches in another meanwhile; should that older version vanish
under it, :func:`read_consistently` tries again on the new one.

Writers (``write_bundle``, the service's personalisation, ``interest
personalize``) hold :func:`bundle_lock`, an ``fcntl.flock`` on
``.NAME.lock`` beside the bundle (beside, not inside: the directory itself
is swapped, and a lock inside it would be a different file for the next
writer). The lock is re-entrant within a process, so a caller holding it
can save without deadlocking itself. Without ``fcntl`` (Windows) it only
serialises the threads of one process.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, TypeVar

from interest.core.errors import InterestError, not_a_model_bundle
from interest.core.safe_files import UnsafeFile, read_file

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

T = TypeVar("T")

MAX_PART_BYTES = 8 * 2**30  # no part of a real bundle comes near; a link to /dev/zero would never end
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def lock_path(path: str | os.PathLike) -> Path:
    """The lock file guarding the bundle at ``path`` (beside it)."""
    path = Path(path).absolute()
    return path.parent / f".{path.name}.lock"


class _ProcessLock:
    def __init__(self) -> None:
        self.rlock = threading.RLock()
        self.depth = 0
        self.fd: int | None = None


_locks: dict[str, _ProcessLock] = {}
_locks_guard = threading.Lock()


@contextlib.contextmanager
def bundle_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold the write lock of the bundle at ``path``: other threads and processes wait.

    Hold it across a read-modify-write (load, personalize, save) so that two
    writers never lose each other's changes.
    """
    key = str(lock_path(path))
    with _locks_guard:
        lock = _locks.setdefault(key, _ProcessLock())
    with lock.rlock:
        if lock.depth == 0 and fcntl is not None:
            try:
                Path(key).parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(key, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise InterestError(
                    f"{key}: cannot create the bundle's lock file ({exc.strerror}); saving needs a writable folder"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except BaseException:
                os.close(fd)
                raise
            lock.fd = fd
        lock.depth += 1
        try:
            yield
        finally:
            lock.depth -= 1
            if lock.depth == 0 and lock.fd is not None:
                fd, lock.fd = lock.fd, None
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)


def switch_in(new: Path, path: Path) -> None:
    """Make directory ``new`` the one at ``path``, atomically where the system allows; the old one is removed."""
    if not path.exists():
        os.replace(new, path)
        return
    if _exchange(new, path):
        shutil.rmtree(new, ignore_errors=True)  # ``new`` now holds the previous version
        return
    # no atomic exchange here: two renames; a crash between them leaves the old version in .NAME.*.old/bundle
    import tempfile

    old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
    os.replace(path, old / "bundle")
    os.replace(new, path)
    shutil.rmtree(old, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step with Linux's renameat2(RENAME_EXCHANGE); False where that is unavailable."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, f"cannot switch in the new version of {b}: {os.strerror(err)}")


class BundleDir:
    """An open bundle directory: every read is relative to the directory opened, one version throughout."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self.identity: tuple[int, int] | None = None
        if os.open in os.supports_dir_fd and hasattr(os, "O_DIRECTORY"):
            try:
                self._fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
            except FileNotFoundError:
                raise not_a_model_bundle(path) from None
            except NotADirectoryError:
                raise not_a_model_bundle(path) from None
            st = os.fstat(self._fd)
            self.identity = (st.st_dev, st.st_ino)
        elif not path.is_dir():
            raise not_a_model_bundle(path)

    def read(self, name: str, max_bytes: int = MAX_PART_BYTES) -> bytes | None:
        """The bytes of regular file ``name`` in the bundle (None if absent), refusing anything over ``max_bytes``.

        Read through :func:`interest.core.safe_files.read_file`: a FIFO or a device (or a link to one) is refused
        before anything is read, so a hostile part cannot hang a load. Links are followed: a Hub snapshot's
        parts are links into the cache's blobs.
        """
        try:
            if self._fd is not None:
                return read_file(name, max_bytes=max_bytes, dir_fd=self._fd)
            return read_file(self.path / name, max_bytes=max_bytes)
        except UnsafeFile as exc:
            if exc.reason == "file_not_found":
                return None
            detail = str(exc).split(": ", 1)[1]
            raise InterestError(f"{self.path / name}: {detail}; restore the bundle") from None

    def replaced(self) -> bool:
        """Whether the path now names another directory than the one opened (a writer switched a version in)."""
        if self.identity is None:
            return False
        try:
            st = os.stat(self.path)
        except OSError:
            return True
        return (st.st_dev, st.st_ino) != self.identity

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def read_consistently(path: Path, load: Callable[[BundleDir], T], attempts: int = 4) -> T:
    """``load(BundleDir(path))``, again (a few times) when it failed because a writer switched versions meanwhile."""
    for attempt in range(attempts):
        last = attempt == attempts - 1
        try:
            bundle = BundleDir(path)
        except InterestError:
            # the two-rename fallback leaves a moment with no bundle at the path
            if last or not _save_in_progress(path):
                raise
            time.sleep(0.02 * (attempt + 1))
            continue
        try:
            return load(bundle)
        except InterestError:
            if last or not bundle.replaced():
                raise
        finally:
            bundle.close()
    raise AssertionError("unreachable")


def _save_in_progress(path: Path) -> bool:
    try:
        return any(p.name.startswith(f".{path.name}.") and p.name.endswith((".tmp", ".old"))
                   for p in path.parent.iterdir())
    except OSError:
        return False
