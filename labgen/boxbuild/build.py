"""`labgen box build NAME`: build the box of a recipe, or reuse it, and make sure Vagrant
has it at the recipe's version.

No box can be downloaded on the machines labgen targets, so it builds its own:
debootstrap -> a disk image with GRUB -> qcow2 -> .box -> `vagrant box add`, with a
version derived from the recipe so an unchanged recipe is built once and then reused.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from labgen.system.hostfacts import is_root, missing_tools
from labgen.vagrant import command as vagrant

from . import boxfile, disk, guest, kernelimage, register, rootfs
from .apt import resolve_mirror
from .boxfile import PROVIDER
from .cache import boot_file, boot_record, box_file, exclusive, remove_older_files, resolve_cache_dir, rootfs_file, stem
from .errors import BoxBuildError
from .log import BuildLog
from .recipe import get_recipe
from .version import box_version, filesystem_uuid, rootfs_key

# Tools checked before anything is created: tool -> Debian package that ships it.
REQUIRED_TOOLS: dict[str, str] = {
    "debootstrap": "debootstrap",
    "qemu-img": "qemu-utils",
    "mkfs.ext4": "e2fsprogs",
    "fstrim": "util-linux",
    "losetup": "mount",
    "mount": "mount",
    "grub-mkimage": "grub-pc-bin",
    "tar": "tar",
    "chroot": "coreutils",
    "vagrant": "vagrant",
}


@dataclass(frozen=True)
class BuiltBox:
    name: str  # the Vagrant box name, e.g. labgen/debian12
    version: str
    path: Path  # the cached .box file
    reused: bool  # True when nothing was built (the cached .box was used)
    provider: str = PROVIDER


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
    pubkey = guest.find_vagrant_public_key()
    version = box_version(recipe, pubkey)
    box_path = box_file(cache, recipe.box_name, version)
    registered = vagrant.has_box(recipe.box_name, version, PROVIDER)
    action = decide_action(box_path.exists(), registered, force)
    if action == "reuse":
        progress(f"reused {recipe.box_name} {version} ({PROVIDER}): {box_path}")
        return BuiltBox(recipe.box_name, version, box_path, reused=True)

    rootfs_tar = rootfs_file(cache, name, rootfs_key(recipe))
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
    log = BuildLog(cache / f"build-{name}.log", progress)
    with exclusive(cache / f".{name}.lock"):
        log.header(f"build {recipe.box_name} {version} action={action} force={force}")
        if action == "build":
            if need_debootstrap:
                log.step("debootstrap", rootfs.debootstrap, log.run, progress, recipe,
                         rootfs_tar, mirror)
            else:
                progress(f"debootstrap: reusing cached {rootfs_tar}")

            def configure(root: Path, fs_uuid: str) -> None:
                guest.configure(root, recipe, pubkey, fs_uuid, mirror, log.run)
                keep_boot_files(root, cache, recipe.box_name, version, fs_uuid)

            raw = cache / f"{name}-disk.raw.partial"
            try:
                log.step("image", disk.make_image, log.run, progress, raw, rootfs_tar,
                         recipe.disk_gib, filesystem_uuid(recipe.box_name, version), configure)
                log.step("package", boxfile.package, log.run, progress, raw, box_path,
                         recipe.disk_gib)
            finally:
                raw.unlink(missing_ok=True)  # 8 GiB sparse scratch image
        else:
            progress(f"reusing cached {box_path}; adding it to Vagrant")
        log.step("box add", register.box_add, log, recipe.box_name, version, box_path,
                 replace=registered or force)
        for current in (box_path, *(boot_file(cache, recipe.box_name, version, kind)
                                    for kind in BOOT_KINDS)):
            remove_older_files(current, f"{stem(recipe.box_name)}-*{current.suffix}", progress)
    return BuiltBox(recipe.box_name, version, box_path, reused=action == "add")


# The box's kernel and initramfs, kept beside the .box: a lab on this host boots them
# directly (libvirt direct kernel boot, labgen/providers/libvirt/directboot.py), without the
# BIOS's disk reads and GRUB. The kernel is kept uncompressed where it can start so
# ("vmlinux", labgen/boxbuild/kernelimage.py), else as the bzImage ("vmlinuz"). Files of the
# cache are readable by the emulator's user.
BOOT_KINDS = ("vmlinux", "vmlinuz", "initrd")


def keep_boot_files(root: Path, cache: Path, box_name: str, version: str, fs_uuid: str) -> None:
    """Copy the configured root fs's kernel and initramfs to the cache, and record them with
    the kernel command line for the box of this version."""
    kernel, initrd = guest.kernel_files(root)
    bzimage = (root / "boot" / kernel).read_bytes()
    elf = kernelimage.pvh_kernel(bzimage)
    files = {"vmlinux" if elf else "vmlinuz": elf or bzimage,
             "initrd": (root / "boot" / initrd).read_bytes()}
    paths = {}
    for kind, data in files.items():
        path = boot_file(cache, box_name, version, kind)
        partial = path.with_name(path.name + ".partial")
        partial.write_bytes(data)
        partial.chmod(0o644)
        partial.rename(path)
        paths[kind] = str(path)
    for kind in set(BOOT_KINDS) - set(files):   # an earlier build's other form of the kernel
        boot_file(cache, box_name, version, kind).unlink(missing_ok=True)
    record = {"box": box_name, "version": version, "kernel": paths.get("vmlinux") or paths["vmlinuz"],
              "initrd": paths["initrd"], "cmdline": guest.kernel_cmdline(fs_uuid)}
    boot_record(cache, box_name).write_text(json.dumps(record, indent=2) + "\n")


def check_preconditions() -> None:
    """Fail before creating anything: root, the host tools, loop devices."""
    if not is_root():
        raise BoxBuildError("box build needs root: run it with sudo")
    missing = missing_tools(REQUIRED_TOOLS)
    if missing:
        packages = sorted({REQUIRED_TOOLS[m.split()[0]] for m in missing})
        raise BoxBuildError(f"missing on this host: {', '.join(missing)}: install them with "
                            f"'apt-get install {' '.join(packages)}'")
    if not (disk.GRUB_I386_DIR / "boot.img").exists():
        raise BoxBuildError(
            f"{disk.GRUB_I386_DIR}/boot.img not found: install it with "
            f"'apt-get install grub-pc-bin'"
        )
    if not Path("/dev/loop-control").exists():
        raise BoxBuildError("no loop device support (/dev/loop-control): run 'modprobe loop'")


def decide_action(box_file_exists: bool, vagrant_has_it: bool, force: bool) -> str:
    """'reuse' (nothing to do), 'add' (cached .box, Vagrant lacks it) or 'build'."""
    if force:
        return "build"
    if box_file_exists:
        return "reuse" if vagrant_has_it else "add"
    return "build"
