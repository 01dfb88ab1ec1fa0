"""Readable output: one line per stage by default (every check with --verbose), every
evidence cell one short line, tables within 100 columns, and no colours or box-drawing
characters when stdout is not a terminal (CI logs, `| cat`). The real CLI on a real lab, in a
pipe: tests/e2e/test_readable_cli.py."""
from __future__ import annotations

import io
import json
import re

import pytest
from rich.console import Console
from support import README
from support.cli import ESC, assert_plain

from labgen.report.tables import one_line, print_report, stage_lines, table, to_json
from labgen.verify.results import Check, Report
from labgen.verify.stages import NAMES

RAW_IP_ADDR = ("3: eth1@if4: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP group default\n"
               "    link/ether 1a:2b:3c:4d:5e:6f brd ff:ff:ff:ff:ff:ff link-netns labgen-x-underlay\n"
               "    inet 10.10.10.9/24 scope global eth1\n       valid_lft forever preferred_lft forever")


def sample() -> Report:
    r = Report("gre", "netns", "gre", seconds=3.2)
    r.checks = [
        Check("nodes", "Open vSwitch answers", "node1", "ovs-vsctl show", True, "ovs-vswitchd 3.1.0", 0.02),
        Check("stp", "forwarding links form one spanning tree of all 6 bridges", "all", "x", True,
              "root 8000.0aea5969a84d; 5 links forward, the rest block", 0.43),
        Check("tunnel", "GRE (IP protocol 47) carrying A2 -> A1 seen on node1", "node1", "x", True,
              "2 captured: IP 10.10.10.2 > 10.10.10.1: GREv0, length 1480: IP 192.168.10.10 > "
              "192.168.10.1: ICMP echo request, id 22005, seq 1, length 1442\nsecond packet ...", 0.42),
        Check("config", "underlay NIC up, 10.10.10.2/24 assigned", "node2", "ip addr", False,
              RAW_IP_ADDR + " [DF]", 0.1),
        Check("mtu", "A2 -> A1: DF ping, 1435 B payload refused", "node2", "x", None,
              "skipped: an earlier stage failed", 0.0),
    ]
    return r


OVS = "ovsdb-server answers (3.1.0 in its database), ovs-vswitchd 3.1.0 (from its control socket)"
OVERLAY_MS = [0.31, 0.42, 5.3, 1.2, 0.8, 0.5, 0.33, 2.1, 0.9, 0.7, 0.45, 4.8]


def passing() -> Report:
    """A passing two-node GRE lab's report, as verify makes it (the judges' evidence)."""
    r = Report("gre", "netns", "gre", seconds=1.6)
    ck = r.checks
    for n in ("node1", "node2"):
        ck.append(Check("nodes", "Open vSwitch answers (ovsdb-server, ovs-vswitchd)", n, "x", True, OVS, 0.02))
    for n in ("node1", "node2"):
        for i in range(6):
            ck.append(Check("config", f"config check {i} of {n}", n, "x", True, "as the model says", 0.01))
    ck.append(Check("underlay", "ping node2 underlay 10.10.10.2", "node1", "x", True, "reply in 0.052 ms", 0.01))
    ck.append(Check("underlay", "ping node1 underlay 10.10.10.1", "node2", "x", True, "reply in 0.061 ms", 0.01))
    for n in ("node1", "node2"):
        ck.append(Check("stp", "RSTP on br1, br2, br3, every port reporting", n, "x", True,
                        "RSTP on br1, br2, br3; 9 ports reporting", 0.43))
    ck.append(Check("stp", "forwarding links form one spanning tree of all 6 bridges", "all", "x", True,
                    "root 8000.0aea5969a84d; 5 links forward, the rest block", 0.43))
    for i, ms in enumerate(OVERLAY_MS):
        ck.append(Check("overlay", f"overlay ping {i}", "node1" if i < 6 else "node2", "x", True,
                        f"reply in {ms} ms", 0.01))
    for a, b, n, secs in (("A2", "A1", "node1", 0.42), ("A1", "A2", "node2", 0.45)):
        ck.append(Check("tunnel", f"GRE (IP protocol 47) carrying {a} -> {b} seen on {n}", n, "x", True,
                        "2 captured: IP 10.10.10.2 > 10.10.10.1: GREv0", secs))
    for i in range(8):
        ck.append(Check("mtu", f"mtu check {i}", "node1", "x", True, "as it should be", 0.01))
    return r


def render(report: Report, width: int, terminal: bool, verbose: bool = False) -> str:
    buf = io.StringIO()
    console = Console(file=buf, width=width, force_terminal=terminal,
                      color_system="standard" if terminal else None)
    print_report(report, console, verbose)
    return buf.getvalue()


def stage_rows(text: str) -> list[str]:
    return [ln.rstrip() for ln in text.splitlines() if ln.split(" ", 1)[0] in NAMES]


def test_one_line():
    assert one_line(RAW_IP_ADDR, 40) == "3: eth1@if4: <BROADCAST,MULTICAST,UP,..."
    assert one_line("\n\n  a   b \n c", 10) == "a b"
    assert len(one_line("x" * 500, 30)) == 30


def test_a_passing_lab_prints_one_line_per_stage():
    text = render(passing(), 100, terminal=False)
    assert_plain(text, 100)
    rows = stage_rows(text)
    assert [r.split()[0] for r in rows] == list(NAMES)
    assert all(r.split()[1] == "passed" for r in rows)
    # What each stage proved, its checks counted, and its figures where the checks have them.
    assert rows == [
        "nodes     passed   2 nodes, both OVS daemons answer, ovs-vswitchd 3.1.0",
        "config    passed   12 checks: NICs, ports, veths, tunnels, addresses",
        "underlay  passed   2 pings between underlay addresses, replies in 0.05-0.06 ms",
        "stp       passed   3 checks: spanning tree on, one tree, held after 0.43 s",
        "overlay   passed   12 pings within and across nodes, replies in 0.31-5.3 ms",
        "tunnel    passed   2 captures saw the pings encapsulated, 0.42-0.45 s each",
        "mtu       passed   8 checks: inner-MTU frames cross, one byte more refused",
    ]
    assert "overlay ping 3" not in text and "config check" not in text     # no row per check
    lines = [ln.rstrip() for ln in text.rstrip().splitlines()]
    assert lines[0] == "labgen verify: lab gre (gre, netns)"
    assert lines[-1] == "VERIFIED: 41 passed, 0 failed, 0 skipped in 1.6 s"
    assert len(lines) == 2 + len(NAMES) + 1     # title, header, the stages, the verdict


def test_verbose_prints_every_check():
    report = passing()
    text = render(report, 100, terminal=False, verbose=True)
    assert_plain(text, 100)
    assert len(stage_rows(text)) == len(report.checks)
    assert "overlay ping 11" in text and "reply in 4.8 ms" in text
    assert text.rstrip().splitlines()[-1] == "VERIFIED: 41 passed, 0 failed, 0 skipped in 1.6 s"


def test_figures_only_from_evidence_the_judges_wrote():
    report = passing()
    # An overlay check whose evidence is not ping_reply's: no range rather than a wrong one.
    report.checks[20].evidence = "reply seen"
    assert dict((n, t) for n, _, t in stage_lines(report))["overlay"] == "12 pings within and across nodes"


# (the row per check needs 80 columns: below, its columns would not fit)
@pytest.mark.parametrize("width,verbose", [(60, False), (80, False), (100, False), (140, False),
                                           (80, True), (100, True), (140, True)])
def test_plain_report_fits_and_has_no_codes(width, verbose):
    text = render(sample(), width, terminal=False, verbose=verbose)
    assert_plain(text, width)
    # One line per evidence cell: the raw ip addr dump shows as its first line only.
    assert "valid_lft" not in text.split("config node2:")[0]
    assert text.rstrip().splitlines()[-1].startswith("NOT VERIFIED: 3 passed, 1 failed, 1 skipped")
    assert_plain(render(passing(), width, terminal=False, verbose=verbose), width)


def test_failed_check_shows_what_it_saw_below_the_stages():
    text = render(sample(), 100, terminal=False)
    rows = dict((r.split()[0], r) for r in stage_rows(text.split("config node2:")[0]))
    assert rows["config"] == "config    failed   1 check: NICs, ports, veths, tunnels, addresses: 1 failed"
    assert rows["nodes"].startswith("nodes     passed   1 node, both OVS daemons answer")
    # A skipped stage says so, with why.
    assert rows["mtu"] == "mtu       skipped  skipped: an earlier stage failed"
    below = text.split("config node2: underlay NIC up, 10.10.10.2/24 assigned: failed\n")[1]
    assert below.splitlines()[:2] == ["    3: eth1@if4: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP group default",
                                      "    link/ether 1a:2b:3c:4d:5e:6f brd ff:ff:ff:ff:ff:ff link-netns labgen-x-underlay"]
    assert "[DF]" in below     # printed as text, not eaten as markup


def test_a_stage_with_failures_errors_and_skips_counts_each():
    report = passing()
    overlay = [c for c in report.checks if c.stage == "overlay"]
    overlay[0].passed, overlay[0].evidence = False, "no reply: 5 sent, 0 received, 100% loss"
    overlay[1].passed, overlay[1].error, overlay[1].evidence = False, True, "timed out: no output"
    overlay[2].passed, overlay[2].evidence = None, "not run"
    text = render(report, 100, terminal=False)
    row = next(r for r in stage_rows(text) if r.startswith("overlay"))
    assert row == ("overlay   failed   12 pings within and across nodes: 9 passed, 1 failed, "
                   "1 could not run, 1 skipped")
    # Every check that did not pass, in full below the stages, whether it failed or could not run.
    assert "overlay node1: overlay ping 0: failed\n    no reply: 5 sent, 0 received, 100% loss\n" in text
    assert "overlay node1: overlay ping 1: could not run\n    timed out: no output\n" in text


@pytest.mark.parametrize("verbose", [False, True])
def test_terminal_report_fits_too(verbose):
    for report in (sample(), passing()):
        for width in (80, 100) if verbose else (60, 80, 100):
            text = render(report, width, terminal=True, verbose=verbose)
            assert ESC in text     # colours in a terminal
            plain = re.sub(r"\x1b\[[0-9;]*m", "", text)
            assert max(len(ln) for ln in plain.splitlines()) <= width, plain


def test_json_keeps_the_full_evidence():
    data = json.loads(to_json(sample()))
    assert data["checks"][3]["evidence"].startswith(RAW_IP_ADDR)
    assert table(sample()).row_count == 5


def test_readme_documents_every_exit_code_in_one_table():
    readme = README.read_text()
    assert readme.count("## Exit codes") == 1 and readme.count("| code | meaning |") == 1
    section = readme.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    codes = re.findall(r"^\| (\S+) \|", section, re.M)
    assert codes[:7] == ["code", "0", "1", "2", "3", "4", "130"], codes
    assert "`exec`" in section and "`capture`" in section and "`status`" in section


@pytest.mark.parametrize("flags,rows", [([], len(NAMES)), (["--verbose"], 41), (["-v"], 41)])
def test_verify_prints_stages_unless_verbose(monkeypatch, tmp_path, flags, rows):
    """The verb itself: one line per stage by default, every check with --verbose or -v;
    --json holds every check either way."""
    import contextlib

    from typer.testing import CliRunner

    from labgen import lifecycle
    from labgen.cli import lab_verbs
    from labgen.cli.app import app
    from labgen.lab.model import Options
    lab = lifecycle.build_lab(Options(tunnel="gre", provider="netns"))
    monkeypatch.setattr(lab_verbs, "load", lambda d: (lab, tmp_path))
    monkeypatch.setattr(lifecycle, "locked", lambda d: contextlib.nullcontext())
    monkeypatch.setattr(lifecycle, "run_verify", lambda *a, **k: passing())
    monkeypatch.setenv("COLUMNS", "100")
    result = CliRunner().invoke(app, ["verify", str(tmp_path), *flags])
    assert result.exit_code == 0, result.output
    assert_plain(result.stdout, 100)
    assert len(stage_rows(result.stdout)) == rows
    assert result.stdout.rstrip().splitlines()[-1] == "VERIFIED: 41 passed, 0 failed, 0 skipped in 1.6 s"
    result = CliRunner().invoke(app, ["verify", str(tmp_path), "--json", *flags])
    assert len(json.loads(result.stdout)["checks"]) == 41
