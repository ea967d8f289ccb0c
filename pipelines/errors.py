"""Errors shared by every stage.

``UserError`` is the one exception type that means "the input or configuration is wrong and a
person can fix it": the CLI prints its message on one line and exits non-zero instead of
showing a traceback.
"""


class UserError(Exception):
    """Bad input or configuration, reported to the user as one line naming the culprit."""
