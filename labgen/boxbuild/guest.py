"""What the box's root file system gets on top of debootstrap's tree: the vagrant user and
its key, DHCP on the first NIC, host keys made per VM, firewalld on, a boot order that
reaches SSH early, a small initramfs, the GRUB menu.

Every file's text is a constant here; labgen/boxbuild/version.py digests them, so a change
to any of them is a new box version.
"""
from __future__ import annotations

import contextlib
import glob
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import BoxBuildError
from .log import Run
from .recipe import BoxRecipe

# The management NIC (Vagrant's management network, eth0) by systemd-networkd, not ifupdown
# and dhclient (1.3.0): the address is set as the lease comes (dhclient-script took ~2.5 s
# of the emulated CPU after it, before Vagrant's first login could come). The lease itself
# comes no sooner than dhclient's (docs/benchmarks.md). No IPv6 or link-local addresses:
# Vagrant reaches the guest over IPv4. The client identifier is the MAC, as dhclient sent
# it. Only eth0 matches: every other link (the underlay, the lab's bridges and veths) stays
# unmanaged.
NETWORKD_ETH0 = """\
# labgen box: DHCP on the first NIC (Vagrant's management network); labgen/boxbuild/guest.py
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
# labgen box: leave other routes alone (labgen/boxbuild/guest.py)
[Network]
ManageForeignRoutes=no
ManageForeignRoutingPolicyRules=no
"""

# Users whose systemd user manager starts at boot (lingering), while the guest waits for its
# DHCP lease, instead of in Vagrant's first login (~3 s of the emulated CPU on that login).
LINGERING = ("vagrant",)

SUDOERS = "vagrant ALL=(ALL) NOPASSWD: ALL\nDefaults:vagrant !requiretty\n"

# Each VM must get its own SSH host keys, so the box ships none and makes them on boot.
# Ed25519 and ECDSA only: an RSA key takes minutes to generate under emulation (measured
# ~2 min on a busy host) and Vagrant, OpenSSH and paramiko all accept these two.
SSH_KEYGEN_UNIT = """\
[Unit]
Description=Generate SSH host keys missing after cloning the box
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -q -N "" -t ed25519 -f /etc/ssh/ssh_host_ed25519_key
ExecStart=/usr/bin/ssh-keygen -q -N "" -t ecdsa -f /etc/ssh/ssh_host_ecdsa_key

[Install]
WantedBy=ssh.service
"""
SSHD_HOST_KEYS = """\
# labgen box: no RSA host key (see labgen-ssh-hostkeys.service)
HostKey /etc/ssh/ssh_host_ed25519_key
HostKey /etc/ssh/ssh_host_ecdsa_key
"""

# Boot order (issue 27). The VMs run on one emulated vCPU, where a unit that is ordered
# before another costs its whole start time. Debian orders Open vSwitch before
# network.target and networking.service (for ifupdown's OVS integration, which labgen never
# uses: the node script builds its bridges with ovs-vsctl), and ssh.service after
# network.target. So the management NIC's DHCP, network.target and with it
# systemd-user-sessions (no login before it) and sshd all waited ~60 s for ovsdb-server and
# ovs-vswitchd. configure() writes copies of these units to /etc/systemd/system without
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
    "ovsdb-server.service": {"Before": ("network.target", "networking.service")},
    "ovs-vswitchd.service": {"Before": ("network.target", "networking.service")},
    "openvswitch-switch.service": {"Before": ("network.target",),
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
# first: the DHCP lease Vagrant waits for comes ~6 s after its request whatever the guest
# does (libvirt's dnsmasq checks the address first), so the sooner it asks, the more of the
# rest of the boot (the host keys, sshd, logind) runs in that wait; its start took 8-12 s at
# boot (0.8 s on an idle guest). Then firewalld's start, ~7 s of Python, and
# systemd-resolved (DNS for the guest's own use) last. System services share one CPU group
# in the guest, so nice decides. firewalld is still active before the node script's
# firewall step, which waits for its start job.
NICE_UNITS = {"systemd-networkd.service": -10, "firewalld.service": 10,
              "systemd-resolved.service": 19}

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
)

# The journal in memory only: systemd-journal-flush (on the boot's critical chain, 7 s)
# then has nothing to copy to /var/log/journal. A lab's logs that matter are labgen's own
# (the lab directory's logs/) and the serial console.
JOURNALD_CONF = """\
# labgen box: the journal in memory only (labgen/boxbuild/guest.py)
[Journal]
Storage=volatile
"""

# Drivers udev loads on every boot for the emulated PC's other hardware, none of which a
# lab uses, while the management NIC's virtio_net waits in the same queue (eth0 appeared
# 70 s after coldplug began on a loaded host): KVM (the emulated CPU advertises SVM), the
# floppy, the IDE controller (no IDE disk: the box's disk is virtio), USB controllers
# (no USB device), the PIIX4 SMBus, the PC speaker and RAPL. An explicit modprobe still
# loads them; only udev's loading by hardware alias is blocked.
MODPROBE_BLACKLIST = """\
# labgen box: hardware the lab does not use (labgen/boxbuild/guest.py)
blacklist kvm
blacklist kvm_amd
blacklist kvm_intel
blacklist floppy
blacklist ata_piix
blacklist ata_generic
blacklist pata_acpi
blacklist uhci_hcd
blacklist ehci_pci
blacklist ehci_hcd
blacklist i2c_piix4
blacklist pcspkr
blacklist intel_rapl_msr
blacklist intel_rapl_common
"""

# The initramfs only has to find a virtio disk (the box's Vagrantfile sets disk_bus
# virtio; virtio-scsi works too) with ext4 on it: MODULES=list with these instead of
# Debian's MODULES=most (every storage and input driver, 36 MB that the emulated CPU
# unpacked in 10 s, and udev loaded ata_piix for the empty IDE bus before the root
# mount). A SATA or IDE disk_bus would need ahci or ata_piix here. Not
# MODULES=dep: it reads the root device of the machine mkinitramfs runs on, which at build
# time is the host's loop device. No resume device to look for: the box has no swap.
INITRAMFS_CONF = """\
# labgen box: only the modules below, no resume device (labgen/boxbuild/guest.py)
MODULES=list
RESUME=none
# the root fs is ext4 (fsck.ext4 goes in; mkinitramfs cannot probe it at build time)
FSTYPE=ext4
# the box has no zstd (debootstrap's minbase); say so rather than be warned
COMPRESS=gzip
"""
INITRAMFS_MODULES = """\
# labgen box: what finds the root disk under libvirt (virtio; virtio-scsi), and the NICs:
# with virtio_net loaded before the root file system is mounted, eth0 exists when systemd
# starts, instead of waiting in udev's coldplug queue (it appeared 50-100 s into userspace),
# and its DHCP lease, which Vagrant waits for, starts at once
virtio_pci
virtio_blk
virtio_scsi
sd_mod
ext4
virtio_net
"""

KERNEL_ARGS = "console=tty0 console=ttyS0,115200n8 net.ifnames=0 biosdevname=0"

GRUB_CFG = """\
# Hand-written: grub-mkconfig cannot probe the loop device the image was built on.
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set timeout=0
search --no-floppy --fs-uuid --set=root {uuid}
menuentry "Debian GNU/Linux" {{
    linux /boot/{kernel} {cmdline}
    initrd /boot/{initrd}
}}
"""

def find_vagrant_public_key() -> str:
    """Vagrant's insecure public key, as shipped by the installed vagrant."""
    candidates = []
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        listing = subprocess.run(["dpkg", "-L", "vagrant"], capture_output=True, text=True).stdout
        candidates += [p for p in listing.split() if p.endswith("/keys/vagrant.pub")]
    candidates += glob.glob("/usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant.pub")
    candidates += glob.glob("/opt/vagrant/embedded/gems/*/gems/vagrant-*/keys/vagrant.pub")
    for path in candidates:
        if Path(path).is_file():
            return Path(path).read_text().strip() + "\n"
    raise BoxBuildError(
        "Vagrant's insecure key keys/vagrant.pub not found: reinstall the vagrant package"
    )


def configure(root: Path, recipe: BoxRecipe, pubkey: str, fs_uuid: str, mirror: str | None,
              run: Run) -> None:
    """Turn the debootstrap tree at root into a Vagrant base box."""
    def write(rel: str, text: str, mode: int = 0o644) -> Path:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)
        return path

    def chroot(*cmd: str, stdin_text: str | None = None) -> None:
        if stdin_text is None:
            run(["chroot", str(root), *cmd])
            return
        with tempfile.TemporaryFile("w+") as f:
            f.write(stdin_text)
            f.seek(0)
            run(["chroot", str(root), *cmd], stdin=f)

    hostname = recipe.hostname
    write("etc/hostname", hostname + "\n")
    write("etc/hosts", f"127.0.0.1 localhost\n127.0.1.1 {hostname}\n"
                       "::1 localhost ip6-localhost ip6-loopback\n")
    write("etc/fstab", f"UUID={fs_uuid} / ext4 errors=remount-ro 0 1\n")
    write("etc/systemd/network/10-eth0.network", NETWORKD_ETH0)
    write("etc/systemd/networkd.conf.d/labgen.conf", NETWORKD_CONF)
    # networkd on at boot: the links `systemctl enable systemd-networkd` makes, less the
    # wait-online unit (nothing in the box waits for network-online.target).
    for rel, unit in (("multi-user.target.wants/systemd-networkd.service", "systemd-networkd.service"),
                      ("sockets.target.wants/systemd-networkd.socket", "systemd-networkd.socket"),
                      ("dbus-org.freedesktop.network1.service", "systemd-networkd.service")):
        symlink(root / "etc/systemd/system" / rel, f"/lib/systemd/system/{unit}")
    if mirror:
        write("etc/apt/sources.list",
              f"deb {mirror} {recipe.suite} main\n"
              f"deb {mirror} {recipe.suite}-updates main\n")
    # Keep the kernel command line if the guest ever runs update-grub itself.
    write("etc/default/grub.d/labgen.cfg", f'GRUB_CMDLINE_LINUX="{KERNEL_ARGS}"\n'
                                           "GRUB_TERMINAL=\"serial console\"\n"
                                           "GRUB_TIMEOUT=0\n")

    # vagrant user: passwordless sudo and Vagrant's insecure key (labs use insert_key=false)
    chroot("useradd", "--create-home", "--shell", "/bin/bash", "--groups", "sudo", "vagrant")
    chroot("chpasswd", stdin_text="vagrant:vagrant\n")
    write("etc/sudoers.d/vagrant", SUDOERS, 0o440)
    for user in LINGERING:
        write(f"var/lib/systemd/linger/{user}", "")
    ssh_dir = root / "home/vagrant/.ssh"
    write("home/vagrant/.ssh/authorized_keys", pubkey, 0o600)
    ssh_dir.chmod(0o700)
    chroot("chown", "-R", "vagrant:vagrant", "/home/vagrant/.ssh")

    # Per-VM identity: no machine-id, no SSH host keys, no OVS database in the box.
    write("etc/machine-id", "")
    (root / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    for key in root.glob("etc/ssh/ssh_host_*"):
        key.unlink()
    write("etc/systemd/system/labgen-ssh-hostkeys.service", SSH_KEYGEN_UNIT)
    symlink(root / "etc/systemd/system/ssh.service.wants/labgen-ssh-hostkeys.service",
            "/etc/systemd/system/labgen-ssh-hostkeys.service")
    write("etc/ssh/sshd_config.d/labgen-hostkeys.conf", SSHD_HOST_KEYS)
    for name in ("conf.db", ".conf.db.~lock~", "system-id.conf"):
        (root / "etc/openvswitch" / name).unlink(missing_ok=True)

    # firewalld on at boot, as on CentOS and its relatives (its public zone rejects
    # everything but SSH and DHCPv6): the node script must open the tunnel precisely.
    symlink(root / "etc/systemd/system/multi-user.target.wants/firewalld.service",
            "/lib/systemd/system/firewalld.service")
    symlink(root / "etc/systemd/system/dbus-org.fedoraproject.FirewallD1.service",
            "/lib/systemd/system/firewalld.service")

    # Boot order and masked units: see UNIT_EDITS and MASKED_UNITS.
    units = root / "etc/systemd/system"
    for name, edits in UNIT_EDITS.items():
        packaged = root / "lib/systemd/system" / name
        if not packaged.is_file():
            raise BoxBuildError(f"{name} not in the root fs: the recipe lacks its package")
        write(f"etc/systemd/system/{name}", edited_unit(name, packaged.read_text(), edits))
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
        write(f"etc/systemd/system/{unit}.d/labgen-nice.conf",
              f"# labgen box: see NICE_UNITS in labgen/boxbuild/guest.py\n[Service]\nNice={nice}\n")
    write("etc/modprobe.d/labgen.conf", MODPROBE_BLACKLIST)
    write("etc/systemd/journald.conf.d/labgen.conf", JOURNALD_CONF)

    # A small initramfs (see INITRAMFS_CONF), made again for the box's kernel.
    write("etc/initramfs-tools/conf.d/labgen.conf", INITRAMFS_CONF)
    write("etc/initramfs-tools/modules", INITRAMFS_MODULES)
    kernel, _initrd = kernel_files(root)
    with mounted_proc(root, run):
        chroot("update-initramfs", "-u", "-k", kernel[len("vmlinuz-"):])

    # Size and hygiene: no package caches, no host resolver config.
    for pattern in ("var/cache/apt/archives/*.deb", "var/cache/apt/*.bin",
                    "var/lib/apt/lists/*_*", "var/log/*.log"):
        for path in root.glob(pattern):
            path.unlink()
    (root / "etc/resolv.conf").unlink(missing_ok=True)
    if (root / "lib/systemd/system/systemd-resolved.service").is_file():
        # the DNS servers of networkd's lease, through systemd-resolved's stub
        symlink(root / "etc/resolv.conf", "../run/systemd/resolve/stub-resolv.conf")

    kernel, initrd = kernel_files(root)
    write("boot/grub/grub.cfg", GRUB_CFG.format(uuid=fs_uuid, kernel=kernel, initrd=initrd,
                                               cmdline=kernel_cmdline(fs_uuid)))


def kernel_cmdline(fs_uuid: str) -> str:
    """The kernel's command line, from GRUB or given by libvirt (direct kernel boot)."""
    return f"root=UUID={fs_uuid} ro {KERNEL_ARGS}"


def edited_unit(name: str, text: str, edits: dict[str, tuple[str, ...]]) -> str:
    """The unit file text without the values `edits` lists under each key (a line left
    with no value goes); a listed value the text lacks is an error."""
    out = [f"# labgen box: /lib/systemd/system/{name} without "
           + ", ".join(f"{k}={v}" for k, vs in edits.items() for v in vs)
           + " (labgen/boxbuild/guest.py)"]
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
                            "unit changed; look at UNIT_EDITS in labgen/boxbuild/guest.py again")
    return "\n".join(out) + "\n"


@contextlib.contextmanager
def mounted_proc(root: Path, run: Run) -> Iterator[None]:
    """/proc in the chroot while update-initramfs runs (its tools read /proc/self)."""
    proc = root / "proc"
    proc.mkdir(exist_ok=True)
    run(["mount", "-t", "proc", "proc", str(proc)])
    try:
        yield
    finally:
        run(["umount", str(proc)])  # (disk.mounted unmounts it too if this fails)


def kernel_files(root: Path) -> tuple[str, str]:
    """The newest kernel in root's /boot and its initrd, as file names."""
    kernels = sorted(p.name for p in (root / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise BoxBuildError("no kernel in the root fs: linux-image-amd64 missing from the recipe")
    kernel = kernels[-1]
    initrd = "initrd.img-" + kernel[len("vmlinuz-"):]
    if not (root / "boot" / initrd).exists():
        raise BoxBuildError(f"no {initrd} in the root fs: rebuild with force=True")
    return kernel, initrd


def symlink(link: Path, target: str) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.unlink(missing_ok=True)
    link.symlink_to(target)
