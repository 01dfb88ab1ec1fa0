"""The stage table is the one source: the full list in docs/design.md, the README's one line
per stage, the JSON report and verify's order all come from labgen/verify/stages.py."""
from __future__ import annotations

import re

from support import DESIGN, README, readme_block

from labgen import providers
from labgen.report.tables import to_dict
from labgen.verify.results import Check, Report
from labgen.verify.stages import NAMES, STAGES, groups, markdown


def test_design_doc_lists_the_stage_table():
    assert readme_block("stages", DESIGN) == markdown().strip(), \
        "docs/design.md's stage list is stale: run python -m labgen.verify.stages"


def test_readme_names_every_stage_in_order():
    """The README's short list (one line a stage, written by hand) names the same stages."""
    section = README.read_text().split("## What VERIFIED proves", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^\d\. \*\*(\w+)\*\*: ", section, re.M)
    assert tuple(listed) == NAMES, listed


def test_stage_order_and_groups():
    assert NAMES == ("nodes", "config", "underlay", "stp", "overlay", "tunnel", "mtu")
    # Namespaces: the capture and the MTU probes run together. An emulated VM runs them one
    # after the other (both at once starve the guest).
    # The provider says which it is (stages_apart), not its name.
    assert [[s.name for s in g] for g in groups(providers.get("netns").stages_apart)][-1:] == [["tunnel", "mtu"]]
    assert [[s.name for s in g] for g in groups(providers.get("libvirt").stages_apart)][-2:] == [["tunnel"], ["mtu"]]
    for apart in (False, True):
        assert [s.name for g in groups(apart) for s in g] == list(NAMES)
    assert all(s.proves for s in STAGES)


def test_json_report_lists_every_stage_with_its_status():
    report = Report("gre", "netns", "gre", [
        Check("nodes", "Open vSwitch answers", "node1", "x", True, "ovs-vswitchd 3.1.0"),
        Check("config", "A1: a1.2 up", "node1", "x", False, "expected a1.2 up"),
        *[Check(n, f"{n} checks", "-", "", None, "not run") for n in NAMES[2:]],
    ])
    stages = to_dict(report)["stages"]
    assert [s["name"] for s in stages] == list(NAMES)
    assert [s["status"] for s in stages][:3] == ["passed", "failed", "skipped"]
