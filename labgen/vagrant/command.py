"""Running the `vagrant` command: the one environment it gets and the few calls labgen makes.

The libvirt provider, the box fetcher (labgen/vagrant/boxfetch.py) and the box builder
(labgen/boxbuild/) all run Vagrant through here, so every run can be stopped: a Ctrl-C or a
failure elsewhere kills the vagrant process instead of leaving it creating domains.
"""
from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import subprocess
import time
from collections import deque
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path
from typing import Any

from labgen.errors import HostError, ProviderError

# Vagrant phones home for updates unless told not to; these labs may be air-gapped.
ENV = {"VAGRANT_CHECKPOINT_DISABLE": "1", "VAGRANT_BOX_UPDATE_CHECK_DISABLE": "1",
       "VAGRANT_DEFAULT_PROVIDER": "libvirt"}
# Set by labgen for `vagrant up`: the directory through which the Vagrantfile and labgen
# hand each machine's SSH over (labgen/providers/libvirt/bringup.py, ssh_dir).
SSH_DIR_ENV = "LABGEN_SSH_DIR"
TIMEOUT = 120.0     # seconds; Ruby alone takes a few to start
# A streamed run whose caller names no bound: `vagrant box add` (a box downloaded from a URL,
# hundreds of MB, or added from the local build in seconds). Past it the run is stuck.
STREAM_TIMEOUT = 3600.0
# A whole `vagrant up --no-provision` of one hypervisor's machines (they boot side by side), by the
# libvirt driver in the project's Vagrantfile. Software emulation: SSH at 173-199 s and up at
# 274-312 s on a slow day (docs/benchmarks.md), up at 467 s on a hypervisor whose libvirt re-probed
# QEMU on every call; KVM guests boot in well under a minute. A few times those, for a hang.
UP_TIMEOUT = {"qemu": 1800.0, "kvm": 600.0}
TAIL = 12           # lines of output kept for an error
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_DRIVER = re.compile(r"""^\s*\w+\.driver\s*=\s*['"](\w+)['"]""", re.M)


class VagrantTimeout(ProviderError, subprocess.CalledProcessError):
    """A vagrant run that outlived its bound and was killed with its whole process group. A
    CalledProcessError too (its output: the last lines), for the callers that handle a vagrant
    that failed; its message names the command and the bound."""

    def __init__(self, cmd: Sequence[str], timeout: float, output: str = ""):
        subprocess.CalledProcessError.__init__(self, -signal.SIGKILL, list(cmd), output)
        self.timeout = timeout
        self.message = (f"'{' '.join(cmd)}' did not end within its bound of {timeout:g} s: "
                        f"stopped, with every process it started")
        Exception.__init__(self, self.message)

    def __str__(self) -> str:
        return self.message


def env(home: Path | None = None) -> dict[str, str]:
    return {**os.environ, **ENV, **({"VAGRANT_HOME": str(home)} if home else {})}


def up_timeout(project: Path) -> float:
    """The bound of a whole `vagrant up` of the project in `project`, by the libvirt driver
    its Vagrantfile names (UP_TIMEOUT); emulation's when it names none."""
    try:
        m = _DRIVER.search((project / "Vagrantfile").read_text())
    except OSError:
        m = None
    return UP_TIMEOUT.get(m.group(1) if m else "qemu", UP_TIMEOUT["qemu"])


def run(args: Sequence[str], cwd: Path | None = None, timeout: float = TIMEOUT,
        home: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`vagrant ARGS...` to the end, its output captured as text (the caller checks the code);
    with VAGRANT_HOME set to `home` if given. In a session of its own: past `timeout` seconds
    (or on Ctrl-C) it is killed with every process it started, and past its bound the call
    raises VagrantTimeout."""
    proc = subprocess.Popen(["vagrant", *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True, env=env(home), start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        kill(proc)
        said = exc.stdout or b""
        raise VagrantTimeout(["vagrant", *args], timeout,
                             said.decode(errors="replace") if isinstance(said, bytes) else said) from None
    except BaseException:       # Ctrl-C: Vagrant goes with what it started
        kill(proc)
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def stream(args: Sequence[str], cwd: Path | None = None,
           timeout: float | None = STREAM_TIMEOUT) -> Generator[str, None, None]:
    """`vagrant ARGS...`, yielding each line it prints (stdout and stderr together) as it
    comes, stripped, without colour codes and without empty lines. Vagrant redraws a
    progress line with \\r, so \\r ends a line too. Raises CalledProcessError (its output:
    the last lines) when vagrant exits non-zero, and VagrantTimeout when it runs past
    `timeout` seconds (None: no bound); closing the iterator early kills it.
    Started here, not at the first line: a missing vagrant is an OSError from this call."""
    return lines(start(args, cwd, timeout))


class Started(subprocess.Popen[bytes]):
    """A vagrant started by start(), with its bound: seconds, and the monotonic deadline."""

    timeout: float | None = None
    deadline: float | None = None


def start(args: Sequence[str], cwd: Path | None = None, timeout: float | None = None,
          extra_env: dict[str, str] | None = None) -> Started:
    """`vagrant ARGS...` started (with `extra_env` added to its environment), its output
    (stdout and stderr together) on a pipe for lines(), which stops it once `timeout` seconds
    from now have passed (None: no bound); the caller may kill it from another thread (then
    lines() ends)."""
    # A session of its own: kill() ends Vagrant with every process it started, and a
    # destroy after a killed labgen can stop it by its PID as a group (providers/libvirt.py).
    proc = Started(["vagrant", *args], cwd=cwd, stdout=subprocess.PIPE,
                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                   env={**env(), **(extra_env or {})}, start_new_session=True)
    if timeout is not None:
        proc.timeout, proc.deadline = timeout, time.monotonic() + timeout
    return proc


def _exit_fd(pid: int) -> int | None:
    """A file descriptor that becomes readable when the process ends (a pidfd; None where
    the kernel has none: then lines() ends at the pipe's end, as before)."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def kill(proc: subprocess.Popen[Any]) -> None:
    """SIGKILL to a vagrant started here and its whole process group, then reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def lines(proc: subprocess.Popen[bytes]) -> Generator[str, None, None]:
    """The lines of a started vagrant, as stream() describes them. Past the bound start()
    was given, vagrant is killed with its whole process group, one last line of labgen's own
    says so (in the caller's log and its last lines too), and VagrantTimeout is raised.

    It ends when vagrant does, not when its pipe closes: a process vagrant leaves behind may
    hold the pipe open for good (vagrant-libvirt's ssh ProxyCommand to a guest on a remote
    hypervisor, left running once the guest answered, kept a create waiting after both
    nodes were provisioned). What vagrant wrote is read to the end, then what it left in its
    process group is killed."""
    assert proc.stdout is not None
    deadline = proc.deadline if isinstance(proc, Started) else None
    tail: deque[str] = deque(maxlen=TAIL)
    timed_out = False
    fd = proc.stdout.fileno()
    ended = _exit_fd(proc.pid)
    buf = b""

    def take(chunk: bytes) -> list[str]:
        nonlocal buf
        *done, buf = re.split(rb"[\r\n]", buf + chunk)
        out = list(_clean(done))
        tail.extend(out)
        return out

    try:
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            ready = [] if left is not None and left <= 0 else \
                select.select([fd] if ended is None else [fd, ended], [], [], left)[0]
            if not ready:
                timed_out = True
                kill(proc)
                break
            if fd in ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                yield from take(chunk)
                continue
            # vagrant has ended and the pipe is still open: read what is in it, and stop.
            while select.select([fd], [], [], 0)[0]:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                yield from take(chunk)
            break
        for line in _clean([buf]):
            tail.append(line)
            yield line
        if proc.returncode is None:     # (not killed past its bound above)
            # Ended but not reaped yet, so its PID still names its group: what it left goes.
            os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        code = proc.wait()
    finally:
        if proc.poll() is None:     # the caller stopped early, or an exception (Ctrl-C)
            kill(proc)
        proc.stdout.close()
        if ended is not None:
            os.close(ended)
    if timed_out:
        assert isinstance(proc, Started) and proc.timeout is not None
        error = VagrantTimeout(proc.args, proc.timeout)     # type: ignore[arg-type]
        tail.append(f"labgen: {error}")
        yield tail[-1]
        error.output = "\n".join(tail)
        raise error
    if code != 0:
        raise subprocess.CalledProcessError(code, proc.args, output="\n".join(tail))


def _clean(raw_lines: list[bytes]) -> Iterator[str]:
    for raw in raw_lines:
        line = _ANSI.sub("", raw.decode(errors="replace")).strip()
        if line:
            yield line


# ---- boxes

def parse_box_list(machine_readable: str) -> set[tuple[str, str, str]]:
    """(name, provider, version) triples from `vagrant box list --machine-readable`."""
    boxes, current = set(), {}
    for line in machine_readable.splitlines():
        fields = line.split(",", 3)
        if len(fields) < 4:
            continue
        kind, value = fields[2], fields[3]
        if kind == "box-name":
            current = {"name": value}
        elif kind in ("box-provider", "box-version"):
            current[kind[4:]] = value
            if len(current) == 3:
                boxes.add((current["name"], current["provider"], current["version"]))
    return boxes


def box_list() -> set[tuple[str, str, str]]:
    """The boxes Vagrant has, as (name, provider, version). Raises HostError when
    `vagrant box list` fails."""
    res = run(["box", "list", "--machine-readable"], timeout=60)
    if res.returncode != 0:
        raise HostError(f"'vagrant box list' failed: {last_line(res.stderr or res.stdout)}")
    return parse_box_list(res.stdout)


def has_box(name: str, version: str | None = None, provider: str = "libvirt") -> bool:
    """Whether Vagrant has box `name` for `provider`: at `version`, or at any version."""
    return any(n == name and p == provider and version in (None, v) for n, p, v in box_list())


# ---- a lab's machines

def ssh_config(lab_dir: Path) -> str:
    """`vagrant ssh-config` of the lab in lab_dir: how to reach each running machine.

    Asked while `vagrant up` still runs (labgen/providers/libvirt/provider.py), so it runs with a
    Vagrant home of its own (query_home): any Vagrant command that names a machine takes that
    machine's lock in the home's machine index for a moment, without waiting, and so does
    `vagrant up` each time it reads a machine's state while it waits for SSH; when the two
    met, `up` failed with "Vagrant can't use the requested machine because it is locked"."""
    res = run(["ssh-config"], cwd=lab_dir, home=query_home(lab_dir))
    if res.returncode != 0:
        raise ProviderError(f"vagrant ssh-config failed: {res.stderr.strip()[-300:]}")
    return res.stdout


def box_dir_name(name: str) -> str:
    """How Vagrant spells a box name on disk: its folder under the Vagrant home's boxes/, and
    the start of vagrant-libvirt's image name in a storage pool."""
    return name.replace("/", "-VAGRANTSLASH-")


def user_home() -> Path:
    """The Vagrant home every other vagrant call uses: VAGRANT_HOME, else ~/.vagrant.d."""
    return Path(os.environ.get("VAGRANT_HOME") or Path.home() / ".vagrant.d")


def query_home(lab_dir: Path) -> Path:
    """A Vagrant home for queries of the project in lab_dir, kept in its .vagrant (removed
    with it): the user's home (its boxes, plugins, keys) linked in, all but `data`, which
    holds the machine index and its locks."""
    real = user_home()
    home = lab_dir / ".vagrant" / "labgen-home"
    home.mkdir(parents=True, exist_ok=True)
    for entry in real.iterdir() if real.is_dir() else ():
        link = home / entry.name
        if entry.name != "data" and not link.is_symlink() and not link.exists():
            link.symlink_to(entry)
    return home


def last_line(text: str | None) -> str:
    """What a failed command said last (the box builder's steps report theirs the same way)."""
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"
