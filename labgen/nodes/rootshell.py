"""One long-lived root shell on an SSH channel, running commands one at a time.

On an emulated VM a new SSH channel per command costs sshd's session set-up, the login
shell and a sudo with its PAM stack: about a second of the guest's CPU each
(docs/benchmarks.md). SSHRunner keeps a few of these shells per node instead: one channel
and one sudo each, opened when first needed. A command is written to the shell's stdin as
`sh -c COMMAND </dev/null` (its own process, as with a channel of its own: a syntax error, an
`exit` or a `cd` stays inside it; and it never reads the commands that follow), then a marker
with a fresh random token, on stdout with the exit code and on stderr, ends its output.
"""
from __future__ import annotations

import re
import secrets
import select
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass

import paramiko

_CHUNK = 65536
# What the channel runs: the shell that reads the commands (the runner wraps it in sudo).
SHELL = "exec sh"


@dataclass
class Outcome:
    """How one command went: finished (code is its exit code), ran out of time (timed_out),
    or the shell ended first (code is the shell's exit status, None if it sent none)."""
    code: int | None
    out: bytes
    err: bytes
    timed_out: bool = False
    ended: bool = False


class RootShell:
    def __init__(self, transport: paramiko.Transport, chan: paramiko.Channel):
        self.transport = transport
        self.chan = chan
        self.used = False       # has finished a command (so it worked once)

    @property
    def usable(self) -> bool:
        """Still open, and nothing written to it since its last command ended. A command must
        not leave processes behind that write to its stdout or stderr (the checks redirect
        theirs): they would write into the next command's output. Caught when it is seen."""
        chan = self.chan
        return not (chan.closed or chan.eof_received or chan.recv_ready()
                    or chan.recv_stderr_ready()) and self.transport.is_active()

    def close(self) -> None:
        self.chan.close()

    def run(self, command: str, deadline: float,
            on_output: Callable[[str], None] | None = None) -> Outcome:
        """Run `command` and read its output until both markers arrived, the shell ended, or
        the monotonic `deadline` passed (the shell is then closed: it is still busy).
        `on_output` gets stdout as it comes, in whole lines (the last piece may lack its
        newline), never the marker."""
        chan = self.chan
        mark = b"@@labgen-" + secrets.token_hex(8).encode()
        on_out = re.compile(re.escape(mark) + rb" (\d+)\n")
        on_err = re.compile(re.escape(mark) + rb"\n")
        m = mark.decode()
        try:
            chan.sendall(f'sh -c {shlex.quote(command)} </dev/null; echo "{m} $?"; echo {m} >&2\n'.encode())
        except (OSError, EOFError, paramiko.SSHException):
            return Outcome(None, b"", b"", ended=True)
        out, err = bytearray(), bytearray()
        got_out = got_err = None
        passed_on = 0     # stdout bytes given to on_output so far

        def pass_on(end: int) -> None:
            nonlocal passed_on
            if on_output is not None and end > passed_on:
                # whole lines: a UTF-8 character never spans a newline
                on_output(text(bytes(out[passed_on:end])))
            passed_on = max(passed_on, end)
        while True:
            # Drain both streams as data arrives: waiting on one while the other fills the SSH
            # window would deadlock.
            seen_out, seen_err = len(out), len(err)
            while chan.recv_ready():
                out += chan.recv(_CHUNK)
            while chan.recv_stderr_ready():
                err += chan.recv_stderr(_CHUNK)
            # A marker may arrive split across reads: search a little before the new bytes.
            if got_out is None and len(out) > seen_out:
                got_out = on_out.search(out, max(0, seen_out - len(mark) - 16))
            if got_err is None and len(err) > seen_err:
                got_err = on_err.search(err, max(0, seen_err - len(mark) - 2))
            # The marker ends with a newline, so a whole line read is never a marker not yet found.
            pass_on(got_out.start() if got_out else out.rfind(b"\n") + 1)
            if got_out and got_err:
                if got_out.end() != len(out) or got_err.end() != len(err):
                    self.close()    # something still writes to the shell's streams: not reusable
                self.used = True
                return Outcome(int(got_out.group(1)), bytes(out[:got_out.start()]),
                               bytes(err[:got_err.start()]))
            if (chan.eof_received or chan.closed) and not chan.recv_ready() and not chan.recv_stderr_ready():
                pass_on(len(out))
                # The shell ended (sudo refused, the connection dropped): its exit status,
                # which follows its EOF closely, says why.
                chan.status_event.wait(max(0.0, min(5.0, deadline - time.monotonic())))
                code = chan.exit_status if chan.status_event.is_set() else None
                self.close()
                return Outcome(code, bytes(out), bytes(err), ended=True)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pass_on(len(out))
                self.close()
                return Outcome(None, bytes(out), bytes(err), timed_out=True)
            # The channel's fileno becomes readable on new data, EOF or close; the cap is only
            # a safety net.
            select.select([chan], [], [], min(remaining, 0.5))


def text(data: bytes) -> str:
    """Bytes read from a node, decoded whole (a character split across reads survives)."""
    return data.decode("utf-8", errors="replace")
