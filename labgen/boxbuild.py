"""Build a Vagrant box for the libvirt provider from Debian packages (`labgen box build`).

No box can be downloaded on the machines labgen targets, so it builds its own:
debootstrap -> a disk image with GRUB -> qcow2 -> .box -> `vagrant box add`, with a
version derived from the recipe so an unchanged recipe is built once and then reused.

The host kernel may lack partition devices (no `losetup -P`, nbd or device-mapper) and
`grub-install` cannot probe a loop device, so the partition is mapped with
`losetup -o/--sizelimit` and GRUB is written into the image by hand.
See notes/vm-lab.md for the measurements behind each choice.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from labgen.errors import LabgenError
from labgen.hostfacts import is_root, missing_tools

DEFAULT_CACHE_DIR = Path("/var/cache/labgen/boxes")
CACHE_ENV = "LABGEN_CACHE_DIR"
MIRROR_ENV = "LABGEN_DEBIAN_MIRROR"
PROVIDER = "libvirt"

# Bump when the build steps change in a way the recipe data does not show.
BUILD_FORMAT = 1


class BoxBuildError(LabgenError):
    """A box cannot be built; the message is one line: what is wrong and how to fix it."""


@dataclass(frozen=True)
class BoxRecipe:
    box_name: str
    suite: str
    base_version: str
    packages: tuple[str, ...]
    disk_gib: int = 8
    hostname: str = "labgen"


@dataclass(frozen=True)
class BuiltBox:
    name: str  # the Vagrant box name, e.g. labgen/debian12
    version: str
    path: Path  # the cached .box file
    reused: bool  # True when nothing was built (the cached .box was used)
    provider: str = PROVIDER


RECIPES: dict[str, BoxRecipe] = {
    "debian12": BoxRecipe(
        box_name="labgen/debian12",
        suite="bookworm",
        base_version="1.0.0",
        packages=(
            # boot and base system (minbase has no init, kernel or bootloader)
            "systemd-sysv", "udev", "kmod", "linux-image-amd64", "grub-pc",
            "ifupdown", "isc-dhcp-client", "netbase", "procps", "ca-certificates",
            # what Vagrant needs to log in and configure the private network
            "openssh-server", "sudo", "iproute2",
            # hostnamectl (Vagrant's hostname step, provisioners) needs the system bus
            "dbus",
            # what the lab needs
            "openvswitch-switch", "tcpdump", "iputils-ping", "ethtool",
            # a default-deny firewall like CentOS's (firewalld, enabled below) and iptables:
            # the node script's firewall path runs in every VM lab, not only on CentOS;
            # conntrack lets a test forget a flow the firewall admitted before a rule went
            "firewalld", "iptables", "conntrack",
            # (firewalld needs polkitd, which needs a logind: debootstrap does not pick one)
            "libpam-systemd",
        ),
    ),
}

# Tools checked before anything is created: tool -> Debian package that ships it.
REQUIRED_TOOLS: dict[str, str] = {
    "debootstrap": "debootstrap",
    "qemu-img": "qemu-utils",
    "mkfs.ext4": "e2fsprogs",
    "losetup": "mount",
    "mount": "mount",
    "grub-mkimage": "grub-pc-bin",
    "tar": "tar",
    "chroot": "coreutils",
    "vagrant": "vagrant",
}
GRUB_I386_DIR = Path("/usr/lib/grub/i386-pc")  # boot.img and modules; from grub-pc-bin

SECTOR = 512
PART_START = 2048  # first partition at 1 MiB leaves room for core.img after the MBR

# ---------------------------------------------------------------- guest configuration

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

# core.img finds its /boot/grub by the filesystem UUID, whatever disk number it gets.
GRUB_EARLY_CFG = "search.fs_uuid {uuid} root\nset prefix=($root)/boot/grub\n"
GRUB_CORE_MODULES = ("biosdisk", "part_msdos", "ext2", "search_fs_uuid")

BOX_VAGRANTFILE = """\
# Defaults of the labgen box; a lab's own Vagrantfile overrides them.
Vagrant.configure("2") do |config|
  # The box has no NFS or rsync client set up for /vagrant.
  config.vm.synced_folder ".", "/vagrant", disabled: true
  config.vm.provider :libvirt do |libvirt|
    libvirt.disk_bus = "virtio"
  end
end
"""

# ------------------------------------------------------------------------ public API


def build_box(
    name: str = "debian12",
    *,
    cache_dir: Path | None = None,
    force: bool = False,
    mirror: str | None = None,
    progress: Callable[[str], None] = print,
) -> BuiltBox:
    """Build (or reuse) box `name` and make sure Vagrant has it at the recipe's version."""
    recipe = get_recipe(name)
    check_preconditions()
    cache = resolve_cache_dir(cache_dir)
    pubkey = find_vagrant_public_key()
    version = box_version(recipe, pubkey)
    box_path = cache / f"{recipe.box_name.replace('/', '-')}-{version}.box"
    registered = vagrant_has_box(recipe.box_name, version, PROVIDER)
    action = decide_action(box_path.exists(), registered, force)
    if action == "reuse":
        progress(f"reused {recipe.box_name} {version} ({PROVIDER}): {box_path}")
        return BuiltBox(recipe.box_name, version, box_path, reused=True)

    rootfs_tar = cache / f"{name}-rootfs-{rootfs_key(recipe)}.tar"
    need_debootstrap = action == "build" and (force or not rootfs_tar.exists())
    if action == "build":
        # Resolved before anything is created, so a host without a mirror fails cleanly.
        try:
            mirror = resolve_mirror(mirror)
        except BoxBuildError:
            if need_debootstrap:
                raise
            mirror = None  # the cached root fs keeps the sources.list debootstrap wrote

    cache.mkdir(parents=True, exist_ok=True)
    builder = _Builder(recipe, cache, cache / f"build-{name}.log", progress)
    with _exclusive(cache / f".{name}.lock"):
        builder.log_header(f"build {recipe.box_name} {version} action={action} force={force}")
        if action == "build":
            if need_debootstrap:
                builder.step("debootstrap", builder.debootstrap, rootfs_tar, mirror)
            else:
                progress(f"debootstrap: reusing cached {rootfs_tar}")
            raw = cache / f"{name}-disk.raw.partial"
            try:
                builder.step("image", builder.make_image, raw, rootfs_tar, pubkey, mirror)
                builder.step("package", builder.package, raw, box_path)
            finally:
                raw.unlink(missing_ok=True)  # 8 GiB sparse scratch image
        else:
            progress(f"reusing cached {box_path}; adding it to Vagrant")
        builder.step("box add", builder.box_add, box_path, version, replace=registered or force)
        _remove_older_files(box_path, recipe.box_name.replace("/", "-") + "-*.box", progress)
    return BuiltBox(recipe.box_name, version, box_path, reused=action == "add")


def get_recipe(name: str) -> BoxRecipe:
    try:
        return RECIPES[name]
    except KeyError:
        known = ", ".join(sorted(RECIPES))
        raise BoxBuildError(f"unknown box {name!r}: known boxes are {known}") from None


def check_preconditions() -> None:
    """Fail before creating anything: root, the host tools, loop devices."""
    if not is_root():
        raise BoxBuildError("box build needs root: run it with sudo")
    missing = missing_tools(REQUIRED_TOOLS)
    if missing:
        packages = sorted({REQUIRED_TOOLS[m.split()[0]] for m in missing})
        raise BoxBuildError(f"missing on this host: {', '.join(missing)}: install them with "
                            f"'apt-get install {' '.join(packages)}'")
    if not (GRUB_I386_DIR / "boot.img").exists():
        raise BoxBuildError(
            f"{GRUB_I386_DIR}/boot.img not found: install it with 'apt-get install grub-pc-bin'"
        )
    if not Path("/dev/loop-control").exists():
        raise BoxBuildError("no loop device support (/dev/loop-control): run 'modprobe loop'")


def resolve_cache_dir(cache_dir: Path | None = None) -> Path:
    """The directory holding the boxes, root fs tarballs and build logs (not a parent)."""
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR)


def decide_action(box_file_exists: bool, vagrant_has_it: bool, force: bool) -> str:
    """'reuse' (nothing to do), 'add' (cached .box, Vagrant lacks it) or 'build'."""
    if force:
        return "build"
    if box_file_exists:
        return "reuse" if vagrant_has_it else "add"
    return "build"


def box_version(recipe: BoxRecipe, pubkey: str = "") -> str:
    """The recipe's base version plus a number derived from everything that shapes the box.

    A plain integer segment keeps it a valid Vagrant (RubyGems) version; the same recipe
    always gives the same version, so an existing box is found and reused."""
    digest = _digest(
        BUILD_FORMAT, asdict(recipe), pubkey, NETWORK_INTERFACES, SUDOERS, SSH_KEYGEN_UNIT,
        SSHD_HOST_KEYS, KERNEL_ARGS, GRUB_CFG, GRUB_EARLY_CFG, GRUB_CORE_MODULES, BOX_VAGRANTFILE,
    )
    return f"{recipe.base_version}.{int(digest[:6], 16)}"


def rootfs_key(recipe: BoxRecipe) -> str:
    """Names the cached debootstrap tarball: only what debootstrap itself gets."""
    return _digest(recipe.suite, sorted(recipe.packages))[:12]


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


# ------------------------------------------------------------------- Debian mirror

# Debian release names; a host entry for one of these suites is the main archive.
DEBIAN_SUITES = {
    "buster", "bullseye", "bookworm", "trixie", "forky", "duke", "sid",
    "oldoldstable", "oldstable", "stable", "testing", "unstable",
}


@dataclass(frozen=True)
class AptSource:
    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]


def parse_one_line_sources(text: str) -> list[AptSource]:
    """`deb [options] URI SUITE COMPONENT...` lines of sources.list (deb-src skipped)."""
    sources = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        m = re.match(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s*(.*)$", line)
        if m:
            sources.append(AptSource(m[1], (m[2],), tuple(m[3].split())))
    return sources


def parse_deb822_sources(text: str) -> list[AptSource]:
    """Stanzas of a *.sources file (deb822); disabled and deb-src-only stanzas skipped."""
    sources = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in stanza.splitlines():
            if line.startswith("#"):
                continue
            if line[:1] in (" ", "\t") and key:  # continuation line (e.g. an inline key)
                fields[key] += " " + line.strip()
            elif ":" in line:
                key, value = line.split(":", 1)
                key = key.strip().lower()
                fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() == "no":
            continue
        uris = fields.get("uris", "").split()
        if uris:
            sources.append(
                AptSource(uris[0], tuple(fields.get("suites", "").split()),
                          tuple(fields.get("components", "").split()))
            )
    return sources


def pick_debian_mirror(sources: list[AptSource]) -> str | None:
    """The first entry that is the main Debian archive (not security, not a third party)."""
    for src in sources:
        if not re.match(r"^(https?|file)://", src.uri):
            continue
        for suite in src.suites:
            base = suite.split("-", 1)[0].split("/", 1)[0]
            security = suite.endswith("-security") or "security" in src.uri
            if base in DEBIAN_SUITES and not security:
                return src.uri.rstrip("/")
    return None


def host_apt_sources(etc_apt: Path = Path("/etc/apt")) -> list[AptSource]:
    sources = []
    main_list = etc_apt / "sources.list"
    if main_list.is_file():
        sources += parse_one_line_sources(main_list.read_text(errors="replace"))
    parts = etc_apt / "sources.list.d"
    for path in sorted(parts.glob("*")) if parts.is_dir() else []:
        if path.suffix == ".list":
            sources += parse_one_line_sources(path.read_text(errors="replace"))
        elif path.suffix == ".sources":
            sources += parse_deb822_sources(path.read_text(errors="replace"))
    return sources


def resolve_mirror(explicit: str | None = None, etc_apt: Path = Path("/etc/apt")) -> str:
    """The argument, else $LABGEN_DEBIAN_MIRROR, else the host's apt configuration."""
    mirror = explicit or os.environ.get(MIRROR_ENV) or pick_debian_mirror(host_apt_sources(etc_apt))
    if not mirror:
        raise BoxBuildError(
            f"no Debian mirror found in {etc_apt}/sources.list or sources.list.d: "
            f"set {MIRROR_ENV}=<Debian archive URL>"
        )
    return mirror.rstrip("/")


# --------------------------------------------------------------------- Vagrant side


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


def parse_vagrant_box_list(machine_readable: str) -> set[tuple[str, str, str]]:
    """(name, provider, version) triples from `vagrant box list --machine-readable`."""
    boxes, current = set(), {}
    for line in machine_readable.splitlines():
        fields = line.split(",", 3)
        if len(fields) < 4:
            continue
        kind, value = fields[2], fields[3]
        if kind == "box-name":
            current = {"name": value}
        elif kind in ("box-provider", "box-version"):
            current[kind[4:]] = value
            if len(current) == 3:
                boxes.add((current["name"], current["provider"], current["version"]))
    return boxes


def vagrant_has_box(name: str, version: str, provider: str = PROVIDER) -> bool:
    result = subprocess.run(
        ["vagrant", "box", "list", "--machine-readable"], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise BoxBuildError(
            f"'vagrant box list' failed: {_last_line(result.stderr or result.stdout)}"
        )
    return (name, provider, version) in parse_vagrant_box_list(result.stdout)


def box_catalog(name: str, version: str, box_path: Path, sha256: str) -> dict:
    """A local Vagrant box catalog, so `vagrant box add` records the version."""
    return {
        "name": name,
        "description": "Built locally by labgen from Debian packages",
        "versions": [{
            "version": version,
            "providers": [{
                "name": PROVIDER,
                "url": box_path.resolve().as_uri(),
                "checksum_type": "sha256",
                "checksum": sha256,
            }],
        }],
    }


# ------------------------------------------------------------------------- the build


class _Builder:
    """The build steps; every step logs its commands and cleans up after itself."""

    def __init__(self, recipe: BoxRecipe, cache: Path, log: Path,
                 progress: Callable[[str], None]):
        self.recipe = recipe
        self.cache = cache
        self.log = log
        self.progress = progress

    # ---- plumbing

    def log_header(self, text: str) -> None:
        with self.log.open("a") as f:
            f.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")

    def step(self, name: str, func: Callable, *args, **kwargs) -> None:
        """Run one step with timing; turn any failure into one BoxBuildError line."""
        self.progress(f"{name}: started")
        self.log_header(f"step {name}")
        start = time.monotonic()
        try:
            func(*args, **kwargs)
        except BoxBuildError as e:
            raise BoxBuildError(f"step '{name}' failed: {e}; full log: {self.log}") from None
        except subprocess.CalledProcessError as e:
            cmd = e.cmd[0] if isinstance(e.cmd, list) else str(e.cmd)
            raise BoxBuildError(
                f"step '{name}' failed: {cmd} exited with {e.returncode} "
                f"({_last_line(getattr(e, 'tail', ''))}); full log: {self.log}"
            ) from None
        except OSError as e:
            raise BoxBuildError(f"step '{name}' failed: {e}; full log: {self.log}") from None
        self.progress(f"{name}: done in {time.monotonic() - start:.1f} s")

    def run(self, cmd: list[str], *, stdin=None, env: dict | None = None) -> None:
        """Run a command with its output appended to the log; raise with its last line."""
        with self.log.open("a") as f:
            f.write(f"$ {' '.join(cmd)}\n")
            f.flush()
            start = f.tell()
            proc = subprocess.run(cmd, stdin=stdin, stdout=f, stderr=subprocess.STDOUT,
                                  env={**os.environ, **(env or {})})
        if proc.returncode != 0:
            with self.log.open("rb") as f:
                f.seek(start)
                tail = f.read().decode(errors="replace")
            err = subprocess.CalledProcessError(proc.returncode, cmd)
            err.tail = tail  # type: ignore[attr-defined]
            raise err

    @contextlib.contextmanager
    def workdir(self) -> Iterator[Path]:
        """A scratch dir in the cache (same filesystem: renames are atomic), always removed."""
        path = Path(tempfile.mkdtemp(prefix="work-", dir=self.cache))
        try:
            yield path
        finally:
            _unmount_below(path)
            if _mounts_below(path):
                # Never delete through a mount (debootstrap may bind-mount the host's /dev).
                self.progress(f"warning: {path} still has mounts; left in place")
            else:
                shutil.rmtree(path, ignore_errors=True)

    # ---- step 1: debootstrap, cached as a tarball

    def debootstrap(self, rootfs_tar: Path, mirror: str) -> None:
        with self.workdir() as work:
            root = work / "rootfs"
            self.run([
                "debootstrap", "--variant=minbase", "--include=" + ",".join(self.recipe.packages),
                self.recipe.suite, str(root), mirror,
            ], env={"DEBIAN_FRONTEND": "noninteractive"})
            _unmount_below(root)  # debootstrap leaves /proc etc. mounted if it stops midway
            for deb in root.glob("var/cache/apt/archives/*.deb"):
                deb.unlink()  # ~140 MiB the box never needs: keeps the cached tarball small
            partial = rootfs_tar.with_suffix(".tar.partial")
            # --xattrs keeps file capabilities (ping as a normal user needs cap_net_raw).
            self.run(["tar", "--xattrs", "--xattrs-include=*", "--numeric-owner",
                      "-C", str(root), "-cf", str(partial), "."])
            partial.rename(rootfs_tar)
        _remove_older_files(rootfs_tar, rootfs_tar.name.rsplit("-", 1)[0] + "-*.tar", self.progress)

    # ---- step 2: disk image with the configured root fs and GRUB

    def make_image(self, raw: Path, rootfs_tar: Path, pubkey: str, mirror: str | None) -> None:
        fs_uuid = str(uuid.uuid4())
        size = self.recipe.disk_gib * 1024**3
        with raw.open("wb") as f:
            f.truncate(size)  # sparse: only written blocks take space
            f.write(mbr_partition_table(size // SECTOR))
        part_offset = PART_START * SECTOR
        with self.workdir() as work, self.loop_device(raw, part_offset, size - part_offset) as dev:
            mnt = work / "mnt"
            mnt.mkdir()
            # GRUB 2.06 cannot read ext4 with these newer features, mkfs enables them.
            self.run(["mkfs.ext4", "-q", "-F", "-L", "root", "-U", fs_uuid,
                      "-O", "^metadata_csum_seed,^orphan_file", dev])
            with self.mounted(dev, mnt):
                self.run(["tar", "--xattrs", "--xattrs-include=*", "--numeric-owner",
                          "-C", str(mnt), "-xpf", str(rootfs_tar)])
                self.configure_guest(mnt, pubkey, fs_uuid, mirror)
            core_img = self.make_grub_core(fs_uuid, work)
        self.install_grub_boot_sectors(raw, core_img)

    def configure_guest(self, root: Path, pubkey: str, fs_uuid: str, mirror: str | None) -> None:
        """Turn the debootstrap tree into a Vagrant base box."""
        def write(rel: str, text: str, mode: int = 0o644) -> Path:
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            path.chmod(mode)
            return path

        def chroot(*cmd: str, stdin_text: str | None = None) -> None:
            if stdin_text is None:
                self.run(["chroot", str(root), *cmd])
                return
            with tempfile.TemporaryFile("w+") as f:
                f.write(stdin_text)
                f.seek(0)
                self.run(["chroot", str(root), *cmd], stdin=f)

        hostname = self.recipe.hostname
        write("etc/hostname", hostname + "\n")
        write("etc/hosts", f"127.0.0.1 localhost\n127.0.1.1 {hostname}\n"
                           "::1 localhost ip6-localhost ip6-loopback\n")
        write("etc/fstab", f"UUID={fs_uuid} / ext4 errors=remount-ro 0 1\n")
        write("etc/network/interfaces", NETWORK_INTERFACES)
        if mirror:
            write("etc/apt/sources.list",
                  f"deb {mirror} {self.recipe.suite} main\n"
                  f"deb {mirror} {self.recipe.suite}-updates main\n")
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
        _symlink(root / "etc/systemd/system/ssh.service.wants/labgen-ssh-hostkeys.service",
                 "/etc/systemd/system/labgen-ssh-hostkeys.service")
        write("etc/ssh/sshd_config.d/labgen-hostkeys.conf", SSHD_HOST_KEYS)
        for name in ("conf.db", ".conf.db.~lock~", "system-id.conf"):
            (root / "etc/openvswitch" / name).unlink(missing_ok=True)

        # firewalld on at boot, as on CentOS and its relatives (its public zone rejects
        # everything but SSH and DHCPv6): the node script must open the tunnel precisely.
        _symlink(root / "etc/systemd/system/multi-user.target.wants/firewalld.service",
                 "/lib/systemd/system/firewalld.service")
        _symlink(root / "etc/systemd/system/dbus-org.fedoraproject.FirewallD1.service",
                 "/lib/systemd/system/firewalld.service")

        # Emulated CPUs are slow: no apt runs behind the lab's back, and no e2scrub (it is
        # for LVM snapshots, which the box has none of, yet took 15 s of each boot).
        for unit in ("apt-daily.timer", "apt-daily-upgrade.timer",
                     "e2scrub_all.timer", "e2scrub_reap.service"):
            _symlink(root / "etc/systemd/system" / unit, "/dev/null")

        # Size and hygiene: no package caches, no host resolver config.
        for pattern in ("var/cache/apt/archives/*.deb", "var/cache/apt/*.bin",
                        "var/lib/apt/lists/*_*", "var/log/*.log"):
            for path in root.glob(pattern):
                path.unlink()
        (root / "etc/resolv.conf").unlink(missing_ok=True)

        kernel, initrd = _kernel_files(root)
        write("boot/grub/grub.cfg", GRUB_CFG.format(uuid=fs_uuid, kernel=kernel,
                                                   initrd=initrd, args=KERNEL_ARGS))
        # The modules core.img loads at run time must match the host's grub-mkimage.
        shutil.copytree(GRUB_I386_DIR, root / "boot/grub/i386-pc", dirs_exist_ok=True)

    def make_grub_core(self, fs_uuid: str, work: Path) -> bytes:
        early, core = work / "early.cfg", work / "core.img"
        early.write_text(GRUB_EARLY_CFG.format(uuid=fs_uuid))
        self.run(["grub-mkimage", "-O", "i386-pc", "-d", str(GRUB_I386_DIR), "-o", str(core),
                  "-c", str(early), "-p", "/boot/grub", *GRUB_CORE_MODULES])
        data = core.read_bytes()
        limit = (PART_START - 1) * SECTOR
        if len(data) > limit:
            raise BoxBuildError(f"core.img is {len(data)} bytes, more than the {limit} "
                                "before the partition: drop GRUB modules")
        return data

    def install_grub_boot_sectors(self, raw: Path, core_img: bytes) -> None:
        """What grub-install would do: boot.img code in the MBR, core.img from sector 1.

        boot.img as shipped loads core.img from sector 1, and grub-mkimage has already
        set core.img's block list to the sectors following it, so no patching is needed."""
        boot = (GRUB_I386_DIR / "boot.img").read_bytes()
        with raw.open("r+b") as f:
            f.write(boot[:440])  # bytes 440+ hold the disk signature and partition table
            f.seek(SECTOR)
            f.write(core_img)

    @contextlib.contextmanager
    def loop_device(self, image: Path, offset: int, size: int) -> Iterator[str]:
        """A loop device over one partition of the image; detached on every path."""
        out = subprocess.run(["losetup", "--find", "--show", "--offset", str(offset),
                              "--sizelimit", str(size), str(image)],
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise BoxBuildError(f"losetup failed: {_last_line(out.stderr)}")
        dev = out.stdout.strip()
        try:
            yield dev
        finally:
            _cleanup_cmd(["losetup", "--detach", dev])

    @contextlib.contextmanager
    def mounted(self, dev: str, mnt: Path) -> Iterator[Path]:
        self.run(["mount", dev, str(mnt)])
        try:
            yield mnt
        finally:
            _unmount_below(mnt)

    # ---- step 3: qcow2 + metadata + Vagrantfile -> .box

    def package(self, raw: Path, box_path: Path) -> None:
        with self.workdir() as work:
            self.run(["qemu-img", "convert", "-O", "qcow2", "-c", str(raw), str(work / "box.img")])
            (work / "metadata.json").write_text(json.dumps(
                {"provider": PROVIDER, "format": "qcow2", "virtual_size": self.recipe.disk_gib}))
            (work / "Vagrantfile").write_text(BOX_VAGRANTFILE)
            partial = box_path.with_suffix(".box.partial")
            self.run(["tar", "-C", str(work), "-cf", str(partial),
                      "metadata.json", "Vagrantfile", "box.img"])
            partial.rename(box_path)  # only a complete .box is ever found and reused

    # ---- step 4: register with Vagrant through a local catalog (keeps the version)

    def box_add(self, box_path: Path, version: str, *, replace: bool) -> None:
        catalog = box_catalog(self.recipe.box_name, version, box_path, _sha256(box_path))
        catalog_path = self.cache / f"{self.recipe.box_name.replace('/', '-')}.json"
        catalog_path.write_text(json.dumps(catalog, indent=2) + "\n")
        self.run(["vagrant", "box", "add", "--provider", PROVIDER, "--box-version", version,
                  *(["--force"] if replace else []), str(catalog_path)])


# ------------------------------------------------------------------------- helpers


def mbr_partition_table(total_sectors: int) -> bytes:
    """One MBR sector: one bootable Linux partition from PART_START to the end of the disk.

    Written here rather than with sfdisk: 16 bytes do not need a tool."""
    count = min(total_sectors - PART_START, 0xFFFFFFFF)
    # status, CHS first (unused: LBA), type 0x83 Linux, CHS last (unused), LBA start, sectors
    entry = struct.pack("<B3sB3sII", 0x80, b"\xfe\xff\xff", 0x83, b"\xfe\xff\xff",
                        PART_START, count)
    mbr = bytearray(SECTOR)
    mbr[440:444] = os.urandom(4)  # disk signature
    mbr[446:462] = entry
    mbr[510:512] = b"\x55\xaa"
    return bytes(mbr)


def _remove_older_files(current: Path, pattern: str, progress: Callable[[str], None]) -> None:
    """Older builds in the cache (a .box ~280 MiB, a root fs tarball ~800 MiB) are never
    used again. Vagrant keeps its own copy of each box version (`vagrant box prune`)."""
    for old in current.parent.glob(pattern):
        if old != current:
            old.unlink()
            progress(f"removed older cached {old.name}")


def _kernel_files(root: Path) -> tuple[str, str]:
    kernels = sorted(p.name for p in (root / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise BoxBuildError("no kernel in the root fs: linux-image-amd64 missing from the recipe")
    kernel = kernels[-1]
    initrd = "initrd.img-" + kernel[len("vmlinuz-"):]
    if not (root / "boot" / initrd).exists():
        raise BoxBuildError(f"no {initrd} in the root fs: rebuild with force=True")
    return kernel, initrd


def _symlink(link: Path, target: str) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.unlink(missing_ok=True)
    link.symlink_to(target)


def _mounts_below(path: Path) -> list[str]:
    prefix = str(path.resolve())
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].encode().decode("unicode_escape")
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return found


def _unmount_below(path: Path) -> None:
    """Unmount everything at or below path, deepest first; lazily if busy."""
    for point in sorted(_mounts_below(path), key=len, reverse=True):
        if _cleanup_cmd(["umount", point]) != 0:
            _cleanup_cmd(["umount", "--lazy", point])


@contextlib.contextmanager
def _exclusive(lock_path: Path) -> Iterator[None]:
    """One build per box at a time: builds share the cache's scratch files."""
    with lock_path.open("w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BoxBuildError(
                f"another box build holds {lock_path}: wait for it to finish"
            ) from None
        yield


def _cleanup_cmd(cmd: list[str]) -> int:
    """Run a clean-up command to the end even if Ctrl-C comes meanwhile.

    An unmount of a freshly written image flushes ~1 GiB and takes seconds: a Ctrl-C
    then must not kill it half-way (leaving a mount and a loop device behind). The child
    runs in its own session, out of reach of the terminal's SIGINT; a SIGINT to us is
    held back and raised once the command has finished (unless already unwinding)."""
    if threading.current_thread() is not threading.main_thread():
        return subprocess.run(cmd, capture_output=True, start_new_session=True).returncode
    interrupted = []
    previous = signal.signal(signal.SIGINT, lambda *_: interrupted.append(True))
    try:
        return subprocess.run(cmd, capture_output=True, start_new_session=True).returncode
    finally:
        signal.signal(signal.SIGINT, previous)
        if interrupted and sys.exc_info()[0] is None:
            raise KeyboardInterrupt


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"


if __name__ == "__main__":  # python -m labgen.boxbuild [NAME] [--force]
    args = [a for a in sys.argv[1:] if a != "--force"]
    try:
        box = build_box(args[0] if args else "debian12", force="--force" in sys.argv)
    except BoxBuildError as e:
        sys.exit(f"error: {e}")
    print(f"{box.name} {box.version} ({box.provider}) {box.path}"
          f"{' (reused)' if box.reused else ''}")
