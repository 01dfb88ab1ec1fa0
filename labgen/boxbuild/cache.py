"""The build cache (default /var/cache/labgen/boxes, or $LABGEN_CACHE_DIR): the built
.box files with their kernels and initramfs images, the debootstrap tarballs they start
from, the build logs, and the lock that keeps two builds of one box apart."""
from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from labgen.system.locks import hold

from .errors import BoxBuildError

DEFAULT_CACHE_DIR = Path("/var/cache/labgen/boxes")
CACHE_ENV = "LABGEN_CACHE_DIR"


def resolve_cache_dir(cache_dir: Path | None = None) -> Path:
    """The directory holding the boxes, root fs tarballs and build logs (not a parent)."""
    if cache_dir is not None:
        return Path(cache_dir)
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR)


def stem(box_name: str) -> str:
    """What the names of a box's files in the cache start with: labgen/debian12 -> labgen-debian12."""
    return box_name.replace("/", "-")


def box_file(cache: Path, box_name: str, version: str) -> Path:
    return cache / f"{stem(box_name)}-{version}.box"


def boot_file(cache: Path, box_name: str, version: str, kind: str) -> Path:
    """The kernel ("vmlinuz") or initramfs ("initrd") of a built box, for direct kernel boot."""
    return cache / f"{stem(box_name)}-{version}.{kind}"


def boot_record(cache: Path, box_name: str) -> Path:
    """What the last build of a box left for direct kernel boot: its version, kernel,
    initramfs and kernel command line (JSON; read by labgen/providers/libvirt/directboot.py)."""
    return cache / f"{stem(box_name)}.boot.json"


def rootfs_file(cache: Path, name: str, key: str) -> Path:
    return cache / f"{name}-rootfs-{key}.tar"


def remove_older_files(current: Path, pattern: str, progress: Callable[[str], None]) -> None:
    """Older builds in the cache (a .box ~280 MiB, a root fs tarball ~800 MiB) are never
    used again. Vagrant keeps its own copy of each box version (`vagrant box prune`)."""
    for old in current.parent.glob(pattern):
        if old != current:
            old.unlink()
            progress(f"removed older cached {old.name}")


@contextlib.contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    """One build per box at a time: builds share the cache's scratch files."""
    with hold(lock_path, BoxBuildError(f"another box build holds {lock_path}: wait for it to finish")):
        yield
