"""A non-editable install works: the wheel carries templates/ and boxes/, and the installed
labgen renders a lab from them (not from this checkout)."""
from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
import zipfile

from support import ROOT


def test_wheel_ships_templates_and_boxes_and_renders(tmp_path):
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels),
                            str(ROOT)], capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr
    wheel = next(wheels.glob("labgen-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for tpl in ("node.sh.j2", "libvirt/Vagrantfile.j2", "libvirt/readme.md.j2", "netns/readme.md.j2",
                "README.md.j2", "topology.dot.j2"):
        assert f"labgen/templates/{tpl}" in names
    assert "labgen/boxes/labgen-debian12.toml" in names and "labgen/boxes/centos-stream9.toml" in names

    # A venv that sees the test runner's installed dependencies (a path line, which does not
    # run that dir's .pth files: the runner's editable labgen stays out) but gets labgen from
    # the wheel. Not system_site_packages: under labgen's own venv that would be Debian's.
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    site = next((env_dir / "lib").glob("python3*/site-packages"))
    (site / "runner-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    py = env_dir / "bin" / "python"
    inst = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall",
                           str(wheel)], capture_output=True, text=True, timeout=300)
    assert inst.returncode == 0, inst.stderr
    # Run from an empty dir, so the checkout's templates/ cannot be found by accident.
    work = tmp_path / "work"
    work.mkdir()
    where = subprocess.run([str(py), "-c", "import labgen, sys; print(labgen.__file__)"], cwd=work,
                           capture_output=True, text=True)
    assert str(env_dir) in where.stdout, where.stdout
    proc = subprocess.run([str(env_dir / "bin" / "labgen"), "render", "vxlan", "--libvirt-driver", "qemu",
                           "--dir", "lab"], cwd=work, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "type=vxlan" in (work / "lab" / "provision" / "node1.sh").read_text()
    assert (work / "lab" / "Vagrantfile").exists()
