"""Errors meant for the user: the CLI prints the message as one line and exits non-zero."""


class UserError(Exception):
    """Bad input (a file, row, field or folder); the message names it and what is wrong."""
