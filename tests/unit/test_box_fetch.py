"""Fetching a box with a download URL, as `labgen create gre` does with the default CentOS
Stream 9 box: what the user sees of `vagrant box add` (each step once, no Vagrant prefix),
and whether a box is added. Vagrant's recorded output is replayed through a stand-in
`vagrant` on PATH (support.fake_vagrant). With the real Vagrant and a real box file:
tests/e2e/test_vm_box_fetch.py."""
from __future__ import annotations

from support.fake_vagrant import BOX_ADD, BOX_LIST, fake_vagrant

from labgen.vagrant import boxfetch

# ---- what the user sees of `vagrant box add`

def test_box_add_shows_each_step_once_without_vagrants_prefix(monkeypatch, tmp_path):
    calls = fake_vagrant(monkeypatch, tmp_path, output=BOX_ADD + BOX_ADD)
    said: list[str] = []
    log = tmp_path / "vagrant.log"
    assert boxfetch.run_box_add(["box", "add", "x"], said.append, log) is None
    assert calls.read_text() == "box add x\n"
    assert said == [
        "Loading metadata for box '/var/cache/labgen/boxes/labgen-debian12.json'",
        "URL: file:///var/cache/labgen/boxes/labgen-debian12.json",
        "Adding box 'labgen/debian12' (v1.0.0.8201999) for provider: libvirt",
        "Unpacking necessary files from: "
        "file:///var/cache/labgen/boxes/labgen-debian12-1.0.0.8201999.box",
        "Progress: 0% (Rate: 0/s, Estimated time remaining: --:--:--)",
        "Progress: 58% (Rate: 718M/s, Estimated time remaining: --:--:--)",
        "Calculating and comparing box checksum...",
        "Successfully added box 'labgen/debian12' (v1.0.0.8201999) for 'libvirt'!",
    ]
    assert log.read_text().count("Progress: 0%") == 2        # the log keeps every line


def test_failed_box_add_returns_its_last_lines(monkeypatch, tmp_path):
    fake_vagrant(monkeypatch, tmp_path, output=b"".join(BOX_ADD.splitlines(keepends=True)[:3]),
                 body='echo "==> box: Could not resolve host: example.invalid" >&2; exit 1')
    tail = boxfetch.run_box_add(["box", "add", "x"], lambda _: None)
    assert tail is not None and tail[-1] == "Could not resolve host: example.invalid"


def test_box_add_without_vagrant_says_so(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert boxfetch.run_box_add(["box", "add", "x"], lambda _: None) == \
        ["cannot run vagrant: No such file or directory"]


def test_is_added_reads_the_box_list(monkeypatch, tmp_path):
    fake_vagrant(monkeypatch, tmp_path, output=BOX_LIST.encode())
    assert boxfetch.is_added("labgen/debian12") and not boxfetch.is_added("centos/stream9")
    fake_vagrant(monkeypatch, tmp_path, output=b"", body="exit 1")
    assert not boxfetch.is_added("labgen/debian12")    # then create tries, and says why
