"""labgen doctor: what this host lacks for each provider, each problem with its fix, and
every missing Debian package of all providers in one apt-get command."""
from __future__ import annotations

import re
from dataclasses import dataclass

from labgen import providers
from labgen.errors import InputError
from labgen.lab import boxes as box_catalog
from labgen.lab import tunnels
from labgen.lab.model import Options
from labgen.lifecycle import build_lab
from labgen.system.hostfacts import apt_install_command


@dataclass(frozen=True)
class Line:
    kind: str           # ok | note | problem | fix
    provider: str       # a provider's name, or "all providers"
    text: str


def diagnose(only: str | None = None, box: str | None = None, hypervisor: str | None = None) -> list[Line]:
    """One Line per finding, providers in the registry's order (InputError on bad input).
    With `hypervisor` (a libvirt URI), each provider that can place nodes on other hypervisors
    (remote_nodes) is checked for a lab with node2 there."""
    lines: list[Line] = []
    wanted: dict[str, list[str]] = {}   # provider -> the Debian packages it lacks
    if hypervisor and only and not providers.get(only).remote_nodes:
        raise InputError(f"--host checks a libvirt host; provider {only} has none: drop --host")
    for name in [only] if only else list(providers.NAMES):
        provider = providers.get(name)
        # A box is checked with the providers it is for (netns runs on the host itself).
        lab = build_lab(Options(tunnel=tunnels.NAMES[0], provider=name,
                                box=box if box and (only or name in box_catalog.get(box, providers=providers.NAMES).providers) else None,
                                hosts=(f"node2={hypervisor}",) if hypervisor and provider.remote_nodes else ()))
        lines += [Line("note", name, note) for note in provider.host_notes(lab)]
        problems = provider.host_problems(lab)
        for p in problems:
            lines.append(Line("problem", name, p))
            wanted.setdefault(name, []).extend(re.findall(r"\(package ([^)\s]+)\)", p))
        if not problems:
            lines.append(Line("ok", name, "ready" + (f" (box {lab.box.name})" if lab.settings else "")))
    if len([pkgs for pkgs in wanted.values() if pkgs]) > 1:
        everything = [pkg for pkgs in wanted.values() for pkg in pkgs]
        lines.append(Line("fix", "all providers", apt_install_command(everything)))
    return lines
