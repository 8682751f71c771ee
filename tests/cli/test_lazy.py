"""The root command group loads each command only when it runs; its listing must match the commands."""

from __future__ import annotations

import pytest

from segkit.cli import COMMANDS, load_command


@pytest.mark.parametrize("name", list(COMMANDS))
def test_listed_short_help_is_the_commands_own(name: str) -> None:
    command = load_command(name)
    own = (command.short_help or command.help or "").strip().split("\n\n")[0].replace("\n", " ")
    assert COMMANDS[name][1] == own, f"update segkit.cli.COMMANDS[{name!r}] to the command's first paragraph"


def test_unknown_command_suggests(run_cli) -> None:
    result = run_cli("trian")
    assert result.code == 2
    assert result.err.splitlines()[0] == "error: No such command 'trian'. Did you mean 'train'?"
