"""What starts when the box boots, in which order and at what priority (issue 27): the VMs run
on one emulated CPU, where every unit ahead of sshd and the management NIC's DHCP lease
delays the lab. configure_units() applies it to the root fs; labgen/boxbuild/version.py
digests every constant here, so a change to any of them is a new box version. Figures:
docs/benchmarks.md.
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import BoxBuildError
from .rootfiles import symlink, write_file

# The management NIC (Vagrant's management network, eth0) by systemd-networkd, not ifupdown
# and dhclient (1.3.0): the address is set as the lease comes (dhclient-script took ~2.5 s
# of the emulated CPU after it, before Vagrant's first login could come). The lease itself
# comes no sooner than dhclient's (docs/benchmarks.md). No IPv6 or link-local addresses:
# Vagrant reaches the guest over IPv4. The client identifier is the MAC, as dhclient sent
# it. Only eth0 matches: every other link (the underlay, the lab's bridges and veths) stays
# unmanaged.
NETWORKD_ETH0 = """\
# labgen box: DHCP on the first NIC (Vagrant's management network); labgen/boxbuild/bootorder.py
[Match]
Name=eth0

[Network]
DHCP=ipv4
LinkLocalAddressing=no
IPv6AcceptRA=no

[DHCPv4]
ClientIdentifier=mac
# the hostname is the box's, then the node script's: no hostnamed started for the lease's
UseHostname=no
"""
# Routes and rules networkd did not make are left alone (its default removes them from the
# links it manages): the guest is a lab node, whose routes are labgen's or the user's.
NETWORKD_CONF = """\
# labgen box: leave other routes alone (labgen/boxbuild/bootorder.py)
[Network]
ManageForeignRoutes=no
ManageForeignRoutingPolicyRules=no
"""


# Boot order (issue 27). The VMs run on one emulated vCPU, where a unit that is ordered
# before another costs its whole start time. Debian orders Open vSwitch before
# network.target and networking.service (for ifupdown's OVS integration, which labgen never
# uses: the node script builds its bridges with ovs-vsctl), and ssh.service after
# network.target. So the management NIC's DHCP, network.target and with it
# systemd-user-sessions (no login before it) and sshd all waited ~60 s for ovsdb-server and
# ovs-vswitchd. configure_units() writes copies of these units to /etc/systemd/system without
# the listed ordering; a listed value missing from the packaged unit fails the build (a
# changed Debian unit must be looked at again). ovs-record-hostname.service is masked (see
# MASKED_UNITS), so openvswitch-switch's [Install] no longer names it: `systemctl enable`
# would otherwise trip on the mask.
#
# The management NIC's DHCP also waited for network-pre.target, that is for firewalld
# (Before=network-pre.target), ~20-40 s of Python on the emulated CPU, before the DHCP
# client even started; Vagrant waits for that lease before it tries SSH. Now
# systemd-networkd asks for the lease while firewalld starts. Before firewalld is active,
# only sshd listens on the NIC, and firewalld's default zone lets SSH in anyway.
UNIT_EDITS: dict[str, dict[str, tuple[str, ...]]] = {
    # sshd listens on 0.0.0.0: it needs no configured network
    "ssh.service": {"After": ("network.target",)},
    "systemd-networkd.service": {"After": ("network-pre.target",)},
    # DNS for the guest's own use, not the lab's: systemd-resolved (2 s of the emulated CPU)
    # no longer holds up sysinit.target, that is every unit of the boot (8 s measured)
    "systemd-resolved.service": {"Before": ("sysinit.target",)},
    # OVS: not before network.target (above), nor after network-pre.target, that is after
    # firewalld's start, which the node script's start of OVS then waited for (1.4.0 runs
    # firewalld's start in the background: it would be on the lab's way again)
    "ovsdb-server.service": {"Before": ("network.target", "networking.service"),
                             "After": ("network-pre.target",)},
    "ovs-vswitchd.service": {"Before": ("network.target", "networking.service"),
                             "After": ("network-pre.target",)},
    # (and its umbrella unit, which the node script starts, did wait for firewalld's start
    # until 1.5.0: the bridges, and with them spanning tree's timers, came only after it)
    "openvswitch-switch.service": {"Before": ("network.target",),
                                   "After": ("network-pre.target",),
                                   "Also": ("ovs-record-hostname.service",)},
    # Logins no longer wait for network.target, that is for firewalld (~30-60 s of Python on
    # the emulated CPU; network.target is After=network-pre.target, which firewalld is
    # Before) and networking.service: Vagrant's first login comes as soon as sshd answers
    # and the management NIC has its lease. The node script waits for firewalld's start job
    # to end before it looks at the firewall (templates/node.sh.j2, firewalld_running), so
    # the tunnel's rule still goes to an active firewalld. Measured in docs/benchmarks.md.
    "systemd-user-sessions.service": {"After": ("network.target",)},
}

# Who gets the one emulated CPU first while the boot's units compete for it. systemd-networkd
# first: the sooner it asks for the DHCP lease Vagrant waits for, the more of the rest of the
# boot runs while the lease comes; its start took 8-12 s at boot (0.8 s on an idle guest).
NICE_UNITS = {"systemd-networkd.service": -10}

# What the lab does not wait for runs in the background: firewalld's start (~6-8 s of the
# emulated CPU: Python, its XML, ~30 iptables and ebtables probes) and systemd-resolved (DNS
# for the guest's own use). Their slice's CPU weight is "idle" (cgroup v2 cpu.idle), so they
# get the CPU only when the boot, the logins and the node script leave it (with an 802.1D
# lab, while the spanning tree's forward delay runs). Nice did not do it: systemd gives
# system.slice and user.slice, where the logins and the node script run, equal CPU weights,
# and firewalld at nice 10 took half the CPU from the node script (docs/benchmarks.md).
# firewalld is still active before the node script's firewall step, which waits for its start.
BACKGROUND_UNITS = ("firewalld.service", "systemd-resolved.service")
# and one after the other: the node script waits for firewalld's start (its rule must go to an
# active firewalld), not for resolved's, which took a share of the idle CPU beside it
BACKGROUND_AFTER = {"systemd-resolved.service": "firewalld.service"}
BACKGROUND_SLICE = """\
# labgen box: what the lab does not wait for (labgen/boxbuild/bootorder.py)
[Unit]
Description=Background services of the lab box

[Slice]
CPUWeight=idle
"""

# Open vSwitch is not started at boot: the recipe's `start` (systemctl enable --no-reload
# --now openvswitch-switch), which the node script runs while provisioning, starts it. At boot
# its two daemons (~45 s each of the one emulated CPU, measured) ran while Vagrant waited
# for SSH. A rebooted provisioned node starts it at boot (enabled then).
OVS_AT_BOOT = False

# Units that do nothing for a lab and cost boot time or run behind the lab's back on the
# emulated CPU: apt and dpkg timers, e2scrub (for LVM snapshots, which the box has none
# of; it took 15 s of each boot), fstrim, and ovs-record-hostname (waits for
# network-online.target to write the hostname into OVS's external_ids, which labgen does
# not read; 21 s of each boot).
MASKED_UNITS = (
    "apt-daily.timer", "apt-daily-upgrade.timer", "dpkg-db-backup.timer", "fstrim.timer",
    "e2scrub_all.timer", "e2scrub_reap.service", "ovs-record-hostname.service",
    # systemd loads these modules early on every boot, for a console (drm: the VMs have no
    # video device), LVM (dm_mod), EFI variables (efi_pstore) and FUSE, none of which the
    # box has or uses
    "modprobe@drm.service", "modprobe@dm_mod.service", "modprobe@efi_pstore.service",
    "modprobe@fuse.service",
    # and what a lab never mounts or runs: loop devices and configfs (built into Debian's
    # kernel; the modprobe is a process for nothing), foreign binary formats, huge pages
    # (the kernel datapath needs none), the kernel's debug and trace file systems. Each
    # took 6-9 s of the one emulated CPU while the boot's other units waited for it.
    "modprobe@loop.service", "modprobe@configfs.service", "systemd-binfmt.service",
    "proc-sys-fs-binfmt_misc.automount", "dev-hugepages.mount", "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount",
    # No systemd user manager: logind starts one for each user's first login (lingering,
    # at boot), ~1 s of the emulated CPU and a wait of every first login for it, for
    # `systemctl --user`, which a lab never runs (logins do without it). Its unit also
    # delegates the CPU controller, which gives the logins' slice the CPU weight of all the
    # boot's services together.
    "user@.service",
    # The box's system users exist (its packages made them when they were installed):
    # systemd-sysusers checked them again on every boot, 1.2 s of the emulated CPU ahead of
    # udev and every unit after it. No getty on the first virtual console: the VMs have no
    # screen (the serial console keeps its own).
    "systemd-sysusers.service", "getty@tty1.service",
    # Boot records in utmp and wtmp (`who -b`, `last`), a journal flush with nothing to flush
    # (volatile journal), the commit of a machine ID that systemd derives from the VM's UUID
    # on every boot anyway, and POSIX message queues: processes ahead of sysinit.target
    # (utmp's was its slowest, 6.7 s on a busy guest) that a lab never reads.
    "systemd-update-utmp.service", "systemd-update-utmp-runlevel.service",
    "systemd-journal-flush.service", "systemd-machine-id-commit.service", "dev-mqueue.mount",
    # (Not polkit, tried in a 1.5.0 build: firewalld then asked D-Bus to start it for each of
    # its ~300 authorization checks of a lab's life, each activation failing on the mask;
    # dbus-daemon took 1.4 s more of the emulated CPU, firewalld no less.)
)

# Open vSwitch's two daemons started by systemd itself, not through ovs-ctl: its start of
# both (a shell script that runs ~20 programs: a database made and checked, versions and IDs
# written one ovs-vsctl at a time, the kernel module, mlockall) took 7-11 s of the node
# script on an emulated guest, the daemons alone ~1 s (docs/benchmarks.md). The database
# comes with the box (OVS_DATABASE), the kernel module is loaded by the kernel when
# ovs-vswitchd first asks for its netlink family, and memory is not locked (the box has
# no swap). Stop and reload stay the package's (ovs-ctl finds the daemons by their pid files).
OVS_RUNDIR = "/var/run/openvswitch"
OVS_DAEMON_UNITS = {
    "ovsdb-server.service": (
        "/usr/sbin/ovsdb-server /etc/openvswitch/conf.db -vconsole:emer -vsyslog:err -vfile:info"
        f" --remote=punix:{OVS_RUNDIR}/db.sock --remote=db:Open_vSwitch,Open_vSwitch,manager_options"
        " --private-key=db:Open_vSwitch,SSL,private_key --certificate=db:Open_vSwitch,SSL,certificate"
        " --bootstrap-ca-cert=db:Open_vSwitch,SSL,ca_cert --no-chdir"
        f" --log-file=/var/log/openvswitch/ovsdb-server.log --pidfile={OVS_RUNDIR}/ovsdb-server.pid --detach"),
    "ovs-vswitchd.service": (
        f"/usr/sbin/ovs-vswitchd unix:{OVS_RUNDIR}/db.sock -vconsole:emer -vsyslog:err -vfile:info"
        " --no-chdir --log-file=/var/log/openvswitch/ovs-vswitchd.log"
        f" --pidfile={OVS_RUNDIR}/ovs-vswitchd.pid --detach"),
}
OVS_DAEMON_DROPIN = """\
# labgen box: the daemon itself, not ovs-ctl (OVS_DAEMON_UNITS in labgen/boxbuild/bootorder.py)
[Service]
PIDFile={pidfile}
ExecStart=
ExecStart={command}
"""

# systemd's generators, each a program run on every boot before any unit starts, that find
# nothing in a lab VM: no encrypted, verity or integrity volumes, GPT auto-mounts, resume
# device, /etc/rc.local, offline update, or systemd.run= and debug shell on the command line.
# A link to /dev/null in /etc/systemd/system-generators masks one (systemd.generator(7)).
# fstab, getty (the serial console's getty) and sysv stay.
MASKED_GENERATORS = (
    "systemd-cryptsetup-generator", "systemd-veritysetup-generator",
    "systemd-integritysetup-generator", "systemd-gpt-auto-generator",
    "systemd-hibernate-resume-generator", "systemd-rc-local-generator",
    "systemd-system-update-generator", "systemd-run-generator", "systemd-debug-generator",
)

# udev's coldplug at boot replays every device the kernel found before udevd ran through
# udev's rules, a worker's run each: in Debian's unit all 263 of the emulated PC's (88 of
# them ttys and VT consoles, 58 ACPI objects) and the kernel's modules, 3.7 s of udevd's CPU
# when replayed on a running guest (docs/benchmarks.md). The box replays what a lab VM uses: disks, NICs, PCI and
# virtio devices (their drivers load by alias), input devices, the platform, PnP and serio
# devices, the memory and misc devices (their /dev modes), the serial console ttyS0 (its
# getty waits for the device's unit) and the ACPI power button (its driver loads by alias;
# `vagrant halt` presses it). A packaged trigger line missing fails the build.
COLDPLUG_PACKAGED = ("ExecStart=-udevadm trigger --type=all --action=add"
                     " --prioritized-subsystem=module,block,tpmrm,net,tty,input",)
COLDPLUG_SUBSYSTEMS = ("block", "net", "pci", "virtio", "input", "platform", "pnp", "serio",
                       "mem", "misc")
COLDPLUG_DEVICES = (("tty", "ttyS0"), ("acpi", "LNXPWRBN:00"))
COLDPLUG_DROPIN = (
    "# labgen box: the devices a lab VM uses (COLDPLUG_* in labgen/boxbuild/bootorder.py)\n"
    "[Service]\nExecStart=\n"
    "ExecStart=-udevadm trigger --type=subsystems --action=add\n"
    "ExecStart=-udevadm trigger --type=devices --action=add --prioritized-subsystem=block,net,input"
    + "".join(f" --subsystem-match={s}" for s in COLDPLUG_SUBSYSTEMS) + "\n"
    + "".join(f"ExecStart=-udevadm trigger --type=devices --action=add --subsystem-match={s}"
              f" --sysname-match={n}\n" for s, n in COLDPLUG_DEVICES))

# The journal in memory only: systemd-journal-flush (on the boot's critical chain, 7 s)
# then has nothing to copy to /var/log/journal. A lab's logs that matter are labgen's own
# (the lab directory's logs/) and the serial console.
JOURNALD_CONF = """\
# labgen box: the journal in memory only (labgen/boxbuild/bootorder.py)
[Journal]
Storage=volatile
"""



def configure_units(root: Path) -> None:
    """The root fs's systemd configuration for the lab's boot: networkd on eth0, the units of
    UNIT_EDITS copied without that ordering, OVS off at boot, without its SysV script and
    its daemons started directly, MASKED_UNITS and MASKED_GENERATORS masked, NICE_UNITS
    niced, BACKGROUND_UNITS in the idle slice, udev's coldplug of what a lab uses, the
    journal in memory."""
    units = root / "etc/systemd/system"
    write_file(root, "etc/systemd/network/10-eth0.network", NETWORKD_ETH0)
    write_file(root, "etc/systemd/networkd.conf.d/labgen.conf", NETWORKD_CONF)
    # networkd on at boot: the links `systemctl enable systemd-networkd` makes, less the
    # wait-online unit (nothing in the box waits for network-online.target).
    for rel, unit in (("multi-user.target.wants/systemd-networkd.service", "systemd-networkd.service"),
                      ("sockets.target.wants/systemd-networkd.socket", "systemd-networkd.socket"),
                      ("dbus-org.freedesktop.network1.service", "systemd-networkd.service")):
        symlink(units / rel, f"/lib/systemd/system/{unit}")
    for name, edits in UNIT_EDITS.items():
        packaged = root / "lib/systemd/system" / name
        if not packaged.is_file():
            raise BoxBuildError(f"{name} not in the root fs: the recipe lacks its package")
        write_file(root, f"etc/systemd/system/{name}", edited_unit(name, packaged.read_text(), edits))
    # The links `systemctl enable` made point at the packaged file: point them at the copy.
    for link in sorted(units.rglob("*")):
        target = Path(os.readlink(link)) if link.is_symlink() else None
        if target and target.name in UNIT_EDITS and target.parent != Path("/etc/systemd/system"):
            symlink(link, f"/etc/systemd/system/{target.name}")
    if not OVS_AT_BOOT:
        (units / "multi-user.target.wants/openvswitch-switch.service").unlink(missing_ok=True)
    # Open vSwitch's SysV script goes (systemd starts OVS from its own units): with it, the
    # recipe's `systemctl enable` ran systemd-sysv-install (update-rc.d, Perl) and reloaded
    # systemd three times, 8.5 s of the node script's first run on an emulated guest.
    for script in (root / "etc/init.d/openvswitch-switch", *root.glob("etc/rc?.d/*openvswitch-switch")):
        script.unlink(missing_ok=True)
    for unit in MASKED_UNITS:
        for link in units.glob(f"*.requires/{unit}"):
            link.unlink()  # a Requires= on a masked unit would fail its requirer
        symlink(units / unit, "/dev/null")
    for unit, nice in NICE_UNITS.items():
        write_file(root, f"etc/systemd/system/{unit}.d/labgen-nice.conf",
                   f"# labgen box: see NICE_UNITS in labgen/boxbuild/bootorder.py\n[Service]\nNice={nice}\n")
    for unit, after in BACKGROUND_AFTER.items():
        write_file(root, f"etc/systemd/system/{unit}.d/labgen-after.conf",
                   "# labgen box: see BACKGROUND_AFTER in labgen/boxbuild/bootorder.py\n"
                   f"[Unit]\nAfter={after}\n")
    for unit, command in OVS_DAEMON_UNITS.items():    # each daemon's pid file is named for it
        pidfile = f"{OVS_RUNDIR}/{unit.removesuffix('.service')}.pid"
        write_file(root, f"etc/systemd/system/{unit}.d/labgen-daemon.conf",
                   OVS_DAEMON_DROPIN.format(pidfile=pidfile, command=command))
    for generator in MASKED_GENERATORS:
        symlink(root / "etc/systemd/system-generators" / generator, "/dev/null")
    trigger = (root / "lib/systemd/system/systemd-udev-trigger.service").read_text()
    missing = [line for line in COLDPLUG_PACKAGED if line not in trigger.splitlines()]
    if missing:
        raise BoxBuildError(f"systemd-udev-trigger.service lacks {missing[0]!r}: look at COLDPLUG_* again")
    write_file(root, "etc/systemd/system/systemd-udev-trigger.service.d/labgen-coldplug.conf",
               COLDPLUG_DROPIN)
    write_file(root, "etc/systemd/journald.conf.d/labgen.conf", JOURNALD_CONF)
    write_file(root, "etc/systemd/system/background.slice", BACKGROUND_SLICE)
    for unit in BACKGROUND_UNITS:
        write_file(root, f"etc/systemd/system/{unit}.d/labgen-background.conf",
                   "# labgen box: see BACKGROUND_UNITS in labgen/boxbuild/bootorder.py\n"
                   "[Service]\nSlice=background.slice\n")


def edited_unit(name: str, text: str, edits: dict[str, tuple[str, ...]]) -> str:
    """The unit file text without the values `edits` lists under each key (a line left
    with no value goes); a listed value the text lacks is an error."""
    out = [f"# labgen box: /lib/systemd/system/{name} without "
           + ", ".join(f"{k}={v}" for k, vs in edits.items() for v in vs)
           + " (labgen/boxbuild/bootorder.py)"]
    found: set[tuple[str, str]] = set()
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() in edits and not line.lstrip().startswith("#"):
            drop = edits[key.strip()]
            kept = [v for v in value.split() if v not in drop]
            found |= {(key.strip(), v) for v in value.split() if v in drop}
            if not kept:
                continue
            line = f"{key.strip()}={' '.join(kept)}"
        out.append(line)
    missing = [f"{k}={v}" for k, vs in edits.items() for v in vs if (k, v) not in found]
    if missing:
        raise BoxBuildError(f"{name} in the root fs has no {', '.join(missing)}: Debian's "
                            "unit changed; look at UNIT_EDITS in labgen/boxbuild/bootorder.py again")
    return "\n".join(out) + "\n"
