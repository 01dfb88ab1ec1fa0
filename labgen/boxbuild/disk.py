"""The box's disk image: a sparse raw file with an MBR, one ext4 partition holding the root
fs, and GRUB written into it by hand; plus the loop device, mounts and scratch directories
that takes, each undone on every path (Ctrl-C included).

The host kernel may lack partition devices (no `losetup -P`, nbd or device-mapper) and
`grub-install` cannot probe a loop device, so the partition is mapped with
`losetup -o/--sizelimit` and GRUB's boot sectors are written here.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from labgen.vagrant.command import last_line

from .errors import BoxBuildError
from .log import Run

SECTOR = 512
PART_START = 2048  # first partition at 1 MiB leaves room for core.img after the MBR
GRUB_I386_DIR = Path("/usr/lib/grub/i386-pc")  # boot.img and modules; from grub-pc-bin

# core.img finds its /boot/grub by the filesystem UUID, whatever disk number it gets.
GRUB_EARLY_CFG = "search.fs_uuid {uuid} root\nset prefix=($root)/boot/grub\n"
GRUB_CORE_MODULES = ("biosdisk", "part_msdos", "ext2", "search_fs_uuid")


def make_image(run: Run, progress: Callable[[str], None], raw: Path, rootfs_tar: Path,
               disk_gib: int, fs_uuid: str, configure: Callable[[Path, str], None]) -> None:
    """raw: a disk of disk_gib GiB with rootfs_tar unpacked onto its partition (file system
    UUID fs_uuid), then configure(mount point, fs_uuid) run on it, and GRUB installed."""
    size = disk_gib * 1024**3
    with raw.open("wb") as f:
        f.truncate(size)  # sparse: only written blocks take space
        f.write(mbr_partition_table(size // SECTOR))
    part_offset = PART_START * SECTOR
    with workdir(raw.parent, progress) as work, \
            loop_device(raw, part_offset, size - part_offset) as dev:
        mnt = work / "mnt"
        mnt.mkdir()
        # GRUB 2.06 cannot read ext4 with these newer features, mkfs enables them.
        run(["mkfs.ext4", "-q", "-F", "-L", "root", "-U", fs_uuid,
             "-O", "^metadata_csum_seed,^orphan_file", dev])
        with mounted(run, dev, mnt):
            run(["tar", "--xattrs", "--xattrs-include=*", "--numeric-owner",
                 "-C", str(mnt), "-xpf", str(rootfs_tar)])
            configure(mnt, fs_uuid)
            # The modules core.img loads at run time must match the host's grub-mkimage.
            shutil.copytree(GRUB_I386_DIR, mnt / "boot/grub/i386-pc", dirs_exist_ok=True)
            # Blocks of files deleted on the image (configure's update-initramfs scratch
            # files, ~28 MB) would otherwise go into the compressed qcow2: the loop device
            # punches them out of the sparse raw file.
            run(["fstrim", str(mnt)])
        core_img = make_grub_core(run, fs_uuid, work)
    install_grub_boot_sectors(raw, core_img)


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


def make_grub_core(run: Run, fs_uuid: str, work: Path) -> bytes:
    early, core = work / "early.cfg", work / "core.img"
    early.write_text(GRUB_EARLY_CFG.format(uuid=fs_uuid))
    run(["grub-mkimage", "-O", "i386-pc", "-d", str(GRUB_I386_DIR), "-o", str(core),
         "-c", str(early), "-p", "/boot/grub", *GRUB_CORE_MODULES])
    data = core.read_bytes()
    limit = (PART_START - 1) * SECTOR
    if len(data) > limit:
        raise BoxBuildError(f"core.img is {len(data)} bytes, more than the {limit} "
                            "before the partition: drop GRUB modules")
    return data


def install_grub_boot_sectors(raw: Path, core_img: bytes) -> None:
    """What grub-install would do: boot.img code in the MBR, core.img from sector 1.

    boot.img as shipped loads core.img from sector 1, and grub-mkimage has already
    set core.img's block list to the sectors following it, so no patching is needed."""
    boot = (GRUB_I386_DIR / "boot.img").read_bytes()
    with raw.open("r+b") as f:
        f.write(boot[:440])  # bytes 440+ hold the disk signature and partition table
        f.seek(SECTOR)
        f.write(core_img)


# ---- what the image takes on the host, undone on every path

@contextlib.contextmanager
def loop_device(image: Path, offset: int, size: int) -> Iterator[str]:
    """A loop device over one partition of the image; detached on every path."""
    out = subprocess.run(["losetup", "--find", "--show", "--offset", str(offset),
                          "--sizelimit", str(size), str(image)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise BoxBuildError(f"losetup failed: {last_line(out.stderr)}")
    dev = out.stdout.strip()
    try:
        yield dev
    finally:
        cleanup_cmd(["losetup", "--detach", dev])


@contextlib.contextmanager
def mounted(run: Run, dev: str, mnt: Path) -> Iterator[Path]:
    run(["mount", dev, str(mnt)])
    try:
        yield mnt
    finally:
        unmount_below(mnt)


@contextlib.contextmanager
def workdir(parent: Path, progress: Callable[[str], None]) -> Iterator[Path]:
    """A scratch dir in parent (the cache: same filesystem, so renames are atomic), always
    removed."""
    path = Path(tempfile.mkdtemp(prefix="work-", dir=parent))
    try:
        yield path
    finally:
        unmount_below(path)
        if mounts_below(path):
            # Never delete through a mount (debootstrap may bind-mount the host's /dev).
            progress(f"warning: {path} still has mounts; left in place")
        else:
            shutil.rmtree(path, ignore_errors=True)


def mounts_below(path: Path, mountinfo: Path = Path("/proc/self/mountinfo")) -> list[str]:
    prefix = str(path.resolve())
    found = []
    with open(mountinfo) as f:
        for line in f:
            point = line.split()[4].encode().decode("unicode_escape")
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return found


def unmount_below(path: Path) -> None:
    """Unmount everything at or below path, deepest first; lazily if busy."""
    for point in sorted(mounts_below(path), key=len, reverse=True):
        if cleanup_cmd(["umount", point]) != 0:
            cleanup_cmd(["umount", "--lazy", point])


def cleanup_cmd(cmd: list[str]) -> int:
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
