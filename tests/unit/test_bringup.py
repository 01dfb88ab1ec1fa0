"""The VM bring-up's own logic at its process boundaries: when a node's script starts (on
labgen's first SSH connection that works, which then ends Vagrant's wait), and that
"SSH ready" is said once per node. The real thing is in tests/e2e/test_vm_e2e.py."""
from __future__ import annotations

import subprocess
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


SAID = """Host node1
  HostName 198.19.66.130
  User vagrant
  Port 22
  UserKnownHostsFile /dev/null
  StrictHostKeyChecking no
  PasswordAuthentication no
  IdentityFile /root/.vagrant.d/insecure_private_key
  IdentitiesOnly yes
  LogLevel FATAL
"""


class Vagrant:
    """`vagrant up` as Bringup starts it (vagrant_cli.start): running until told it ended. Its
    PID is a real process in a session of its own (a sleep of this test's), which a halt
    kills with its group as it would kill Vagrant's."""

    def __init__(self) -> None:
        self.code: int | None = None
        self.proc = subprocess.Popen(["sleep", "300"], start_new_session=True)
        self.pid = self.proc.pid

    def poll(self) -> int | None:
        return self.code


def _started(tmp_path, monkeypatch, vagrantfile: str, vagrants: list[Vagrant]):
    """A Bringup whose `vagrant up` was started (no lines read): the fake, and its env."""
    (tmp_path / "Vagrantfile").write_text(vagrantfile)
    hv = Hypervisor("local", LOCAL_URI, ("node1", "node2"), ".")
    up = bringup.Bringup(hv, tmp_path, tmp_path / "vagrant.log", lambda node, what: None, {},
                         tmp_path / "logs")
    vagrant, env = Vagrant(), {}
    vagrants.append(vagrant)

    def start(args, cwd=None, timeout=None, extra_env=None):
        env.update(extra_env or {})
        return vagrant

    monkeypatch.setattr(bringup.vagrant_cli, "start", start)
    monkeypatch.setattr(up, "_thread", threading.Thread(target=lambda: None))
    monkeypatch.setattr(bringup, "SSH_RETRY", 0.001)
    up.start()
    if up._console is not None:
        up._console.stop()
    return up, vagrant, env


@pytest.fixture
def vagrants():
    """The fake Vagrants a test started: each one's sleep ends with the test."""
    started: list[Vagrant] = []
    yield started
    for v in started:
        if v.proc.poll() is None:
            v.proc.kill()
        v.proc.wait()


def test_vagrant_says_how_to_reach_a_guest_and_labgen_ends_its_wait(tmp_path, monkeypatch, vagrants):
    """Under labgen, Vagrant writes each machine's ssh-config into a directory that labgen
    names, once the machine has its address; labgen's target comes from there (no `vagrant
    ssh-config`), and a file named after the machine ends Vagrant's wait once labgen's own
    connection worked. An earlier up's files are gone first; once every machine's
    ssh-config is there, labgen keeps them for its later commands."""
    said = bringup.ssh_dir(tmp_path)
    said.mkdir(parents=True)
    (said / "node2").touch()        # an earlier up's mark
    monkeypatch.setattr(bringup, "fetch_ssh_config", lambda project: pytest.fail("vagrant ssh-config"))
    up, _, env = _started(tmp_path, monkeypatch, f"if ENV['{bringup.vagrant_cli.SSH_DIR_ENV}']\n", vagrants)
    assert env == {bringup.vagrant_cli.SSH_DIR_ENV: str(said.resolve())}
    assert list(said.iterdir()) == []
    (said / "node1.ssh-config").write_text(SAID)
    assert up._target("node1") == SSHTarget("198.19.66.130", 22, "vagrant",
                                            "/root/.vagrant.d/insecure_private_key", None)
    assert not bringup.ssh_config_cache(tmp_path).exists()     # node2's is not there yet
    guest = BootingGuest(refusals=2)
    up._wait_for_ssh(guest, "node1")
    assert guest.tries == 3 and sorted(p.name for p in said.iterdir()) == ["node1", "node1.ssh-config"]
    (said / "node2.ssh-config").write_text(SAID.replace("node1", "node2").replace(".130", ".131"))
    assert up._target("node2").host == "198.19.66.131"
    assert bringup.ssh_config_cache(tmp_path).read_text() == \
        SAID + SAID.replace("node1", "node2").replace(".130", ".131")


def test_a_vagrantfile_that_does_not_say_is_asked_with_vagrant_ssh_config(tmp_path, monkeypatch, vagrants):
    """A lab rendered by an earlier labgen: no directory named to Vagrant (it checks SSH
    itself), and `vagrant ssh-config` gives the target."""
    asked: list[object] = []

    def ssh_config(project):
        asked.append(project)
        return SAID

    monkeypatch.setattr(bringup, "fetch_ssh_config", ssh_config)
    up, _, env = _started(tmp_path, monkeypatch, "lv.driver = 'qemu'\n", vagrants)
    assert env == {} and not bringup.ssh_dir(tmp_path).exists()
    assert up._target("node1").host == "198.19.66.130" and asked == [tmp_path]
    up._wait_for_ssh(BootingGuest(refusals=0), "node1")
    assert not bringup.ssh_dir(tmp_path).exists()


def test_a_vagrant_that_ended_without_saying_falls_back_and_a_halt_stops_the_wait(tmp_path, monkeypatch,
                                                                                 vagrants):
    monkeypatch.setattr(bringup, "fetch_ssh_config", lambda project: SAID)
    up, vagrant, _ = _started(tmp_path, monkeypatch, f"ENV['{bringup.vagrant_cli.SSH_DIR_ENV}']\n", vagrants)
    vagrant.code = 1        # vagrant up failed before the guest had an address
    assert up._target("node1").host == "198.19.66.130"
    vagrant.code = None
    failed: list[BaseException] = []

    def target() -> None:
        try:
            up._target("node2")
        except ProviderError as exc:
            failed.append(exc)

    waiter = threading.Thread(target=target)
    waiter.start()
    up.kill(because="local")
    waiter.join(timeout=30)
    assert not waiter.is_alive() and [str(e) for e in failed] == ["node2: stopped while waiting for SSH"]
    assert vagrant.proc.wait(timeout=30) == -9      # the halt killed "Vagrant"'s group
