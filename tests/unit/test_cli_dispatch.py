"""Only the invoked command is built (cli._invoked): every command is still reachable by its
own name, and anything else (help, groups, completion, typos) gets the whole app."""
from __future__ import annotations

import typer.main

from labgen.cli import app as cli


def _names(app: typer.Typer) -> list[str]:
    return sorted(typer.main.get_command(app).commands)    # type: ignore[attr-defined]


def test_each_command_alone_is_the_command_the_whole_app_has():
    whole = typer.main.get_command(cli.app)
    for name in _names(cli.app):
        if name == "box":
            assert cli._invoked([name, "build"]) is cli.app      # a group: the whole app
            continue
        one = cli._invoked([name, "gre"])
        assert one is not cli.app and _names(one) == [name]
        built = typer.main.get_command(one).commands[name]      # type: ignore[attr-defined]
        assert [p.name for p in built.params] == [p.name for p in whole.commands[name].params]


def test_help_typos_and_completion_get_the_whole_app(monkeypatch):
    for argv in ([], ["--help"], ["--version"], ["rendr", "gre"], ["box"]):
        assert cli._invoked(argv) is cli.app
    monkeypatch.setenv("_LABGEN_COMPLETE", "bash_complete")
    assert cli._invoked(["render", "gre"]) is cli.app
