"""What the box's root file system gets on top of debootstrap's tree: the vagrant user and
its key, DHCP on the first NIC, host keys made per VM, firewalld on, the GRUB menu.

Every file's text is a constant here; labgen/boxbuild/version.py digests them, so a change
to any of them is a new box version.
"""
from __future__ import annotations

import contextlib
import glob
import subprocess
import tempfile
from pathlib import Path

from .errors import BoxBuildError
from .log import Run
from .recipe import BoxRecipe

NETWORK_INTERFACES = """\
# labgen box: DHCP on the first NIC (Vagrant's management network)
auto lo
iface lo inet loopback

allow-hotplug eth0
iface eth0 inet dhcp
"""

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

KERNEL_ARGS = "console=tty0 console=ttyS0,115200n8 net.ifnames=0 biosdevname=0"

GRUB_CFG = """\
# Hand-written: grub-mkconfig cannot probe the loop device the image was built on.
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set timeout=1
search --no-floppy --fs-uuid --set=root {uuid}
menuentry "Debian GNU/Linux" {{
    linux /boot/{kernel} root=UUID={uuid} ro {args}
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
    write("etc/network/interfaces", NETWORK_INTERFACES)
    if mirror:
        write("etc/apt/sources.list",
              f"deb {mirror} {recipe.suite} main\n"
              f"deb {mirror} {recipe.suite}-updates main\n")
    # Keep the kernel command line if the guest ever runs update-grub itself.
    write("etc/default/grub.d/labgen.cfg", f'GRUB_CMDLINE_LINUX="{KERNEL_ARGS}"\n'
                                           "GRUB_TERMINAL=\"serial console\"\n")

    # vagrant user: passwordless sudo and Vagrant's insecure key (labs use insert_key=false)
    chroot("useradd", "--create-home", "--shell", "/bin/bash", "--groups", "sudo", "vagrant")
    chroot("chpasswd", stdin_text="vagrant:vagrant\n")
    write("etc/sudoers.d/vagrant", SUDOERS, 0o440)
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

    # Emulated CPUs are slow: no apt runs behind the lab's back, and no e2scrub (it is
    # for LVM snapshots, which the box has none of, yet took 15 s of each boot).
    for unit in ("apt-daily.timer", "apt-daily-upgrade.timer",
                 "e2scrub_all.timer", "e2scrub_reap.service"):
        symlink(root / "etc/systemd/system" / unit, "/dev/null")

    # Size and hygiene: no package caches, no host resolver config.
    for pattern in ("var/cache/apt/archives/*.deb", "var/cache/apt/*.bin",
                    "var/lib/apt/lists/*_*", "var/log/*.log"):
        for path in root.glob(pattern):
            path.unlink()
    (root / "etc/resolv.conf").unlink(missing_ok=True)

    kernel, initrd = kernel_files(root)
    write("boot/grub/grub.cfg", GRUB_CFG.format(uuid=fs_uuid, kernel=kernel,
                                               initrd=initrd, args=KERNEL_ARGS))


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
