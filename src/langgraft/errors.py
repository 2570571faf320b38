"""The one error type users see.

Every input problem (a missing file, a bad config key, a broken JSON line) is raised as `UserError` with a
message that names the file, line, field or flag. The CLI prints it as one line and exits non-zero; anything
else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input, reported as one line without a traceback."""
