"""A node script run over SSH the way the libvirt provider runs it
(labgen/providers/nodescript.py), against a real OpenSSH server on loopback (the `sshd`
fixture, support.sshd). The remote directory is the test's own, not /var/lib/labgen."""
from __future__ import annotations

import threading

import pytest
from support import sshd as ssh_server

from labgen.errors import ProviderError
from labgen.providers.nodescript import provision

pytestmark = pytest.mark.skipif(not ssh_server.available(), reason="needs root, /usr/sbin/sshd and ssh-keygen")


def test_script_runs_is_kept_and_logs_both_streams_in_order(ssh_runner, tmp_path):
    script = tmp_path / "node1.sh"
    # Quotes, a heredoc and a non-ASCII character: the script arrives exactly as written.
    script.write_text("""#!/usr/bin/env bash
set -euo pipefail
echo "one 'two' \\"three\\" é"
echo to-stderr >&2
cat <<'END' > "$(dirname "$0")/made"
$HOME stays literal
END
echo last
""")
    remote = tmp_path / "remote"
    log = tmp_path / "logs" / "node1-provision.log"
    took = provision(ssh_runner, "node1", script, log, timeout=30, remote_dir=str(remote))
    assert took > 0
    assert log.read_text() == "one 'two' \"three\" é\nto-stderr\nlast\n"
    assert (remote / "provision-node1.sh").read_text() == script.read_text()
    assert (remote / "made").read_text() == "$HOME stays literal\n"


def test_the_scripts_own_lines_are_passed_on_as_they_come(ssh_runner, tmp_path):
    """Each `labgen[node1]: ...` line reaches `step` while the script still runs (here: before
    the script goes on, which it does only once the test has seen the first line), other
    lines and other nodes' tags do not; a last line without its newline still counts."""
    seen_first = tmp_path / "seen-first"
    script = tmp_path / "node1.sh"
    script.write_text(f"""echo 'labgen[node1]: starting Open vSwitch'
echo 'plain output'
echo 'labgen[node2]: not this node' >&2
while [ ! -e {seen_first} ]; do sleep 0.05; done
printf 'labgen[node1]: done'
""")
    steps: list[str] = []

    def step(what: str) -> None:
        steps.append(what)
        if what == "starting Open vSwitch":
            seen_first.touch()     # the script waits for this: the line came while it ran
    log = tmp_path / "node1-provision.log"
    provision(ssh_runner, "node1", script, log, timeout=60, remote_dir=str(tmp_path / "remote"), step=step)
    assert steps == ["starting Open vSwitch", "done"]
    assert log.read_text() == ("labgen[node1]: starting Open vSwitch\nplain output\n"
                               "labgen[node2]: not this node\nlabgen[node1]: done")


def test_failing_script_is_one_error_with_its_exit_and_last_lines(ssh_runner, tmp_path):
    script = tmp_path / "node1.sh"
    script.write_text("echo starting\necho 'no such package: openvswitch' >&2\nexit 3\n")
    log = tmp_path / "node1-provision.log"
    with pytest.raises(ProviderError) as err:
        provision(ssh_runner, "node1", script, log, timeout=30, remote_dir=str(tmp_path / "remote"))
    assert str(err.value) == (f"node1: provisioning failed (exit 3), see {log}: "
                              f"starting | no such package: openvswitch")
    assert log.read_text() == "starting\nno such package: openvswitch\n"


def test_closing_the_runner_ends_a_running_script_with_an_error(ssh_runner, tmp_path):
    """What a failed peer or Ctrl-C does (the provider's _halt): the runner is closed and
    provision() returns at once with an error, not after the script."""
    started, release = tmp_path / "started", tmp_path / "release"
    script = tmp_path / "node1.sh"
    # Ends by itself once the test is done with it (no process left behind).
    script.write_text(f"echo 'labgen[node1]: waiting'\n"
                      f"touch {started}\nwhile [ ! -e {release} ]; do sleep 0.05; done\n")
    failed: list[str] = []
    steps: list[str] = []

    def run() -> None:
        try:
            provision(ssh_runner, "node1", script, tmp_path / "log", timeout=60,
                      remote_dir=str(tmp_path / "remote"), step=steps.append)
        except ProviderError as exc:
            failed.append(str(exc))
    worker = threading.Thread(target=run)
    worker.start()
    try:
        tick = threading.Event()
        for _ in range(600):        # the script's line and its "started" file, polled with a bound
            if started.exists() and steps:
                break
            tick.wait(0.05)
        assert started.exists() and steps == ["waiting"]
        ssh_runner.close()
        worker.join(timeout=30)
        assert not worker.is_alive()
        assert failed and failed[0].startswith("node1: provisioning failed")
        # what came before the connection was closed is in the log
        assert (tmp_path / "log").read_text() == "labgen[node1]: waiting\n"
    finally:
        release.touch()
        worker.join()
