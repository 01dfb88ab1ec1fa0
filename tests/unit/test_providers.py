"""The provider registry and protocol: one list of providers, each complete."""
from __future__ import annotations

import inspect
from typing import get_type_hints

import pytest

from labgen import providers
from labgen.errors import InputError
from labgen.lab.model import Options
from labgen.lifecycle import build_lab
from labgen.providers import Provider

MEMBERS = [name for name in dir(Provider) if not name.startswith("_")]
ATTRIBUTES = [name for name in get_type_hints(Provider) if not name.startswith("_")]


@pytest.mark.parametrize("name", providers.NAMES)
def test_every_registered_provider_is_complete(name):
    p = providers.get(name)
    assert p.name == name
    for member in MEMBERS + ATTRIBUTES:
        assert hasattr(p, member), f"{name} lacks {member}"
    for member in MEMBERS:
        want = list(inspect.signature(getattr(Provider, member)).parameters)[1:]
        have = list(inspect.signature(getattr(p, member)).parameters)
        assert have == want, f"{name}.{member}{tuple(have)} != protocol {tuple(want)}"
    # The model asks the provider for its defaults: a lab builds with nothing else given.
    lab = build_lab(Options(tunnel="gre", provider=name), kvm_usable=False)
    assert lab.box.name == p.default_box and lab.datapath == p.datapaths[0]
    assert (lab.settings is not None) == (name == "libvirt")


def test_the_registry_is_the_one_list():
    assert providers.REGISTERED.names == providers.NAMES     # what the model and the box catalog get
    with pytest.raises(InputError) as exc:
        providers.get("docker")
    assert str(exc.value) == "unknown provider 'docker': use netns or libvirt"


def test_each_provider_refuses_what_it_cannot_do():
    with pytest.raises(InputError, match="needs a kernel Open vSwitch module"):
        build_lab(Options(tunnel="gre", provider="netns", datapath="system"))
    with pytest.raises(InputError, match="management network"):
        build_lab(Options(tunnel="gre", underlay="198.19.66.0/24"), kvm_usable=False)
    # The same underlay is fine where there is no Vagrant management network, or under
    # another lab name (another management subnet).
    assert build_lab(Options(tunnel="gre", provider="netns", underlay="198.19.66.0/24"))
    assert build_lab(Options(tunnel="gre", name="other", underlay="198.19.66.0/24"), kvm_usable=False)


def test_shell_goes_through_the_provider(tmp_path):
    lab = build_lab(Options(tunnel="gre", provider="netns", name="sh"))
    argv = providers.get("netns").shell_argv(lab, tmp_path, "node1")
    assert argv[0] == "nsenter" and f"--net=/run/netns/{lab.node_netns('node1')}" in argv
    vm = build_lab(Options(tunnel="gre", name="sh"), kvm_usable=False)
    argv = providers.get("libvirt").shell_argv(vm, tmp_path, "node2")
    assert argv[:2] == ["env", f"VAGRANT_CWD={tmp_path.resolve()}"] and "node2" in argv
