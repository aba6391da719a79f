"""The command line: one module per command (argument parsing, file I/O, progress, report) calling one library
function. :func:`main` builds the parser from :data:`COMMANDS` and dispatches; ``blindfast/__main__.py`` only calls
it."""

from __future__ import annotations

import argparse
import importlib

import blindfast
from blindfast.cli.common import CommandError

__all__ = ["main", "COMMANDS"]

# Modules of blindfast.cli, each with register(commands) adding its subcommand(s), in --help order.
COMMANDS = ("info", "demo", "psf_estimate", "deblur", "train_prior", "train_shipped", "export_prior",
            "train_kernel_denoiser", "train_cl")


def build_parser() -> argparse.ArgumentParser:
    """The ``blindfast`` parser with every command of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(prog="blindfast", description=blindfast.__doc__)
    parser.add_argument("--version", action="version", version=f"blindfast {blindfast.__version__}")
    commands = parser.add_subparsers(title="commands", dest="command")
    for name in COMMANDS:
        importlib.import_module(f"blindfast.cli.{name}").register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); returns the exit status.

    A command's bad option value or input (``ValueError``, :class:`CommandError`, an ``OSError`` such as an
    unreadable image) exits with status 2 and the message under that command's usage, never a traceback.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.run(args)
    except (ValueError, CommandError, OSError) as err:  # the message names what was expected and what was got
        args.command_parser.error(str(err))
