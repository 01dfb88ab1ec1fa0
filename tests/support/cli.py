"""The one way the tests run the labgen CLI: `python -m labgen ARGS` in a subprocess, with the
interpreter that runs the tests, output captured as text; and what its output must look like
in a pipe."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from support import sessions

ARGV = (sys.executable, "-m", "labgen")
# rich wraps at the terminal width and colours a terminal: a wide dumb one keeps lines whole.
ENV = {**os.environ, "COLUMNS": "200", "TERM": "dumb"}


def run_group(argv: list[str] | tuple[str, ...], timeout: float, input: str | None = None,
              **kw) -> subprocess.CompletedProcess[str]:
    """subprocess.run in a session of its own, for anything that may run long (labgen, Vagrant,
    a script): on its timeout, or when the test is interrupted or fails while it runs
    (pytest-timeout's signal, Ctrl-C), kill_group ends it with every process it started, not
    only the top one, and the exception goes on (subprocess.TimeoutExpired on the timeout, as
    subprocess.run raises it). The session is noted (support.sessions): a later run ends it if
    this whole test run is killed while it runs."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL if input is None else subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, **kw)
    sessions.note(proc.pid)
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except BaseException:
        kill_group(proc)
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _table() -> dict[int, tuple[int, int, str]]:
    """Every process on the host: pid -> (parent pid, process group, state), from /proc."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:         # gone meanwhile
            continue
        table[int(entry)] = (int(fields[1]), int(fields[2]), fields[0])
    return table


def _groups(root: int, table: dict[int, tuple[int, int, str]]) -> set[int]:
    """The process groups of root and of all its descendants: a child that started a session
    of its own (labgen's Vagrant does) is in a group of its own, which killpg(root) misses."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    groups, todo = {root}, [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            groups.add(table[pid][1])
        todo += children.get(pid, [])
    return groups - {os.getpgrp(), 0, 1}     # never the test run's own group


def _alive(groups: set[int], table: dict[int, tuple[int, int, str]]) -> bool:
    return any(pgid in groups and state != "Z" for _, pgid, state in table.values())


def kill_group(proc: subprocess.Popen, grace: float = 10) -> None:
    """End a process started in a session of its own (run_group, labgen_started) with its
    whole process group and the groups of everything it started: SIGTERM, a wait of at most
    `grace` seconds for every one of their processes to be gone, then SIGKILL to what is left
    (and the same bounded wait). Its pipes are closed after it."""
    groups = _groups(proc.pid, _table()) if proc.poll() is None else {proc.pid}
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pgid in groups:
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while True:
            leader_done = proc.poll() is not None       # reaps it: a zombie leader is gone
            table = _table()
            if not leader_done:
                groups |= _groups(proc.pid, table)
            if leader_done and not _alive(groups, table):
                break
            if time.monotonic() >= deadline:
                break
            try:                # the leader's exit is the event; the rest is polled after it
                proc.wait(timeout=0.1)
            except subprocess.TimeoutExpired:
                pass
        if proc.poll() is not None and not _alive(groups, _table()):
            break
    try:        # what it wrote last; a process outside the groups may still hold the pipes
        proc.communicate(timeout=5)
    except (subprocess.TimeoutExpired, ValueError):
        pass
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


def labgen(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 240,
           input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run labgen to its end (env: ENV unless given; input: its stdin); in a session of its
    own, killed with everything it started on timeout (run_group)."""
    return run_group([*ARGV, *args], timeout, input=input, cwd=cwd, env=ENV if env is None else env)


# labgen_started's processes, for the teardown that kills those still running when their
# test ends (tests/conftest.py: a test that failed or was interrupted while one ran).
STARTED: list[subprocess.Popen] = []


def ctrl_c_heard() -> None:
    """In the child: SIGINT back to its default. A shell that starts a job in the background
    (a CI runner may) sets SIGINT to ignored, the child inherits that, and Python then never
    turns SIGINT into KeyboardInterrupt: the tests that send it would test nothing."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def labgen_started(*args: str, text: bool = False, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start labgen without waiting (a test that interrupts it); stdout and stderr are pipes.
    It runs in a session of its own: kill_group(proc) ends it with everything it started, and
    one still running when its test ends is killed so (tests/conftest.py, end_started)."""
    proc = subprocess.Popen([*ARGV, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=text,
                            env=ENV if env is None else env, start_new_session=True,
                            preexec_fn=ctrl_c_heard)
    sessions.note(proc.pid)
    STARTED.append(proc)
    return proc


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
