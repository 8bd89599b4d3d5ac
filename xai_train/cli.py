"""How every recipe ends: a user error becomes one ``error: ...`` line on stderr and exit code 2.

A recipe's ``if __name__ == "__main__":`` block is ``run_main(main)``. ``main(argv)`` runs as usual; if it
raises one of :data:`USER_ERRORS` (a bad config value, a missing data file, a checkpoint that does not
load, a model that breaks the GAN contract, ...) the user sees one line saying what was wrong, where,
and what would be right — no traceback. Any other exception is a bug and keeps its full traceback.
``--debug`` on the command line (removed before ``main`` sees it) or ``XAI_TRAIN_DEBUG=1`` in the
environment shows the traceback of user errors too.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from xai_train.checkpoint import CheckpointError
from xai_train.data import DataError
from xai_train.errors import UserError

USER_ERRORS: tuple[type[BaseException], ...] = (UserError, DataError, CheckpointError)
"""Exceptions caused by the user's input (``ConfigError`` is a ``UserError``); everything else is a bug."""

DEBUG_FLAG = "--debug"
DEBUG_ENV = "XAI_TRAIN_DEBUG"


def count(text: str) -> int:
    """argparse type for a count (images, samples, queries, batch size): a whole number >= 1.

    Example:
        >>> count("8")
        8
        >>> count("-1")
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: must be a whole number >= 1, got '-1'
    """
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return value


def one_line(err: BaseException) -> str:
    """The error's message on one line (a YAML parser's multi-line message included).

    Example:
        >>> one_line(ValueError("config file 'a.yaml' is not valid YAML:\\n  line 3"))
        "config file 'a.yaml' is not valid YAML: line 3"
    """
    text = " ".join(str(err).split())
    if isinstance(err, KeyError) and len(err.args) == 1:
        text = str(err.args[0])  # KeyError's str() adds quotes
    return text or type(err).__name__


def debug_requested(argv: Sequence[str]) -> bool:
    """True if ``--debug`` is among the arguments or ``XAI_TRAIN_DEBUG`` is set to 1/true/yes."""
    return DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes")


def run_main(
    main: Callable[[list[str]], Any],
    argv: Sequence[str] | None = None,
    *,
    user_errors: tuple[type[BaseException], ...] = (),
) -> NoReturn:
    """Runs ``main(argv)`` and exits: 0 (or ``main``'s int result), 2 with one line for a user error.

    Args:
        main: the recipe's ``main(argv) -> result``; an int result is the exit code.
        argv: the arguments (default ``sys.argv[1:]``); ``--debug`` is removed before ``main`` sees them.
        user_errors: further exception types this recipe counts as user errors (e.g. ``FileNotFoundError``
            for a run folder named on the command line).

    Raises:
        SystemExit: always (the exception of a bug propagates unchanged instead).

    Example:
        >>> from xai_train.config import ConfigError
        >>> def main(argv):
        ...     raise ConfigError("train.max_steps=-3: must be >= 1")
        >>> import contextlib, io
        >>> stderr = io.StringIO()
        >>> with contextlib.redirect_stderr(stderr):
        ...     try:
        ...         run_main(main, [])
        ...     except SystemExit as exit:
        ...         print(exit.code)
        2
        >>> stderr.getvalue()
        'error: train.max_steps=-3: must be >= 1\\n'
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(args)
    args = [arg for arg in args if arg != DEBUG_FLAG]
    try:
        result = main(args)
    except USER_ERRORS + tuple(user_errors) as err:
        if debug:
            raise
        print(f"error: {one_line(err)}", file=sys.stderr)
        sys.exit(2)
    sys.exit(result if isinstance(result, int) and not isinstance(result, bool) else 0)
