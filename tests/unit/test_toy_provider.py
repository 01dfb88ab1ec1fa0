"""Adding a provider is one folder, one registry line and one templates folder (issue 25):
the toy provider in tests/support/toy/ is registered here, never in labgen's registry, and a
toy lab goes through the real CLI verbs in this process: `labgen create` renders it through
the real pipeline from the toy's own templates folder, brings it up and verifies it with
labgen's real verification, whose commands the toy's nodes answer from outputs recorded on a
real netns lab (support.replay). docs/development.md, "Adding a provider", counts its files."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import ROOT, TESTS
from support.replay import Fault
from support.toy.provider import ToyProvider
from typer.testing import CliRunner

from labgen import providers
from labgen.cli.app import app
from labgen.lab.model import Options
from labgen.lifecycle import build_lab
from labgen.render.files import render_files
from labgen.verify.stages import NAMES, groups

TOY = TESTS / "support" / "toy"

# Everything a provider is: its package, its templates folder, its box; and one line in
# providers.REGISTRY (here: the monkeypatch.setitem in `registered`).
TOY_FILES = {"__init__.py", "provider.py", "templates/readme.md.j2", "templates/nodes.txt.j2",
             "boxes/toy.toml"}


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(providers.REGISTRY, "toy", "support.toy.provider:ToyProvider")
    monkeypatch.setenv("LABGEN_BOXES_DIR", str(TOY / "boxes"))   # a shipped box goes in boxes/
    monkeypatch.setenv("XDG_CACHE_HOME", "/nonexistent/labgen-toy")   # no template bytecode cache
    monkeypatch.setattr(ToyProvider, "records", {})
    monkeypatch.setattr(ToyProvider, "running", set())
    monkeypatch.setattr(ToyProvider, "faults", [])


def create(tmp_path: Path) -> tuple[int, dict, str]:
    lab_dir = tmp_path / "lab"
    res = CliRunner().invoke(app, ["create", "gre", "--provider", "toy", "--stp", "rstp",
                                   "--dir", str(lab_dir), "--json", "--destroy"])
    out = res.stdout
    return res.exit_code, json.loads(out[out.index("{"):]), res.output


def test_the_toy_provider_is_this_many_files():
    files = {str(p.relative_to(TOY)) for p in TOY.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert files == TOY_FILES
    assert "toy" not in providers.REGISTRY        # registered from the tests only
    assert "tests/unit/test_toy_provider.py" in (ROOT / "docs" / "development.md").read_text()


def test_the_toy_provider_is_complete(registered):
    p = providers.get("toy")
    for member in [m for m in dir(providers.Provider) if not m.startswith("_")] + \
            list(providers.Provider.__annotations__):
        assert hasattr(p, member), f"toy lacks {member}"
    assert providers.REGISTERED.names == ("netns", "libvirt", "toy")


def test_a_toy_lab_renders_through_the_real_pipeline(registered):
    lab = build_lab(Options(tunnel="gre", provider="toy", stp="rstp"))
    assert lab.box.name == "toy" and lab.datapath == "netdev"
    files = render_files(lab, providers.get("toy"))
    # The toy's own file, from its own templates folder, and its README parts.
    assert files["nodes.txt"] == "node1 10.10.10.1\nnode2 10.10.10.2\n"
    assert "Provider `toy`, datapath `netdev`, nodes replayed from recorded outputs." in files["README.md"]
    assert "labgen verify                                   # the toy's nodes answer" in files["README.md"]
    # The node script takes the toy's facts: its peer wait, no system files, no underlay address.
    script = files["provision/node1.sh"]
    assert "#!/" in script.splitlines()[0]
    assert set(files) == {"lab.json", "topology.dot", "README.md", "nodes.txt",
                          "provision/node1.sh", "provision/node2.sh"}


def test_a_toy_lab_is_verified_by_the_real_verification(registered, tmp_path):
    code, report, output = create(tmp_path)
    assert code == 0, output
    assert report["passed"] is True
    assert [s["name"] for s in report["stages"]] == list(NAMES)
    assert {s["status"] for s in report["stages"]} == {"passed"}
    checks = {(c["stage"], c["name"], c["node"]): c for c in report["checks"]}
    assert checks[("tunnel", "GRE (IP protocol 47) carrying A1 -> A2 seen on node2", "node2")]["passed"]
    assert "VERIFIED: 41 passed, 0 failed, 0 skipped" in output
    assert ("overlay", "A1 -> A2 192.168.10.10 (across to node2)", "node1") in checks
    assert not ToyProvider.running and not ToyProvider.records      # --destroy: gone
    # The toy runs its heavy stages apart (stages_apart), as a VM provider does.
    assert [s.name for s in groups(ToyProvider.stages_apart)[-1]] == ["mtu"]


@pytest.mark.parametrize("fault,stage,evidence", [
    # A1 pings A2 across the tunnel and gets no reply.
    (Fault("node1", "A1", "ping -n -q -c 1 -i 0.2 -w 15 192.168.10.10", "ping-no-reply.txt"),
     "overlay", "no reply: 5 sent, 0 received, 100% loss"),
    # node2's ovs-vswitchd is dead: the nodes stage names it.
    (Fault("node2", None, "ovs-appctl --timeout=5 version", "ovs-daemons-vswitchd-stopped.txt"),
     "nodes", "ovs-vswitchd does not answer"),
    # The capture on node2 sees nothing: the tunnel stage fails.
    (Fault("node2", None, "until [ -e /tmp/labgen-capture.toy/rc ]", "capture-nothing.txt", 124),
     "tunnel", "no encapsulated echo request captured"),
])
def test_a_broken_recording_fails_the_stage_that_names_it(registered, tmp_path, monkeypatch, fault, stage, evidence):
    monkeypatch.setattr(ToyProvider, "faults", [fault])
    code, report, output = create(tmp_path)
    assert code == 1, output
    assert report["passed"] is False
    status = {s["name"]: s["status"] for s in report["stages"]}
    first = NAMES.index(stage)
    assert all(status[n] == "passed" for n in NAMES[:first]), status
    assert status[stage] == "failed", status
    assert all(status[n] == "skipped" for n in NAMES[first + 1:]), status   # mtu too: stages_apart
    failed = [c for c in report["checks"] if c["stage"] == stage and c["status"] != "passed"]
    assert [c["node"] for c in failed] == [fault.node]
    assert evidence in failed[0]["evidence"]
