"""File-system problems with the lab directory, through the real CLI on real file systems:
each is one `error: ...` line, exit 2, no traceback, and nothing is left half-written.

Root ignores file modes, so "read-only" and "full" are real mounts: a tmpfs mounted
read-only, a read-only bind mount of a lab, and a 64 KiB tmpfs filled to the brim; /proc
refuses new directories with ENOENT to root. A --dir under a file needs no root:
tests/unit/test_bad_input.py."""
from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from pathlib import Path

import pytest
from support.cli import labgen

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs: needs root")


def tree(path: Path) -> dict[str, bytes | None]:
    """Every entry below path with its content (None for directories), hidden ones too."""
    if not path.exists():
        return {}
    return {str(p.relative_to(path)): (None if p.is_dir() else p.read_bytes())
            for p in sorted(path.rglob("*"))}


def assert_one_line_error(proc: subprocess.CompletedProcess, *words: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert proc.stdout == "", proc.stdout
    return lines[0]


@contextlib.contextmanager
def mounted(mountpoint: Path, *mount_args: str):
    mountpoint.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", *mount_args, str(mountpoint)], check=True, capture_output=True)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True, capture_output=True)


def fill(directory: Path) -> None:
    """Write (unbuffered) until the file system says ENOSPC, then the last bytes one by one."""
    for name, size in (("filler", 4096), ("filler2", 1)):
        with open(directory / name, "wb", buffering=0) as fh:
            try:
                while True:
                    fh.write(b"\0" * size)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc


def test_proc_path():
    proc = labgen("render", "gre", "--dir", "/proc/x")
    assert_one_line_error(proc, "/proc/x", "choose another --dir")
    assert not Path("/proc/x").exists()


def test_read_only_tmpfs(tmp_path):
    with mounted(tmp_path / "ro", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs") as ro:
        for args in ([str(ro / "lab")], [str(ro / "a" / "b")], [str(ro), "--force"]):
            proc = labgen("render", "gre", "--dir", *args)
            assert_one_line_error(proc, "read-only file system")
        assert tree(ro) == {}


def test_read_only_bind_mount_of_a_lab(tmp_path):
    """A lab on a read-only bind mount: re-rendering it and the verbs that lock it fail in
    one line, and the lab's files stay as they were."""
    src = tmp_path / "src"
    assert labgen("render", "gre", "--provider", "netns", "--dir", str(src)).returncode == 0
    before = tree(src)
    view = tmp_path / "view"
    with mounted(view, "--bind", str(src)):
        subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], check=True, capture_output=True)
        assert_one_line_error(labgen("render", "vxlan", "--provider", "netns", "--dir", str(view),
                                     "--force"), "read-only file system")
        assert_one_line_error(labgen("destroy", str(view)), "cannot lock", "read-only file system")
        assert tree(view) == before
    assert tree(src) == before


def test_disk_full_new_lab(tmp_path):
    with mounted(tmp_path / "full", "-t", "tmpfs", "-o", "size=64k", "tmpfs") as full:
        fill(full)
        before = tree(full)
        for args in ([str(full / "lab")], [str(full / "x" / "y")], [str(full), "--force"]):
            proc = labgen("render", "gre", "--dir", *args)
            assert_one_line_error(proc, "no space left on device", "free some space")
            assert tree(full) == before


def test_disk_full_rerender_keeps_the_old_lab(tmp_path):
    """Re-rendering an existing lab (--force) on a disk that fills up: the old files stay whole."""
    with mounted(tmp_path / "full", "-t", "tmpfs", "-o", "size=128k", "tmpfs") as full:
        lab = full / "lab"
        assert labgen("render", "gre", "--provider", "netns", "--dir", str(lab)).returncode == 0
        fill(full)
        before = tree(full)
        proc = labgen("render", "vxlan", "--provider", "netns", "--nodes", "3", "--dir", str(lab),
                      "--force")
        assert_one_line_error(proc, "no space left on device")
        assert tree(full) == before
        assert b'"tunnel": "gre"' in (lab / "lab.json").read_bytes()


def netns_names() -> set[str]:
    proc = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {ln.split()[0] for ln in proc.stdout.splitlines() if ln.strip()}


def test_unwritable_junit_is_refused_before_the_lab_is_built(tmp_path):
    """The output file of create is checked first: before, the lab was built and verified and
    only then the JUnit file failed (exit 1, the lab left running). Now one line, exit 2, and
    no lab directory, no namespace, no owner record."""
    name = f"tju{os.getpid() % 100000}"
    before = netns_names()
    with mounted(tmp_path / "ro", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs") as ro:
        for junit, words in (("/proc/labgen-junit.xml", ("cannot write --junit /proc/labgen-junit.xml",
                                                         "/proc takes no new files")),
                             (str(ro / "r.xml"), ("read-only file system", "choose another --junit path")),
                             (str(ro / "reports" / "r.xml"), ("read-only file system",))):
            proc = labgen("create", "gre", "--provider", "netns", "--name", name, "--dir", str(tmp_path / "lab"),
                          "--junit", junit, "--destroy", timeout=60)
            assert_one_line_error(proc, *words)
            assert not (tmp_path / "lab").exists()
            assert netns_names() == before
            assert not Path(f"/run/labgen/{name}").exists()
        assert tree(ro) == {}
    assert not Path("/proc/labgen-junit.xml").exists()
