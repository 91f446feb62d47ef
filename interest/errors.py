"""The one exception type a user ever sees.

Anything a user can cause (a missing table, a bad image, a model from another
backbone) is raised as :class:`InterestError` with a one-line message that
names the file, column or id and says what to do. The CLI prints the message
and exits with status 2; everything else is a bug and keeps its traceback.
"""


class InterestError(Exception):
    """A user-facing error: one line, names the culprit, says what to do."""


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
