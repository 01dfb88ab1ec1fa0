"""Step 1 of a build: debootstrap the recipe's packages into a tree and keep it as a
tarball in the cache, so a later build (a changed guest file, a lost .box) skips it."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .cache import remove_older_files
from .disk import unmount_below, workdir
from .log import Run
from .recipe import BoxRecipe


def debootstrap(run: Run, progress: Callable[[str], None], recipe: BoxRecipe,
                rootfs_tar: Path, mirror: str) -> None:
    with workdir(rootfs_tar.parent, progress) as work:
        root = work / "rootfs"
        run([
            "debootstrap", "--variant=minbase", "--include=" + ",".join(recipe.packages),
            recipe.suite, str(root), mirror,
        ], env={"DEBIAN_FRONTEND": "noninteractive"})
        unmount_below(root)  # debootstrap leaves /proc etc. mounted if it stops midway
        for deb in root.glob("var/cache/apt/archives/*.deb"):
            deb.unlink()  # ~140 MiB the box never needs: keeps the cached tarball small
        partial = rootfs_tar.with_suffix(".tar.partial")
        # --xattrs keeps file capabilities (ping as a normal user needs cap_net_raw).
        run(["tar", "--xattrs", "--xattrs-include=*", "--numeric-owner",
             "-C", str(root), "-cf", str(partial), "."])
        partial.rename(rootfs_tar)
    remove_older_files(rootfs_tar, rootfs_tar.name.rsplit("-", 1)[0] + "-*.tar", progress)
