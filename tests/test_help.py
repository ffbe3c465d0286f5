"""Every command's --help reads at 80 columns: each option's name is printed whole (none cut to `--backoff-li…`), and
no line runs past the width. The command tree is walked from the real app, so a command added later is checked too.
In-process through click's runner (about 1 s for all of them)."""

from __future__ import annotations

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from resnet_study.jobs import cli

WIDTH = 80


def _commands(group, path: tuple[str, ...] = ()):
    yield path, group
    if hasattr(group, "commands"):  # a group (Typer's own click)
        for name, sub in group.commands.items():
            if not sub.hidden:
                yield from _commands(sub, (*path, name))


COMMANDS = list(_commands(get_command(cli.app)))


def test_the_walk_finds_every_command():
    names = {" ".join(p) for p, _ in COMMANDS}
    assert {"train", "sweep render", "sweep local", "bench train", "results table", "serve"} <= names


@pytest.mark.parametrize("path,command", COMMANDS, ids=[" ".join(p) or "resnet-study" for p, _ in COMMANDS])
def test_help_at_80_columns_shows_every_option_whole(path, command):
    result = CliRunner().invoke(cli.app, [*path, "--help"], env={"COLUMNS": str(WIDTH)}, terminal_width=WIDTH)
    assert result.exit_code == 0, result.output
    out = result.output
    too_wide = [line for line in out.splitlines() if len(line) > WIDTH]
    assert not too_wide, too_wide
    assert "…" not in out, out  # an ellipsis: something was cut
    words = set(out.replace(",", " ").split())
    for param in command.params:
        for opt in (*param.opts, *param.secondary_opts):
            if opt.startswith("-"):
                assert opt in words, f"{' '.join(path)} --help does not show {opt} whole:\n{out}"
