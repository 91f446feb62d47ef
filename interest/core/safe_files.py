"""The one way the package opens a file whose path came from data or from a bundle.

A path in ``photos.path``, a bundle part's name or a checkpoint name in a
bundle's ``backbone.id`` was written by whoever made the collection or the
bundle, so it may be absolute, climb out with ``..``, or name a FIFO,
``/dev/zero`` or a 50 GB file. :func:`open_file` (and :func:`read_file` on it)
resolves the path inside the folders it belongs to, opens it with
``O_NONBLOCK`` (opening a FIFO never waits for a writer), checks with
``fstat`` on the open descriptor that it is a regular file, and bounds its
size; anything else raises :class:`UnsafeFile` with a short ``reason``
(:data:`REASONS`), which callers record per photo or turn into their one-line
refusal. Nothing is read before these checks pass.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from pathlib import Path
from typing import BinaryIO, Iterable

from interest.core.errors import InterestError

#: why a file was not opened: outside its folders, not a regular file (FIFO, device, directory, a refused
#: link), over the size bound, absent, or an error of the operating system
REASONS = ("path_outside", "not_a_file", "too_large", "file_not_found", "unreadable")

#: the largest image file read (a photo's file, a thumbnail's source): an uncompressed 16-bit RGBA TIFF at
#: Pillow's decompression-bomb limit is about 715 MB, a real JPEG of that size under 100 MB
MAX_IMAGE_BYTES = 768 * 2**20


class UnsafeFile(InterestError):
    """A data-given path that is not opened; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, path: str | os.PathLike, reason: str, detail: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{path}: {detail}")


def resolve_inside(roots: Iterable[str | os.PathLike], relpath: str | os.PathLike) -> Path:
    """``relpath`` joined to the first of ``roots`` and resolved (links followed), if it lies inside one of them.

    An absolute ``relpath`` is taken as it is. Raises :class:`UnsafeFile`
    (``path_outside``) when the resolved path is outside every root.
    """
    roots = [Path(r).resolve() for r in roots]
    target = (roots[0] / relpath).resolve()
    if not any(target != r and r in target.parents for r in roots):
        where = " or ".join(str(r) for r in roots)
        raise UnsafeFile(relpath, "path_outside", f"outside {where}; refusing to open it")
    return target


def open_file(path: str | os.PathLike, *, max_bytes: int, roots: Iterable[str | os.PathLike] | None = None,
              follow_links: bool = True, dir_fd: int | None = None) -> BinaryIO:
    """Open a data-given file for reading in binary, after checking it is a regular file of at most ``max_bytes``.

    ``roots``: the folders ``path`` must resolve inside (relative paths are
    relative to the first). ``follow_links=False`` refuses a symbolic link
    itself (``not_a_file``), as a bundle does for its parts. ``dir_fd``: open
    ``path`` relative to that open directory. Raises :class:`UnsafeFile`.
    """
    if roots is not None:
        path = resolve_inside(roots, path)
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
    if not follow_links:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, dir_fd=dir_fd) if dir_fd is not None else os.open(path, flags)
    except (FileNotFoundError, NotADirectoryError):
        raise UnsafeFile(path, "file_not_found", "file not found") from None
    except IsADirectoryError:
        raise UnsafeFile(path, "not_a_file", "not a regular file (a directory)") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_links:
            raise UnsafeFile(path, "not_a_file", "a symbolic link, not a file") from None
        raise UnsafeFile(path, "unreadable", exc.strerror or type(exc).__name__) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "a device, pipe or socket"
            raise UnsafeFile(path, "not_a_file", f"not a regular file ({kind})")
        if st.st_size > max_bytes:
            raise UnsafeFile(path, "too_large", f"{st.st_size} bytes, over the limit of {max_bytes}")
        # a regular file never blocks; the flag only had to keep the open itself from waiting
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_file(path: str | os.PathLike, *, max_bytes: int, roots: Iterable[str | os.PathLike] | None = None,
              follow_links: bool = True, dir_fd: int | None = None) -> bytes:
    """The bytes of a data-given file, opened by :func:`open_file`; a file that grows past its size while read is refused."""
    with open_file(path, max_bytes=max_bytes, roots=roots, follow_links=follow_links, dir_fd=dir_fd) as f:
        size = os.fstat(f.fileno()).st_size
        # ask for the size fstat gave (one more byte shows growth): read(n) allocates n bytes up front
        try:
            data = f.read(size + 1)
        except OSError as exc:
            raise UnsafeFile(path, "unreadable", exc.strerror or type(exc).__name__) from None
    if len(data) > size:
        raise UnsafeFile(path, "too_large", "grew while being read")
    return data
