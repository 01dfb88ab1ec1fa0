"""The one way the tests run the labgen CLI: `python -m labgen ARGS` in a subprocess, with the
interpreter that runs the tests, output captured as text; and what its output must look like
in a pipe."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

ARGV = (sys.executable, "-m", "labgen")
# rich wraps at the terminal width and colours a terminal: a wide dumb one keeps lines whole.
ENV = {**os.environ, "COLUMNS": "200", "TERM": "dumb"}


def run_group(argv: list[str] | tuple[str, ...], timeout: float, input: str | None = None,
              **kw) -> subprocess.CompletedProcess[str]:
    """subprocess.run in a session of its own: on its timeout (or when the test is
    interrupted) the whole process group goes (labgen, Vagrant, ssh, scripts), not only the
    top process, and subprocess.TimeoutExpired is raised as before."""
    proc = subprocess.Popen(argv, stdin=None if input is None else subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, **kw)
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except BaseException:
        kill_group(proc)
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def kill_group(proc: subprocess.Popen, grace: float = 10) -> None:
    """End a process started in its own session, and every process of its group: SIGTERM,
    a bounded wait for the leader, then SIGKILL to whatever of the group is left."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
        if sig == signal.SIGTERM:
            try:                    # the leader is gone: its group's stragglers go too
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        break
    proc.communicate()


def labgen(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 240,
           input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run labgen to its end (env: ENV unless given; input: its stdin); in a session of its
    own, killed with its whole group on timeout."""
    return run_group([*ARGV, *args], timeout, input=input, cwd=cwd, env=ENV if env is None else env)


def labgen_started(*args: str, text: bool = False, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start labgen without waiting (a test that interrupts it); stdout and stderr are pipes.
    It runs in a session of its own: kill_group(proc) ends it with everything it started."""
    return subprocess.Popen([*ARGV, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=text,
                            env=ENV if env is None else env, start_new_session=True)


ESC = "\x1b"
BOX_DRAWING = re.compile("[\u2500-\u257f]")


def assert_plain(text: str, width: int = 100) -> None:
    """Output fit for a log or a pipe: no colour or cursor codes, no box drawing, ASCII, and
    no line wider than width."""
    assert ESC not in text, "colour or cursor codes in non-terminal output"
    assert not BOX_DRAWING.search(text), "box-drawing characters in non-terminal output"
    assert text.isascii(), [ch for ch in text if not ch.isascii()][:5]
    too_wide = [ln for ln in text.splitlines() if len(ln) > width]
    assert not too_wide, too_wide
