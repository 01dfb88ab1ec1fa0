"""labgen.vagrant: the environment every Vagrant call gets, captured and streamed runs, the
box list. Vagrant itself is replaced by a script first on PATH that replays output recorded
from Vagrant 2.3.4 on this project's CI host (support.fake_vagrant): the process boundary;
labgen's side is real."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from support.fake_vagrant import BOX_ADD, BOX_LIST, fake_vagrant

from labgen import vagrant
from labgen.errors import HostError, ProviderError

# BOX_LIST with two more boxes, one of them for another provider.
BOX_LIST_3 = BOX_LIST + """\
1795714054,,ui,info,centos/stream9 (libvirt%!(VAGRANT_COMMA) 20240101.0)
1795714054,,box-name,centos/stream9
1795714054,,box-provider,libvirt
1795714054,,box-version,20240101.0
1795714054,,box-info,,
1795714054,,box-name,generic/debian12
1795714054,,box-provider,virtualbox
1795714054,,box-version,4.3.12
"""


# ---- the box list

def test_parse_box_list_of_recorded_machine_readable_output():
    assert vagrant.parse_box_list(BOX_LIST) == {("labgen/debian12", "libvirt", "1.0.0.8201999")}
    assert vagrant.parse_box_list(BOX_LIST_3) == {
        ("labgen/debian12", "libvirt", "1.0.0.8201999"),
        ("centos/stream9", "libvirt", "20240101.0"),
        ("generic/debian12", "virtualbox", "4.3.12"),
    }
    assert vagrant.parse_box_list("") == set()


def test_box_list_and_has_box(monkeypatch, tmp_path):
    calls = fake_vagrant(monkeypatch, tmp_path, output=BOX_LIST_3.encode())
    assert ("generic/debian12", "virtualbox", "4.3.12") in vagrant.box_list()
    assert calls.read_text().splitlines()[0] == "box list --machine-readable"
    assert vagrant.has_box("labgen/debian12")
    assert vagrant.has_box("labgen/debian12", "1.0.0.8201999")
    assert not vagrant.has_box("labgen/debian12", "1.0.0.1")
    assert not vagrant.has_box("generic/debian12")              # not for libvirt
    assert vagrant.has_box("generic/debian12", provider="virtualbox")


def test_failed_box_list_is_one_line_with_vagrants_last_words(monkeypatch, tmp_path):
    fake_vagrant(monkeypatch, tmp_path, body='echo "Vagrant failed to initialize" >&2\n'
                                            'echo "  plugin error: boom" >&2\nexit 1')
    with pytest.raises(HostError) as exc:
        vagrant.box_list()
    assert str(exc.value) == "'vagrant box list' failed: plugin error: boom"


# ---- running it

def test_run_gets_the_environment_cwd_and_captured_text(monkeypatch, tmp_path):
    fake_vagrant(monkeypatch, tmp_path, body='pwd; echo "$VAGRANT_CHECKPOINT_DISABLE'
                 ' $VAGRANT_BOX_UPDATE_CHECK_DISABLE $VAGRANT_DEFAULT_PROVIDER"; echo oops >&2')
    res = vagrant.run(["status"], cwd=tmp_path)
    assert res.returncode == 0
    assert res.stdout.splitlines() == [str(tmp_path), "1 1 libvirt"]
    assert res.stderr == "oops\n"


def test_ssh_config_and_its_failure(monkeypatch, tmp_path):
    monkeypatch.setenv("VAGRANT_HOME", str(tmp_path / "home"))
    fake_vagrant(monkeypatch, tmp_path, output=b"Host node1\n  HostName 192.168.121.5\n")
    assert vagrant.ssh_config(tmp_path) == "Host node1\n  HostName 192.168.121.5\n"
    fake_vagrant(monkeypatch, tmp_path, output=b"",
                 body='echo "The environment has not yet been created." >&2; exit 1')
    with pytest.raises(ProviderError, match="^vagrant ssh-config failed: The environment has "
                                            "not yet been created.$"):
        vagrant.ssh_config(tmp_path)


def test_ssh_config_runs_with_a_home_of_its_own_that_links_all_but_the_machine_index(monkeypatch, tmp_path):
    """Vagrant's machine locks live in VAGRANT_HOME/data; a query that took them could make
    a concurrent `vagrant up` fail (labgen/vagrant.py, ssh_config)."""
    real = tmp_path / "home"
    for d in ("boxes", "gems", "data/machine-index"):
        (real / d).mkdir(parents=True)
    (real / "insecure_private_key").write_text("key")
    monkeypatch.setenv("VAGRANT_HOME", str(real))
    fake_vagrant(monkeypatch, tmp_path, body='echo "$VAGRANT_HOME"')
    project = tmp_path / "lab"
    project.mkdir()
    home = Path(vagrant.ssh_config(project).strip())
    assert home == project / ".vagrant" / "labgen-home"
    assert sorted(p.name for p in home.iterdir()) == ["boxes", "gems", "insecure_private_key"]
    assert all((home / n).resolve() == real / n for n in ("boxes", "gems", "insecure_private_key"))
    assert vagrant.ssh_config(project).strip() == str(home)      # asked again: the same links
    assert vagrant.run(["status"], cwd=project).stdout.strip() == str(real)     # others: the user's


def test_stream_splits_redrawn_lines_and_drops_colour_codes(monkeypatch, tmp_path):
    fake_vagrant(monkeypatch, tmp_path, output=BOX_ADD)
    lines = list(vagrant.stream(["box", "add", "x.json"]))
    assert lines == [
        "==> box: Loading metadata for box '/var/cache/labgen/boxes/labgen-debian12.json'",
        "box: URL: file:///var/cache/labgen/boxes/labgen-debian12.json",
        "==> box: Adding box 'labgen/debian12' (v1.0.0.8201999) for provider: libvirt",
        "box: Unpacking necessary files from: "
        "file:///var/cache/labgen/boxes/labgen-debian12-1.0.0.8201999.box",
        "Progress: 0% (Rate: 0/s, Estimated time remaining: --:--:--)",
        "Progress: 58% (Rate: 718M/s, Estimated time remaining: --:--:--)",
        "box: Calculating and comparing box checksum...",
        "==> box: Successfully added box 'labgen/debian12' (v1.0.0.8201999) for 'libvirt'!",
    ]


def test_stream_keeps_a_last_line_without_newline(monkeypatch, tmp_path):
    fake_vagrant(monkeypatch, tmp_path, output=b"one\ntwo")
    assert list(vagrant.stream(["x"])) == ["one", "two"]


def test_stream_failure_raises_with_the_last_lines(monkeypatch, tmp_path):
    fake_vagrant(monkeypatch, tmp_path, output=BOX_ADD,
                 body='echo "The box you are adding has a name different" >&2; exit 7')
    lines: list[str] = []
    with pytest.raises(subprocess.CalledProcessError) as exc:
        for line in vagrant.stream(["box", "add", "x.json"]):
            lines.append(line)
    assert exc.value.returncode == 7 and exc.value.cmd == ["vagrant", "box", "add", "x.json"]
    assert exc.value.output.splitlines()[-1] == lines[-1] == \
        "The box you are adding has a name different"
    assert vagrant.last_line(exc.value.output) == lines[-1]


def test_stream_closed_early_ends_vagrant(monkeypatch, tmp_path):
    pid_file = tmp_path / "pid"
    fake_vagrant(monkeypatch, tmp_path, output=b"first\n",
                 body=f'echo $$ > "{pid_file}"; echo second; exec sleep 600')
    lines = vagrant.stream(["up"])
    assert next(lines) == "first"
    assert next(lines) == "second"
    lines.close()
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):      # killed and reaped, not left sleeping
        os.kill(pid, 0)


def test_stream_without_vagrant_fails_at_the_call(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(FileNotFoundError):
        vagrant.stream(["box", "add", "x"])


def test_last_line():
    assert vagrant.last_line("a\n  b  \n\n") == "b"
    assert vagrant.last_line("") == vagrant.last_line(None) == "no output"
