"""What the box's root file system gets on top of debootstrap's tree: the vagrant user and
its key, host keys made per VM, firewalld on, the boot order of labgen/boxbuild/bootorder.py,
a small initramfs, the GRUB menu.

Every file's text is a constant here or there; labgen/boxbuild/version.py digests them, so a change
to any of them is a new box version.
"""
from __future__ import annotations

import contextlib
import glob
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from . import bootorder
from .errors import BoxBuildError
from .log import Run
from .recipe import BoxRecipe
from .rootfiles import symlink, write_file

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
# The lab's tunnel rule, in firewalld before its first start: labgen's Vagrantfile puts it on
# the kernel command line (TunnelKind.boot_rule: the zone file's XML in base64), and this unit
# writes it into a pristine default zone (none in /etc yet: one that firewalld or a user saved
# is left alone) before firewalld loads its configuration. The node script then has no
# firewalld start to wait for (~3.4 s of the guest's CPU, in the idle slice: it came 8-23 s
# after spanning tree's timers on a slow host, docs/benchmarks.md); it takes the mark left in
# /run once. Without the word, or with a zone saved, nothing changes: the node script adds the
# rule over firewalld's D-Bus interface, as on any box.
FIREWALLD_RULE_SCRIPT = """\
#!/bin/sh
# labgen box: see FIREWALLD_RULE_SCRIPT in labgen/boxbuild/guest.py
set -euf
rule=
for word in $(cat /proc/cmdline); do
  case "$word" in labgen.firewalld-rule=*) rule=${word#*=} ;; esac
done
[ -n "$rule" ] || exit 0
zone=$(sed -n 's/^DefaultZone=//p' /etc/firewalld/firewalld.conf)
zone=${zone:-public}
[ ! -e "/etc/firewalld/zones/$zone.xml" ] && [ -f "/usr/lib/firewalld/zones/$zone.xml" ] || exit 0
xml=$(printf '%s' "$rule" | base64 -d)
mkdir -p /etc/firewalld/zones /run/labgen
awk -v rule="$xml" '/<\\/zone>/ { print "  " rule } { print }' "/usr/lib/firewalld/zones/$zone.xml" \\
  > "/etc/firewalld/zones/$zone.xml.labgen"
mv "/etc/firewalld/zones/$zone.xml.labgen" "/etc/firewalld/zones/$zone.xml"
printf '%s\\n' "$rule" > /run/labgen/firewalld-rule
"""
FIREWALLD_RULE_UNIT = """\
[Unit]
Description=The lab's tunnel rule into firewalld's pristine default zone (labgen box)
DefaultDependencies=no
After=local-fs.target
Before=firewalld.service
ConditionKernelCommandLine=labgen.firewalld-rule

[Service]
Type=oneshot
ExecStart=/usr/local/lib/labgen/firewalld-rule

[Install]
WantedBy=firewalld.service
"""
SSHD_HOST_KEYS = """\
# labgen box: no RSA host key (see labgen-ssh-hostkeys.service)
HostKey /etc/ssh/ssh_host_ed25519_key
HostKey /etc/ssh/ssh_host_ecdsa_key
"""

# Logins through sshd (Vagrant's check, labgen's provisioning) without the message of the
# day: pam_motd ran run-parts over /etc/update-motd.d (uname, ...) at each login, processes
# the emulated CPU ran while the lab waited. A line the packaged file lacks fails the build.
SSHD_PAM_DROPPED = ("pam_motd.so",)

# firewalld's start probes every iptables front end it finds (each table listed, its wait and
# restore options tried: ~20 processes), for its direct interface, which a lab does not use
# (its rules go to firewalld's nftables zones). The box keeps iptables for IPv4 (the node
# script's path where firewalld is off) and drops the commands of the IPv6 and bridge front
# ends (their alternatives; ip6tables-nft and ebtables-nft stay): firewalld's start took
# 1.1 s less of the emulated CPU, its rule being on the lab's way (docs/benchmarks.md).
UNPROBED_ALTERNATIVES = ("ip6tables", "ebtables")

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

# The serial console only (the VMs have no screen: a virtual console on tty0 was the
# kernel's text written to VGA memory no device holds), no PS/2 mouse port to probe (the
# driver's protocol probes ran in the initramfs), and no file system check: the box's disk is
# a fresh copy-on-write image of a cleanly unmounted ext4 (~1 s of each emulated boot, in the
# initramfs).
KERNEL_ARGS = "console=ttyS0,115200n8 net.ifnames=0 biosdevname=0 i8042.noaux fsck.mode=skip"

# Open vSwitch's database, made at build time as ovs-ctl makes it at the first start, with
# the versions it writes and without the one per-VM value it adds (external_ids:system-id,
# which OVN's controller reads: set it where a lab runs OVN). The box's units start the
# daemons without ovs-ctl (labgen/boxbuild/bootorder.py, OVS_DAEMON_UNITS).
OVS_DATABASE = """\
set -e
db=/etc/openvswitch/conf.db schema=/usr/share/openvswitch/vswitch.ovsschema
rm -f "$db" /etc/openvswitch/.conf.db.~lock~ /etc/openvswitch/system-id.conf
ovsdb-tool create "$db" "$schema"
ovs=$(ovs-vswitchd --version | sed -n '1s/.* //p')
. /etc/os-release
row="\\"ovs_version\\": \\"$ovs\\", \\"db_version\\": \\"$(ovsdb-tool schema-version "$schema")\\""
row="$row, \\"system_type\\": \\"$ID\\", \\"system_version\\": \\"$VERSION_ID\\""
ovsdb-tool transact "$db" "[\\"Open_vSwitch\\", {\\"op\\": \\"insert\\", \\"table\\": \\"Open_vSwitch\\", \\"row\\": {$row}}]"
"""

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
        return write_file(root, rel, text, mode)

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
    # no file system check (fsck.mode=skip in KERNEL_ARGS for the initramfs; pass 0 here, so
    # that systemd makes no check unit)
    write("etc/fstab", f"UUID={fs_uuid} / ext4 errors=remount-ro 0 0\n")
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
    ssh_dir = root / "home/vagrant/.ssh"
    write("home/vagrant/.ssh/authorized_keys", pubkey, 0o600)
    ssh_dir.chmod(0o700)
    chroot("chown", "-R", "vagrant:vagrant", "/home/vagrant/.ssh")

    # Per-VM identity: no machine-id, no SSH host keys, no OVS system-id in the box.
    write("etc/machine-id", "")
    (root / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    for key in root.glob("etc/ssh/ssh_host_*"):
        key.unlink()
    write("etc/systemd/system/labgen-ssh-hostkeys.service", SSH_KEYGEN_UNIT)
    symlink(root / "etc/systemd/system/ssh.service.wants/labgen-ssh-hostkeys.service",
            "/etc/systemd/system/labgen-ssh-hostkeys.service")
    write("etc/ssh/sshd_config.d/labgen-hostkeys.conf", SSHD_HOST_KEYS)
    write("etc/pam.d/sshd", without_pam_modules((root / "etc/pam.d/sshd").read_text(), SSHD_PAM_DROPPED))
    chroot("sh", "-c", OVS_DATABASE)

    # firewalld on at boot, as on CentOS and its relatives (its public zone rejects
    # everything but SSH and DHCPv6): the node script must open the tunnel precisely.
    symlink(root / "etc/systemd/system/multi-user.target.wants/firewalld.service",
            "/lib/systemd/system/firewalld.service")
    symlink(root / "etc/systemd/system/dbus-org.fedoraproject.FirewallD1.service",
            "/lib/systemd/system/firewalld.service")
    write("usr/local/lib/labgen/firewalld-rule", FIREWALLD_RULE_SCRIPT, 0o755)
    write("etc/systemd/system/labgen-firewalld-rule.service", FIREWALLD_RULE_UNIT)
    symlink(root / "etc/systemd/system/firewalld.service.wants/labgen-firewalld-rule.service",
            "/etc/systemd/system/labgen-firewalld-rule.service")
    for name in UNPROBED_ALTERNATIVES:
        chroot("update-alternatives", "--remove-all", name)

    # What starts at boot, in which order, at what priority (labgen/boxbuild/bootorder.py).
    bootorder.configure_units(root)

    write("etc/modprobe.d/labgen.conf", MODPROBE_BLACKLIST)

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


def without_pam_modules(text: str, modules: tuple[str, ...]) -> str:
    """A PAM file's text without the lines that call `modules`; each must be called."""
    kept, found = [], set()
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        called = next((w for w in words if w in modules), None)
        if called:
            found.add(called)
            continue
        kept.append(line)
    missing = [m for m in modules if m not in found]
    if missing:
        raise BoxBuildError(f"/etc/pam.d/sshd calls no {', '.join(missing)}: Debian's file changed; "
                            "look at SSHD_PAM_DROPPED in labgen/boxbuild/guest.py again")
    return "\n".join(kept) + "\n"


def kernel_cmdline(fs_uuid: str) -> str:
    """The kernel's command line, from GRUB or given by libvirt (direct kernel boot)."""
    return f"root=UUID={fs_uuid} ro {KERNEL_ARGS}"


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
