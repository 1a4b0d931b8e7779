"""Shared CLI plumbing: folder flags; user errors become one line on stderr and exit code 2 (textnnunet.errors)."""
from __future__ import annotations

import argparse

# The commands take user_errors_exit and USER_ERROR_EXIT_CODE from here, beside the folder flags.
from textnnunet.errors import USER_ERROR_EXIT_CODE, user_errors_exit  # noqa: F401


def add_folder_args(parser: argparse.ArgumentParser, kinds=("raw", "preprocessed", "results")) -> None:
    for kind in kinds:
        parser.add_argument(f"--{kind}", default=None, metavar="PATH",
                            help=f"{kind} folder (default: $TEXTNNUNET_{kind})")
