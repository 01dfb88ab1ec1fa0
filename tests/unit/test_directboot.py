"""Direct kernel boot of a box labgen built here (labgen/providers/libvirt/directboot.py): the
Vagrantfile boots the box's own kernel only when everything it names is on this host."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from support.golden import render_case

from labgen.lab.boxes import Box
from labgen.lab.tunnels import KINDS
from labgen.providers.libvirt.directboot import direct_boot
from labgen.providers.libvirt.hypervisors import Hypervisor

BUILT = Box(name="labgen/debian12", description="", family="debian", providers=("libvirt",),
            install="", start="", build="debian12")
LOCAL = Hypervisor(name="local", uri="qemu:///system", nodes=("node1", "node2"), project=".")
REMOTE = Hypervisor(name="hv-b", uri="qemu+ssh://root@hv-b/system", nodes=("node2",),
                    project="hv-b")


def built_here(tmp_path: Path, version: str = "1.3.0.7") -> tuple[Path, Path]:
    """A box cache and a Vagrant home as `labgen box build` leaves them."""
    cache, home = tmp_path / "cache", tmp_path / "home"
    cache.mkdir()
    for kind in ("vmlinuz", "initrd"):
        (cache / f"labgen-debian12-{version}.{kind}").write_bytes(b"x")
    (cache / "labgen-debian12.boot.json").write_text(json.dumps({
        "box": "labgen/debian12", "version": version,
        "kernel": str(cache / f"labgen-debian12-{version}.vmlinuz"),
        "initrd": str(cache / f"labgen-debian12-{version}.initrd"),
        "cmdline": "root=UUID=u-1 ro console=ttyS0"}))
    (home / "boxes/labgen-VAGRANTSLASH-debian12" / version / "libvirt").mkdir(parents=True)
    return cache, home


def test_a_built_box_on_this_host_boots_its_kernel(tmp_path):
    cache, home = built_here(tmp_path)
    boot = direct_boot(BUILT, LOCAL, cache, home)
    assert boot is not None
    assert (boot.version, boot.cmdline) == ("1.3.0.7", "root=UUID=u-1 ro console=ttyS0")
    assert boot.kernel == str(cache / "labgen-debian12-1.3.0.7.vmlinuz")
    assert boot.box_dir == str(home / "boxes/labgen-VAGRANTSLASH-debian12/1.3.0.7/libvirt")


def test_under_software_emulation_the_kernel_runs_without_speculation_mitigations(tmp_path):
    cache, home = built_here(tmp_path)
    boot = direct_boot(BUILT, LOCAL, cache, home, emulated=True)
    assert boot is not None
    assert boot.cmdline == "root=UUID=u-1 ro console=ttyS0 mitigations=off"


@pytest.mark.parametrize("gone", ["kernel", "initrd", "record", "box", "broken record"])
def test_anything_missing_boots_through_grub(tmp_path, gone):
    cache, home = built_here(tmp_path)
    path = {"kernel": cache / "labgen-debian12-1.3.0.7.vmlinuz",
            "initrd": cache / "labgen-debian12-1.3.0.7.initrd",
            "record": cache / "labgen-debian12.boot.json",
            "box": home / "boxes/labgen-VAGRANTSLASH-debian12/1.3.0.7"}.get(gone)
    if path is None:
        (cache / "labgen-debian12.boot.json").write_text("{")
    elif path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()
    assert direct_boot(BUILT, LOCAL, cache, home) is None


def test_not_on_a_remote_hypervisor_nor_for_a_downloaded_box(tmp_path):
    cache, home = built_here(tmp_path)
    assert direct_boot(BUILT, REMOTE, cache, home) is None
    downloaded = Box(name="labgen/debian12", description="", family="debian",
                     providers=("libvirt",), install="", start="")
    assert direct_boot(downloaded, LOCAL, cache, home) is None


def test_the_vagrantfile_pins_the_box_and_names_the_kernel_only_while_they_are_there(tmp_path):
    cache, home = built_here(tmp_path)
    lab = render_case("geneve", tmp_path, {"LABGEN_CACHE_DIR": str(cache),
                                           "VAGRANT_HOME": str(home)})
    text = (lab / "Vagrantfile").read_text()
    kernel = cache / "labgen-debian12-1.3.0.7.vmlinuz"
    assert f"if File.file?('{kernel}') && File.file?('{cache}/labgen-debian12-1.3.0.7.initrd') &&" \
        in text
    assert "      config.vm.box_version = '1.3.0.7'\n" in text
    # the golden case runs under software emulation (--libvirt-driver qemu); the last word is
    # the tunnel's firewall rule for the box's firewalld (TunnelKind.boot_rule)
    rule = KINDS["geneve"].boot_rule("10.10.10.0/24")
    assert (f"      lv.cmd_line = 'root=UUID=u-1 ro console=ttyS0 mitigations=off "
            f"labgen.firewalld-rule={rule}'\n") in text
    assert "    lv.cpu_model = 'qemu64'\n" in text
    ruby = shutil.which("ruby")
    if ruby:
        proc = subprocess.run([ruby, "-c", str(lab / "Vagrantfile")], capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
