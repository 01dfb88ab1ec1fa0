"""The VM bring-up's own logic at its process boundaries: when a node's script starts (on
labgen's first SSH connection that works, which then ends Vagrant's wait), and that
"SSH ready" is said once per node. The real thing is in tests/e2e/test_vm_e2e.py."""
from __future__ import annotations

import threading

import pytest

from labgen.errors import ProviderError
from labgen.nodes.runner import RunnerError
from labgen.nodes.ssh import SSHTarget
from labgen.providers.libvirt import bringup
from labgen.providers.libvirt.hypervisors import LOCAL_URI, Hypervisor


class BootingGuest:
    """A runner whose connect() is refused `refusals` times, as a booting guest's is."""

    def __init__(self, refusals: int, proxy: str | None = None):
        self.refusals, self.tries = refusals, 0
        self.target = SSHTarget("198.19.66.130", 22, "vagrant", "/key", proxy)

    def connect(self) -> None:
        self.tries += 1
        if self.tries <= self.refusals:
            raise RunnerError("node1: cannot connect over SSH to 198.19.66.130:22: connection refused")


def _bringup(tmp_path, said):
    (tmp_path / "Vagrantfile").write_text("lv.driver = 'qemu'\n")
    hv = Hypervisor("local", LOCAL_URI, ("node1", "node2"), ".")
    return bringup.Bringup(hv, tmp_path, tmp_path / "vagrant.log",
                           lambda node, what: said.append((node, what)), {}, tmp_path / "logs")


def test_the_script_starts_on_the_first_connection_and_ready_is_said_once(tmp_path, monkeypatch):
    monkeypatch.setattr(bringup, "SSH_RETRY", 0.001)
    said: list[tuple[str, str]] = []
    up = _bringup(tmp_path, said)
    guest = BootingGuest(refusals=3)
    up._wait_for_ssh(guest, "node1")
    assert guest.tries == 4 and said == [("node1", "SSH ready")]
    # Vagrant's own "Machine booted and ready", later: not said again; another node's is
    stage: dict[str, str] = {}
    bringup.track("==> node1: Machine booted and ready!", stage, up._vagrant_progress)
    bringup.track("==> node2: Machine booted and ready!", stage, up._vagrant_progress)
    bringup.track("==> node2: Machine booted and ready!", stage, up._vagrant_progress)
    assert said == [("node1", "SSH ready"), ("node2", "SSH ready")]


def test_a_halt_ends_the_wait_for_ssh(tmp_path):
    said: list[tuple[str, str]] = []
    up = _bringup(tmp_path, said)
    guest = BootingGuest(refusals=10**9)
    failed: list[BaseException] = []

    def wait() -> None:
        try:
            up._wait_for_ssh(guest, "node1")
        except ProviderError as exc:
            failed.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    up.kill(because="local")    # vagrant up failed, or Ctrl-C
    waiter.join(timeout=30)
    assert not waiter.is_alive() and said == []
    assert [str(e) for e in failed] == ["node1: stopped while waiting for SSH"]


def test_the_wait_for_ssh_has_an_end(tmp_path, monkeypatch):
    monkeypatch.setattr(bringup, "SSH_RETRY", 0.001)
    monkeypatch.setattr(bringup.vagrant_cli, "up_timeout", lambda project: 0.05)
    up = _bringup(tmp_path, [])
    with pytest.raises(ProviderError, match=r"^node1: no SSH: node1: cannot connect .*connection refused$"):
        up._wait_for_ssh(BootingGuest(refusals=10**9), "node1")


def test_vagrant_up_ends_its_wait_for_ssh_on_labgens_mark(tmp_path, monkeypatch):
    """`vagrant up` is told where labgen marks each guest whose SSH answered labgen's own
    connection (the Vagrantfile's wait for SSH ends there, without a login of Vagrant's);
    an earlier up's marks are gone first."""
    up = _bringup(tmp_path, [])
    ready = bringup.ssh_ready_dir(tmp_path)
    ready.mkdir(parents=True)
    (ready / "node2").touch()       # an earlier up's mark
    started: dict[str, object] = {}

    class Proc:
        pid = 4242

    def start(args, cwd=None, timeout=None, extra_env=None):
        started.update(args=args, env=extra_env)
        return Proc()

    monkeypatch.setattr(bringup.vagrant_cli, "start", start)
    monkeypatch.setattr(up, "_thread", threading.Thread(target=lambda: None))    # no lines to read
    up.start()
    if up._console is not None:
        up._console.stop()
    assert started["env"] == {bringup.vagrant_cli.SSH_READY_ENV: str(ready.resolve())}
    assert list(ready.iterdir()) == []
    monkeypatch.setattr(bringup, "SSH_RETRY", 0.001)
    guest = BootingGuest(refusals=2)
    up._wait_for_ssh(guest, "node1")
    assert guest.tries == 3 and [p.name for p in ready.iterdir()] == ["node1"]
