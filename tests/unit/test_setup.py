"""Set-up logic that runs in seconds: scripts/setup's options and refusals (before anything is
installed), and `labgen doctor` naming every missing Debian package with the one apt-get
command, from the real CLI with an emptied PATH, from this checkout and from a wheel
installed into a venv of Debian's Python. The whole set-up on a fresh root is
tests/e2e/test_fresh_machine.py."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from support import README, ROOT
from support.cli import ENV, labgen

SETUP = ROOT / "scripts" / "setup"
NETNS_PACKAGES = ["openvswitch-switch", "iproute2", "tcpdump", "ethtool", "iputils-ping", "procps",
                  "util-linux", "mount"]


def setup(*args: str, env: dict | None = None, user: str | None = None) -> subprocess.CompletedProcess:
    argv = ["bash", str(SETUP), *args]
    if user:
        argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *argv]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})


def one_line(proc: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_setup_help_says_what_it_installs_and_where():
    proc = setup("--help")
    assert proc.returncode == 0 and proc.stderr == ""
    assert "--vm" in proc.stdout and "/opt/labgen/venv" in proc.stdout and "LABGEN_VENV" in proc.stdout
    assert "/usr/bin/python3" in proc.stdout and "/usr/local/bin/labgen" in proc.stdout


def test_setup_bad_option_is_one_line_exit_2():
    proc = setup("--vmm")
    assert proc.returncode == 2 and proc.stdout == ""
    assert "unknown option --vmm" in one_line(proc)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root to switch to an unprivileged user (setpriv)")
def test_setup_as_a_normal_user_says_run_it_as_root():
    proc = setup(user="65534")
    assert proc.returncode == 2 and "run it as root" in one_line(proc)


@pytest.mark.skipif(os.geteuid() != 0, reason="setup checks root first")
def test_setup_refuses_a_bad_venv_place_before_installing_anything(tmp_path):
    proc = setup(env={"LABGEN_VENV": "relative/venv"})
    assert proc.returncode == 2 and "must be an absolute path" in one_line(proc)
    not_a_venv = tmp_path / "data"
    not_a_venv.mkdir()
    (not_a_venv / "keep.txt").write_text("mine")
    proc = setup(env={"LABGEN_VENV": str(not_a_venv)})
    assert proc.returncode == 2 and "is not a venv" in one_line(proc)
    assert proc.stdout == ""           # nothing was installed (no apt, no pip output)
    assert [p.name for p in not_a_venv.iterdir()] == ["keep.txt"]


def test_setup_uses_debian_python_explicitly():
    # The one interpreter the venv is made with, whatever python3 is first on PATH.
    text = SETUP.read_text()
    made = re.findall(r'^\s*"\$py" -m venv .*$', text, re.M)
    assert made and re.search(r"^py=/usr/bin/python3$", text, re.M)
    assert not re.search(r"^\s*python3 -m pip", text, re.M)


def doctor(*args: str, path: str) -> subprocess.CompletedProcess:
    return labgen("doctor", *args, env={**ENV, "PATH": path}, timeout=120)


def problem_lines(out: str, provider: str) -> list[str]:
    return [ln for ln in out.splitlines() if ln.startswith(f"problem {provider}:")]


def apt_packages(line: str) -> list[str]:
    m = re.search(r"install them with: (?:sudo )?apt-get install -y (.+)$", line)
    assert m, line
    return m[1].split()


def assert_netns_hint(out: str) -> None:
    lines = problem_lines(out, "netns")
    missing = [ln for ln in lines if "missing on this host" in ln]
    assert len(missing) == 1, out
    line = missing[0]
    for cmd, pkg in (("ovs-vsctl", "openvswitch-switch"), ("ip", "iproute2"), ("tcpdump", "tcpdump"),
                     ("ethtool", "ethtool"), ("ping", "iputils-ping"), ("nsenter", "util-linux")):
        assert f"{cmd} (package {pkg})" in line, line
    # One command for all of them, each package once.
    assert apt_packages(line) == NETNS_PACKAGES, line


def test_doctor_names_every_missing_package_with_one_apt_command(tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    proc = doctor(path=str(empty))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert_netns_hint(proc.stdout)
    libvirt = [ln for ln in problem_lines(proc.stdout, "libvirt") if "missing on this host" in ln]
    assert len(libvirt) == 1, proc.stdout
    line = libvirt[0]
    for item in ("vagrant (package vagrant)", "virsh (package libvirt-clients)",
                 "qemu-img (package qemu-utils)",
                 "vagrant plugin vagrant-libvirt (package vagrant-libvirt)"):
        assert item in line, line
    # Programs libvirtd runs itself are looked for where it looks (sbin), not on the user's PATH:
    # named only when really absent from this host.
    for cmd, pkg, where in (("dnsmasq", "dnsmasq-base", "/usr/sbin/dnsmasq"),
                            ("libvirtd", "libvirt-daemon-system", "/usr/sbin/libvirtd"),
                            ("qemu-system-x86_64", "qemu-system-x86", "/usr/bin/qemu-system-x86_64")):
        assert (f"{cmd} (package {pkg})" in line) == (not Path(where).exists()), line
    pkgs = apt_packages(line)
    assert pkgs[0] == "vagrant" and "vagrant-libvirt" in pkgs and len(pkgs) == len(set(pkgs))
    # Both providers lack packages: one more line with the command for everything.
    fix = [ln for ln in proc.stdout.splitlines() if ln.startswith("fix all providers:")]
    assert len(fix) == 1 and fix[0].endswith(" ".join(NETNS_PACKAGES + pkgs)), proc.stdout


def test_doctor_for_one_provider_and_a_complete_host(tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    proc = doctor("--provider", "netns", path=str(empty))
    assert proc.returncode == 1 and "libvirt" not in proc.stdout and "fix all" not in proc.stdout
    assert_netns_hint(proc.stdout)
    if os.geteuid() == 0 and all(shutil.which(t) for t in ("ovs-vsctl", "tcpdump", "ethtool", "nsenter")):
        proc = doctor("--provider", "netns", path=os.environ["PATH"])
        assert proc.returncode == 0 and proc.stdout.strip() == "ok netns: ready", proc.stdout


def test_a_wheel_in_a_venv_of_debians_python_gives_the_same_hints(tmp_path):
    """`pip install labgen-*.whl` into any venv (dependencies from PyPI, as a user gets them):
    the package map ships in Python, so doctor names the packages without this checkout."""
    py = Path("/usr/bin/python3")
    if not py.exists() or subprocess.run([str(py), "-c", "import ensurepip"]).returncode != 0:
        pytest.skip("Debian's python3 with venv support (python3-venv) is not installed")
    venv = tmp_path / "venv"
    subprocess.run([str(py), "-m", "venv", str(venv)], check=True, timeout=120)
    wheels = tmp_path / "wheels"
    build = subprocess.run([str(venv / "bin/pip"), "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    wheel = next(wheels.glob("labgen-*.whl"))
    inst = subprocess.run([str(venv / "bin/pip"), "install", "-q", str(wheel)], capture_output=True,
                          text=True, timeout=600)
    assert inst.returncode == 0, inst.stderr[-3000:]
    empty = tmp_path / "bin"
    empty.mkdir()
    work = tmp_path / "work"          # away from the checkout: nothing of it can be found
    work.mkdir()
    proc = subprocess.run([str(venv / "bin/labgen"), "doctor", "--provider", "netns"], cwd=work,
                          capture_output=True, text=True, timeout=120,
                          env={"PATH": str(empty), "COLUMNS": "200", "TERM": "dumb", "HOME": str(tmp_path)})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert_netns_hint(proc.stdout)
    where = subprocess.run([str(venv / "bin/python"), "-c", "import labgen.system.hostfacts as h; print(h.__file__)"],
                           cwd=work, capture_output=True, text=True)
    assert where.stdout.startswith(str(venv)), where.stdout


def test_ci_runs_the_readme_commands_as_written():
    """The README's Quick start commands are what the tests and CI run, word for word."""
    quick = README.read_text().split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = [ln.strip() for ln in quick.splitlines() if ln.startswith("    scripts/")]
    assert commands[0] == "scripts/setup && labgen create gre --provider netns --destroy"
    assert commands[2] == "scripts/setup --vm --dev && scripts/lint && scripts/test"
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^" + re.escape(commands[2]) + r"$", ci, re.M), ci
    assert "python3 -m pip" not in ci and "pytest" not in ci.split(commands[2])[1]
