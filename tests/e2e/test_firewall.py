"""The node script's iptables step and the diagnostics' firewall probe, run for real: real
iptables (nf_tables) in a throw-away network namespace of this host, for every tunnel kind.
(firewalld and the whole path on VMs: tests/e2e/test_vm_e2e.py and the other VM modules.)"""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from labgen import providers
from labgen.lab import tunnels
from labgen.lab.model import Options
from labgen.lifecycle import build_lab
from labgen.render.files import render_files
from labgen.verify.diagnostics import firewall_finding, firewall_probe

pytestmark = pytest.mark.netns

START = "# --- let the tunnel in through an active firewall"
# What may follow the step: the next section (RSTP labs) or the script's last line (802.1D).
ENDS = ("\n# --- ", '\nlog "done:')


@pytest.fixture(autouse=True)
def _iptables():
    if shutil.which("iptables") is None and os.environ.get("CI") != "true":
        pytest.skip("iptables is not installed (scripts/setup --vm installs it)")


def firewall_step(lab) -> str:
    script = render_files(lab, providers.get(lab.provider))["provision/node1.sh"]
    start = script.index(START)
    return script[start:min(i for i in (script.find(e, start) for e in ENDS) if i > 0)]


def in_fresh_netns(script: str) -> str:
    """Run script in a new network namespace (its own, empty netfilter tables)."""
    proc = subprocess.run(["unshare", "--net", "bash", "-euo", "pipefail", "-c",
                           'log() { echo "log: $*"; }\n' + script],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize("kind", tunnels.NAMES)
def test_iptables_step_admits_only_the_tunnel_from_the_underlay_once(kind):
    lab = build_lab(Options(tunnel=kind, provider="libvirt", libvirt_driver="qemu",
                            underlay="10.20.30.0/24"))
    step, probe = firewall_step(lab), firewall_probe(lab)
    out = in_fresh_netns("\n".join([
        "iptables -P INPUT DROP", "iptables -A INPUT -p tcp --dport 22 -j ACCEPT",
        "echo '@@before'", probe, step, step,        # twice: the second run changes nothing
        "echo '@@after'", probe]))
    before, after = out.split("@@before\n")[1].split("@@after\n")
    assert before.splitlines()[0] == "iptables blocks"
    assert firewall_finding(lab, "node1", before) == (
        f"node1: iptables has no rule in its INPUT chain (not wide open) admitting "
        f"{lab.kind.label} from 10.20.30.0/24: run labgen up to add it (never switch the firewall off)")
    assert after.splitlines()[0] == "iptables admits"
    assert firewall_finding(lab, "node1", after) is None
    rules = [ln for ln in after.splitlines() if ln.startswith("-")]
    match = "-p gre" if kind == "gre" else f"-p udp -m udp --dport {lab.kind.udp_port}"
    assert rules == ["-P INPUT DROP", f"-A INPUT -s 10.20.30.0/24 {match} -j ACCEPT",
                     "-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT"]
    assert f"log: iptables: admitted {lab.kind.label} from 10.20.30.0/24" in out


def test_a_wide_open_iptables_is_left_alone():
    lab = build_lab(Options(tunnel="vxlan", provider="libvirt", libvirt_driver="qemu"))
    out = in_fresh_netns("\n".join([firewall_step(lab), firewall_probe(lab), "iptables -S INPUT"]))
    assert out.splitlines() == ["none", "-P INPUT ACCEPT"]
