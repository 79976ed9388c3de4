"""One exception type for every input problem a user can fix, so stages can print one line."""


class MedsegError(Exception):
    """A problem with the user's input (params, files) that is reported as one line, no traceback."""
