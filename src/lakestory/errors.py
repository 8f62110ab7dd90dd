"""Errors that end a command with a message for the user rather than a traceback."""


class ExpectationError(RuntimeError):
    """A `fail` expectation failed on some rows; the run stopped before writing anything.

    The message names the rule and the count, never a value."""


class AccessDeniedError(RuntimeError):
    """A role may not run a statement (`lakestory sql --role`); nothing of it was run."""


class WrongKeyError(RuntimeError):
    """The token key is not the one a dataset's vault was made with: tokens made with it would
    match no id, and every person would get a new one. The message gives fingerprints only."""


class StageError(RuntimeError):
    """A stage cannot do its work with the data it has (an empty silver table, every row
    quarantined, a feature with no value in train, a label of one class); nothing was
    written. The message says what happened and what to change, never a value."""
