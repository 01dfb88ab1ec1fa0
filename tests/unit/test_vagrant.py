"""labgen.vagrant.command: the environment every Vagrant call gets, captured and streamed runs, the
box list. Vagrant itself is replaced by a script first on PATH that replays output recorded
from Vagrant 2.3.4 on this project's CI host (support.fake_vagrant): the process boundary;
labgen's side is real."""
from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
from support import GOLDEN
from support.fake_vagrant import BOX_ADD, BOX_LIST, fake_vagrant

from labgen.errors import HostError, ProviderError
from labgen.vagrant import command as vagrant

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
    a concurrent `vagrant up` fail (labgen/vagrant/command.py, ssh_config)."""
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


# ---- bounds: every run in a session of its own, killed whole past its bound

def _wait_written(path: Path, timeout: float = 30) -> int:
    """The PID the stand-in wrote to path, once it has (bounded)."""
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text().endswith("\n")):
        assert time.monotonic() < deadline, f"the stand-in vagrant never wrote {path}"
        threading.Event().wait(0.02)
    return int(path.read_text())


def _gone(pid: int, timeout: float = 30) -> bool:
    """Whether the process ends within timeout (SIGKILL is delivered asynchronously): no such
    process, or a zombie nobody reaped yet (dead all the same)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return True
        except FileNotFoundError:
            return True
        if time.monotonic() > deadline:
            return False
        threading.Event().wait(0.02)


# The stand-in starts a child of its own (as Vagrant starts ssh and the like), then waits.
TREE = 'sleep 600 & echo $! > "{d}/child"; echo $$ > "{d}/vagrant"; echo booting; exec sleep 600'


def test_start_runs_vagrant_in_a_session_of_its_own(monkeypatch, tmp_path):
    fake_vagrant(monkeypatch, tmp_path, body=TREE.format(d=tmp_path))
    proc = vagrant.start(["up"])
    try:
        assert os.getsid(proc.pid) == os.getpgid(proc.pid) == proc.pid
        child = _wait_written(tmp_path / "child")
        assert os.getpgid(child) == proc.pid         # its children: in its group
    finally:
        vagrant.kill(proc)
    assert _gone(child)


def test_stream_past_its_bound_kills_the_whole_group_and_names_the_bound(monkeypatch, tmp_path):
    fake_vagrant(monkeypatch, tmp_path, body=TREE.format(d=tmp_path))
    proc = vagrant.start(["up", "--no-provision"], timeout=1)
    child = _wait_written(tmp_path / "child")       # (the bound may pass meanwhile: no matter)
    seen: list[str] = []
    with pytest.raises(vagrant.VagrantTimeout) as exc:
        for line in vagrant.lines(proc):
            seen.append(line)
    message = "'vagrant up --no-provision' did not end within its bound of 1 s: stopped, with every process it started"
    assert str(exc.value) == message
    assert isinstance(exc.value, ProviderError) and exc.value.exit_code == ProviderError.exit_code
    # A CalledProcessError too: the libvirt provider's handler of a failed `vagrant up` takes
    # it, and the last line it logged and shows says why it ended.
    assert isinstance(exc.value, subprocess.CalledProcessError) and exc.value.returncode == -9
    assert seen[-1] == f"labgen: {message}" == exc.value.output.splitlines()[-1]
    assert proc.returncode == -9
    assert _gone(child) and _gone(int((tmp_path / "vagrant").read_text()))


def test_stream_within_its_bound_ends_as_before(monkeypatch, tmp_path):
    fake_vagrant(monkeypatch, tmp_path, output=b"one\ntwo\n")
    assert list(vagrant.stream(["box", "add", "x"], timeout=600)) == ["one", "two"]
    fake_vagrant(monkeypatch, tmp_path, output=b"one\n", body="exit 3")
    with pytest.raises(subprocess.CalledProcessError) as exc:
        list(vagrant.stream(["box", "add", "x"], timeout=600))
    assert exc.value.returncode == 3 and not isinstance(exc.value, vagrant.VagrantTimeout)


def test_stream_has_a_bound_unless_its_caller_names_one(monkeypatch):
    started = []
    monkeypatch.setattr(vagrant, "start", lambda args, cwd=None, timeout=None: started.append(timeout))
    monkeypatch.setattr(vagrant, "lines", lambda proc: iter(()))
    vagrant.stream(["box", "add", "x"])
    vagrant.stream(["box", "add", "x"], timeout=None)
    assert started == [vagrant.STREAM_TIMEOUT, None]


def test_run_past_its_bound_kills_the_whole_group(monkeypatch, tmp_path):
    fake_vagrant(monkeypatch, tmp_path, body=TREE.format(d=tmp_path))
    with pytest.raises(vagrant.VagrantTimeout) as exc:
        vagrant.run(["destroy", "-f"], timeout=3)
    assert str(exc.value) == ("'vagrant destroy -f' did not end within its bound of 3 s: "
                              "stopped, with every process it started")
    assert "booting" in exc.value.output           # what it printed before
    assert _gone(_wait_written(tmp_path / "child")) and _gone(_wait_written(tmp_path / "vagrant"))


def test_up_bound_follows_the_vagrantfiles_driver(tmp_path):
    golden = (GOLDEN / "gre" / "Vagrantfile").read_text()
    assert "lv.driver = 'qemu'" in golden
    (tmp_path / "Vagrantfile").write_text(golden)
    assert vagrant.up_timeout(tmp_path) == vagrant.UP_TIMEOUT["qemu"] == 1800
    (tmp_path / "Vagrantfile").write_text(golden.replace("lv.driver = 'qemu'", "lv.driver = 'kvm'"))
    assert vagrant.up_timeout(tmp_path) == vagrant.UP_TIMEOUT["kvm"] == 600
    assert vagrant.up_timeout(tmp_path / "none") == 1800      # unknown: emulation's, the longer


def test_last_line():
    assert vagrant.last_line("a\n  b  \n\n") == "b"
    assert vagrant.last_line("") == vagrant.last_line(None) == "no output"


def test_lines_end_with_vagrant_though_a_process_it_left_holds_the_pipe(monkeypatch, tmp_path):
    """vagrant-libvirt left an ssh ProxyCommand running with vagrant's stderr: the pipe never
    closed and a create waited on it for good. lines() ends when vagrant does, with all it
    wrote, and kills what it left in its group."""
    fake_vagrant(monkeypatch, tmp_path, output=b"one\n",
                 body=f'sleep 600 & echo $! > "{tmp_path}/child"; echo two; echo -n three')
    proc = vagrant.start(["up"], timeout=600)
    assert list(vagrant.lines(proc)) == ["one", "two", "three"]
    assert proc.returncode == 0
    assert _gone(_wait_written(tmp_path / "child"))
