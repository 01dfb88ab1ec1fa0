"""A command on a node with its three streams as pipes, read as they come: what `labgen exec`
and `labgen capture` stream (Runner.run, by contrast, collects). LocalProcess runs it on this
host behind an argv prefix; SSHProcess (labgen/nodes/ssh.py) on a channel of an SSH connection."""
from __future__ import annotations

import os
import select
import signal
import subprocess
from typing import Protocol

CHUNK = 65536   # bytes read at once from a stream


class NodeProcess(Protocol):
    """A command started on a node (Runner.start), its three streams piped: read with
    chunks(), finished with exit_code()."""

    def send_eof(self) -> None: ...
    def write(self, data: bytes) -> None: ...
    def chunks(self, timeout: float) -> list[tuple[str, bytes]] | None:
        """('out'|'err', data) read within timeout; None once both streams ended."""
    def exit_code(self, timeout: float) -> int | None: ...
    def kill(self) -> None: ...


class LocalProcess(NodeProcess):
    def __init__(self, argv: list[str]):
        # Its own session: a Ctrl-C in the terminal reaches labgen only, which then stops
        # the command the same way on both providers (stdin EOF).
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, start_new_session=True)
        assert self.proc.stdin and self.proc.stdout and self.proc.stderr   # all three piped
        self.stdin = self.proc.stdin
        self.fds = {self.proc.stdout.fileno(): "out", self.proc.stderr.fileno(): "err"}

    def write(self, data: bytes) -> None:
        self.stdin.write(data)
        self.stdin.flush()

    def send_eof(self) -> None:
        try:
            self.stdin.close()
        except OSError:
            pass

    def chunks(self, timeout: float) -> list[tuple[str, bytes]] | None:
        if not self.fds:
            return None
        ready, _, _ = select.select(list(self.fds), [], [], timeout)
        got = []
        for fd in ready:
            data = os.read(fd, CHUNK)
            if data:
                got.append((self.fds[fd], data))
            else:
                del self.fds[fd]
        return got

    def exit_code(self, timeout: float) -> int | None:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        return 128 - code if code < 0 else code

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
