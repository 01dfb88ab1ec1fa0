"""Boot phases read from a guest's serial console (providers/libvirt/console.py), on lines
as Debian 12's kernel, initramfs, systemd and getty print them under labgen's box (colour
codes and all), written to a file in pieces as qemu writes it."""
from __future__ import annotations

from labgen.providers.libvirt import console

CONSOLE = (
    "\x1b[H\x1b[J\x1b[1;1H  Booting `Debian GNU/Linux'\r\n\r\n"
    "[    0.000000] Linux version 6.1.0-50-amd64 (debian-kernel@lists.debian.org) (gcc-12)\r\n"
    "[    3.504622] Trying to unpack rootfs image as initramfs...\r\n"
    "[    7.425116] Run /init as init process\r\n"
    "Loading, please wait...\r\n"
    "Begin: Mounting root file system ... done.\r\n"
    "[   25.081243] systemd[1]: systemd 252.39-1~deb12u2 running in system mode (+PAM)\r\n"
    "\r\nWelcome to \x1b[1mDebian GNU/Linux 12 (bookworm)\x1b[0m!\r\n\r\n"
    "[\x1b[0;32m  OK  \x1b[0m] Started \x1b[0;1;39mssh.service\x1b[0m - OpenBSD Secure Shell server.\r\n"
    "\r\nDebian GNU/Linux 12 labgen ttyS0\r\n\r\nlabgen login: "
)


def test_every_phase_in_order_with_the_guest_kernels_clock():
    got = console.phases(CONSOLE)
    assert [(p.name, p.kernel_s) for p in got] == [
        ("boot loader", None), ("kernel", 0.0), ("initramfs", 7.425116),
        ("systemd", 25.081243), ("login prompt", None)]
    assert got[2].said() == "console: initramfs (guest kernel clock 7.4 s)"
    assert console.phases(CONSOLE, frozenset({"boot loader", "kernel"}))[0].name == "initramfs"


def test_a_kernel_message_that_merely_mentions_a_phase_is_not_one():
    text = "[    1.0] random: crng init done\r\n[    2.0] systemd-journald[200]: Welcome to nothing\r\n"
    assert console.phases(text) == []


def test_the_watcher_reports_each_phase_once_as_the_file_grows_and_ignores_earlier_boots(tmp_path):
    f = tmp_path / "node1-console.log"
    f.write_text("[    0.000000] Linux version 6.1.0 (an earlier boot)\r\nold login: ")
    seen: list[tuple[str, str]] = []
    w = console.Watcher({"node1": f}, lambda node, ph: seen.append((node, ph.name)))
    w.poll()
    assert seen == []       # what the file had before this boot is not this boot
    cut = CONSOLE.index("Run /init") + 4         # mid-line: matched once the line is whole
    for piece in (CONSOLE[:cut], CONSOLE[cut:]):
        with open(f, "a") as out:
            out.write(piece)
        w.poll()
    w.poll()
    assert seen == [("node1", n) for n in ("boot loader", "kernel", "initramfs", "systemd", "login prompt")]
    w.stop("node1")
    with open(f, "a") as out:
        out.write("\r\n[    0.000000] Linux version 6.1.0 (a reboot)\r\n")
    w.poll()
    assert len(seen) == 5


def test_a_console_file_not_made_yet_is_waited_for(tmp_path):
    f = tmp_path / "node2-console.log"
    seen: list[str] = []
    w = console.Watcher({"node2": f}, lambda node, ph: seen.append(ph.name))
    w.poll()
    f.write_text(CONSOLE)
    w.poll()
    assert seen[0] == "boot loader" and seen[-1] == "login prompt"


def test_a_console_file_emptied_by_the_new_boot_is_read_from_its_top(tmp_path):
    # libvirt's default for a file console (no append=on): qemu empties it when the domain
    # starts. The earlier boot's text was longer than what this boot has written so far.
    f = tmp_path / "node1-console.log"
    f.write_text("[    0.000000] Linux version 6.1.0 (an earlier boot)\r\n" + "x" * 5000 + "\r\nold login: ")
    seen: list[str] = []
    w = console.Watcher({"node1": f}, lambda node, ph: seen.append(ph.name))
    w.poll()
    f.write_text(CONSOLE[:CONSOLE.index("Run /init")])     # the new boot, shorter so far
    w.poll()
    assert seen == ["boot loader", "kernel"]
    with open(f, "a") as out:
        out.write(CONSOLE[CONSOLE.index("Run /init"):])
    w.poll()
    assert seen == ["boot loader", "kernel", "initramfs", "systemd", "login prompt"]
