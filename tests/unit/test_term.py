"""labgen/term.py: styled lines only where styles belong, and one write per line (progress
lines come from several threads at once)."""
from __future__ import annotations

import io
import sys
import threading

from labgen.term import Stream

ESC = "\x1b"


class Tty(io.StringIO):
    """A terminal stand-in that keeps every write() call."""

    def __init__(self, tty: bool = True) -> None:
        super().__init__()
        self.tty = tty
        self.writes: list[str] = []

    def isatty(self) -> bool:
        return self.tty

    def write(self, s: str) -> int:
        self.writes.append(s)
        return super().write(s)


def terminal(monkeypatch, tty: bool = True) -> Tty:
    """Standard output replaced in the test's body (pytest's own capture swaps it back in
    between setup and the call)."""
    for var in ("FORCE_COLOR", "NO_COLOR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TERM", "xterm")
    fake = Tty(tty)
    monkeypatch.setattr(sys, "stdout", fake)
    return fake


def test_a_pipe_gets_plain_text(monkeypatch):
    stdout = terminal(monkeypatch)
    stdout.tty = False
    Stream().line(("error:", "bold red"), " [red]kept as it is[/]")
    assert stdout.getvalue() == "error: [red]kept as it is[/]\n"


def test_a_terminal_gets_styles(monkeypatch):
    stdout = terminal(monkeypatch)
    Stream().line(("error:", "bold red"), " text")
    assert stdout.getvalue() == f"{ESC}[1;31merror:{ESC}[0m text\n"


def test_no_color_keeps_bold_and_drops_colours(monkeypatch):
    stdout = terminal(monkeypatch)
    monkeypatch.setenv("NO_COLOR", "1")
    Stream().line(("error:", "bold red"), " ", ("ok", "green"))
    assert stdout.getvalue() == f"{ESC}[1merror:{ESC}[0m ok\n"


def test_dumb_terminal_gets_no_styles_and_force_color_gets_them_anywhere(monkeypatch):
    stdout = terminal(monkeypatch)
    monkeypatch.setenv("TERM", "dumb")
    Stream().line(("a", "bold"))
    monkeypatch.setenv("TERM", "xterm")
    stdout.tty = False
    monkeypatch.setenv("FORCE_COLOR", "1")
    Stream().line(("b", "bold"))
    assert stdout.getvalue() == f"a\n{ESC}[1mb{ESC}[0m\n"


def test_lines_from_many_threads_are_written_whole(monkeypatch):
    stdout = terminal(monkeypatch)
    stream = Stream()

    def say(k: int) -> None:
        for i in range(200):
            stream.line((f"{k}.{i}", "dim"), " provisioning")
    threads = [threading.Thread(target=say, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(stdout.writes) == 1600
    assert all(w.endswith(" provisioning\n") and w.count("\n") == 1 for w in stdout.writes)
