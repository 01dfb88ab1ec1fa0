"""The .box file Vagrant adds: the disk as compressed qcow2, metadata.json for
vagrant-libvirt and a Vagrantfile of defaults, in one tar."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from .disk import workdir
from .log import Run

PROVIDER = "libvirt"

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


def metadata(disk_gib: int) -> dict[str, object]:
    return {"provider": PROVIDER, "format": "qcow2", "virtual_size": disk_gib}


def package(run: Run, progress: Callable[[str], None], raw: Path, box_path: Path,
            disk_gib: int) -> None:
    """The raw disk image -> box_path."""
    with workdir(box_path.parent, progress) as work:
        run(["qemu-img", "convert", "-O", "qcow2", "-c", str(raw), str(work / "box.img")])
        (work / "metadata.json").write_text(json.dumps(metadata(disk_gib)))
        (work / "Vagrantfile").write_text(BOX_VAGRANTFILE)
        partial = box_path.with_suffix(".box.partial")
        run(["tar", "-C", str(work), "-cf", str(partial),
             "metadata.json", "Vagrantfile", "box.img"])
        partial.rename(box_path)  # only a complete .box is ever found and reused
