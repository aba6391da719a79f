"""What the command-line tests share: running a command that must fail as a user's mistake."""

import pytest

from blindfast.__main__ import main


def command_error(capsys, argv: list[str]) -> str:
    """Runs ``blindfast argv``; asserts it exits with status 2 under the command's usage, without a traceback, and
    returns what it printed on stderr."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"usage: blindfast {argv[0]}" in err and "Traceback" not in err
    return err
