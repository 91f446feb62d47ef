"""The one exception type a user ever sees.

Anything a user can cause (a missing table, a bad image, a model from another
backbone) is raised as :class:`InterestError` with a one-line message that
names the file, column or id and says what to do. The CLI prints the message
and exits with status 2; everything else is a bug and keeps its traceback.
"""


class InterestError(Exception):
    """A user-facing error: one line, names the culprit, says what to do."""
