"""``UserError``: the base of errors caused by what a user passed in (a config value, a model, a tensor).

Recipes turn these into one ``error: ...`` line and exit code 2 (``xai_train.cli.run_main``); anything else
is a bug and keeps its traceback. A user error is a ``ValueError``, so API callers can catch it as one.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input: the message says what was wrong, where, and what would be right.

    Example:
        >>> isinstance(UserError("x"), ValueError)
        True
    """


class NonFiniteTrainingError(UserError, FloatingPointError):
    """A NaN/Inf loss stopped training (raised on every rank alike); the message names the values, the last good
    checkpoint and what to change. A ``FloatingPointError`` too, and a user error: recipes print one line.

    Example:
        >>> isinstance(NonFiniteTrainingError("x"), FloatingPointError)
        True
    """
