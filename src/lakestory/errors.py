"""Errors that end a command with a message for the user rather than a traceback."""


class ExpectationError(RuntimeError):
    """A `fail` expectation failed on some rows; the run stopped before writing anything.

    The message names the rule and the count, never a value."""


class AccessDeniedError(RuntimeError):
    """A role may not run a statement (`lakestory sql --role`); nothing of it was run."""
