"""A box with a download URL that Vagrant does not have yet is fetched for the user (with
progress, once), as `labgen create gre` does with the default CentOS Stream 9 box.

Proven offline with the locally built labgen/debian12 box file behind a file:// URL, in a
catalog entry of its own (LABGEN_BOXES_DIR) under a test-only name that is removed again.
No VM is booted: doctor, render, the provider's pre-checks and the fetch itself, with the
real Vagrant. What the user sees of `box add`, on recorded output: tests/unit/test_box_fetch.py."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from support import bounds
from support.cli import ENV, labgen

from labgen.errors import HostError
from labgen.lifecycle import load_lab
from labgen.providers.libvirt import hostchecks
from labgen.vagrant import boxfetch
from labgen.vagrant import command as vagrant

NAME = f"labgen-test/fetch{os.getpid()}"

pytestmark = pytest.mark.timeout(bounds.TEST_BOX)     # a box build is inside


def box_file() -> Path:
    """The locally built box (built once; a cached build is reused in seconds)."""
    proc = labgen("box", "build", "debian12", timeout=bounds.BOX_BUILD)
    assert proc.returncode == 0, proc.stderr
    m = re.search(r"ready \((?:reused|built): (\S+\.box)\)", proc.stderr)
    assert m, proc.stderr
    return Path(m.group(1))


def vagrant_boxes() -> str:
    return vagrant.run(["box", "list"]).stdout


def write_box(directory: Path, name: str, url: str = "", build: str = "") -> None:
    source = f'url = "{url}"\n' if url else (f'build = "{build}"\n' if build else "")
    (directory / (name.replace("/", "-") + ".toml")).write_text(
        f'name = "{name}"\ndescription = "test box"\nfamily = "debian"\nproviders = ["libvirt"]\n'
        f'{source}install = "true"\nstart = "true"\n')


@pytest.fixture
def catalog(tmp_path):
    boxes = tmp_path / "boxes"
    boxes.mkdir()
    env = {**ENV, "LABGEN_BOXES_DIR": str(boxes)}
    old = os.environ.get("LABGEN_BOXES_DIR")
    os.environ["LABGEN_BOXES_DIR"] = str(boxes)
    try:
        yield boxes, env
    finally:
        if old is None:
            del os.environ["LABGEN_BOXES_DIR"]
        else:
            os.environ["LABGEN_BOXES_DIR"] = old
        boxfetch.remove(NAME)
        assert NAME not in vagrant_boxes()


@pytest.mark.vm
def test_box_with_a_url_is_fetched_once_with_progress(catalog, tmp_path):
    boxes, env = catalog
    path = box_file()
    url = path.as_uri()
    write_box(boxes, NAME, url=url)
    assert NAME not in vagrant_boxes()
    size = boxfetch.human_size(path.stat().st_size)

    # doctor: a note that create will download it (with its size), not a problem.
    doc = labgen("doctor", "--provider", "libvirt", "--box", NAME, env=env)
    assert f"note libvirt: box {NAME} not added yet: create will download it ({url}, {size})" \
        in doc.stdout, doc.stdout
    assert f"box {NAME}" not in "".join(ln for ln in doc.stdout.splitlines() if "problem" in ln)

    lab_dir = tmp_path / "lab"
    proc = labgen("render", "gre", "--box", NAME, "--dir", str(lab_dir), env=env)
    assert proc.returncode == 0, proc.stderr
    lab = load_lab(lab_dir)
    assert lab.box.url == url
    # create's pre-checks no longer stop at the missing box.
    assert hostchecks.box_problem(lab) is None

    said: list[str] = []
    assert boxfetch.ensure_box(lab.box, said.append, log=lab_dir / "logs" / "vagrant.log") is True
    assert said[0] == f"fetching box {NAME} from {url} ({size}): once, Vagrant keeps it", said
    assert any(s.startswith("Progress: ") for s in said), said
    assert any(f"Successfully added box '{NAME}'" in s for s in said), said
    assert re.fullmatch(rf"{re.escape(NAME)} added to Vagrant in \d+\.\d s", said[-1]), said
    assert len(said) == len(set(said)), f"a line was shown twice: {said}"
    assert all("\r" not in s and "\x1b" not in s for s in said)
    assert re.search(rf"^{re.escape(NAME)} +\(libvirt, ", vagrant_boxes(), re.M)

    # Once: a second time nothing is fetched and nothing is said.
    again: list[str] = []
    assert boxfetch.ensure_box(lab.box, again.append) is False and again == []
    doc = labgen("doctor", "--provider", "libvirt", "--box", NAME, env=env)
    assert "not added yet" not in doc.stdout


@pytest.mark.vm
def test_failed_fetch_is_one_line_with_the_manual_way(catalog):
    boxes, _env = catalog
    url = "http://127.0.0.1:9/no-such.box"      # nothing listens on the discard port: like no internet
    write_box(boxes, NAME, url=url)
    from labgen.lab.boxes import get
    from labgen.providers import NAMES
    box = get(NAME, providers=NAMES)
    said: list[str] = []
    with pytest.raises(HostError) as exc:
        boxfetch.ensure_box(box, said.append)
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.startswith(f"could not fetch box {NAME} from {url}: ")
    assert f"vagrant box add --name {NAME} --provider libvirt {url}" in msg
    assert "labgen box build debian12" in msg
    assert NAME not in vagrant_boxes()


@pytest.mark.vm
def test_box_without_a_source_stops_with_the_hint(catalog, tmp_path):
    boxes, env = catalog
    write_box(boxes, NAME, build="debian12")
    proc = labgen("render", "gre", "--box", NAME, "--dir", str(tmp_path / "lab"), env=env)
    assert proc.returncode == 0, proc.stderr
    lab = load_lab(tmp_path / "lab")
    assert boxfetch.source(lab.box) is None
    problem = hostchecks.box_problem(lab)
    assert problem == (f"box {NAME} (libvirt) is not in Vagrant: build it here with: "
                       f"sudo labgen box build debian12; or pick another with --box")
    with pytest.raises(HostError, match="has no download source: build it here"):
        boxfetch.ensure_box(lab.box, lambda _s: None)
