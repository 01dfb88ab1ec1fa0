"""labgen.boxbuild: fast unit tests, plus one `vm` test that builds or reuses the real box."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from labgen import boxbuild
from labgen.boxbuild import (
    AptSource,
    BoxBuildError,
    box_catalog,
    box_version,
    build_box,
    check_preconditions,
    decide_action,
    get_recipe,
    mbr_partition_table,
    parse_deb822_sources,
    parse_one_line_sources,
    parse_vagrant_box_list,
    pick_debian_mirror,
    resolve_mirror,
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
    monkeypatch.delenv(boxbuild.MIRROR_ENV, raising=False)
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d/debian.sources").write_text(DEB822)
    (tmp_path / "sources.list.d/old.list.disabled").write_text(
        "deb http://x.example/debian sid main\n")
    assert resolve_mirror(etc_apt=tmp_path) == "http://deb.example.org/debian"
    (tmp_path / "sources.list").write_text("deb http://first.example/debian bookworm main\n")
    assert resolve_mirror(etc_apt=tmp_path) == "http://first.example/debian"


def test_mirror_override_by_argument_and_env(tmp_path, monkeypatch):
    monkeypatch.setenv(boxbuild.MIRROR_ENV, "http://env.example/debian/")
    assert resolve_mirror(etc_apt=tmp_path) == "http://env.example/debian"
    assert resolve_mirror("http://arg.example/debian", etc_apt=tmp_path) == \
        "http://arg.example/debian"


def test_no_mirror_is_one_line_error_naming_the_env_var(tmp_path, monkeypatch):
    monkeypatch.delenv(boxbuild.MIRROR_ENV, raising=False)
    (tmp_path / "sources.list").write_text("deb http://ubuntu.example.com/ubuntu jammy main\n")
    with pytest.raises(BoxBuildError) as e:
        resolve_mirror(etc_apt=tmp_path)
    assert boxbuild.MIRROR_ENV in str(e.value) and "\n" not in str(e.value)


# ---- recipes and preconditions

def test_unknown_box_lists_the_known_ones():
    with pytest.raises(BoxBuildError, match=r"unknown box 'centos9'.*debian12"):
        get_recipe("centos9")


def test_unknown_box_fails_before_anything_else(monkeypatch):
    monkeypatch.setattr(boxbuild, "check_preconditions",
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
    monkeypatch.setattr(shutil, "which", lambda cmd: None if cmd == tool else f"/usr/bin/{cmd}")
    with pytest.raises(BoxBuildError) as e:
        check_preconditions()
    assert f"apt-get install {package}" in str(e.value) and tool in str(e.value)


def test_missing_tool_stops_build_box_before_creating_the_cache(monkeypatch, tmp_path):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(shutil, "which", lambda cmd: None if cmd == "debootstrap" else "/x")
    # check_preconditions' default was bound at import: route it through the patched which
    monkeypatch.setattr(boxbuild, "check_preconditions",
                        lambda: check_preconditions())
    cache = tmp_path / "cache"
    with pytest.raises(BoxBuildError, match="debootstrap"):
        build_box(cache_dir=cache, progress=lambda _: None)
    assert not cache.exists()


# ---- reuse decision, versions, Vagrant listing

@pytest.mark.parametrize("box_file, registered, force, action", [
    (True, True, False, "reuse"),
    (True, False, False, "add"),
    (False, True, False, "build"),
    (False, False, False, "build"),
    (True, True, True, "build"),
])
def test_decide_action(box_file, registered, force, action):
    assert decide_action(box_file, registered, force) == action


def test_build_box_reuses_without_building(monkeypatch, tmp_path):
    recipe = get_recipe("debian12")
    version = box_version(recipe, "ssh-rsa KEY\n")
    box = tmp_path / f"labgen-debian12-{version}.box"
    box.write_bytes(b"box")
    monkeypatch.setattr(boxbuild, "check_preconditions", lambda: None)
    monkeypatch.setattr(boxbuild, "find_vagrant_public_key", lambda: "ssh-rsa KEY\n")
    monkeypatch.setattr(boxbuild, "vagrant_has_box", lambda n, v, p: (n, v, p) ==
                        ("labgen/debian12", version, "libvirt"))
    monkeypatch.setattr(boxbuild._Builder, "step", lambda *a, **k: pytest.fail("built"))
    lines: list[str] = []
    built = build_box(cache_dir=tmp_path, progress=lines.append)
    assert built.reused and built.path == box and built.version == version
    assert built.name == "labgen/debian12"
    assert any("reused" in line for line in lines)


@pytest.fixture
def fake_host(monkeypatch, tmp_path):
    """build_box with the host checks and Vagrant faked; returns the steps it would run."""
    monkeypatch.setattr(boxbuild, "check_preconditions", lambda: None)
    monkeypatch.setattr(boxbuild, "find_vagrant_public_key", lambda: "ssh-rsa KEY\n")
    monkeypatch.setattr(boxbuild, "vagrant_has_box", lambda n, v, p: False)
    monkeypatch.setattr(boxbuild, "host_apt_sources", lambda *a: [])
    monkeypatch.delenv(boxbuild.MIRROR_ENV, raising=False)
    steps: list[str] = []
    monkeypatch.setattr(boxbuild._Builder, "step",
                        lambda self, name, *a, **k: steps.append(name))
    return steps


def test_cached_box_missing_from_vagrant_is_only_added(fake_host, tmp_path):
    version = box_version(get_recipe("debian12"), "ssh-rsa KEY\n")
    (tmp_path / f"labgen-debian12-{version}.box").write_bytes(b"box")
    built = build_box(cache_dir=tmp_path, progress=lambda _: None)
    assert fake_host == ["box add"] and built.reused


def test_cached_rootfs_skips_debootstrap_even_without_a_mirror(fake_host, tmp_path):
    recipe = get_recipe("debian12")
    (tmp_path / f"debian12-rootfs-{boxbuild.rootfs_key(recipe)}.tar").write_bytes(b"")
    built = build_box(cache_dir=tmp_path, progress=lambda _: None)
    assert fake_host == ["image", "package", "box add"] and not built.reused


def test_no_mirror_and_no_cached_rootfs_fails_before_creating_the_cache(fake_host, tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(BoxBuildError, match=boxbuild.MIRROR_ENV):
        build_box(cache_dir=cache, progress=lambda _: None)
    assert fake_host == [] and not cache.exists()


def test_version_is_stable_vagrant_compatible_and_tracks_the_recipe():
    recipe = get_recipe("debian12")
    v = box_version(recipe, "key")
    assert v == box_version(recipe, "key")
    assert v.startswith(recipe.base_version + ".") and all(p.isdigit() for p in v.split("."))
    assert box_version(recipe, "other key") != v


def test_parse_vagrant_box_list_machine_readable():
    out = (
        "1700000000,,ui,info,labgen/debian12 (libvirt; 1.0.0.5)\n"
        "1700000000,,box-name,labgen/debian12\n"
        "1700000000,,box-provider,libvirt\n"
        "1700000000,,box-version,1.0.0.5\n"
        "1700000000,,box-info,,\n"
        "1700000000,,box-name,generic/debian12\n"
        "1700000000,,box-provider,virtualbox\n"
        "1700000000,,box-version,4.3.12\n"
    )
    assert parse_vagrant_box_list(out) == {
        ("labgen/debian12", "libvirt", "1.0.0.5"),
        ("generic/debian12", "virtualbox", "4.3.12"),
    }


def test_catalog_has_version_provider_file_url_and_checksum(tmp_path):
    cat = box_catalog("labgen/debian12", "1.0.0.7", tmp_path / "b.box", "ab" * 32)
    (provider,) = cat["versions"][0]["providers"]
    assert cat["name"] == "labgen/debian12" and cat["versions"][0]["version"] == "1.0.0.7"
    assert provider == {"name": "libvirt", "url": (tmp_path / "b.box").as_uri(),
                        "checksum_type": "sha256", "checksum": "ab" * 32}


def test_mbr_has_one_bootable_linux_partition_at_1mib():
    mbr = mbr_partition_table(8 * 1024**3 // 512)
    assert len(mbr) == 512 and mbr[510:] == b"\x55\xaa"
    assert mbr[446] == 0x80 and mbr[450] == 0x83
    assert int.from_bytes(mbr[454:458], "little") == 2048
    assert int.from_bytes(mbr[458:462], "little") == 8 * 1024**3 // 512 - 2048
    assert mbr[:440] == bytes(440)  # boot code is written later from GRUB's boot.img


# ---- the real thing

@pytest.mark.vm
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("vagrant"),
                    reason="needs root and vagrant")
def test_real_box_is_built_or_reused_and_listed_by_vagrant():
    built = build_box("debian12", progress=print)
    assert built.path.is_file()
    listing = subprocess.run(["vagrant", "box", "list", "--machine-readable"],
                             capture_output=True, text=True, check=True).stdout
    assert ("labgen/debian12", "libvirt", built.version) in parse_vagrant_box_list(listing)
    assert Path(built.path).stat().st_size > 50 * 1024**2
