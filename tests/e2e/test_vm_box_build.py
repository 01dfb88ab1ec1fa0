"""The real labgen/debian12 box: built (or reused from the cache) by labgen.boxbuild and
listed by the real Vagrant. Its parts, one by one: tests/unit/test_boxbuild.py."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from support import bounds

from labgen.boxbuild import build_box
from labgen.vagrant import command as vagrant

pytestmark = pytest.mark.timeout(bounds.TEST_BOX)     # a box build is inside


@pytest.mark.vm
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("vagrant"),
                    reason="needs root and vagrant")
def test_real_box_is_built_or_reused_and_listed_by_vagrant():
    built = build_box("debian12", progress=print)
    assert built.path.is_file()
    listing = subprocess.run(["vagrant", "box", "list", "--machine-readable"],
                             capture_output=True, text=True, check=True).stdout
    assert ("labgen/debian12", "libvirt", built.version) in vagrant.parse_box_list(listing)
    assert Path(built.path).stat().st_size > 50 * 1024**2
