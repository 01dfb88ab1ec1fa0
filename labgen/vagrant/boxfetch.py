"""Fetch a lab's box into Vagrant when it is not there yet (`labgen create` with a box that
has a download URL or a Vagrant catalog name), with Vagrant's progress shown once per step.

Vagrant keeps what it added (~/.vagrant.d/boxes) and resumes an interrupted download, so
a box is fetched once per host. Only a box with no source (one built locally) is a problem
that stops the run; a fetch that fails is one line with how to add the box by hand.
"""
from __future__ import annotations

import contextlib
import re
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from labgen.errors import HostError
from labgen.lab.boxes import Box
from labgen.vagrant import command as vagrant

PROVIDER = "libvirt"
_PROGRESS = re.compile(r"Progress: (\d+)%")
# Vagrant's own prefix on every line of `vagrant box add` ("==> box: ", "    box: ").
_PREFIX = re.compile(r"^(?:==> )?box: ")


def source(box: Box) -> str | None:
    """Where Vagrant can fetch the box from: its URL, else its Vagrant catalog name; None
    for a box that is built locally (or is the host itself)."""
    if box.build or box.family == "host" or PROVIDER not in box.providers:
        return None
    if box.url:
        return box.url
    return box.name if re.fullmatch(r"[\w.-]+/[\w.-]+", box.name) else None


def is_added(name: str) -> bool:
    try:
        return vagrant.has_box(name, provider=PROVIDER)
    except HostError:
        return False        # then create tries to fetch it, and says what failed


def missing_note(box: Box) -> str | None:
    """For `labgen doctor`: None when the box is added or cannot be fetched; else what
    `create` will do about it."""
    where = source(box)
    if where is None or is_added(box.name):
        return None
    size = remote_size(where) if where != box.name else None
    return (f"box {box.name} not added yet: create will download it "
            f"({where}{', ' + human_size(size) if size else ''})")


def manual_hint(box: Box) -> str:
    where = source(box)
    by_hand = (f"vagrant box add --name {box.name} --provider {PROVIDER} {where}" if box.url
               else f"vagrant box add {box.name} --provider {PROVIDER}")
    return (f"add it by hand where the download works ({by_hand}), or use the locally built "
            f"box: sudo labgen box build debian12, then --box labgen/debian12")


def remote_size(url: str, timeout: float = 10.0) -> int | None:
    """The size of the box file, when the server (or the file system) says it; else None."""
    parts = urllib.parse.urlparse(url)
    if parts.scheme == "file":
        try:
            return Path(urllib.parse.unquote(parts.path)).stat().st_size
        except OSError:
            return None
    if parts.scheme not in ("http", "https"):
        return None
    try:
        req = urllib.request.Request(url, method="HEAD")
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            length = resp.headers.get("Content-Length")
            return int(length) if length and length.isdigit() else None
    except (OSError, ValueError):
        return None


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


def ensure_box(box: Box, progress: Callable[[str], None], log: Path | None = None) -> bool:
    """Add the box to Vagrant if it is not there; True when it was fetched now. Raises
    HostError (one line) when it has no source or the fetch fails."""
    if is_added(box.name):
        return False
    where = source(box)
    if where is None:
        how = (f"build it here with: sudo labgen box build {box.build}" if box.build
               else f"add it with: vagrant box add --name {box.name} --provider {PROVIDER} <URL>")
        raise HostError(f"box {box.name} ({PROVIDER}) is not in Vagrant and has no download "
                        f"source: {how}; or pick another with --box")
    size = remote_size(where) if box.url else None
    progress(f"fetching box {box.name} from {where}" + (f" ({human_size(size)})" if size else "")
             + ": once, Vagrant keeps it")
    argv = ["box", "add", "--provider", PROVIDER]
    argv += ["--name", box.name, where] if box.url else [box.name]
    started = time.monotonic()
    lines = run_box_add(argv, progress, log)
    if lines is not None:
        # Vagrant ends with the cause ("Could not resolve host: ..."), after boilerplate.
        tail = lines[-1] if lines else "vagrant box add failed without a message"
        raise HostError(f"could not fetch box {box.name} from {where}: {tail}; {manual_hint(box)}")
    progress(f"{box.name} added to Vagrant in {time.monotonic() - started:.1f} s")
    return True


def run_box_add(argv: list[str], progress: Callable[[str], None],
                log: Path | None = None) -> list[str] | None:
    """Run `vagrant box add ...`, passing each of its steps to progress once (download
    progress in steps of 10 %). Returns None on success, else the last lines it printed."""
    seen: set[str] = set()
    shown_pct = -10
    lines: list[str] = []
    with open(log, "a") if log else contextlib.nullcontext() as logf:
        try:
            output = vagrant.stream(argv)
        except OSError as exc:
            return [f"cannot run vagrant: {exc.strerror}"]
        try:
            with contextlib.closing(output):
                for line in output:
                    line = _PREFIX.sub("", line)
                    if logf:
                        logf.write(line + "\n")
                    lines.append(line)
                    m = _PROGRESS.search(line)
                    if m:
                        pct = int(m.group(1))
                        if pct >= shown_pct + 10 or (pct == 100 and shown_pct != 100):
                            shown_pct = pct - pct % 10 if pct != 100 else 100
                            progress(line)
                    elif line not in seen:
                        seen.add(line)
                        progress(line)
        except subprocess.CalledProcessError:
            return lines[-6:]
    return None


def remove(name: str) -> None:
    """`vagrant box remove --force NAME` (tests clean up the boxes they added)."""
    vagrant.run(["box", "remove", "--force", "--all", name], timeout=120)
