"""User errors and how a command turns them into one line and exit code 2."""
from __future__ import annotations

import functools
import sys
from typing import Callable

USER_ERROR_EXIT_CODE = 2


class UserError(Exception):
    """A problem with the user's input or set-up (not a bug).

    The CLI prints the message as one line and exits with code 2, without a traceback.
    Messages name the file or setting and say what is wrong: "<thing>: <problem>".
    """


def user_errors_exit(main: Callable[..., int | None]) -> Callable[..., int]:
    """A command's main(argv): a UserError becomes "error: <message>" on stderr and exit code 2."""
    @functools.wraps(main)
    def wrapper(argv: list[str] | None = None) -> int:
        try:
            code = main(argv)
        except UserError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(USER_ERROR_EXIT_CODE)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            sys.exit(130)
        sys.exit(code or 0)

    return wrapper
