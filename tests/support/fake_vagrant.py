"""Stand-ins first on PATH for `vagrant`, `virsh` and the like (the process boundary;
labgen's side stays real), and output recorded from Vagrant 2.3.4 on this project's CI host
for them to replay."""
from __future__ import annotations

import os
from pathlib import Path

# `vagrant box list --machine-readable` with one box (note Vagrant's escaped comma).
BOX_LIST = """\
1795714054,,ui,info,labgen/debian12 (libvirt%!(VAGRANT_COMMA) 1.0.0.8201999)
1795714054,,box-name,labgen/debian12
1795714054,,box-provider,libvirt
1795714054,,box-version,1.0.0.8201999
"""
# `vagrant box add` of the locally built box, as its build log recorded it: the progress
# line is redrawn with \r and an erase-line escape.
BOX_ADD = (
    b"==> box: Loading metadata for box '/var/cache/labgen/boxes/labgen-debian12.json'\n"
    b"    box: URL: file:///var/cache/labgen/boxes/labgen-debian12.json\n"
    b"==> box: Adding box 'labgen/debian12' (v1.0.0.8201999) for provider: libvirt\n"
    b"    box: Unpacking necessary files from: "
    b"file:///var/cache/labgen/boxes/labgen-debian12-1.0.0.8201999.box\n"
    b"\r\x1b[KProgress: 0% (Rate: 0/s, Estimated time remaining: --:--:--)"
    b"\r\x1b[KProgress: 58% (Rate: 718M/s, Estimated time remaining: --:--:--)"
    b"\r\x1b[K    box: Calculating and comparing box checksum...\n"
    b"==> box: Successfully added box 'labgen/debian12' (v1.0.0.8201999) for 'libvirt'!\n"
)


def fake_command(monkeypatch, tmp_path: Path, name: str, body: str = "", output: bytes = b"",
                 record: str = "$*") -> Path:
    """Put a command `name` first on PATH: it appends `record` (its arguments; e.g. "$PWD $*"
    for where it ran too) to the returned file, prints `output` and runs the shell `body`."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir(exist_ok=True)
    calls, out = tmp_path / f"{name}-calls", tmp_path / f"{name}-output"
    out.write_bytes(output)
    script = bin_dir / name
    script.write_text(f'#!/bin/sh\necho "{record}" >> "{calls}"\ncat "{out}"\n{body}\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return calls


def fake_vagrant(monkeypatch, tmp_path: Path, body: str = "", output: bytes = b"") -> Path:
    """A stand-in `vagrant` (fake_command)."""
    return fake_command(monkeypatch, tmp_path, "vagrant", body, output)
