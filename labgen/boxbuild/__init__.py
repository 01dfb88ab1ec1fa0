"""The box builder behind `labgen box build` (its only way in), one module per part:

recipe.py   what goes into a box, read from its file in boxes/
version.py  the box version and root fs key derived from it (what makes reuse work)
apt.py      the Debian mirror debootstrap uses
rootfs.py   debootstrap, cached as a tarball
guest.py    what the root fs gets on top: vagrant user, host keys, initramfs, GRUB menu
bootorder.py  what starts at boot, in which order and at what priority (networkd on eth0)
rootfiles.py  writing a file or a symlink into the root fs
disk.py     the raw disk: MBR, ext4 partition, GRUB boot sectors, loop device and mounts
kernelimage.py  the kernel direct kernel boot starts (uncompressed, PVH entry)
boxfile.py  qcow2 + metadata + Vagrantfile -> .box
register.py `vagrant box add` through a local catalog, so the version is kept
cache.py    the cache directory, its lock and clean-up
log.py      the build log and its one-line step failures
build.py    build_box: the steps in order, each skipped when its result is cached
"""
from __future__ import annotations

from .apt import (
    MIRROR_ENV,
    AptSource,
    parse_deb822_sources,
    parse_one_line_sources,
    pick_debian_mirror,
    resolve_mirror,
)
from .build import BuiltBox, build_box, check_preconditions, decide_action
from .errors import BoxBuildError
from .recipe import BoxRecipe, get_recipe
from .register import box_catalog
from .version import box_version, rootfs_key

__all__ = [
    "MIRROR_ENV", "AptSource", "BoxBuildError", "BoxRecipe", "BuiltBox", "box_catalog",
    "box_version", "build_box", "check_preconditions", "decide_action", "get_recipe",
    "parse_deb822_sources", "parse_one_line_sources", "pick_debian_mirror", "resolve_mirror",
    "rootfs_key",
]
