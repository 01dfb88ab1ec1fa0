"""What every verb of the command line shares: the typer app, progress lines, errors, tables,
and the lab directory argument."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from labgen import __version__, lifecycle
from labgen.errors import ExitCode
from labgen.lab import tunnels
from labgen.lab.model import Lab
from labgen.term import err, out

if TYPE_CHECKING:
    from rich.console import Console

from labgen.report.tables import (
    PLAIN_WIDTH,
)


def either(words: list[str]) -> str:
    """'a, b or c': help names every tunnel kind from labgen/lab/tunnels.py."""
    return f"{', '.join(words[:-1])} or {words[-1]}"


app = typer.Typer(add_completion=True, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Stand up, prove and tear down Open vSwitch overlay labs: "
                       f"{either([k.title for k in tunnels.KINDS.values()])} tunnels "
                       "between VMs or between network namespaces on this host.")
box_app = typer.Typer(no_args_is_help=True, help="Build boxes locally.")
app.add_typer(box_app, name="box")


def tables() -> Console:
    """The rich console for tables on standard output (rich is loaded only for these).
    CI logs and pipes are not terminals: rich would squeeze tables into 80 columns there;
    they get 100 columns (tables are laid out to fit), or what COLUMNS says."""
    console = out.rich
    if not console.is_terminal and not os.environ.get("COLUMNS", "").isdigit():
        console.width = PLAIN_WIDTH
    return console


class ProgressPrinter:
    """The providers' Progress callback for a terminal or a log: progress lines with elapsed time: '  12.3s node1: provisioning'."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self, node: str, message: str) -> None:
        # One line each, however long (a URL, a path): logs are read line by line.
        err.line((f"{time.monotonic() - self.started:6.1f}s", "dim"), " ", (node, "bold"), f": {message}")


def fail(message: str, code: int = ExitCode.USAGE) -> NoReturn:
    err.line(("error:", "bold red"), f" {message}")
    raise typer.Exit(code)


def show_version(value: bool) -> None:
    if value:
        out.line(f"labgen {__version__}")
        raise typer.Exit()


@app.callback()
def root(version: Annotated[bool, typer.Option("--version", callback=show_version, is_eager=True,
                                               help="Show the version and exit.")] = False) -> None:
    pass


LabDir = Annotated[Path | None, typer.Argument(help="Lab directory (default: . or the only ./lab-*).", show_default=False)]


def load(directory: Path | None) -> tuple[Lab, Path]:
    lab_dir = lifecycle.find_lab_dir(directory)
    return lifecycle.load_lab(lab_dir), lab_dir


HypervisorUris = Annotated[list[str] | None, typer.Option("--host", metavar="URI", help="Also a libvirt host, e.g. qemu+ssh://root@hv-b/system (repeatable).")]
