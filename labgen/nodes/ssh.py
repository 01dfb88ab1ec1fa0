"""SSHRunner: the Runner for Vagrant VMs, one paramiko connection per node.

Verification fires many short commands at a node, often from several threads at once, so
the runner opens ONE SSH connection lazily and multiplexes the commands over it (paramiko's
Transport is thread-safe for that): each thread's command goes to an idle root shell of the
runner (rootshell.py: one channel and one sudo each, reused), or to a new one. Connection
details come from `vagrant ssh-config`, which parse_ssh_config() reads.
"""
from __future__ import annotations

import logging
import re
import select
import shlex
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import paramiko

from labgen.nodes.process import CHUNK, NodeProcess
from labgen.nodes.rootshell import SHELL, RootShell
from labgen.nodes.rootshell import text as _text
from labgen.nodes.runner import TIMEOUT_EXIT, Result, RunnerError

# paramiko logs connection failures with full tracebacks from its transport thread; with no
# logging configured, Python would print those to stderr next to our one-line RunnerError.
# A NullHandler silences that fallback but still lets an application's own handlers see them.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

_OPTION = re.compile(r"(\S+?)\s*(?:=|\s)\s*(.*)")


@dataclass(frozen=True)
class SSHTarget:
    host: str
    port: int
    user: str
    key_file: str
    # On a hypervisor reached over SSH, the guest is reached through that hypervisor (tokens
    # %h, %p and %r already replaced).
    proxy_command: str | None = None


def parse_ssh_config(text: str) -> dict[str, SSHTarget]:
    """Parse `vagrant ssh-config` output into {host name: SSHTarget}.

    Only HostName, Port, User, the first IdentityFile and ProxyCommand matter; every other option
    (StrictHostKeyChecking, LogLevel, ...) is ignored. Keys are case-insensitive and values
    may be double-quoted (Vagrant quotes paths).
    """
    blocks: list[tuple[str, dict[str, str]]] = []
    for raw in text.splitlines():
        line = raw.strip()
        # ssh_config allows "Key value", "Key=value" and "Key = value".
        m = _OPTION.match(line)
        if not m or line.startswith("#"):
            continue
        key, value = m.group(1).lower(), _unquote(m.group(2).strip())
        if key == "host":
            blocks.append((value, {}))
        elif blocks:
            # setdefault: the first IdentityFile wins, as it is the one ssh tries first.
            blocks[-1][1].setdefault(key, value)
        # Anything before the first Host line (e.g. a stray warning) is not ours to judge.
    if not blocks:
        raise ValueError("no 'Host' block found in ssh-config text")

    targets: dict[str, SSHTarget] = {}
    for name, opts in blocks:
        missing = [label for label in ("HostName", "User", "IdentityFile")
                   if not opts.get(label.lower())]
        if missing:
            raise ValueError(f"ssh-config block for host {name!r} lacks {', '.join(missing)}")
        try:
            port = int(opts.get("port", "22"))
        except ValueError:
            raise ValueError(f"ssh-config block for host {name!r} has a bad Port: "
                             f"{opts['port']!r}") from None
        proxy = opts.get("proxycommand")
        if proxy:
            proxy = _expand(proxy, {"h": opts["hostname"], "p": str(port), "r": opts["user"], "%": "%"})
        targets[name] = SSHTarget(opts["hostname"], port, opts["user"], opts["identityfile"], proxy)
    return targets


def _expand(command: str, tokens: dict[str, str]) -> str:
    """ssh_config's %h, %p, %r and %% in a ProxyCommand (paramiko runs it as given)."""
    return re.sub(r"%([hpr%])", lambda m: tokens[m.group(1)], command)


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def remote_command(command: str, user: str, sudo: bool = True) -> str:
    """The command line sent to the node: always `sh -c` (like LocalRunner, and independent
    of the login shell), behind a non-interactive sudo when we are not root already."""
    inner = f"sh -c {shlex.quote(command)}"
    if sudo and user != "root":
        # -n: fail at once instead of hanging on a password prompt nobody can answer.
        return f"sudo -n {inner}"
    return inner


def _load_key(path: str) -> paramiko.PKey:
    # Vagrant's insecure key is often mode 0644; unlike OpenSSH, paramiko does not object.
    from_path = getattr(paramiko.PKey, "from_path", None)
    if from_path is not None:  # paramiko >= 3.2 detects the key type itself
        key: paramiko.PKey = from_path(path)
        return key
    last: Exception | None = None
    for cls in (paramiko.Ed25519Key, paramiko.RSAKey, paramiko.ECDSAKey):
        try:
            return cls.from_private_key_file(path)
        except paramiko.SSHException as exc:
            last = exc
    raise paramiko.SSHException(f"unsupported key type ({last})")


def _cause(exc: BaseException, key_file: str, timeout: float) -> str:
    """One short lower-case phrase for why connecting failed."""
    if isinstance(exc, paramiko.AuthenticationException):
        return f"authentication with key {key_file} failed"
    if isinstance(exc, paramiko.SSHException) and (
            "protocol banner" in str(exc) or "No existing session" in str(exc)):
        # Typical while a VM boots: the forwarded port accepts TCP but no sshd answers yet.
        # paramiko raises the banner error from its own thread (the real reason is the
        # implicit context), or, when its handshake wait expires at the same moment as the
        # banner wait, goes on to authenticate and says "No existing session".
        if isinstance(exc.__context__, (EOFError, ConnectionError)):  # closed or reset
            return "closed before sending an SSH banner (is sshd up yet?)"
        return f"no SSH handshake within {timeout:g} s (is sshd up yet? is it an SSH port?)"
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        errors = list(exc.errors.values())
        if errors and all(isinstance(e, ConnectionRefusedError) for e in errors):
            return "connection refused"
        return "; ".join(_os_cause(e) for e in errors) or str(exc)
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve host name ({exc.strerror})"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, OSError):
        return _os_cause(exc)
    if isinstance(exc, EOFError):
        return "the server closed the connection"
    return str(exc) or type(exc).__name__


def _key_cause(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return _os_cause(exc)
    # cryptography raises TypeError for a key that needs a password we do not have.
    if isinstance(exc, (TypeError, paramiko.PasswordRequiredException)):
        return "it is protected by a passphrase"
    # cryptography's messages run on with URLs; the first sentence is the useful part.
    return "not a usable private key (" + str(exc).split(". ")[0].rstrip(".") + ")"


def _os_cause(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[0].lower() + exc.strerror[1:]
    return str(exc)


class SSHRunner:
    """Runs commands as root on one node over a single, lazily opened SSH connection."""

    # OpenSSH refuses more than MaxSessions (default 10) channels per connection at once
    # (paramiko: "ChannelException: Connect failed"); stay below that, extra threads queue.
    max_sessions = 8
    # A software-emulated guest under load runs commands many times slower than a host
    # (seen: a 15 s batch took over 35 s); the checks' timeouts are stretched this much.
    timeout_scale = 4.0
    # How long such a guest may take to answer a channel request (sshd forks, PAM opens a
    # session): seen above 10 s with two emulated VMs and a test suite on two cores. A bound
    # for the answer, not a wait: an answering guest costs nothing more.
    channel_timeout = 60.0

    # The SSH handshake with such a guest, behind a ProxyCommand through another hypervisor (a
    # lab across hypervisors), was seen above 10 s right after provisioning: the bound is stretched too.
    connect_timeout = 10.0 * timeout_scale

    def __init__(self, node: str, target: SSHTarget, connect_timeout: float | None = None,
                 sudo: bool = True):
        self.node = node
        self.target = target
        if connect_timeout is not None:
            self.connect_timeout = connect_timeout
        self.sudo = sudo
        self._client: paramiko.SSHClient | None = None
        self._lock = threading.Lock()
        self._sessions = threading.BoundedSemaphore(self.max_sessions)
        # Root shells not running a command now. A new one is opened only when none is idle,
        # so there are never more shells than commands at once (<= max_sessions).
        self._idle: list[RootShell] = []

    @classmethod
    def from_ssh_config(cls, node: str, text: str, **kwargs: Any) -> SSHRunner:
        """SSHRunner for `Host NODE` of `vagrant ssh-config` output; kwargs go to __init__."""
        targets = parse_ssh_config(text)
        if node not in targets:
            raise ValueError(f"{node}: no 'Host {node}' in ssh-config "
                             f"(found: {', '.join(sorted(targets))})")
        return cls(node, targets[node], **kwargs)

    @property
    def address(self) -> str:
        return f"{self.target.host}:{self.target.port}"

    @property
    def transport(self) -> paramiko.Transport | None:
        """The current connection, if any (for diagnostics and tests)."""
        with self._lock:
            return self._client.get_transport() if self._client else None

    def connect(self) -> None:
        """Open the connection now (RunnerError if the node does not answer), e.g. to learn
        that a booting guest's sshd is up."""
        self._connected()

    def _connected(self) -> paramiko.Transport:
        """The open transport, connecting (or reconnecting after a drop) under the lock so
        that concurrent first calls share one connection."""
        with self._lock:
            if self._client is not None:
                transport = self._client.get_transport()
                if transport is not None and transport.is_active():
                    return transport
                self._client.close()  # it dropped: reconnect below
                self._client = None
            self._client = self._connect()
            fresh = self._client.get_transport()
            if fresh is None:
                raise RunnerError(f"{self.node}: SSH connection closed at once")
            return fresh

    def _connect(self) -> paramiko.SSHClient:
        t = self.target
        fail = f"{self.node}: cannot connect over SSH to {self.address}"
        try:
            key = _load_key(t.key_file)
        except Exception as exc:  # missing, unreadable, encrypted or unknown-type key alike
            raise RunnerError(f"{fail}: cannot load key {t.key_file}: {_key_cause(exc)}") \
                from exc
        client = paramiko.SSHClient()
        # Lab VMs are throw-away and get fresh host keys on every `vagrant up`; pinning them
        # in a known_hosts file would only produce spurious mismatches. So no known_hosts, and
        # accept whatever host key the VM presents.
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        try:
            sock = paramiko.ProxyCommand(t.proxy_command) if t.proxy_command else None
            client.connect(t.host, t.port, username=t.user, pkey=key, sock=sock,
                           timeout=self.connect_timeout, banner_timeout=self.connect_timeout,
                           auth_timeout=self.connect_timeout,
                           # Only the key from ssh-config: no agent, no ~/.ssh/id_* guessing.
                           allow_agent=False, look_for_keys=False)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            client.close()
            raise RunnerError(f"{fail}: {_cause(exc, t.key_file, self.connect_timeout)}") from exc
        return client

    def _drop(self, transport: paramiko.Transport) -> None:
        """Forget a dead connection, unless another thread already replaced it."""
        with self._lock:
            if self._client is not None and self._client.get_transport() is transport:
                self._client.close()
                self._client = None

    def _open_channel(self, command: str) -> tuple[paramiko.Transport, paramiko.Channel]:
        # The transport may have died since we last looked (VM rebooted, NAT timeout) without
        # paramiko noticing yet: then drop it and try once more on a fresh connection.
        for attempt in (1, 2):
            transport = self._connected()
            try:
                chan = transport.open_session(timeout=self.channel_timeout)
                chan.exec_command(command)
                return transport, chan
            except (paramiko.SSHException, EOFError, OSError) as exc:
                alive = transport.is_active()
                if not alive:
                    self._drop(transport)
                if alive or attempt == 2:
                    # A live connection refusing a channel is not cured by reconnecting, and
                    # dropping it would kill the other threads' commands.
                    raise RunnerError(f"{self.node}: SSH session on {self.address} failed: "
                                      f"{_cause(exc, self.target.key_file, 0)}") from exc
        raise AssertionError("unreachable")

    def run(self, command: str, timeout: float = 30.0,
            on_output: Callable[[str], None] | None = None) -> Result:
        deadline = time.monotonic() + timeout
        if not self._sessions.acquire(timeout=timeout):
            return Result(command, TIMEOUT_EXIT, "",
                          f"timed out after {timeout:g} s (waiting for a free SSH session)")
        try:
            return self._run(command, timeout, deadline, on_output)
        finally:
            self._sessions.release()

    def _shell(self) -> RootShell:
        """An idle root shell on the current connection, or a new one."""
        transport = self._connected()
        with self._lock:
            while self._idle:
                shell = self._idle.pop()
                if shell.transport is transport and shell.usable:
                    return shell
                shell.close()       # from a dropped connection, or ended
        transport, chan = self._open_channel(remote_command(SHELL, self.target.user, self.sudo))
        return RootShell(transport, chan)

    def _run(self, command: str, timeout: float, deadline: float,
             on_output: Callable[[str], None] | None) -> Result:
        timed_out = Result(command, TIMEOUT_EXIT, "", f"timed out after {timeout:g} s")
        while True:
            shell = self._shell()
            got = shell.run(command, deadline, on_output)
            if not got.ended:
                break
            if not shell.transport.is_active():
                # The connection died under the command (or before it).
                self._drop(shell.transport)
                raise RunnerError(f"{self.node}: SSH connection to {self.address} was lost "
                                  f"while running: {command}")
            died_idle = shell.used and not got.out and not got.err
            if not died_idle:
                # A new shell that ended at once: sudo refused, or the node's shell is not
                # usable. Its own words and exit status are the result.
                code = got.code if got.code is not None else 255
                return Result(command, code, _text(got.out), _text(got.err))
            # A shell that had worked ended while idle: the command never ran; try a new one.
        if got.timed_out:
            # Closing the shell's channel is all SSH offers; a command that ignores its closed
            # stdout/stderr (e.g. sleep) runs on until it ends by itself.
            return replace(timed_out, stdout=_text(got.out))
        if shell.usable:
            with self._lock:
                self._idle.append(shell)
        assert got.code is not None
        return Result(command, got.code, _text(got.out), _text(got.err))

    def start(self, command: str) -> NodeProcess:
        """Run `sh -c command` as root on its own channel, streams piped (exec, capture)."""
        return SSHProcess(self, command)

    def close(self) -> None:
        with self._lock:
            for shell in self._idle:
                shell.close()
            self._idle.clear()
            if self._client is not None:
                self._client.close()
                self._client = None


class SSHProcess(NodeProcess):
    """A command on its own channel of the runner's connection."""

    def __init__(self, runner: SSHRunner, command: str):
        self.runner = runner
        _, self.chan = runner._open_channel(remote_command(command, runner.target.user, runner.sudo))

    def write(self, data: bytes) -> None:
        self.chan.sendall(data)

    def send_eof(self) -> None:
        try:
            self.chan.shutdown_write()
        except (OSError, EOFError):
            pass

    def chunks(self, timeout: float) -> list[tuple[str, bytes]] | None:
        chan = self.chan
        got = []
        while chan.recv_ready():
            got.append(("out", chan.recv(CHUNK)))
        while chan.recv_stderr_ready():
            got.append(("err", chan.recv_stderr(CHUNK)))
        if got:
            return got
        if (chan.eof_received or chan.closed) and not chan.recv_stderr_ready():
            return None
        select.select([chan], [], [], timeout)
        return []

    def exit_code(self, timeout: float) -> int | None:
        if not self.chan.status_event.wait(timeout):
            return None
        code = self.chan.exit_status
        return 255 if code < 0 else code

    def kill(self) -> None:
        self.chan.close()
        self.runner.close()
