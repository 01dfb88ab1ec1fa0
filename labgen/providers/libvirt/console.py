"""The boot phases a guest's serial console shows (the Vagrantfile writes each node's console
to logs/NODE-console.log on its libvirt host): boot loader, kernel, initramfs, systemd, login
prompt. Under software emulation a guest takes one to several minutes to boot; these let a
user watching `labgen create` see it move, and bench/boot time each phase.

A watcher starts at the size the file had before the boot: qemu appends to it across boots
where the domain says append=on, and empties it at each start where it does not (libvirt's
default, as vagrant-libvirt writes it): a file shorter than what was read is read again from
its top."""
from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# In boot order; each line of the console is matched against the phases not yet seen.
PHASES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("boot loader", re.compile(r"Booting `|GNU GRUB")),
    ("kernel", re.compile(r"\] Linux version \d")),
    ("initramfs", re.compile(r"\] Run /init as init process|^Loading, please wait")),
    ("systemd", re.compile(r"\] systemd\[1\]: systemd \d\S* running|^Welcome to ")),
    ("login prompt", re.compile(r" login: *$")),
)
_KERNEL_TIME = re.compile(r"^\[\s*(\d+\.\d+)\]")
_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@dataclass(frozen=True)
class Phase:
    name: str
    kernel_s: float | None      # the guest kernel's own clock on that line, when it has one

    def said(self) -> str:
        at = f" (guest kernel clock {self.kernel_s:.1f} s)" if self.kernel_s is not None else ""
        return f"console: {self.name}{at}"


def phases(text: str, seen: frozenset[str] = frozenset()) -> list[Phase]:
    """The phases `text` (console output) shows, in order, leaving out those in `seen`. A
    phase counts once; one that shows before an earlier one (a console that missed a line)
    is still reported."""
    found: list[Phase] = []
    names = set(seen)
    for raw in text.splitlines():
        line = _ESCAPES.sub("", raw).replace("\r", "")
        for name, pattern in PHASES:
            if name not in names and pattern.search(line):
                m = _KERNEL_TIME.match(line)
                found.append(Phase(name, float(m.group(1)) if m else None))
                names.add(name)
    return found


class Watcher:
    """Reads each node's console file while it boots and reports each new phase, until
    stop(node) or stop(). Files are read from the size they had when the watcher was made."""

    def __init__(self, files: dict[str, Path], report: Callable[[str, Phase], None],
                 interval: float = 0.5):
        self.files, self.report, self.interval = files, report, interval
        self._offset = {n: (p.stat().st_size if p.exists() else 0) for n, p in files.items()}
        self._seen: dict[str, frozenset[str]] = {n: frozenset() for n in files}
        self._partial = {n: "" for n in files}
        self._stopped: set[str] = set()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="console-watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, node: str | None = None) -> None:
        if node is None:
            self._done.set()
            if self._thread.is_alive():
                self._thread.join()
        else:
            self._stopped.add(node)

    def poll(self) -> None:
        """One read of every file still watched (the thread calls this; tests may too)."""
        for node, path in self.files.items():
            if node in self._stopped:
                continue
            try:
                with open(path, "rb") as f:
                    if os.fstat(f.fileno()).st_size < self._offset[node]:
                        self._offset[node], self._partial[node] = 0, ""   # emptied by a new boot
                    f.seek(self._offset[node])
                    chunk = f.read()
            except OSError:
                continue        # not created yet: libvirt makes it when the domain starts
            self._offset[node] += len(chunk)
            text = self._partial[node] + chunk.decode(errors="replace")
            # A line is matched once complete; the prompt has no newline after it.
            whole, _, rest = text.rpartition("\n")
            prompt = rest if PHASES[-1][1].search(_ESCAPES.sub("", rest)) else ""
            self._partial[node] = "" if prompt else rest
            for phase in phases(whole + ("\n" + prompt if prompt else ""), self._seen[node]):
                self._seen[node] |= {phase.name}
                self.report(node, phase)

    def _run(self) -> None:
        # A poll interval, not a wait for an assumed duration: the file has no event to block on.
        while not self._done.wait(self.interval):
            self.poll()
        self.poll()
