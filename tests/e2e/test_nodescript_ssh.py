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
    script.write_text(f"touch {started}\nwhile [ ! -e {release} ]; do sleep 0.05; done\n")
    failed: list[str] = []

    def run() -> None:
        try:
            provision(ssh_runner, "node1", script, tmp_path / "log", timeout=60,
                      remote_dir=str(tmp_path / "remote"))
        except ProviderError as exc:
            failed.append(str(exc))
    worker = threading.Thread(target=run)
    worker.start()
    try:
        tick = threading.Event()
        for _ in range(600):        # the script's own "started" file, polled with a bound
            if started.exists():
                break
            tick.wait(0.05)
        assert started.exists()
        ssh_runner.close()
        worker.join(timeout=30)
        assert not worker.is_alive()
        assert failed and failed[0].startswith("node1: provisioning failed")
    finally:
        release.touch()
        worker.join()
