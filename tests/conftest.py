"""Shared test setup for tests/unit (pure logic: no root, no Open vSwitch, no VM) and tests/e2e
(real OVS in namespaces, real VMs, fresh Debian roots, a real sshd). What the modules share
is in tests/support/ (importable as `support`: pyproject.toml puts tests/ on sys.path).

Markers: `netns` (real OVS in namespaces, root), `vm` (real Vagrant + libvirt + qemu VMs,
root, minutes) and `fresh` (a debootstrapped Debian root, root, minutes). They mark only the
tests that need that; netns and vm tests are skipped with the reason when the host cannot
run them, never faked (test_fresh_machine.py skips by itself)."""
from __future__ import annotations

import os
import shutil
import time

import pytest
from support import OPT_IN, bounds, require_tool, sessions
from support import sshd as ssh_server
from support.cli import STARTED, kill_group, labgen, run_group


def netns_capable() -> str | None:
    """Why the netns end-to-end tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("ovs-vsctl", "ovs-vswitchd", "tcpdump", "ethtool", "unshare", "nsenter", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


def vm_capable() -> str | None:
    """Why the VM end-to-end tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("vagrant", "virsh", "qemu-system-x86_64", "debootstrap", "qemu-img"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (sudo scripts/setup --vm)"
    return None


def pytest_collection_modifyitems(config, items):
    for marker, probe in (("netns", netns_capable), ("vm", vm_capable)):
        reason = probe()
        # In CI the host is set up by .ci/run: a missing tool there must fail, not skip.
        if reason and os.environ.get("CI") != "true":
            skip = pytest.mark.skip(reason=f"{marker} end-to-end: {reason}")
            for item in items:
                if marker in item.keywords:
                    item.add_marker(skip)


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true", default=False,
                     help="rewrite tests/golden/ from what labgen renders now (tests/unit/test_golden.py); "
                          "env LABGEN_UPDATE_GOLDEN=1 does the same")


@pytest.fixture(scope="session")
def box():
    """The locally built labgen/debian12 box (built once, then reused from the cache)."""
    proc = labgen("box", "build", "debian12", timeout=bounds.BOX_BUILD)
    assert proc.returncode == 0, proc.stderr[-3000:]
    listed = run_group(["vagrant", "box", "list"], bounds.VAGRANT_QUERY).stdout
    assert "labgen/debian12" in listed and "libvirt" in listed
    return "labgen/debian12"


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """A real OpenSSH server on loopback, one per module (support.sshd.Server): the SSH
    runner's tests and exec/capture over SSH (tests/e2e)."""
    require_tool(ssh_server.SSHD, "apt-get install openssh-server: scripts/setup --dev installs it")
    require_tool("ssh-keygen", "apt-get install openssh-client: scripts/setup installs it")
    yield from ssh_server.serve(tmp_path_factory)


@pytest.fixture
def ssh_runner(sshd):
    """An SSHRunner for "node1" on that server, closed after the test."""
    from labgen.nodes.ssh import SSHRunner
    r = SSHRunner("node1", sshd.target(), connect_timeout=5)
    yield r
    r.close()


# ---- CI: no silent skips, a whole-suite budget, the time per marker ----------------------
MARKERS = ("vm", "netns", "fresh")


@pytest.fixture(autouse=True)
def end_started():
    """A labgen started by support.cli.labgen_started that still runs when its test ends (the
    test failed or was interrupted before it ended it) is killed with everything it started."""
    first = len(STARTED)
    yield
    for proc in STARTED[first:]:
        if proc.poll() is None:
            kill_group(proc)
    del STARTED[first:]


def suite_budget() -> float | None:
    """LABGEN_SUITE_BUDGET seconds, else 80 min under CI=true (CI's own limit is 90: the last
    10 are for the teardown of what runs and .ci/run's end), else none."""
    value = os.environ.get("LABGEN_SUITE_BUDGET") or ("4800" if os.environ.get("CI") == "true" else "")
    return float(value) if value and float(value) > 0 else None


def pytest_configure(config):
    # What an earlier test run that was killed as a whole left running (support.sessions):
    # ended before any test starts, so it holds no VM, lock or core of this run.
    for what in sessions.end_left():
        print(f"ended {what}, left by a test run that is gone")
    config._labgen_started = time.monotonic()
    config._labgen_by_marker = {}
    config._labgen_tests_run = 0


def pytest_runtest_setup(item):
    """End the run cleanly once its budget is used up: pytest.exit before the next test, so
    the fixtures of the tests that ran are torn down (their labs destroyed) and the run ends
    with a clear line, not with CI's kill."""
    budget = suite_budget()
    used = time.monotonic() - item.config._labgen_started
    if budget is not None and used > budget:
        done = item.config._labgen_tests_run
        pytest.exit(f"suite budget of {budget / 60:.3g} min used up after {done} tests "
                    f"({used / 60:.1f} min): stopping before {item.nodeid} (LABGEN_SUITE_BUDGET)",
                    returncode=1)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """The time per marker (setup + call + teardown), and under CI=true a skip is a failure,
    unless the test is one that only runs when asked for (its reason starts with "opt in",
    listed by -ra): CI installs every tool, and a skip would hide a missing set-up step."""
    outcome = yield
    rep = outcome.get_result()
    marker = next((m for m in MARKERS if item.get_closest_marker(m) is not None), "unmarked")
    totals = item.config._labgen_by_marker
    totals[marker] = totals.get(marker, 0.0) + rep.duration
    if call.when == "teardown":
        item.config._labgen_tests_run += 1
    if os.environ.get("CI") == "true" and rep.skipped and not hasattr(rep, "wasxfail"):
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        if not reason.removeprefix("Skipped: ").startswith(OPT_IN):
            rep.outcome = "failed"
            rep.longrepr = f"skipped under CI=true ({reason}): CI installs every tool a test needs"


def pytest_terminal_summary(terminalreporter, config):
    totals = getattr(config, "_labgen_by_marker", {})
    if totals:
        terminalreporter.write_sep("=", "time per marker (setup + call + teardown of its tests)")
        for marker, secs in sorted(totals.items(), key=lambda kv: -kv[1]):
            terminalreporter.write_line(f"{marker:>9}: {secs:7.0f} s")
        terminalreporter.write_line(f"{'suite':>9}: {time.monotonic() - config._labgen_started:7.0f} s")
