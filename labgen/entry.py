"""The `labgen` command's entry point: `labgen --version` is answered before the CLI stack
(typer, rich, the lab machinery: about a quarter of a second) is imported; everything else
goes to cli.main."""
from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:] == ["--version"]:
        from . import __version__
        print(f"labgen {__version__}")
        return
    from labgen.cli.app import main as cli_main
    cli_main()
