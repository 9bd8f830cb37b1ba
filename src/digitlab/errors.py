"""The one exception type for mistakes a user can fix.

The CLI turns a :class:`DigitlabError` into one line on stderr and exit code 2;
anything else is a bug and keeps its traceback.
"""


class DigitlabError(Exception):
    """A user-caused problem (bad file, bad recipe, no network) with a message saying what to do."""
