"""lab.json: the resolved model of a lab directory, written when the lab is rendered and read
by every later command, so they see exactly what was rendered."""
from __future__ import annotations

import json
from pathlib import Path

from labgen.errors import InputError
from labgen.lab.model import Lab, Providers

LAB_FILE = "lab.json"
MARKER = "labgen-lab"   # lab.json's "kind": how we tell our own lab dirs from anything else
# Keys an earlier labgen wrote under another name: old -> today's.
RENAMED_KEYS = {"underlay_host_ip": "underlay_hypervisor_ip"}


def lab_json(lab: Lab) -> str:
    return json.dumps({"kind": MARKER, **lab.to_dict()}, indent=2) + "\n"


def is_lab_dir(path: Path) -> bool:
    try:
        return bool(json.loads((path / LAB_FILE).read_text()).get("kind") == MARKER)
    except (OSError, ValueError, AttributeError):
        return False


def load_lab(directory: Path, providers: Providers) -> Lab:
    """The resolved model of an existing lab dir (the single source for later commands)."""
    if not is_lab_dir(directory):
        raise InputError(f"{directory} is not a labgen lab (no {LAB_FILE}): pass the lab's "
                         f"directory, e.g. labgen verify lab-gre")
    data = json.loads((directory / LAB_FILE).read_text())
    # A lab.json from before a key was renamed: read under today's name.
    data = {RENAMED_KEYS.get(key, key): value for key, value in data.items()}
    return Lab.from_dict(data, providers)
