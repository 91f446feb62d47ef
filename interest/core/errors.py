"""The one exception type a user ever sees.

Anything a user can cause (a missing table, a bad image, a model from another
backbone) is raised as :class:`InterestError` with a one-line message that
names the file, column or id and says what to do. The CLI prints the message
and exits with status 2; everything else is a bug and keeps its traceback.
A full disk (:class:`DiskFull`) is one line too, with exit status 1: the
input was right, the machine was not.
"""

import errno
import os


class InterestError(Exception):
    """A user-facing error: one line, names the culprit, says what to do."""


#: the errors of a disk that cannot take more: no space, over quota, an I/O error of the device
_DISK_ERRNOS = frozenset(getattr(errno, name) for name in ("ENOSPC", "EDQUOT", "EIO") if hasattr(errno, name))
#: how pyarrow and SQLite word the same thing when they give no errno, and the errno it stands for
_DISK_TEXTS = {"No space left on device": errno.ENOSPC, "database or disk is full": errno.ENOSPC,
               "Disk quota exceeded": getattr(errno, "EDQUOT", errno.ENOSPC), "Input/output error": errno.EIO}


class DiskFull(Exception):
    """A write failed because the disk is full (or over quota, or failing): the CLI prints one line and exits 1.

    Not an :class:`OSError`, so that no per-file ``except OSError`` mistakes it for one bad photo and goes on
    filling the disk; the temporary file of the write has been removed and every finished file is intact.
    """

    def __init__(self, path: object, cause: BaseException) -> None:
        self.path = str(path)
        code = cause.errno if getattr(cause, "errno", None) in _DISK_ERRNOS else _disk_errno(cause)
        self.why = os.strerror(code)
        super().__init__(f"{self.path}: {self.why}")


def _disk_errno(exc: BaseException) -> int:
    return next((code for text, code in _DISK_TEXTS.items() if text in str(exc)), errno.ENOSPC)


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it was raised from) is a full disk, a quota or an I/O error of the device."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, DiskFull) or getattr(exc, "errno", None) in _DISK_ERRNOS:
            return True
        if isinstance(exc, OSError) or type(exc).__name__ in ("OperationalError", "ArrowIOError"):
            if any(text in str(exc) for text in _DISK_TEXTS):
                return True
        exc = exc.__cause__ or exc.__context__
    return False


def require(module: str, extra: str, purpose: str):
    """Import the optional dependency ``module``, or raise the one-line error naming the extra to install.

    Every optional part checks its dependencies this way, so a user without
    them reads e.g. "interest serve needs fastapi: pip install 'interest[serve]'".
    """
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise InterestError(f"{purpose} needs {module.split('.')[0]}: pip install 'interest[{extra}]'") from None


def not_a_model_bundle(path) -> InterestError:
    """The one error for a path that holds no model bundle, worded the same by every command that meets it."""
    return InterestError(f"{path}: not a model bundle (no model.json); train one with `interest train DATA --out {path}`")


def one_line(exc: BaseException, limit: int | None = None) -> str:
    """An exception's message cut to its first line (at most ``limit`` characters), or its type's name when it has none.

    User-facing errors are one line: every message that quotes a library's exception quotes it through this.
    """
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if limit is None else line[:limit]
