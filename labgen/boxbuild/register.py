"""Adding a built .box to Vagrant under the recipe's version: `vagrant box add` of a local
catalog file (a bare .box would be added without a version)."""
from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path

from labgen.vagrant import command as vagrant

from .boxfile import PROVIDER
from .cache import stem
from .log import BuildLog


def box_catalog(name: str, version: str, box_path: Path, sha256: str) -> dict[str, object]:
    """A local Vagrant box catalog, so `vagrant box add` records the version."""
    return {
        "name": name,
        "description": "Built locally by labgen from Debian packages",
        "versions": [{
            "version": version,
            "providers": [{
                "name": PROVIDER,
                "url": box_path.resolve().as_uri(),
                "checksum_type": "sha256",
                "checksum": sha256,
            }],
        }],
    }


def box_add(log: BuildLog, name: str, version: str, box_path: Path, *, replace: bool) -> None:
    """Write the catalog beside the box and add the box from it (replacing the same version
    when `replace`); Vagrant's output goes to the build log."""
    catalog = box_catalog(name, version, box_path, sha256(box_path))
    catalog_path = box_path.parent / f"{stem(name)}.json"
    catalog_path.write_text(json.dumps(catalog, indent=2) + "\n")
    args = ["box", "add", "--provider", PROVIDER, "--box-version", version,
            *(["--force"] if replace else []), str(catalog_path)]
    with contextlib.closing(vagrant.stream(args)) as output:
        log.lines(["vagrant", *args], output)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
