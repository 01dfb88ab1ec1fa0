"""Which Debian mirror debootstrap uses: the argument, $LABGEN_DEBIAN_MIRROR, or the main
Debian archive among the host's own apt sources (one-line and deb822 formats)."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import BoxBuildError

MIRROR_ENV = "LABGEN_DEBIAN_MIRROR"

# Debian release names; a host entry for one of these suites is the main archive.
DEBIAN_SUITES = {
    "buster", "bullseye", "bookworm", "trixie", "forky", "duke", "sid",
    "oldoldstable", "oldstable", "stable", "testing", "unstable",
}


@dataclass(frozen=True)
class AptSource:
    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]


def parse_one_line_sources(text: str) -> list[AptSource]:
    """`deb [options] URI SUITE COMPONENT...` lines of sources.list (deb-src skipped)."""
    sources = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        m = re.match(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)\s*(.*)$", line)
        if m:
            sources.append(AptSource(m[1], (m[2],), tuple(m[3].split())))
    return sources


def parse_deb822_sources(text: str) -> list[AptSource]:
    """Stanzas of a *.sources file (deb822); disabled and deb-src-only stanzas skipped."""
    sources = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in stanza.splitlines():
            if line.startswith("#"):
                continue
            if line[:1] in (" ", "\t") and key:  # continuation line (e.g. an inline key)
                fields[key] += " " + line.strip()
            elif ":" in line:
                key, value = line.split(":", 1)
                key = key.strip().lower()
                fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() == "no":
            continue
        uris = fields.get("uris", "").split()
        if uris:
            sources.append(
                AptSource(uris[0], tuple(fields.get("suites", "").split()),
                          tuple(fields.get("components", "").split()))
            )
    return sources


def pick_debian_mirror(sources: list[AptSource]) -> str | None:
    """The first entry that is the main Debian archive (not security, not a third party)."""
    for src in sources:
        if not re.match(r"^(https?|file)://", src.uri):
            continue
        for suite in src.suites:
            base = suite.split("-", 1)[0].split("/", 1)[0]
            security = suite.endswith("-security") or "security" in src.uri
            if base in DEBIAN_SUITES and not security:
                return src.uri.rstrip("/")
    return None


def host_apt_sources(etc_apt: Path = Path("/etc/apt")) -> list[AptSource]:
    sources = []
    main_list = etc_apt / "sources.list"
    if main_list.is_file():
        sources += parse_one_line_sources(main_list.read_text(errors="replace"))
    parts = etc_apt / "sources.list.d"
    for path in sorted(parts.glob("*")) if parts.is_dir() else []:
        if path.suffix == ".list":
            sources += parse_one_line_sources(path.read_text(errors="replace"))
        elif path.suffix == ".sources":
            sources += parse_deb822_sources(path.read_text(errors="replace"))
    return sources


def resolve_mirror(explicit: str | None = None, etc_apt: Path = Path("/etc/apt")) -> str:
    """The argument, else $LABGEN_DEBIAN_MIRROR, else the host's apt configuration."""
    mirror = explicit or os.environ.get(MIRROR_ENV) or pick_debian_mirror(host_apt_sources(etc_apt))
    if not mirror:
        raise BoxBuildError(
            f"no Debian mirror found in {etc_apt}/sources.list or sources.list.d: "
            f"set {MIRROR_ENV}=<Debian archive URL>"
        )
    return mirror.rstrip("/")
