"""A real OpenSSH server on loopback, for the tests of labgen's SSH runner and of exec and
capture over SSH. Needs root (sshd wants /run/sshd and to switch users), /usr/sbin/sshd and
ssh-keygen: available() says whether this host has them."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from labgen.nodes.ssh import SSHTarget

SSHD = "/usr/sbin/sshd"


def available() -> bool:
    return bool(os.path.exists(SSHD) and shutil.which("ssh-keygen") and os.geteuid() == 0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path, *args: str) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-N", "", "-C", path.name, "-f", str(path), *args],
                   check=True)
    return path


class Server:
    """The running server: its port, an authorized ed25519 key, an authorized RSA key in PEM
    format (world-readable, like Vagrant's legacy key), a key it refuses, and its log."""

    def __init__(self, port: int, key: Path, rsa_key: Path, stranger_key: Path, log: Path):
        self.port, self.key, self.rsa_key, self.stranger_key, self.log = \
            port, key, rsa_key, stranger_key, log

    def target(self, key: Path | None = None) -> SSHTarget:
        return SSHTarget("127.0.0.1", self.port, "root", str(key or self.key))


def serve(tmp_path_factory, port: int | None = None) -> Iterator[Server]:
    """Start sshd on loopback (a free port, or `port`) with fresh keys, yield it as a Server,
    stop it (behind the `sshd` fixture of tests/conftest.py)."""
    d = tmp_path_factory.mktemp("sshd")
    host_key = keygen(d / "host_ed25519", "-t", "ed25519")
    client_key = keygen(d / "client_ed25519", "-t", "ed25519")
    # Like Vagrant's legacy insecure key: RSA in PEM format, world-readable.
    rsa_key = keygen(d / "client_rsa", "-t", "rsa", "-b", "2048", "-m", "PEM")
    rsa_key.chmod(0o644)
    stranger_key = keygen(d / "stranger_ed25519", "-t", "ed25519")  # not authorized
    (d / "authorized_keys").write_text(
        Path(f"{client_key}.pub").read_text() + Path(f"{rsa_key}.pub").read_text())
    if port is None:
        port = free_port()
    else:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                pytest.fail(f"127.0.0.1:{port} is taken: this test runs its own sshd there")
    config = d / "sshd_config"
    config.write_text(f"""\
ListenAddress 127.0.0.1
Port {port}
HostKey {host_key}
PidFile {d}/sshd.pid
AuthorizedKeysFile {d}/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
""")
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege-separation dir
    check = subprocess.run([SSHD, "-t", "-f", str(config)], capture_output=True, text=True,
                           check=False)
    assert check.returncode == 0, f"bad sshd_config: {check.stderr}"

    log = d / "sshd.log"
    with open(log, "wb") as log_fd:
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)],
                                stdout=log_fd, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"sshd did not come up on port {port}:\n{log.read_text()}")
                time.sleep(0.05)
        yield Server(port, client_key, rsa_key, stranger_key, log)
    finally:
        # Only the sshd we started, by its own PID.
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
