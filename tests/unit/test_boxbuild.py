"""labgen.boxbuild, part by part (recipe, version, apt, guest, disk, box file, register,
cache, log, build). Processes are faked only where they are a boundary (Vagrant, chroot);
everything else runs for real. The real box, built or reused: tests/e2e/test_vm_box_build.py."""
from __future__ import annotations

import gzip
import json
import lzma
import os
import shutil
import stat
import struct
import subprocess
import tarfile
import tomllib
import uuid
from dataclasses import replace
from pathlib import Path

import pytest
from support import ROOT
from support.fake_vagrant import BOX_ADD, fake_vagrant

from labgen import providers
from labgen.boxbuild import (
    AptSource,
    BoxBuildError,
    apt,
    bootorder,
    box_catalog,
    box_version,
    boxfile,
    build,
    build_box,
    cache,
    check_preconditions,
    decide_action,
    disk,
    get_recipe,
    guest,
    kernelimage,
    parse_deb822_sources,
    parse_one_line_sources,
    pick_debian_mirror,
    recipe,
    register,
    resolve_mirror,
    rootfs_key,
    version,
)
from labgen.boxbuild.log import BuildLog
from labgen.lab import boxes
from labgen.lab.tunnels import KINDS
from labgen.vagrant import command as vagrant

BOX_FILE = ROOT / "boxes" / "labgen-debian12.toml"
# Vagrant's insecure public key (keys/vagrant.pub, as Vagrant ships it): the key the box's
# vagrant user accepts, and so part of the box version.
VAGRANT_PUB = (
    "ssh-rsa AAAAB3NzaC1yc2EAAAABIwAAAQEA6NF8iallvQVp22WDkTkyrtvp9eWW6A8YVr+kz4TjGYe7gHzIw+niNl"
    "tGEFHzD8+v1I2YJ6oXevct1YeS0o9HZyN1Q9qgCgzUFtdOKLv6IedplqoPkcmF0aYet2PkEDo3MlTBckFXPITAMzF8"
    "dJSIFo9D8HfdOV0IAdx4O7PtixWKn5y2hMNG0zQPyUecp4pzC6kivAIhyfHilFR61RGL+GPXQ2MWZWFYbAGjyiYJnA"
    "mCP3NOTd0jMZEnDkbUvxhMmBYSdETk1rRgm+R4LOzFUGaHqHDLKLX+FIPKcF96hrucXzcWyLbIbEgE98OHlnVYCzRd"
    "K8jlqm8tehUc9c9WhQ== vagrant insecure public key\n"
)

SOURCES_LIST = """\
# deb cdrom:[Debian GNU/Linux 12.5.0 _Bookworm_]/ bookworm main
deb-src http://src.example.org/debian bookworm main
deb [arch=amd64 signed-by=/usr/share/keyrings/x.gpg] https://pkgs.example.com/apt sdk-bookworm main
deb http://sec.example.net/debian-security bookworm-security main
deb [trusted=yes] http://mirror.example.net/debian/ bookworm main contrib  # the archive
deb http://mirror.example.net/debian bookworm-updates main
"""

DEB822 = """\
Types: deb
URIs: https://third-party.example.com/node_20.x
Suites: nodistro
Components: main

Types: deb deb-src
# a comment inside a stanza
URIs: http://deb.example.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 mQINBF...
 -----END PGP PUBLIC KEY BLOCK-----

Types: deb
URIs: http://deb.example.org/debian-security
Suites: bookworm-security
Components: main
"""


# ---- mirror from the host's apt configuration

def test_one_line_sources_skip_comments_and_deb_src():
    sources = parse_one_line_sources(SOURCES_LIST)
    assert [s.uri for s in sources] == [
        "https://pkgs.example.com/apt",
        "http://sec.example.net/debian-security",
        "http://mirror.example.net/debian/",
        "http://mirror.example.net/debian",
    ]
    assert sources[2].suites == ("bookworm",)
    assert sources[2].components == ("main", "contrib")


def test_one_line_mirror_is_the_main_archive_not_third_party_or_security():
    assert pick_debian_mirror(parse_one_line_sources(SOURCES_LIST)) == \
        "http://mirror.example.net/debian"


def test_deb822_sources_with_multiline_field_and_comments():
    sources = parse_deb822_sources(DEB822)
    assert sources[1] == AptSource("http://deb.example.org/debian",
                                   ("bookworm", "bookworm-updates"), ("main",))
    assert pick_debian_mirror(sources) == "http://deb.example.org/debian"


def test_deb822_disabled_and_src_only_stanzas_are_skipped():
    text = ("Types: deb\nURIs: http://a.example/debian\nSuites: bookworm\nEnabled: no\n\n"
            "Types: deb-src\nURIs: http://b.example/debian\nSuites: bookworm\n\n"
            "Types: deb\nURIs: http://c.example/debian\nSuites: trixie\n")
    assert pick_debian_mirror(parse_deb822_sources(text)) == "http://c.example/debian"


def test_mirror_from_etc_apt_tree_list_before_sources_d(tmp_path, monkeypatch):
    monkeypatch.delenv(apt.MIRROR_ENV, raising=False)
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d/debian.sources").write_text(DEB822)
    (tmp_path / "sources.list.d/old.list.disabled").write_text(
        "deb http://x.example/debian sid main\n")
    assert resolve_mirror(etc_apt=tmp_path) == "http://deb.example.org/debian"
    (tmp_path / "sources.list").write_text("deb http://first.example/debian bookworm main\n")
    assert resolve_mirror(etc_apt=tmp_path) == "http://first.example/debian"


def test_mirror_override_by_argument_and_env(tmp_path, monkeypatch):
    monkeypatch.setenv(apt.MIRROR_ENV, "http://env.example/debian/")
    assert resolve_mirror(etc_apt=tmp_path) == "http://env.example/debian"
    assert resolve_mirror("http://arg.example/debian", etc_apt=tmp_path) == \
        "http://arg.example/debian"


def test_no_mirror_is_one_line_error_naming_the_env_var(tmp_path, monkeypatch):
    monkeypatch.delenv(apt.MIRROR_ENV, raising=False)
    (tmp_path / "sources.list").write_text("deb http://ubuntu.example.com/ubuntu jammy main\n")
    with pytest.raises(BoxBuildError) as e:
        resolve_mirror(etc_apt=tmp_path)
    assert apt.MIRROR_ENV in str(e.value) and "\n" not in str(e.value)


# ---- recipe: read from the box's file in boxes/

def test_recipe_is_the_box_files_recipe_table():
    data = tomllib.loads(BOX_FILE.read_text())
    r = get_recipe("debian12")
    assert r.packages == tuple(data["recipe"]["packages"])
    assert "openvswitch-switch" in r.packages and "linux-image-amd64" in r.packages
    assert (r.box_name, r.suite, r.base_version, r.disk_gib, r.hostname) == (
        data["name"], data["recipe"]["suite"], data["recipe"]["base_version"],
        data["recipe"]["disk_gib"], data["recipe"]["hostname"])
    # The box catalog reads the same file: the box that names this recipe.
    assert boxes.get(r.box_name, providers=providers.NAMES).build == "debian12"


def test_every_shipped_recipe_belongs_to_a_box_that_names_it():
    found = recipe.recipes()
    assert "debian12" in found
    for name, r in found.items():
        assert boxes.get(r.box_name, providers=providers.NAMES).build == name


def write_box(directory: Path, stem: str, text: str) -> None:
    (directory / f"{stem}.toml").write_text(
        'name = "x/y"\ndescription = "d"\nfamily = "debian"\nproviders = ["libvirt"]\n'
        'install = "true"\nstart = "true"\n' + text)


def test_recipe_from_a_box_file(tmp_path):
    write_box(tmp_path, "plain", 'url = "file:///x.box"\n')           # no recipe: ignored
    write_box(tmp_path, "mine", 'build = "mine"\n[recipe]\nsuite = "trixie"\n'
              'base_version = "2.0.0"\ndisk_gib = 4\nhostname = "h"\npackages = ["b", "a"]\n')
    assert recipe.recipes(tmp_path) == {"mine": recipe.BoxRecipe(
        box_name="x/y", suite="trixie", base_version="2.0.0", packages=("b", "a"),
        disk_gib=4, hostname="h")}


@pytest.mark.parametrize("text", [
    '[recipe]\nsuite = "trixie"\n',                                           # no build name
    'build = "b"\n[recipe]\nsuite = "trixie"\nbase_version = "1"\ndisk_gib = 4\n'
    'hostname = "h"\n',                                                        # no packages
    'build = "b"\n[recipe]\nsuite = "trixie"\nbase_version = "1"\ndisk_gib = "4"\n'
    'hostname = "h"\npackages = ["a"]\n',                                     # size as text
])
def test_bad_recipe_is_one_line_naming_the_file_and_the_fields(tmp_path, text):
    write_box(tmp_path, "bad", text)
    with pytest.raises(BoxBuildError) as exc:
        recipe.recipes(tmp_path)
    msg = str(exc.value)
    assert str(tmp_path / "bad.toml") in msg and "packages" in msg and "\n" not in msg


def test_unknown_box_lists_the_known_ones():
    with pytest.raises(BoxBuildError, match=r"unknown box 'centos9'.*debian12"):
        get_recipe("centos9")


# ---- version: the names builds are cached and added to Vagrant under

def test_version_and_rootfs_key_of_the_shipped_recipe_are_unchanged():
    # The box in the cache and in Vagrant on every host carries these: a different value is
    # a rebuild everywhere. Update them only with a deliberate change to the recipe.
    r = get_recipe("debian12")
    assert box_version(r, VAGRANT_PUB) == "1.5.0.435433"
    assert rootfs_key(r) == "cbd91b6910c7"


@pytest.mark.skipif(not shutil.which("vagrant"), reason="vagrant is not installed")
def test_the_installed_vagrant_ships_that_key():
    assert guest.find_vagrant_public_key() == VAGRANT_PUB


def test_version_is_stable_vagrant_compatible_and_tracks_the_recipe():
    r = get_recipe("debian12")
    v = box_version(r, "key")
    assert v == box_version(r, "key")
    assert v.startswith(r.base_version + ".") and all(p.isdigit() for p in v.split("."))
    assert box_version(r, "other key") != v
    reordered = replace(r, packages=r.packages[::-1])
    assert box_version(reordered, "key") != v            # the package order is in the box
    assert rootfs_key(reordered) == rootfs_key(r)        # debootstrap gets the same set
    assert rootfs_key(replace(r, suite="trixie")) != rootfs_key(r)
    assert rootfs_key(replace(r, hostname="other")) == rootfs_key(r)


def test_a_packaged_coldplug_that_changed_fails_the_build(debootstrapped):
    unit = debootstrapped / "lib/systemd/system/systemd-udev-trigger.service"
    unit.write_text("[Service]\nExecStart=-udevadm trigger --action=add\n")
    with pytest.raises(BoxBuildError, match=r"^systemd-udev-trigger.service lacks 'ExecStart=-udevadm trigger "
                       r"--type=all .*': look at COLDPLUG_\* again$"):
        bootorder.configure_units(debootstrapped)


def test_version_tracks_the_guest_files(monkeypatch):
    r = get_recipe("debian12")
    v = box_version(r, "key")
    monkeypatch.setattr(guest, "SUDOERS", guest.SUDOERS + "# changed\n")
    assert box_version(r, "key") != v


# ---- preconditions and the reuse decision

def test_unknown_box_fails_before_anything_else(monkeypatch):
    monkeypatch.setattr(build, "check_preconditions",
                        lambda: pytest.fail("preconditions checked for an unknown box"))
    with pytest.raises(BoxBuildError, match="known boxes are debian12"):
        build_box("nope", progress=lambda _: None)


def test_not_root_is_refused(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(BoxBuildError, match="box build needs root: run it with sudo"):
        check_preconditions()


@pytest.mark.parametrize("tool, package", [
    ("debootstrap", "debootstrap"), ("qemu-img", "qemu-utils"), ("mkfs.ext4", "e2fsprogs"),
    ("losetup", "mount"), ("grub-mkimage", "grub-pc-bin"), ("vagrant", "vagrant"),
])
def test_missing_tool_names_the_package(monkeypatch, tool, package):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(shutil, "which", lambda cmd, **kw: None if cmd == tool else f"/usr/bin/{cmd}")
    with pytest.raises(BoxBuildError) as e:
        check_preconditions()
    assert f"apt-get install {package}" in str(e.value) and tool in str(e.value)


def test_missing_tool_stops_build_box_before_creating_the_cache(monkeypatch, tmp_path):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(shutil, "which", lambda cmd, **kw: None if cmd == "debootstrap" else "/x")
    cache_dir = tmp_path / "cache"
    with pytest.raises(BoxBuildError, match="debootstrap"):
        build_box(cache_dir=cache_dir, progress=lambda _: None)
    assert not cache_dir.exists()


@pytest.mark.parametrize("box_file, registered, force, action", [
    (True, True, False, "reuse"),
    (True, False, False, "add"),
    (False, True, False, "build"),
    (False, False, False, "build"),
    (True, True, True, "build"),
])
def test_decide_action(box_file, registered, force, action):
    assert decide_action(box_file, registered, force) == action


# ---- build_box: which steps run (host checks, Vagrant and the key lookup faked)

@pytest.fixture
def fake_host(monkeypatch):
    """build_box with the host checks, the key lookup and Vagrant's box list faked; returns
    the steps it would run and the boxes Vagrant would list."""
    listed: set[tuple[str, str, str]] = set()
    monkeypatch.setattr(build, "check_preconditions", lambda: None)
    monkeypatch.setattr(guest, "find_vagrant_public_key", lambda: VAGRANT_PUB)
    monkeypatch.setattr(vagrant, "box_list", lambda: listed)
    monkeypatch.setattr(apt, "host_apt_sources", lambda *a: [])
    monkeypatch.delenv(apt.MIRROR_ENV, raising=False)
    steps: list[str] = []
    monkeypatch.setattr(BuildLog, "step", lambda self, name, *a, **k: steps.append(name))
    return steps, listed


def test_build_box_reuses_without_building(fake_host, tmp_path):
    steps, listed = fake_host
    listed.add(("labgen/debian12", "libvirt", "1.5.0.435433"))
    box = tmp_path / "labgen-debian12-1.5.0.435433.box"
    box.write_bytes(b"box")
    lines: list[str] = []
    built = build_box(cache_dir=tmp_path, progress=lines.append)
    assert built == build.BuiltBox("labgen/debian12", "1.5.0.435433", box, reused=True)
    assert steps == [] and lines == [f"reused labgen/debian12 1.5.0.435433 (libvirt): {box}"]


def test_cached_box_missing_from_vagrant_is_only_added(fake_host, tmp_path):
    steps, _listed = fake_host
    (tmp_path / "labgen-debian12-1.5.0.435433.box").write_bytes(b"box")
    built = build_box(cache_dir=tmp_path, progress=lambda _: None)
    assert steps == ["box add"] and built.reused


def test_cached_rootfs_skips_debootstrap_even_without_a_mirror(fake_host, tmp_path):
    steps, _listed = fake_host
    (tmp_path / "debian12-rootfs-cbd91b6910c7.tar").write_bytes(b"")
    built = build_box(cache_dir=tmp_path, progress=lambda _: None)
    assert steps == ["image", "package", "box add"] and not built.reused


def test_no_mirror_and_no_cached_rootfs_fails_before_creating_the_cache(fake_host, tmp_path):
    steps, _listed = fake_host
    cache_dir = tmp_path / "cache"
    with pytest.raises(BoxBuildError, match=apt.MIRROR_ENV):
        build_box(cache_dir=cache_dir, progress=lambda _: None)
    assert steps == [] and not cache_dir.exists()


def test_full_build_runs_every_step_and_removes_older_boxes(fake_host, tmp_path, monkeypatch):
    steps, _listed = fake_host
    monkeypatch.setenv(apt.MIRROR_ENV, "http://deb.example/debian")
    (tmp_path / "labgen-debian12-1.0.0.1.box").write_bytes(b"old")
    said: list[str] = []
    built = build_box(cache_dir=tmp_path, progress=said.append)
    assert steps == ["debootstrap", "image", "package", "box add"] and not built.reused
    assert not (tmp_path / "labgen-debian12-1.0.0.1.box").exists()
    assert said == ["removed older cached labgen-debian12-1.0.0.1.box"]
    assert "build labgen/debian12 1.5.0.435433 action=build" in \
        (tmp_path / "build-debian12.log").read_text()


# ---- guest: the files the root fs gets

@pytest.fixture
def debootstrapped(tmp_path) -> Path:
    """The parts of a debootstrap tree configure() reads or removes."""
    root = tmp_path / "root"
    for rel, text in [("boot/vmlinuz-6.1.0-9-amd64", ""), ("boot/initrd.img-6.1.0-9-amd64", ""),
                      ("etc/ssh/ssh_host_rsa_key", "secret"), ("etc/openvswitch/conf.db", "{}"),
                      ("var/cache/apt/archives/x.deb", ""), ("var/lib/apt/lists/a_b", ""),
                      ("etc/resolv.conf", "nameserver 10.0.0.1\n"),
                      ("var/lib/dbus/machine-id", "abc\n"),
                      ("etc/init.d/openvswitch-switch", "#!/bin/sh\n"),
                      ("etc/rc2.d/S01openvswitch-switch", "#!/bin/sh\n"),
                      ("etc/pam.d/sshd", SSHD_PAM), *PACKAGED_UNITS.items()]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    for rel, target in [("etc/systemd/system/sshd.service", "/lib/systemd/system/ssh.service"),
                        ("etc/systemd/system/multi-user.target.wants/ssh.service",
                         "/lib/systemd/system/ssh.service"),
                        ("etc/systemd/system/multi-user.target.wants/openvswitch-switch.service",
                         "/lib/systemd/system/openvswitch-switch.service"),
                        ("etc/systemd/system/openvswitch-switch.service.requires/"
                         "ovs-record-hostname.service",
                         "/lib/systemd/system/ovs-record-hostname.service")]:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).symlink_to(target)
    return root


# Debian 12's /etc/pam.d/sshd (openssh-server 9.2), comments left out.
SSHD_PAM = """\
@include common-auth
account    required     pam_nologin.so
@include common-account
session    required     pam_loginuid.so
@include common-session
session    optional     pam_motd.so  motd=/run/motd.dynamic
session    optional     pam_motd.so noupdate
session    optional     pam_mail.so standard noenv # [1]
session    required     pam_env.so user_readenv=1 envfile=/etc/default/locale
@include common-password
"""


def test_sshd_logins_lose_only_the_message_of_the_day():
    assert guest.without_pam_modules(SSHD_PAM, ("pam_motd.so",)) == SSHD_PAM.replace(
        "session    optional     pam_motd.so  motd=/run/motd.dynamic\n", "").replace(
        "session    optional     pam_motd.so noupdate\n", "")
    with pytest.raises(BoxBuildError, match=r"/etc/pam.d/sshd calls no pam_motd.so: Debian's file changed"):
        guest.without_pam_modules("@include common-session\n", ("pam_motd.so",))


PUBLIC_ZONE = """<?xml version="1.0" encoding="utf-8"?>
<zone>
  <short>Public</short>
  <service name="ssh"/>
  <forward/>
</zone>
"""


def run_firewalld_rule_script(tmp_path: Path, cmdline: str) -> subprocess.CompletedProcess[str]:
    """The box's script, run by the host's sh with its paths moved under tmp_path (a Debian
    firewalld's stock zone and config there)."""
    root = tmp_path / "root"
    (root / "usr/lib/firewalld/zones").mkdir(parents=True, exist_ok=True)
    (root / "etc/firewalld").mkdir(parents=True, exist_ok=True)
    (root / "usr/lib/firewalld/zones/public.xml").write_text(PUBLIC_ZONE)
    (root / "etc/firewalld/firewalld.conf").write_text("# stock\nDefaultZone=public\nLogDenied=off\n")
    (root / "cmdline").write_text(cmdline + "\n")
    script = guest.FIREWALLD_RULE_SCRIPT.replace("/proc/cmdline", f"{root}/cmdline")
    for d in ("/etc/firewalld", "/usr/lib/firewalld", "/run/labgen"):
        script = script.replace(d, f"{root}{d}")
    return subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30)


def test_the_box_writes_the_labs_rule_into_a_pristine_default_zone_only(tmp_path):
    word = KINDS["vxlan"].boot_rule("10.10.10.0/24")
    zone, mark = tmp_path / "root/etc/firewalld/zones/public.xml", tmp_path / "root/run/labgen/firewalld-rule"
    # no word on the command line: nothing
    assert run_firewalld_rule_script(tmp_path, "root=UUID=u ro quiet").returncode == 0
    assert not zone.exists() and not mark.exists()
    # the word: the stock zone plus the rule, and the mark
    proc = run_firewalld_rule_script(tmp_path, f"root=UUID=u ro labgen.firewalld-rule={word} quiet")
    assert proc.returncode == 0, proc.stderr
    rule = KINDS["vxlan"].firewalld_rule_xml("10.10.10.0/24")
    assert zone.read_text() == PUBLIC_ZONE.replace("</zone>", f"  {rule}\n</zone>")
    assert mark.read_text() == word + "\n"
    # a zone saved before (by firewalld or its user) is left alone, and no mark is left
    zone.write_text("<zone>saved</zone>\n")
    mark.unlink()
    assert run_firewalld_rule_script(tmp_path, f"labgen.firewalld-rule={word}").returncode == 0
    assert zone.read_text() == "<zone>saved</zone>\n" and not mark.exists()


def test_the_firewalld_rule_unit_runs_before_firewalld_only_with_the_word():
    unit = guest.FIREWALLD_RULE_UNIT
    for line in ("Before=firewalld.service", "ConditionKernelCommandLine=labgen.firewalld-rule",
                 "ExecStart=/usr/local/lib/labgen/firewalld-rule", "WantedBy=firewalld.service",
                 "DefaultDependencies=no"):
        assert line in unit.splitlines()


# The lines of Debian 12's units that configure() edits (openssh-server 9.2, openvswitch 3.1).
PACKAGED_UNITS = {
    "lib/systemd/system/ssh.service":
        "[Unit]\nDescription=OpenBSD Secure Shell server\nAfter=network.target auditd.service\n"
        "[Service]\nExecStart=/usr/sbin/sshd -D $SSHD_OPTS\n"
        "[Install]\nWantedBy=multi-user.target\nAlias=sshd.service\n",
    "lib/systemd/system/systemd-networkd.service":
        "[Unit]\nAfter=systemd-networkd.socket systemd-udevd.service network-pre.target "
        "systemd-sysusers.service systemd-sysctl.service\n"
        "Before=network.target multi-user.target shutdown.target initrd-switch-root.target\n",
    "lib/systemd/system/systemd-resolved.service":
        "[Unit]\nDefaultDependencies=no\nBefore=sysinit.target network.target nss-lookup.target "
        "shutdown.target initrd-switch-root.target\n",
    "lib/systemd/system/ovsdb-server.service":
        "[Unit]\nAfter=systemd-journald.socket network-pre.target dpdk.service local-fs.target\n"
        "Before=network.target networking.service\nPartOf=openvswitch-switch.service\n",
    "lib/systemd/system/ovs-vswitchd.service":
        "[Unit]\nAfter=ovsdb-server.service network-pre.target systemd-udev-settle.service\n"
        "Before=network.target networking.service\nRequires=ovsdb-server.service\n",
    "lib/systemd/system/openvswitch-switch.service":
        "[Unit]\nBefore=network.target\nAfter=network-pre.target ovsdb-server.service "
        "ovs-vswitchd.service\nPartOf=network.target\n"
        "[Install]\nWantedBy=multi-user.target\nAlias=ovs.service\nAlso=ovs-record-hostname.service\n",
    "lib/systemd/system/systemd-user-sessions.service":
        "[Unit]\nDescription=Permit User Sessions\n"
        "After=remote-fs.target nss-user-lookup.target network.target home.mount\n",
    "lib/systemd/system/systemd-udev-trigger.service":      # systemd 252
        "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=-udevadm trigger --type=all "
        "--action=add --prioritized-subsystem=module,block,tpmrm,net,tty,input\n",
}


def test_guest_configuration(debootstrapped):
    root = debootstrapped
    ran: list[tuple[list[str], str | None]] = []

    def chroot_run(cmd, *, stdin=None, env=None):        # chroot: the process boundary
        ran.append((cmd, stdin.read() if stdin else None))

    guest.configure(root, get_recipe("debian12"), VAGRANT_PUB, "UUID-1", "http://m/debian",
                    chroot_run)
    assert [c[0] for c in ran] == [
        ["chroot", str(root), *cmd] if cmd[0] not in ("mount", "umount") else cmd for cmd in [
            ["useradd", "--create-home", "--shell", "/bin/bash", "--groups", "sudo", "vagrant"],
            ["chpasswd"], ["chown", "-R", "vagrant:vagrant", "/home/vagrant/.ssh"],
            ["sh", "-c", guest.OVS_DATABASE],
            ["update-alternatives", "--remove-all", "ip6tables"],
            ["update-alternatives", "--remove-all", "ebtables"],
            ["mount", "-t", "proc", "proc", str(root / "proc")],
            ["update-initramfs", "-u", "-k", "6.1.0-9-amd64"],
            ["umount", str(root / "proc")]]]
    assert ran[1][1] == "vagrant:vagrant\n"

    def mode(rel: str) -> int:
        return stat.S_IMODE((root / rel).stat().st_mode)

    assert (root / "home/vagrant/.ssh/authorized_keys").read_text() == VAGRANT_PUB
    assert mode("home/vagrant/.ssh/authorized_keys") == 0o600 and mode("home/vagrant/.ssh") == 0o700
    assert mode("etc/sudoers.d/vagrant") == 0o440
    assert (root / "etc/hostname").read_text() == "labgen\n"
    assert (root / "etc/fstab").read_text() == "UUID=UUID-1 / ext4 errors=remount-ro 0 0\n"
    sshd_pam = (root / "etc/pam.d/sshd").read_text()
    assert "pam_motd" not in sshd_pam and "@include common-session\n" in sshd_pam
    assert (root / "etc/apt/sources.list").read_text() == \
        "deb http://m/debian bookworm main\ndeb http://m/debian bookworm-updates main\n"
    assert (root / "etc/machine-id").read_text() == ""
    for gone in ("etc/ssh/ssh_host_rsa_key",
                 "var/cache/apt/archives/x.deb", "var/lib/apt/lists/a_b", "var/lib/dbus/machine-id"):
        assert not (root / gone).exists(), gone
    units = root / "etc/systemd/system"
    assert os.readlink(units / "multi-user.target.wants/firewalld.service") == \
        "/lib/systemd/system/firewalld.service"
    assert os.readlink(units / "ssh.service.wants/labgen-ssh-hostkeys.service") == \
        "/etc/systemd/system/labgen-ssh-hostkeys.service"
    assert os.readlink(units / "apt-daily.timer") == "/dev/null"
    # boot order: sshd and the management NIC wait for neither the network nor OVS
    ssh = (units / "ssh.service").read_text()
    assert "\nAfter=auditd.service\n" in ssh and "network.target" not in ssh.split("\n", 1)[1]
    # the management NIC: networkd's DHCP on eth0 only, not after firewalld
    assert "\nAfter=systemd-networkd.socket systemd-udevd.service systemd-sysusers.service " \
        "systemd-sysctl.service\n" in (units / "systemd-networkd.service").read_text()
    for link in ("multi-user.target.wants/systemd-networkd.service",
                 "dbus-org.freedesktop.network1.service"):
        assert os.readlink(units / link) == "/etc/systemd/system/systemd-networkd.service", link
    assert os.readlink(units / "sockets.target.wants/systemd-networkd.socket") == \
        "/lib/systemd/system/systemd-networkd.socket"
    network = (root / "etc/systemd/network/10-eth0.network").read_text()
    assert "\nName=eth0\n" in network and "\nDHCP=ipv4\n" in network
    assert "ManageForeignRoutes=no" in (root / "etc/systemd/networkd.conf.d/labgen.conf").read_text()
    assert os.readlink(root / "etc/resolv.conf") == "../run/systemd/resolve/stub-resolv.conf"
    assert "\nBefore=network.target nss-lookup.target shutdown.target initrd-switch-root.target\n" \
        in (units / "systemd-resolved.service").read_text()
    # what the lab does not wait for runs when the CPU is idle; no user managers
    assert "\nCPUWeight=idle\n" in (units / "background.slice").read_text()
    for name in ("firewalld.service", "systemd-resolved.service"):
        assert "\nSlice=background.slice\n" in (units / f"{name}.d/labgen-background.conf").read_text()
    assert not (units / "firewalld.service.d/labgen-nice.conf").exists()
    assert os.readlink(units / "user@.service") == "/dev/null"
    assert not (root / "var/lib/systemd/linger/vagrant").exists()
    # no SysV script: `systemctl enable` of OVS then only makes links
    assert not (root / "etc/init.d/openvswitch-switch").exists()
    assert not (root / "etc/rc2.d/S01openvswitch-switch").exists()
    for name in ("ovsdb-server.service", "ovs-vswitchd.service"):
        text = (units / name).read_text()
        assert "\nBefore=" not in text and "\nAfter=" in text, name
        assert "network-pre.target" not in text.split("\n", 1)[1], name   # not after firewalld
    ovs = (units / "openvswitch-switch.service").read_text()
    assert "\nBefore=" not in ovs and "\nAlso=" not in ovs and "\nAlias=ovs.service\n" in ovs
    assert "PartOf=network.target" in ovs
    assert "network-pre.target" not in ovs.split("\n", 1)[1]     # nor the unit the node script starts
    # the daemons themselves, not ovs-ctl; stop and reload stay the package's
    for name, pidfile in (("ovsdb-server.service", "ovsdb-server.pid"),
                          ("ovs-vswitchd.service", "ovs-vswitchd.pid")):
        dropin = (units / f"{name}.d/labgen-daemon.conf").read_text()
        assert "\nExecStart=\nExecStart=/usr/sbin/" + name.split(".")[0] + " " in dropin
        assert f"\nPIDFile=/var/run/openvswitch/{pidfile}\n" in dropin
        assert f"--pidfile=/var/run/openvswitch/{pidfile} --detach" in dropin
        execs = [ln for ln in dropin.splitlines() if ln.startswith("Exec")]
        assert not [ln for ln in execs if "ovs-ctl" in ln or "mlockall" in ln or "ExecStop" in ln]
    for generator in bootorder.MASKED_GENERATORS:
        assert os.readlink(root / "etc/systemd/system-generators" / generator) == "/dev/null"
    assert not (root / "etc/systemd/system-generators/systemd-fstab-generator").exists()
    assert os.readlink(units / "systemd-sysusers.service") == "/dev/null"
    assert "\nAfter=firewalld.service\n" in (units / "systemd-resolved.service.d/labgen-after.conf").read_text()
    for link in ("sshd.service", "multi-user.target.wants/ssh.service"):
        assert os.readlink(units / link) == "/etc/systemd/system/ssh.service", link
    # OVS starts when the node script runs the recipe's `start` (systemctl enable --now)
    assert not (units / "multi-user.target.wants/openvswitch-switch.service").is_symlink()
    assert os.readlink(units / "ovs-record-hostname.service") == "/dev/null"
    assert not (units / "openvswitch-switch.service.requires/ovs-record-hostname.service") \
        .is_symlink()
    # logins wait for sshd, not for network.target (that is, for firewalld)
    assert "\nAfter=remote-fs.target nss-user-lookup.target home.mount\n" in \
        (units / "systemd-user-sessions.service").read_text()
    assert os.readlink(units / "modprobe@drm.service") == "/dev/null"
    assert os.readlink(units / "sys-kernel-tracing.mount") == "/dev/null"
    assert "Storage=volatile" in (root / "etc/systemd/journald.conf.d/labgen.conf").read_text()
    # udev's coldplug: what a lab VM uses, not every tty, VT console and ACPI object
    coldplug = [ln for ln in (units / "systemd-udev-trigger.service.d/labgen-coldplug.conf")
                .read_text().splitlines() if ln.startswith("ExecStart=")]
    assert coldplug[0] == "ExecStart=" and len(coldplug) == 5
    assert "--subsystem-match=net" in coldplug[2] and "--subsystem-match=block" in coldplug[2]
    assert "tty" not in coldplug[2] and "acpi" not in coldplug[2]
    assert coldplug[3].endswith("--subsystem-match=tty --sysname-match=ttyS0")
    assert coldplug[4].endswith("--subsystem-match=acpi --sysname-match=LNXPWRBN:00")
    assert "virtio_net" in (root / "etc/initramfs-tools/modules").read_text()
    assert "blacklist kvm_amd\n" in (root / "etc/modprobe.d/labgen.conf").read_text()
    assert "MODULES=list" in (root / "etc/initramfs-tools/conf.d/labgen.conf").read_text()
    assert "virtio_blk" in (root / "etc/initramfs-tools/modules").read_text()
    grub = (root / "boot/grub/grub.cfg").read_text()
    assert "set timeout=0\n" in grub
    assert "linux /boot/vmlinuz-6.1.0-9-amd64 root=UUID=UUID-1 ro console=ttyS0" in grub
    assert "initrd /boot/initrd.img-6.1.0-9-amd64" in grub


def test_guest_without_a_kernel_says_which_package(tmp_path):
    (tmp_path / "boot").mkdir()
    with pytest.raises(BoxBuildError, match="linux-image-amd64"):
        guest.kernel_files(tmp_path)


# ---- disk: MBR, GRUB sectors, mounts

def test_mbr_has_one_bootable_linux_partition_at_1mib():
    mbr = disk.mbr_partition_table(8 * 1024**3 // 512)
    assert len(mbr) == 512 and mbr[510:] == b"\x55\xaa"
    assert mbr[446] == 0x80 and mbr[450] == 0x83
    assert int.from_bytes(mbr[454:458], "little") == 2048
    assert int.from_bytes(mbr[458:462], "little") == 8 * 1024**3 // 512 - 2048
    assert mbr[:440] == bytes(440)  # boot code is written later from GRUB's boot.img


def test_grub_boot_sectors_keep_the_partition_table(tmp_path, monkeypatch):
    grub_dir = tmp_path / "grub"
    grub_dir.mkdir()
    (grub_dir / "boot.img").write_bytes(b"B" * 512)
    monkeypatch.setattr(disk, "GRUB_I386_DIR", grub_dir)
    raw = tmp_path / "disk.raw"
    raw.write_bytes(disk.mbr_partition_table(4096) + bytes(4096 * 512 - 512))
    table = raw.read_bytes()[440:512]
    disk.install_grub_boot_sectors(raw, b"C" * 1000)
    data = raw.read_bytes()
    assert data[:440] == b"B" * 440 and data[440:512] == table
    assert data[512:1512] == b"C" * 1000 and data[1512:2048] == bytes(536)


def test_grub_core_too_big_for_the_gap_is_refused(tmp_path):
    def grub_mkimage(cmd, **kw):                          # the process boundary
        Path(cmd[cmd.index("-o") + 1]).write_bytes(bytes(2047 * 512 + 1))

    with pytest.raises(BoxBuildError, match="core.img is 1048065 bytes.*drop GRUB modules"):
        disk.make_grub_core(grub_mkimage, "UUID-1", tmp_path)
    assert (tmp_path / "early.cfg").read_text() == \
        "search.fs_uuid UUID-1 root\nset prefix=($root)/boot/grub\n"


def test_mounts_below_reads_mountinfo_with_escaped_names(tmp_path):
    base = tmp_path.resolve()
    info = tmp_path / "mountinfo"
    info.write_text(
        f"22 1 0:21 / /proc rw - proc proc rw\n"
        f"90 22 7:0 / {base}/work rw - ext4 /dev/loop0 rw\n"
        f"91 90 0:5 / {base}/work/mnt\\040x/dev rw - devtmpfs udev rw\n"
        f"92 22 0:5 / {base}/workshop rw - tmpfs t rw\n")
    assert disk.mounts_below(tmp_path / "work", info) == [f"{base}/work", f"{base}/work/mnt x/dev"]


def test_workdir_is_removed_on_every_path(tmp_path):
    with pytest.raises(RuntimeError):
        with disk.workdir(tmp_path, lambda _: None) as work:
            (work / "file").write_text("x")
            raise RuntimeError
    assert list(tmp_path.iterdir()) == []


# ---- box file and registration

@pytest.mark.skipif(not shutil.which("qemu-img"), reason="qemu-img is not installed")
def test_package_makes_a_vagrant_libvirt_box(tmp_path):
    raw = tmp_path / "disk.raw"
    raw.write_bytes(bytes(1024 * 1024))
    box = tmp_path / "b.box"
    log = BuildLog(tmp_path / "log", lambda _: None)
    boxfile.package(log.run, lambda _: None, raw, box, 8)
    with tarfile.open(box) as tar:
        assert sorted(tar.getnames()) == ["Vagrantfile", "box.img", "metadata.json"]
        assert json.load(tar.extractfile("metadata.json")) == \
            {"provider": "libvirt", "format": "qcow2", "virtual_size": 8}
        assert tar.extractfile("Vagrantfile").read().decode() == boxfile.BOX_VAGRANTFILE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.box", "disk.raw", "log"]


def test_catalog_has_version_provider_file_url_and_checksum(tmp_path):
    cat = box_catalog("labgen/debian12", "1.0.0.7", tmp_path / "b.box", "ab" * 32)
    (provider,) = cat["versions"][0]["providers"]
    assert cat["name"] == "labgen/debian12" and cat["versions"][0]["version"] == "1.0.0.7"
    assert provider == {"name": "libvirt", "url": (tmp_path / "b.box").as_uri(),
                        "checksum_type": "sha256", "checksum": "ab" * 32}


def test_box_add_through_the_catalog_logs_vagrants_lines(monkeypatch, tmp_path):
    calls = fake_vagrant(monkeypatch, tmp_path, output=BOX_ADD)
    box = tmp_path / "labgen-debian12-1.0.0.7.box"
    box.write_bytes(b"box")
    log = BuildLog(tmp_path / "build.log", lambda _: None)
    register.box_add(log, "labgen/debian12", "1.0.0.7", box, replace=True)
    catalog_path = tmp_path / "labgen-debian12.json"
    assert calls.read_text() == \
        f"box add --provider libvirt --box-version 1.0.0.7 --force {catalog_path}\n"
    assert json.loads(catalog_path.read_text()) == box_catalog(
        "labgen/debian12", "1.0.0.7", box, register.sha256(box))
    text = (tmp_path / "build.log").read_text()
    assert text.startswith(f"$ vagrant box add --provider libvirt --box-version 1.0.0.7 --force "
                           f"{catalog_path}\n==> box: Loading metadata")
    assert "Progress: 58%" in text and "\r" not in text and "\x1b" not in text


def test_failed_box_add_is_one_step_line_with_vagrants_last_words(monkeypatch, tmp_path):
    fake_vagrant(monkeypatch, tmp_path, body='echo "box: Checksum mismatch" >&2; exit 1')
    box = tmp_path / "b.box"
    box.write_bytes(b"box")
    log = BuildLog(tmp_path / "build.log", lambda _: None)
    with pytest.raises(BoxBuildError) as exc:
        log.step("box add", register.box_add, log, "labgen/debian12", "1", box, replace=False)
    assert str(exc.value) == ("step 'box add' failed: vagrant exited with 1 (box: Checksum "
                              f"mismatch); full log: {tmp_path / 'build.log'}")


# ---- cache and log

def test_one_build_per_box_at_a_time(tmp_path):
    with cache.exclusive(tmp_path / ".debian12.lock"):
        with pytest.raises(BoxBuildError, match="another box build holds .*: wait for it"):
            with cache.exclusive(tmp_path / ".debian12.lock"):
                pass
    with cache.exclusive(tmp_path / ".debian12.lock"):
        pass


def test_cache_dir_from_argument_env_or_default(monkeypatch, tmp_path):
    monkeypatch.delenv(cache.CACHE_ENV, raising=False)
    assert cache.resolve_cache_dir() == Path("/var/cache/labgen/boxes")
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path))
    assert cache.resolve_cache_dir() == tmp_path
    assert cache.resolve_cache_dir(tmp_path / "x") == tmp_path / "x"


def test_log_step_times_a_step_and_fails_in_one_line_with_the_last_words(tmp_path):
    said: list[str] = []
    log = BuildLog(tmp_path / "build.log", said.append)
    log.step("hello", log.run, ["sh", "-c", "echo hi"])
    assert said[0] == "hello: started" and said[1].startswith("hello: done in ")
    with pytest.raises(BoxBuildError) as exc:
        log.step("bad", log.run, ["sh", "-c", "echo one; echo two >&2; exit 3"])
    assert str(exc.value) == f"step 'bad' failed: sh exited with 3 (two); full log: {log.path}"
    text = log.path.read_text()
    assert "===== " in text and "$ sh -c echo hi\nhi\n" in text and "one\ntwo\n" in text


def test_unit_edit_drops_only_the_named_ordering_and_notices_a_changed_unit():
    text = "[Unit]\nAfter=a.target b.service\nBefore=c.target\n# After=b.service\n"
    edited = bootorder.edited_unit("x.service", text, {"After": ("b.service",), "Before": ("c.target",)})
    assert edited.splitlines()[1:] == ["[Unit]", "After=a.target", "# After=b.service"]
    assert edited.startswith("# labgen box: /lib/systemd/system/x.service without After=b.service")
    with pytest.raises(BoxBuildError, match=r"x.service in the root fs has no Before=d.target"):
        bootorder.edited_unit("x.service", text, {"Before": ("d.target",)})


def test_the_kernel_and_initramfs_are_kept_for_direct_kernel_boot(tmp_path):
    root, cache = tmp_path / "root", tmp_path / "cache"
    (root / "boot").mkdir(parents=True)
    cache.mkdir()
    (root / "boot/vmlinuz-6.1.0-9-amd64").write_bytes(b"kernel")
    (root / "boot/initrd.img-6.1.0-9-amd64").write_bytes(b"initrd")
    build.keep_boot_files(root, cache, "labgen/debian12", "1.3.0.1", "UUID-1")
    kernel = cache / "labgen-debian12-1.3.0.1.vmlinuz"
    initrd = cache / "labgen-debian12-1.3.0.1.initrd"
    assert kernel.read_bytes() == b"kernel" and initrd.read_bytes() == b"initrd"
    # the emulator's user (libvirt-qemu) reads them
    assert stat.S_IMODE(kernel.stat().st_mode) == 0o644 == stat.S_IMODE(initrd.stat().st_mode)
    assert json.loads((cache / "labgen-debian12.boot.json").read_text()) == {
        "box": "labgen/debian12", "version": "1.3.0.1", "kernel": str(kernel),
        "initrd": str(initrd), "cmdline": "root=UUID=UUID-1 ro " + guest.KERNEL_ARGS}
    assert not list(cache.glob("*.partial"))


def _elf_with_notes(notes: list[tuple[bytes, int]]) -> bytes:
    """A minimal ELF64 image with one PT_NOTE segment holding `notes` (name, type)."""
    blob = b""
    for name, kind in notes:
        desc = b"\0" * 8
        blob += struct.pack("<III", len(name), len(desc), kind) + name.ljust((len(name) + 3) & ~3, b"\0") + desc
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<Q", header, 0x20, 64)            # program headers right after
    struct.pack_into("<HH", header, 0x36, 56, 1)
    phdr = struct.pack("<IIQQQQQQ", 4, 0, 64 + 56, 0, 0, len(blob), len(blob), 4)
    return bytes(header) + phdr + blob


def _bzimage(payload: bytes, setup_sects: int = 3) -> bytes:
    """A bzImage as the boot protocol lays it out: setup sectors, then the protected-mode
    code, whose compressed kernel payload_offset / payload_length name."""
    setup = bytearray((setup_sects + 1) * 512)
    setup[0x1F1] = setup_sects
    setup[0x202:0x206] = b"HdrS"
    struct.pack_into("<II", setup, 0x248, 100, len(payload))
    return bytes(setup) + b"\x90" * 100 + payload + struct.pack("<I", 12345)   # + size trailer


def test_the_kernel_is_kept_uncompressed_when_it_has_a_pvh_entry(tmp_path):
    pvh = _elf_with_notes([(b"Xen\0", 6), (b"Xen\0", kernelimage.PVH_NOTE_TYPE)])
    for packed in (lzma.compress(pvh, format=lzma.FORMAT_XZ), gzip.compress(pvh)):
        assert kernelimage.pvh_kernel(_bzimage(packed)) == pvh
    # no PVH note, an unknown compression, not a bzImage: the bzImage boots as it is
    assert kernelimage.pvh_kernel(_bzimage(lzma.compress(_elf_with_notes([(b"Xen\0", 6)]),
                                                         format=lzma.FORMAT_XZ))) is None
    assert kernelimage.pvh_kernel(_bzimage(b"\x28\xb5\x2f\xfd" + bytes(50))) is None
    assert kernelimage.pvh_kernel(b"kernel") is None
    assert kernelimage.pvh_kernel(_bzimage(b"\xfd7zXZ\0broken")) is None

    root, cache = tmp_path / "root", tmp_path / "cache"
    (root / "boot").mkdir(parents=True)
    cache.mkdir()
    (root / "boot/vmlinuz-6.1.0-9-amd64").write_bytes(_bzimage(lzma.compress(pvh, format=lzma.FORMAT_XZ)))
    (root / "boot/initrd.img-6.1.0-9-amd64").write_bytes(b"initrd")
    (cache / "labgen-debian12-1.3.0.1.vmlinuz").write_bytes(b"an earlier build's bzImage")
    build.keep_boot_files(root, cache, "labgen/debian12", "1.3.0.1", "UUID-1")
    kernel = cache / "labgen-debian12-1.3.0.1.vmlinux"
    assert kernel.read_bytes() == pvh and stat.S_IMODE(kernel.stat().st_mode) == 0o644
    assert json.loads((cache / "labgen-debian12.boot.json").read_text())["kernel"] == str(kernel)
    assert not (cache / "labgen-debian12-1.3.0.1.vmlinuz").exists()


def test_every_build_of_a_box_version_has_one_root_file_system_uuid():
    # libvirt's pool keeps the first build's disk of a version; a later build's kernel command
    # line (direct kernel boot) must find its root
    one = version.filesystem_uuid("labgen/debian12", "1.3.0.1")
    assert one == version.filesystem_uuid("labgen/debian12", "1.3.0.1")
    assert one != version.filesystem_uuid("labgen/debian12", "1.3.0.2")
    assert str(uuid.UUID(one)) == one
