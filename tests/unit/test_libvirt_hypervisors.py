"""The libvirt provider's own logic for labs across hypervisors, at its process boundary: stand-ins
for `vagrant` and `virsh` first on PATH (the real ones are exercised by
tests/e2e/test_vm_e2e.py, whose shared GRE lab runs across two hypervisors)."""
from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest
from support.fake_vagrant import fake_command

from labgen import providers
from labgen.errors import ProviderError
from labgen.lab.model import Options
from labgen.lifecycle import build_lab
from labgen.providers.libvirt import hostchecks
from labgen.providers.libvirt.provider import LibvirtProvider
from labgen.render.files import write_lab

HV_B = "qemu+ssh://root@127.0.0.1/system?keyfile=/k/hv-b&no_verify=1"


def fake(tmp_path: Path, monkeypatch, name: str, script: str) -> Path:
    return fake_command(monkeypatch, tmp_path, name, body=script, record="$PWD $*")


@pytest.fixture
def split_lab(tmp_path):
    lab = build_lab(Options(tunnel="gre", libvirt_driver="qemu", name="x", hosts=(f"node2={HV_B}",)))
    lab_dir = tmp_path / "lab"
    write_lab(lab, lab_dir, providers.get(lab.provider))
    return lab, lab_dir


def test_leftovers_are_removed_per_hypervisor_each_only_its_own_nodes(split_lab, tmp_path, monkeypatch):
    """Two URIs may reach one libvirtd and one pool: sweeping hypervisor A must not delete the
    disk of a node that runs on hypervisor B."""
    lab, lab_dir = split_lab
    calls = fake(tmp_path, monkeypatch, "virsh", """
case "$*" in
  *vol-list*) printf ' Name Path\\n----\\n labgen-x-node1.img /p/1\\n labgen-x-node2.img /p/2\\n other.img /p/3\\n' ;;
esac""")
    LibvirtProvider().destroy(lab, lab_dir, lambda who, what: None)
    deleted = [ln.split()[1:] for ln in calls.read_text().splitlines() if "vol-delete" in ln]
    assert deleted == [["-c", "qemu:///system", "vol-delete", "labgen-x-node1.img", "--pool", "default"],
                       ["-c", HV_B, "vol-delete", "labgen-x-node2.img", "--pool", "default"]]
    # A lab across hypervisors has no libvirt underlay network to remove.
    assert "net-destroy" not in calls.read_text()


def test_a_failing_hypervisor_stops_the_other_and_is_the_one_named(split_lab, tmp_path, monkeypatch):
    """Hypervisor local reaches its domains' start, then would run forever; hypervisor
    127.0.0.1 fails. up() kills the first (no waiting for it), and the error names only the
    failed hypervisor."""
    lab, lab_dir = split_lab
    monkeypatch.setattr("labgen.vagrant.boxfetch.ensure_box", lambda *a, **k: False)
    fake(tmp_path, monkeypatch, "virsh", 'echo same-machine')     # both URIs: one libvirtd
    calls = fake(tmp_path, monkeypatch, "vagrant", """
case "$PWD" in
  */hosts/local) echo "==> node1: Creating domain with the following settings..."
                 echo "==> node1: Starting domain."
                 echo $$ > "$LABGEN_TEST_PIDFILE"
                 exec sleep 3600 ;;
  *) echo "==> node2: Creating domain with the following settings..."
     echo "Call to virDomainCreateWithFlags failed: no route to host" ; exit 1 ;;
esac""")
    pidfile = tmp_path / "local-vagrant.pid"
    monkeypatch.setenv("LABGEN_TEST_PIDFILE", str(pidfile))
    seen: list[tuple[str, str]] = []
    # A guard, not a measure: if up() failed to stop hypervisor local, this ends the test's wait.
    fired: list[bool] = []

    def stop_it() -> None:
        fired.append(True)
        os.kill(int(pidfile.read_text()), signal.SIGKILL)
    guard = threading.Timer(300, stop_it)
    guard.start()
    try:
        with pytest.raises(ProviderError) as exc:
            LibvirtProvider().up(lab, lab_dir, lambda who, what: seen.append((who, what)))
    finally:
        guard.cancel()
    assert not fired
    with pytest.raises(ProcessLookupError):      # killed and reaped by up()
        os.kill(int(pidfile.read_text()), 0)
    msg = str(exc.value)
    assert msg.startswith("vagrant up failed on host 127.0.0.1 (exit 1)") and "no route to host" in msg
    assert "host local" not in msg
    # The second hypervisor started only once the first was past creating its domains.
    order = [ln.split()[0].rsplit("/", 1)[1] for ln in calls.read_text().splitlines()]
    assert order == ["local", "127.0.0.1"]
    assert seen.index(("node1", "booting")) < seen.index(("node2", "creating"))


def test_kvm_access_drift_is_seen_named_and_fixed(tmp_path):
    """/dev/kvm outside group kvm, or without group read-write (no udev), is what made
    libvirt probe QEMU on every call; fix_kvm_access does what udev's rule does."""
    import grp

    from labgen.system.hostfacts import fix_kvm_access, kvm_access_drift
    kvm = grp.getgrnam("kvm").gr_gid if "kvm" in {g.gr_name for g in grp.getgrall()} else None
    if kvm is None or os.geteuid() != 0:
        pytest.skip("needs root and a kvm group to give a stand-in device a group")
    dev = tmp_path / "kvm"
    dev.touch()
    os.chown(dev, -1, 65534)
    os.chmod(dev, 0o660)
    assert kvm_access_drift(dev) == f"{dev} is in group {grp.getgrgid(65534).gr_name}, not kvm"
    os.chown(dev, -1, kvm)
    assert kvm_access_drift(dev) is None
    os.chmod(dev, 0o600)        # seen on a machine of this kind: root:kvm 0600
    assert kvm_access_drift(dev) == f"{dev} is mode 0600, not group read-write"
    os.chown(dev, -1, 0)
    assert "in group root, not kvm and mode 0600" in kvm_access_drift(dev)
    fix_kvm_access(dev)
    assert kvm_access_drift(dev) is None
    assert (dev.stat().st_gid, dev.stat().st_mode & 0o777) == (kvm, 0o660)
    assert kvm_access_drift(tmp_path / "absent") is None


def test_distinct_hypervisors_start_together(split_lab, tmp_path, monkeypatch):
    """Two machines: hypervisor local's vagrant waits (on an event, not a clock) until
    hypervisor 127.0.0.1's has started; a staggered start would never get there, and the guard
    ends it."""
    lab, lab_dir = split_lab
    monkeypatch.setattr("labgen.vagrant.boxfetch.ensure_box", lambda *a, **k: False)
    fake(tmp_path, monkeypatch, "virsh", 'case "$*" in *"system hostname"*) echo hv-a ;; *) echo hv-b ;; esac')
    started = tmp_path / "remote-started"
    pidfile = tmp_path / "local-vagrant.pid"
    fake(tmp_path, monkeypatch, "vagrant", f"""
case "$PWD" in
  */hosts/local) echo $$ > "{pidfile}"
                 while [ ! -e "{started}" ]; do sleep 0.05; done
                 echo "==> node1: Starting domain." ;;
  *) touch "{started}"; echo "==> node2: Starting domain." ;;
esac""")
    fired: list[bool] = []

    def stop_it() -> None:
        fired.append(True)
        os.kill(int(pidfile.read_text()), signal.SIGKILL)
    guard = threading.Timer(300, stop_it)
    guard.start()
    try:
        LibvirtProvider().up(lab, lab_dir, lambda who, what: None)
    except ProviderError:
        pass
    finally:
        guard.cancel()
    assert not fired and started.exists()


def guests_answer_ssh(monkeypatch) -> list[str]:
    """The guests' sshd answers at once (the process boundary: labgen's SSH connection);
    returns the addresses connected to, in order."""
    connected: list[str] = []
    monkeypatch.setattr("labgen.nodes.ssh.SSHRunner.connect", lambda self: connected.append(self.target.host))
    return connected


@pytest.mark.parametrize("vagrantfile", ["says", "earlier"])
def test_scripts_start_on_labgens_connection_to_the_address_vagrant_gave(tmp_path, monkeypatch, vagrantfile):
    """Each node's script starts as soon as labgen's own connection to the guest works, on
    the address Vagrant gave, and that address is also what verify later reads. "says": the
    Vagrantfile writes each machine's ssh-config into LABGEN_SSH_DIR once it has its address,
    and Vagrant's wait ends on labgen's mark there (the stand-in `up` says "ready" only after
    both marks: an event, not a clock); `vagrant ssh-config` is never asked. "earlier": a
    Vagrantfile of an earlier labgen, without that: `vagrant ssh-config` runs beside
    `vagrant up` once every node has its address (it takes no machine lock), and the stand-in
    says "ready" only after both scripts ran. (The script's run over SSH:
    tests/e2e/test_ssh_runner.py; the wait for a booting guest's sshd: test_bringup.py.)"""
    lab = build_lab(Options(tunnel="gre", libvirt_driver="qemu", name="x"))
    lab_dir = tmp_path / "lab"
    write_lab(lab, lab_dir, providers.get(lab.provider))
    if vagrantfile == "earlier":
        file = lab_dir / "Vagrantfile"
        file.write_text(file.read_text().replace("LABGEN_SSH_DIR", "LABGEN_UNSET"))
    monkeypatch.setattr("labgen.vagrant.boxfetch.ensure_box", lambda *a, **k: False)
    monkeypatch.setattr("labgen.providers.libvirt.provider.kvm_access_drift", lambda *a: None)
    virsh = fake(tmp_path, monkeypatch, "virsh", "")   # the lab's management network, defined
    asked, ran = tmp_path / "ssh-config-asked", tmp_path / "scripts-ran"
    say = ('for n in 1 2; do printf "Host node$n\\n  HostName 10.0.0.$n\\n  User vagrant\\n  Port 22\\n'
           '  IdentityFile /k\\n" > "$LABGEN_SSH_DIR/node$n.ssh-config"; done')
    wait = ('[ -e "$LABGEN_SSH_DIR/node1" ] && [ -e "$LABGEN_SSH_DIR/node2" ] && [ ! -e "{asked}" ]'
            if vagrantfile == "says" else '[ -e "{asked}" ] && [ "$(wc -l < "{ran}" 2>/dev/null)" = 2 ]'
            ).format(asked=asked, ran=ran)
    fake(tmp_path, monkeypatch, "vagrant", f"""
case "$1" in
  up) [ "$2 $3 $4" = "--provider libvirt --no-provision" ] || exit 3
      mkdir -p .vagrant/machines/node1/libvirt .vagrant/machines/node2/libvirt
      touch .vagrant/machines/node1/libvirt/id .vagrant/machines/node2/libvirt/id
      echo "==> node1: Waiting for machine to boot. This may take a few minutes..."
      echo "==> node2: Waiting for machine to boot. This may take a few minutes..."
      {say if vagrantfile == "says" else '[ -z "$LABGEN_SSH_DIR" ] || exit 5'}
      i=0; while ! {{ {wait}; }} && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done
      {wait} || exit 4
      echo "==> node1: Machine booted and ready!"
      echo "==> node2: Machine booted and ready!" ;;
  ssh-config) touch "{asked}"
      printf 'Host node1\\n  HostName 10.0.0.1\\n  User vagrant\\n  Port 22\\n  IdentityFile /k\\n'
      printf 'Host node2\\n  HostName 10.0.0.2\\n  User vagrant\\n  Port 22\\n  IdentityFile /k\\n' ;;
esac""")

    used = {}

    def script(runner, node, path, log, timeout=0.0, step=None):
        used[node] = runner
        with open(ran, "a") as fh:
            fh.write(f"{node} {runner.target.host} {path.name}\n")
        return 0.5
    monkeypatch.setattr("labgen.providers.nodescript.provision", script)
    connected = guests_answer_ssh(monkeypatch)
    seen: list[tuple[str, str]] = []
    provider = LibvirtProvider()
    provider.up(lab, lab_dir, lambda who, what: seen.append((who, what)))
    # up ended only because labgen's connections worked (or, earlier, both scripts ran)
    # while it waited, before its "ready" lines
    assert sorted(ran.read_text().splitlines()) == ["node1 10.0.0.1 node1.sh", "node2 10.0.0.2 node2.sh"]
    assert asked.exists() == (vagrantfile == "earlier")
    assert sorted(connected) == ["10.0.0.1", "10.0.0.2"]
    assert ("node1", "provisioned in 0.5 s") in seen
    # "SSH ready" once per node: labgen's, not Vagrant's again
    assert [w for w, what in seen if what == "SSH ready"].count("node1") == 1
    # before vagrant up: the lab's own management network, defined and started
    nets = [ln.split()[3:5] for ln in virsh.read_text().splitlines() if " net-" in ln]
    assert nets[-2:] == [["net-define", nets[-2][1]], ["net-start", "labgen-x.mgmt"]]
    assert ("lab", "management network labgen-x.mgmt 198.18.208.96/27 defined (DHCP without "
                   "dnsmasq's ping check)") in seen
    fake(tmp_path, monkeypatch, "vagrant", "exit 1")    # from now on, Vagrant would fail
    # The scripts' connections are handed over once, to any provider object of this process
    # (create's verify makes its own): then new ones, from ssh-config's answer as kept.
    assert LibvirtProvider().runner(lab, lab_dir, "node1") is used["node1"]
    assert provider.runner(lab, lab_dir, "node2") is used["node2"]
    again = provider.runner(lab, lab_dir, "node2")
    assert again is not used["node2"] and again.target.host == "10.0.0.2"


def test_a_failed_node_script_is_the_error_and_stops_vagrant(tmp_path, monkeypatch):
    """node1's script fails while `vagrant up` still runs: up stops it and names the script's
    failure, not Vagrant's exit."""
    lab = build_lab(Options(tunnel="gre", libvirt_driver="qemu", name="x"))
    lab_dir = tmp_path / "lab"
    write_lab(lab, lab_dir, providers.get(lab.provider))
    monkeypatch.setattr("labgen.vagrant.boxfetch.ensure_box", lambda *a, **k: False)
    monkeypatch.setattr("labgen.providers.libvirt.provider.kvm_access_drift", lambda *a: None)
    fake(tmp_path, monkeypatch, "vagrant", """
case "$1" in
  up) echo "==> node1: Machine booted and ready!"
      exec sleep 600 ;;
  ssh-config) printf 'Host node1\\n  HostName 10.0.0.1\\n  User vagrant\\n  Port 22\\n  IdentityFile /k\\n' ;;
esac""")

    def script(runner, node, path, log, timeout=0.0, step=None):
        raise ProviderError(f"{node}: provisioning failed (exit 1), see {log}: boom")
    monkeypatch.setattr("labgen.providers.nodescript.provision", script)
    guests_answer_ssh(monkeypatch)
    fake(tmp_path, monkeypatch, "virsh", "")
    with pytest.raises(ProviderError) as err:
        LibvirtProvider().up(lab, lab_dir, lambda who, what: None)
    assert str(err.value).startswith("node1: provisioning failed (exit 1)") and "vagrant up" not in str(err.value)


# ---- VM sizes against the hypervisor (virsh nodeinfo), before anything is created -----------
# `virsh -c qemu:///system nodeinfo` on this project's CI host (libvirt 9.0.0, Debian 12).
NODEINFO = """\
CPU model:           x86_64
CPU(s):              2
CPU frequency:       1996 MHz
CPU socket(s):       1
Core(s) per socket:  2
Thread(s) per core:  1
NUMA cell(s):        1
Memory size:         24683784 KiB

"""


def sized(**kw):
    return build_lab(Options(tunnel="gre", libvirt_driver="qemu", name="x", **kw))


@pytest.mark.parametrize("kw,expected", [
    ({}, []),
    ({"memory": 11 * 1024}, []),                # 22 GiB of 23.5: fits
    ({"memory": 65536}, ["--memory 65536 x 2 nodes needs 128 GiB; this host has 23.5 GiB: "
                         "use a smaller --memory or fewer --nodes"]),
    ({"memory": 12 * 1024, "nodes": 2}, ["--memory 12288 x 2 nodes needs 24 GiB; this host has 23.5 GiB: "
                                         "use a smaller --memory or fewer --nodes"]),
    ({"cpus": 2}, []),
    ({"cpus": 4}, ["--cpus 4 is more than the 2 CPUs of this host: use --cpus 2 or fewer"]),
    ({"cpus": 3, "memory": 1 << 16, "nodes": 3},
     ["--memory 65536 x 3 nodes needs 192 GiB; this host has 23.5 GiB: use a smaller --memory or fewer --nodes",
      "--cpus 3 is more than the 2 CPUs of this host: use --cpus 2 or fewer"]),
])
def test_vm_sizes_against_the_host(tmp_path, monkeypatch, kw, expected):
    calls = fake_command(monkeypatch, tmp_path, "virsh", output=NODEINFO.encode())
    lab = sized(**kw)
    hv = lab.settings.hosts[0]
    assert hostchecks.size_problems(lab, hv) == expected
    assert calls.read_text().split() == ["-c", "qemu:///system", "nodeinfo"]


def test_vm_sizes_on_each_hypervisor_of_a_lab_across_hypervisors(tmp_path, monkeypatch):
    """Each hypervisor runs one node: its memory alone counts, and the line names it."""
    fake_command(monkeypatch, tmp_path, "virsh", output=NODEINFO.encode())
    lab = build_lab(Options(tunnel="gre", libvirt_driver="qemu", name="x", memory=32768,
                            hosts=(f"node2={HV_B}",)))
    local, remote = lab.settings.hosts
    assert hostchecks.size_problems(lab, remote) == [
        "--memory 32768 needs 32 GiB; libvirt host 127.0.0.1 has 23.5 GiB: use a smaller --memory"]
    assert hostchecks.size_problems(lab, local) == [
        "--memory 32768 needs 32 GiB; this host has 23.5 GiB: use a smaller --memory"]


@pytest.mark.parametrize("output,code", [(NODEINFO, 1), ("", 0), ("CPU(s): many\nMemory size: lots\n", 0)])
def test_vm_sizes_unknown_is_no_problem_here(tmp_path, monkeypatch, output, code):
    """libvirt not answering is another check's line; an answer without the numbers, none."""
    fake_command(monkeypatch, tmp_path, "virsh", output=output.encode(), body=f"exit {code}")
    lab = sized(memory=1 << 20, cpus=64)
    assert hostchecks.size_problems(lab, lab.settings.hosts[0]) == []


def test_a_lab_too_big_for_the_host_is_refused_by_create_before_anything_is_written(tmp_path, monkeypatch):
    """Through the real CLI in-process, with this host's tools and libvirt answering through
    stand-ins: one line, exit 2, no lab directory, no Vagrant run."""
    from typer.testing import CliRunner

    from labgen.cli.app import app
    fake_command(monkeypatch, tmp_path, "virsh", output=NODEINFO.encode())
    vagrant = fake_command(monkeypatch, tmp_path, "vagrant", output=b"vagrant-libvirt (0.11.2, global)\n")
    monkeypatch.setattr("labgen.system.hostfacts.missing_tools", lambda *a, **k: [])
    d = tmp_path / "lab"
    result = CliRunner().invoke(app, ["create", "gre", "--name", "tsize", "--libvirt-driver", "qemu",
                                      "--memory", "65536", "--dir", str(d)])
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert result.exit_code == 2, result.output
    assert lines == ["error: --memory 65536 x 2 nodes needs 128 GiB; this host has 23.5 GiB: use a smaller "
                     "--memory or fewer --nodes"]
    assert not d.exists()
    assert [c.split()[0] for c in vagrant.read_text().splitlines()] == ["plugin"]


def test_prune_forgets_only_the_vagrant_machines_it_removed(tmp_path):
    """Vagrant's record of a machine that prune removed goes; another machine's stays."""
    from labgen.providers.libvirt.registry import forget_machines
    records = {}
    for project, node, uuid in ((".", "node1", "u-1"), ("hosts/local", "node1", "u-2"),
                                ("hosts/127.0.0.1", "node2", "u-3"), (".", "node9", "other")):
        d = tmp_path / project / ".vagrant" / "machines" / node / "libvirt"
        d.mkdir(parents=True)
        (d / "id").write_text(uuid)
        (d / "box_meta").write_text("{}")
        records[uuid] = d
    dropped = forget_machines(tmp_path, {"u-1", "u-2", "u-3"})
    assert sorted(dropped) == sorted(records[u] for u in ("u-1", "u-2", "u-3"))
    assert [u for u, d in records.items() if d.exists()] == ["other"]


def test_up_skips_vagrant_only_when_every_guest_runs_in_its_recorded_domain(split_lab, tmp_path, monkeypatch):
    """A running lab's `up` needs no `vagrant up` (~25 s to say so); a node without Vagrant's
    record, one whose recorded domain is not among the running ones, or one that no up has
    provisioned to the end in that domain (still booting, perhaps), still gets it."""
    from labgen.providers.libvirt.project import hypervisors, project_dir, provisioned_mark, running_as_recorded
    lab, lab_dir = split_lab
    fake(tmp_path, monkeypatch, "virsh", 'echo "  u-node1  "; echo u-other')
    local = hypervisors(lab)[0]
    assert local.nodes == ("node1",)
    record = project_dir(lab_dir, local) / ".vagrant" / "machines" / "node1" / "libvirt" / "id"
    assert not running_as_recorded(lab, lab_dir, local)       # never brought up
    record.parent.mkdir(parents=True)
    record.write_text("u-node1")
    assert not running_as_recorded(lab, lab_dir, local)       # running, but never provisioned
    provisioned_mark(project_dir(lab_dir, local)).write_text("node1 u-node1\n")
    assert running_as_recorded(lab, lab_dir, local)
    record.write_text("u-gone")                                 # a domain that stopped or went
    assert not running_as_recorded(lab, lab_dir, local)


@pytest.mark.parametrize("answer, line", [
    ('echo "Vagrant failed to initialize at a very early stage: a lock" >&2; exit 1',
     "`vagrant plugin list` failed (exit 1): Vagrant failed to initialize at a very early stage: a lock"),
    ('echo "vagrant-share (2.0.0, global)"', "vagrant plugin vagrant-libvirt (package vagrant-libvirt)"),
])
def test_a_vagrant_that_cannot_list_its_plugins_is_not_called_pluginless(tmp_path, monkeypatch, answer, line):
    """`vagrant plugin list` that fails is Vagrant's own error, said as such; one that answers
    without vagrant-libvirt is the missing plugin."""
    lab = build_lab(Options(tunnel="gre", libvirt_driver="qemu", name="x"))
    fake(tmp_path, monkeypatch, "vagrant", answer)
    assert any(line in problem for problem in hostchecks.host_problems(lab))
