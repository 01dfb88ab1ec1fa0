"""Every labgen lab on a host, whatever state it is in, and removing one by its name: what
`labgen list`, `labgen destroy --name` and `labgen prune` share. Labs are found by the names
labgen gives (labgen-NAME-...) and attributed by their owner records (labgen/system/owner.py);
nothing without a labgen name is ever listed or touched."""
from __future__ import annotations

import json
import time

from labgen import providers
from labgen.errors import InputError
from labgen.providers import Found, Progress


def find_all(uris: tuple[str, ...] = ()) -> list[Found]:
    """Every lab of every provider on this host (and on the hypervisors at uris)."""
    found: list[Found] = []
    for name in providers.NAMES:
        found += providers.get(name).inventory(uris)
    return found


def by_name(name: str, provider: str | None, uris: tuple[str, ...] = ()) -> list[Found]:
    """The lab called `name` (on this host, or the hypervisors at uris): one entry per
    machine it has resources on."""
    matches = [f for f in find_all(uris) if f.name == name and provider in (None, f.provider)]
    if not matches:
        raise InputError(f"no labgen lab named {name!r} on this host"
                         + (f" with provider {provider}" if provider else "") + ": labgen list shows them")
    if len({f.provider for f in matches}) > 1:
        raise InputError(f"labs named {name!r} run on both providers here: add --provider "
                         f"{' or --provider '.join(sorted({f.provider for f in matches}))}")
    return matches


def refuse_if_owned(found: Found) -> None:
    """destroy --name is for a lab whose directory is gone: a lab that its directory still
    claims is removed through that directory (its lock, its Vagrant state)."""
    if found.record is not None and found.record.claimed_by_its_dir():
        raise InputError(f"lab {found.name!r} belongs to {found.record.dir}, which still holds it: "
                         f"labgen destroy {found.record.dir}")


def remove(found: Found, progress: Progress) -> None:
    providers.get(found.provider).remove(found, progress)


def prunable(found: Found, everything: bool) -> bool:
    """prune removes orphaned and partial labs; with everything (--all) whole ones too. A
    create that is still running is never pruned."""
    if found.state == "creating":
        return False
    return everything or found.state in ("orphaned", "partial")


def as_dict(found: Found) -> dict[str, object]:
    rec = found.record
    return {
        "name": found.name, "provider": found.provider, "host": found.host,
        "state": found.state,
        "dir": rec.dir if rec else None, "dir_exists": rec.dir_exists if rec else False,
        "id": rec.id if rec else None,
        "nodes": len(found.nodes), "running": len(found.running),
        "age_s": round(time.time() - rec.created) if rec else None,
        "resources": list(found.resources),
    }


def to_json(found: list[Found]) -> str:
    return json.dumps({"labs": [as_dict(f) for f in found]}, indent=2)


def describe(found: Found) -> str:
    """One line: what a lab is and where it came from."""
    rec = found.record
    where = (rec.dir if rec.dir_exists else f"{rec.dir} (gone)") if rec else "no owner recorded"
    on = "" if found.host == "this host" else f" on {found.host}"
    return (f"{found.provider} lab {found.name!r}{on}: {found.state}, {len(found.running)}/"
            f"{len(found.nodes)} nodes running, {where}")
