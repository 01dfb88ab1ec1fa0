"""Running commands on a lab node: the one seam every provider plugs into.

Verification only ever talks to a Runner, so the same checks work on a namespace-emulated
node (LocalRunner with an nsenter prefix) and on a VM (SSHRunner in labgen.nodes.ssh).
"""
from __future__ import annotations

import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from labgen.nodes.process import LocalProcess, NodeProcess

# Exit code reported when a command overran its timeout (the same as coreutils' timeout).
TIMEOUT_EXIT = 124


class RunnerError(Exception):
    """The node itself could not be reached (not: the command failed)."""


@dataclass(frozen=True)
class Result:
    command: str
    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @property
    def output(self) -> str:
        """stdout and stderr together, for evidence."""
        return (self.stdout + ("\n" if self.stdout and self.stderr else "") + self.stderr).strip()


class Runner(Protocol):
    node: str
    # Timeouts are upper bounds for a hung node, never expected durations; a runner to an
    # emulated VM stretches them (a starved guest may take many times longer, and is not hung).
    timeout_scale: float

    def run(self, command: str, timeout: float = 30.0,
            on_output: Callable[[str], None] | None = None) -> Result:
        """Run a shell command as root on the node. A failing command is a Result with a
        non-zero exit code; an overrun gives exit code TIMEOUT_EXIT. Raises RunnerError only
        when the node cannot be reached at all. `on_output`, if given, gets stdout in whole
        lines as they come (a runner that cannot stream gives it all once, at the end)."""
        ...

    def start(self, command: str) -> NodeProcess:
        """Run a shell command as root on the node with its three streams piped, to read
        as they come (labgen exec and capture). Raises RunnerError when the node cannot be
        reached."""
        ...

    def close(self) -> None: ...


class LocalRunner:
    """Runs `sh -c COMMAND` on this host, behind an optional argv prefix (e.g. nsenter ...)."""

    timeout_scale = 1.0

    def __init__(self, node: str, prefix: Sequence[str] = ()):
        self.node = node
        self.prefix = list(prefix)

    def run(self, command: str, timeout: float = 30.0,
            on_output: Callable[[str], None] | None = None) -> Result:
        argv = [*self.prefix, "sh", "-c", command]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                                  errors="replace")
        except subprocess.TimeoutExpired as exc:
            out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
            return Result(command, TIMEOUT_EXIT, out, f"timed out after {timeout:g} s")
        except OSError as exc:
            raise RunnerError(f"{self.node}: cannot run {argv[0]}: {exc}") from exc
        if on_output is not None and proc.stdout:
            on_output(proc.stdout)
        return Result(command, proc.returncode, proc.stdout, proc.stderr)

    def start(self, command: str) -> NodeProcess:
        return LocalProcess([*self.prefix, "sh", "-c", command])

    def close(self) -> None:
        pass
