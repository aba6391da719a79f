"""What the commands share: printing a key-value table, the default device, and turning an error into exit 2."""

from __future__ import annotations

import argparse

__all__ = ["print_table", "default_device", "add_command", "CommandError"]


class CommandError(Exception):
    """A bad option or input file: the command prints the message under its usage and exits with status 2."""


def print_table(rows: list[tuple[str, object]]) -> None:
    """``key  value`` lines, keys left-aligned to the longest."""
    width = max(len(key) for key, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


def default_device(device: str | None) -> str:
    """``device``, or "cuda" when available, else "cpu"."""
    import torch

    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def add_command(commands: argparse._SubParsersAction, name: str, run, **kwargs) -> argparse.ArgumentParser:
    """A subcommand parser whose ``run(args)`` is called by :func:`blindfast.cli.main`; errors are shown under its
    own usage."""
    command = commands.add_parser(name, **kwargs)
    command.set_defaults(run=run, command_parser=command)
    return command
