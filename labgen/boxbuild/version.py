"""The names builds are cached under: the box version (everything that shapes the box) and
the root fs key (only what debootstrap gets). An unchanged recipe gives the same names, so
what was built once is found and reused."""
from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import asdict

from . import bootorder, disk, guest
from .boxfile import BOX_VAGRANTFILE
from .recipe import BoxRecipe

# Bump when the build steps change in a way the recipe data does not show.
BUILD_FORMAT = 5  # 2: units edited and masked, initramfs made again (issue 27); 3: networkd
                  # enabled, OVS's SysV script removed, resolv.conf to resolved's stub, the
                  # kernel kept for direct boot; 4: the file system UUID from the version;
                  # 5: the kernel kept uncompressed for PVH boot


def box_version(recipe: BoxRecipe, pubkey: str = "") -> str:
    """The recipe's base version plus a number derived from everything that shapes the box.

    A plain integer segment keeps it a valid Vagrant (RubyGems) version; the same recipe
    always gives the same version, so an existing box is found and reused."""
    digest = _digest(
        BUILD_FORMAT, asdict(recipe), pubkey, bootorder.NETWORKD_ETH0, bootorder.NETWORKD_CONF,
        guest.SUDOERS,
        guest.SSH_KEYGEN_UNIT, guest.SSHD_HOST_KEYS, guest.KERNEL_ARGS, guest.GRUB_CFG,
        bootorder.UNIT_EDITS, bootorder.NICE_UNITS, bootorder.BACKGROUND_UNITS,
        bootorder.BACKGROUND_SLICE, bootorder.OVS_AT_BOOT, bootorder.MASKED_UNITS,
        bootorder.OVS_DAEMON_UNITS, bootorder.BACKGROUND_AFTER, bootorder.OVS_DAEMON_DROPIN, bootorder.MASKED_GENERATORS,
        guest.OVS_DATABASE, guest.SSHD_PAM_DROPPED, guest.UNPROBED_ALTERNATIVES,
        guest.MODPROBE_BLACKLIST, guest.FIREWALLD_RULE_SCRIPT, guest.FIREWALLD_RULE_UNIT,
        guest.INITRAMFS_CONF, guest.INITRAMFS_MODULES, bootorder.JOURNALD_CONF, bootorder.COLDPLUG_DROPIN,
        disk.GRUB_EARLY_CFG, disk.GRUB_CORE_MODULES, BOX_VAGRANTFILE,
    )
    return f"{recipe.base_version}.{int(digest[:6], 16)}"


def rootfs_key(recipe: BoxRecipe) -> str:
    """Names the cached debootstrap tarball: only what debootstrap itself gets."""
    return _digest(recipe.suite, sorted(recipe.packages))[:12]


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def filesystem_uuid(box_name: str, version: str) -> str:
    """The root file system's UUID, the same for every build of one box version: libvirt's
    pool keeps the disk of the first build it was given under the version's name (a box
    built again at that version, after the cache was removed or with --force, is not
    uploaded again), and the kernel command line of a lab's direct kernel boot, taken from
    the newest build, must find that disk's root (labgen/providers/libvirt/directboot.py)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"labgen-box:{box_name}:{version}"))
