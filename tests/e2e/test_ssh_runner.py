"""SSHRunner against a real OpenSSH server started on loopback for this module (the `sshd`
fixture, support.sshd). Needs root (sshd wants /run/sshd and to switch users) and
/usr/sbin/sshd + ssh-keygen. The parts that need no server: tests/unit/test_ssh_config.py."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
from support.sshd import free_port, keygen

from labgen.nodes.runner import TIMEOUT_EXIT, RunnerError
from labgen.nodes.ssh import SSHRunner, SSHTarget

# (the sshd fixture skips without sshd or ssh-keygen, and fails under CI=true: support.require_tool)
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: sshd wants /run/sshd and to switch users")


@pytest.fixture
def runner(ssh_runner):
    return ssh_runner


# --- commands over a live connection -----------------------------------------------------

def test_stdout_and_exit_code(runner):
    res = runner.run("echo hello; id -u")
    assert res.exit_code == 0 and res.ok
    assert res.stdout == "hello\n0\n"
    assert res.stderr == ""
    assert res.command == "echo hello; id -u"


def test_failing_command(runner):
    res = runner.run("echo oops >&2; exit 3")
    assert res.exit_code == 3 and not res.ok
    assert res.stderr == "oops\n"
    res = runner.run("no-such-command-xyz")
    assert res.exit_code == 127
    assert "no-such-command-xyz" in res.stderr


def test_quoting_survives(runner):
    # Single quotes, $ expansion and && must reach sh -c intact (shlex.quote round trip).
    res = runner.run("""printf '%s\\n' "it's" && echo $((1+2)) && echo "$0" """)
    assert res.stdout == "it's\n3\nsh\n"


def test_large_output_arrives_whole(runner):
    # Both streams big at once: reading only one until exit would deadlock on the SSH window.
    res = runner.run("head -c 2000000 /dev/zero | tr '\\0' x; "
                     "head -c 1000000 /dev/zero | tr '\\0' y >&2", timeout=60)
    assert res.exit_code == 0
    assert len(res.stdout) == 2_000_000 and set(res.stdout) == {"x"}
    assert len(res.stderr) == 1_000_000 and set(res.stderr) == {"y"}


def test_utf8_and_invalid_bytes(runner):
    res = runner.run("printf 'caf\\303\\251 \\377\\n'")
    assert res.stdout == "caf\u00e9 \ufffd\n"


def _wait_for(path, timeout: float = 30) -> None:
    """Until a command over SSH has written `path` (it runs), within a bound."""
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text().endswith("\n")):
        assert time.monotonic() < deadline, f"{path} was not written within {timeout} s"
        threading.Event().wait(0.05)


def _end(pid_file) -> None:
    """The command that wrote its PID to pid_file (sshd runs it on this host) ends now."""
    if pid_file.exists():
        try:
            os.kill(int(pid_file.read_text()), signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_timeout_then_still_usable(runner, tmp_path):
    # The runner returns at its deadline while the command still runs (sshd runs it on this
    # host: its PID is ours to look at); SSH can only close the channel, not end the command.
    runner.run("true")      # the shell is up (root's login shell here sources a slow ~/.bashrc)
    pid_file = tmp_path / "pid"
    res = runner.run(f"echo $$ > {pid_file}; exec sleep 60", timeout=2)
    assert res.exit_code == TIMEOUT_EXIT
    assert res.stderr == "timed out after 2 s"
    try:
        comm = Path(f"/proc/{int(pid_file.read_text())}/comm")
        assert comm.read_text() == "sleep\n", "the runner waited for the command's end"
    finally:
        _end(pid_file)
    assert runner.run("echo after").stdout == "after\n"


def test_timeout_keeps_partial_stdout(runner):
    # Generous timeout: root's login shell in this container sources a slow ~/.bashrc.
    res = runner.run("echo started; sleep 30", timeout=8)
    assert res.exit_code == TIMEOUT_EXIT
    assert res.stdout == "started\n"  # what arrived before the deadline is kept


def test_one_root_shell_serves_command_after_command(runner):
    # One channel (and, for a non-root user, one sudo) for many commands: each command is
    # its own `sh -c`, child of the same long-lived shell.
    parents = {runner.run("echo $PPID").stdout for _ in range(4)}
    assert len(parents) == 1 and parents.pop().strip().isdigit()


def test_a_command_cannot_disturb_the_next(runner):
    home = runner.run("pwd").stdout
    res = runner.run("cd /tmp; x=1; exit 4")
    assert res.exit_code == 4
    assert runner.run('pwd; echo "${x:-unset}"').stdout == home + "unset\n"
    res = runner.run("echo 'unbalanced")      # a syntax error stays inside its own sh -c
    assert res.exit_code == 2 and res.stderr.strip()   # sh's own complaint
    assert runner.run("echo next").stdout == "next\n"


def test_a_command_reads_no_input(runner):
    # Its stdin is /dev/null, not the commands that follow it: a cat reading anything else
    # would still wait at its timeout (exit TIMEOUT_EXIT), not end with the rest.
    res = runner.run("cat; echo done", timeout=10)
    assert (res.exit_code, res.stdout) == (0, "done\n")


def test_output_without_final_newline_and_marker_lookalikes(runner):
    res = runner.run("printf 'no newline'; printf '@@labgen-0000 0\\n' >&2")
    assert res.stdout == "no newline"
    assert res.stderr == "@@labgen-0000 0\n"
    assert runner.run("printf x").stdout == "x"


def test_killed_command_reports_128_plus_signal(runner):
    res = runner.run("kill -KILL $$")
    assert res.exit_code == 137
    assert runner.run("echo alive").stdout == "alive\n"


def test_an_idle_shell_that_died_is_replaced(runner, tmp_path):
    # The node killed it between two commands (an OOM kill, a restarted sshd): the next
    # command runs once, in a new shell, wherever the runner notices the death.
    shell_pid = int(runner.run("echo $PPID").stdout)
    os.kill(shell_pid, signal.SIGKILL)      # our own shell on this host's sshd, by its PID
    marks = tmp_path / "ran"
    res = runner.run(f"echo once >> {marks}; echo $PPID")
    assert res.ok, res.output
    assert int(res.stdout) != shell_pid
    assert marks.read_text() == "once\n"


def test_concurrent_runs_share_one_connection(runner):
    runner.run("true")
    transport = runner.transport
    results: dict[int, object] = {}

    def work(i: int) -> None:
        results[i] = runner.run(f"sleep 0.2; echo out{i}; echo err{i} >&2")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(results) == 8
    for i, res in results.items():
        assert (res.exit_code, res.stdout, res.stderr) == (0, f"out{i}\n", f"err{i}\n")
    assert runner.transport is transport


def test_more_threads_than_sshd_max_sessions(runner):
    # OpenSSH allows 10 sessions per connection by default; the runner must queue the rest
    # rather than fail (paramiko: "ChannelException: Connect failed").
    results: dict[int, object] = {}
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(
        i, runner.run(f"sleep 0.3; echo {i}", timeout=90))) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert sorted(results) == list(range(24))
    bad = {i: res for i, res in results.items() if not (res.ok and res.stdout == f"{i}\n")}
    assert not bad


def test_concurrent_first_calls_open_one_connection(sshd):
    r = SSHRunner("node1", sshd.target())
    seen = []
    try:
        threads = [threading.Thread(target=lambda: (r.run("true"), seen.append(r.transport)))
                   for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(seen) == 6 and all(t is seen[0] for t in seen)
    finally:
        r.close()


def test_connection_is_reused(runner):
    assert runner.transport is None  # lazy: nothing opened yet
    runner.run("true")
    first = runner.transport
    assert first is not None and first.is_active()
    for _ in range(5):
        runner.run("true")
    assert runner.transport is first


def test_reconnects_after_drop(runner):
    runner.run("true")
    old = runner.transport
    old.close()  # as if the VM rebooted or a NAT dropped the connection
    res = runner.run("echo back")
    assert res.stdout == "back\n"
    assert runner.transport is not old and runner.transport.is_active()


def test_drop_during_command_raises_then_recovers(runner, tmp_path):
    runner.run("true")
    transport = runner.transport
    pid_file = tmp_path / "pid"

    def drop_once_it_runs() -> None:     # the connection drops while the command runs
        _wait_for(pid_file)
        transport.close()

    dropper = threading.Thread(target=drop_once_it_runs, daemon=True)
    dropper.start()
    try:
        with pytest.raises(RunnerError, match=r"node1: .*127\.0\.0\.1:\d+.*lost"):
            runner.run(f"echo $$ > {pid_file}; exec sleep 60", timeout=60)
    finally:
        dropper.join(30)
        _end(pid_file)
    assert runner.run("echo ok").stdout == "ok\n"


def test_close_is_idempotent(runner):
    runner.run("true")
    runner.close()
    assert runner.transport is None
    runner.close()


def test_root_user_with_sudo_true_is_not_wrapped(sshd):
    r = SSHRunner("node1", sshd.target(), sudo=True)
    try:
        # Works whether or not sudo is installed: as root no sudo is used at all.
        res = r.run("id -u; ps -o comm= -p $PPID")
        assert res.ok, res.output
        assert res.stdout.splitlines()[0] == "0"
        assert "sudo" not in res.stdout
    finally:
        r.close()


def test_rsa_pem_key_with_loose_mode(sshd):
    # Vagrant's insecure_private_key is an RSA PEM key, often 0644: must still be usable.
    r = SSHRunner("node1", sshd.target(sshd.rsa_key))
    try:
        assert r.run("echo rsa").stdout == "rsa\n"
    finally:
        r.close()


def test_from_ssh_config_connects(sshd):
    text = f"""Host node1
  HostName 127.0.0.1
  User root
  Port {sshd.port}
  UserKnownHostsFile /dev/null
  StrictHostKeyChecking no
  IdentityFile "{sshd.key}"
  IdentitiesOnly yes
"""
    r = SSHRunner.from_ssh_config("node1", text, connect_timeout=5)
    try:
        assert r.connect_timeout == 5
        assert r.run("echo via-config").stdout == "via-config\n"
    finally:
        r.close()


# --- connection failures -----------------------------------------------------------------

def test_refused_key_raises_authentication_error(sshd):
    r = SSHRunner("node2", sshd.target(sshd.stranger_key))
    with pytest.raises(RunnerError) as info:
        r.run("true")
    msg = str(info.value)
    assert msg == (f"node2: cannot connect over SSH to 127.0.0.1:{sshd.port}: "
                   f"authentication with key {sshd.stranger_key} failed")
    assert "\n" not in msg


def test_dead_host_raises_fast(sshd):
    port = free_port()  # nothing listens here
    r = SSHRunner("node3", SSHTarget("127.0.0.1", port, "root", str(sshd.key)),
                  connect_timeout=3)
    with pytest.raises(RunnerError) as info:     # refused: no retry, one line
        r.run("true")
    assert str(info.value) == \
        f"node3: cannot connect over SSH to 127.0.0.1:{port}: connection refused"


def test_unresolvable_host(sshd):
    r = SSHRunner("node4", SSHTarget("no-such-host.invalid", 22, "root", str(sshd.key)),
                  connect_timeout=3)
    with pytest.raises(RunnerError, match=r"^node4: cannot connect over SSH to "
                                          r"no-such-host\.invalid:22: cannot resolve"):
        r.run("true")


def test_missing_key_file(sshd, tmp_path):
    missing = tmp_path / "nope"
    r = SSHRunner("node5", SSHTarget("127.0.0.1", sshd.port, "root", str(missing)))
    with pytest.raises(RunnerError, match=rf"^node5: .*cannot load key {missing}: no such file"):
        r.run("true")


def test_key_file_that_is_not_a_key_or_is_encrypted(sshd, tmp_path):
    garbage = tmp_path / "garbage"
    garbage.write_text("not a key\n")
    r = SSHRunner("node5", SSHTarget("127.0.0.1", sshd.port, "root", str(garbage)))
    with pytest.raises(RunnerError, match=r"cannot load key .*: not a usable private key \("):
        r.run("true")
    encrypted = keygen(tmp_path / "encrypted", "-t", "ed25519")
    subprocess.run(["ssh-keygen", "-q", "-p", "-N", "secret", "-f", str(encrypted)], check=True)
    r = SSHRunner("node5", SSHTarget("127.0.0.1", sshd.port, "root", str(encrypted)))
    with pytest.raises(RunnerError, match=r"cannot load key .*: it is protected by a passphrase$"):
        r.run("true")


def test_silent_port_times_out_with_one_line(sshd):
    # Something accepts TCP but never speaks SSH (a VM's forwarded port while it boots).
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        r = SSHRunner("node6", SSHTarget("127.0.0.1", port, "root", str(sshd.key)),
                      connect_timeout=1)
        with pytest.raises(RunnerError) as info:     # the handshake's own timeout ends it
            r.run("true")
    assert str(info.value) == (f"node6: cannot connect over SSH to 127.0.0.1:{port}: "
                               "no SSH handshake within 1 s (is sshd up yet? is it an SSH port?)")


def test_port_that_closes_at_once(sshd):
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]

        def slam() -> None:
            conn, _ = srv.accept()
            conn.close()

        threading.Thread(target=slam, daemon=True).start()
        r = SSHRunner("node7", SSHTarget("127.0.0.1", port, "root", str(sshd.key)),
                      connect_timeout=5)
        with pytest.raises(RunnerError) as info:
            r.run("true")
    assert str(info.value) == (f"node7: cannot connect over SSH to 127.0.0.1:{port}: "
                               "closed before sending an SSH banner (is sshd up yet?)")
