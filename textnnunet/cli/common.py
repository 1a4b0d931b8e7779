"""Shared CLI plumbing: user errors become one line on stderr and exit code 2."""
from __future__ import annotations

import argparse
import functools
import sys
from typing import Callable

from textnnunet.errors import UserError

USER_ERROR_EXIT_CODE = 2


def user_errors_exit(main: Callable[..., int | None]) -> Callable[..., int]:
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


def add_folder_args(parser: argparse.ArgumentParser, kinds=("raw", "preprocessed", "results")) -> None:
    for kind in kinds:
        parser.add_argument(f"--{kind}", default=None, metavar="PATH",
                            help=f"{kind} folder (default: $TEXTNNUNET_{kind})")
