"""The command line: a thin layer that turns flags into Options and calls lifecycle;
tables and reports come from labgen/report, host checks from the providers (doctor.py).
The verbs are in *_verbs.py by what they act on; this module runs the one invoked."""
from __future__ import annotations

import inspect
import os
import sys

import typer

from labgen.cli.common import app
from labgen.errors import ExitCode
from labgen.term import err

# The verbs register themselves on the app when imported; --help lists them in this order.
# isort: off
from labgen.cli import lab_verbs, host_verbs, node_verbs, setup_verbs  # noqa: E402, F401
# isort: on


def _one_line_short_help(group: typer.Typer) -> None:
    """The command list shows each verb's first paragraph: given as one line, so that rich
    wraps it to the terminal instead of keeping the docstring's own line breaks."""
    for info in group.registered_commands:
        doc = inspect.getdoc(info.callback) if info.callback else None
        if info.short_help is None and doc:
            info.short_help = " ".join(doc.split("\n\n")[0].split())
    for sub in group.registered_groups:
        if sub.typer_instance is not None:
            _one_line_short_help(sub.typer_instance)


_one_line_short_help(app)

# typer vendors click; its UsageError is BadParameter's base class (no public name for it).
_UsageError: type[Exception] = typer.BadParameter.__mro__[1]


def _invoked(argv: list[str]) -> typer.Typer:
    """The app to run: when the first argument names a command, an app with that command
    alone. typer builds a click command of every registered command on each run (~15 ms of
    `labgen render`'s ~0.2 s); shell completion and everything else get the whole app."""
    if not argv or "_LABGEN_COMPLETE" in os.environ:
        return app
    for info in app.registered_commands:
        if (info.name or typer.main.get_command_name(info.callback.__name__)) == argv[0]:  # type: ignore[union-attr]
            one = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
            one.registered_callback, one.registered_commands = app.registered_callback, [info]
            one.info = app.info
            return one
    return app


def main() -> None:
    try:
        code = _invoked(sys.argv[1:])(standalone_mode=False, prog_name="labgen")
    except typer.Exit as exc:
        code = exc.exit_code
    except _UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":
            sys.exit(ExitCode.OK)     # typer has printed the help already
        # One line, like every other error: what is wrong, and where help is.
        ctx = getattr(exc, "ctx", None)
        cmd = ctx.command_path if ctx else "labgen"
        err.line(("error:", "bold red"), f" {getattr(exc, 'format_message', exc.__str__)()} (see {cmd} --help)")
        sys.exit(ExitCode.USAGE)
    except (typer.Abort, KeyboardInterrupt):
        err.line("interrupted")
        sys.exit(ExitCode.INTERRUPTED)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
