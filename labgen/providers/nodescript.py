"""A node's provisioning script, run as root over the node's SSH connection (VMs).

Vagrant's shell provisioner would do the same, but only after its own steps that follow the
guest's first SSH answer (fstab, a directory, an upload, a chown, each its own SSH session):
~4 s on an emulated guest before the script's first line (docs/benchmarks.md). labgen starts
the script itself as soon as the guest answers its own SSH connection
(labgen/providers/libvirt/bringup.py); Vagrant's wait for SSH then ends without a login.
The Vagrantfile keeps the provisioner, so `vagrant up` / `vagrant provision` in the lab dir
still give the same lab.
The script's own `labgen[NODE]: ...` lines are passed on as they come (`step`: the provider's
progress), so that a user watching a slow emulated guest sees provisioning move, and the log
holds what came so far even when the connection is lost.
failure() is every provider's one line for a script that failed.
"""
from __future__ import annotations

import shlex
import time
from collections.abc import Callable
from pathlib import Path

from labgen.nodes.runner import Runner, RunnerError

from ..errors import ProviderError

# Root's own directory for it, not /tmp: a fixed name in a world-writable directory could be
# someone else's symlink.
REMOTE_DIR = "/var/lib/labgen"
# A box without Open vSwitch installs it from the network first: minutes on an emulated guest.
TIMEOUT = 1800.0


def command(node: str, script: str, remote_dir: str = REMOTE_DIR) -> str:
    """One command that stores the script on the node (to run again by hand) and runs it,
    its stderr into its stdout, in the order written."""
    path = shlex.quote(f"{remote_dir}/provision-{node}.sh")
    return (f"mkdir -p {shlex.quote(remote_dir)} && printf '%s' {shlex.quote(script)} > {path} && "
            f"exec bash {path} 2>&1")


def provision(runner: Runner, node: str, script: Path, log: Path,
              timeout: float = TIMEOUT, remote_dir: str = REMOTE_DIR,
              step: Callable[[str], None] = lambda _: None) -> float:
    """Run `script` on the node; its output goes to `log` as it comes, and each of its
    `labgen[NODE]: WHAT` lines to `step(WHAT)`. Returns the seconds it took; raises
    ProviderError (the exit code and the log's last lines) when it fails."""
    started = time.monotonic()
    tag = f"labgen[{node}]: "
    log.parent.mkdir(exist_ok=True)
    with open(log, "w", encoding="utf-8") as fh:
        def came(text: str) -> None:
            fh.write(text)
            fh.flush()
            for line in text.splitlines():
                if line.startswith(tag):
                    step(line[len(tag):])
        try:
            res = runner.run(command(node, script.read_text(), remote_dir), timeout=timeout,
                             on_output=came)
        except RunnerError as exc:
            raise ProviderError(f"{node}: provisioning failed: {exc}") from exc
    log.write_text(res.stdout + res.stderr)     # the whole of it, stderr too (sudo's words)
    if not res.ok:
        raise failure(node, res.exit_code, log, res.stdout + res.stderr)
    return time.monotonic() - started


def failure(node: str, code: int, log: Path, output: str) -> ProviderError:
    """One line for a node script that exited `code`: where its log is, and its last lines."""
    tail = " | ".join(ln.strip() for ln in output.splitlines()[-5:] if ln.strip())
    return ProviderError(f"{node}: provisioning failed (exit {code}), see {log}: {tail or 'no output'}")
