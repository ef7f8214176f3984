"""Errors that end a run with one clear line instead of a traceback."""


class UserError(Exception):
    """A bad configuration or input the user can fix (unknown preset, missing data, corrupt checkpoint)."""
