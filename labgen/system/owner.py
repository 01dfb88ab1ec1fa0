"""Who a running lab belongs to: a random lab id and the lab directory's real path.

`up` writes an Owner twice before it creates anything: into the lab directory
(`.labgen/owner.json`, the claim) and where the provider keeps the lab's state on the host (the
record: netns's runtime directory, libvirt's domain descriptions and labgen's registry). Every
verb on a running lab compares the two: another directory of the same lab name (or a copy of
this one) holds a different path or id, and is refused. The record also says whether the
create that wrote it finished, and which process ran it, so `labgen list` can tell a whole lab
from one whose create was killed.
"""
from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from labgen.errors import ExitCode, LabgenError
from labgen.system.processes import start_ticks

CLAIM = Path(".labgen") / "owner.json"      # in the lab directory
MARK = "labgen-owner"                       # the record's "kind"


class NotOwner(LabgenError):
    """This directory's lab is not the one running under its name here."""

    exit_code = ExitCode.USAGE


@dataclass(frozen=True)
class Owner:
    lab: str                    # the lab name
    id: str                     # random; a copied lab directory keeps it, but not its path
    dir: str                    # the lab directory's real path
    provider: str
    nodes: tuple[str, ...]
    created: float              # epoch seconds
    pid: int                    # the labgen process that is bringing the lab up (0: done)
    pid_start: int = 0          # that process's start time in clock ticks (/proc/PID/stat)

    def to_json(self) -> str:
        return json.dumps({"kind": MARK, **asdict(self)}, separators=(",", ":"))

    @staticmethod
    def from_json(text: str) -> Owner | None:
        """The record in text, or None when it is not one (a stranger's description)."""
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or data.pop("kind", None) != MARK:
                return None
            data["nodes"] = tuple(data["nodes"])
            return Owner(**data)
        except (ValueError, TypeError, KeyError):
            return None

    @property
    def dir_exists(self) -> bool:
        return Path(self.dir).is_dir()

    @property
    def creating(self) -> bool:
        """A create or up that has not finished, and whose process still runs."""
        return self.pid != 0 and start_ticks(self.pid) == self.pid_start

    @property
    def unfinished(self) -> bool:
        """A create or up that never finished (killed, or still running)."""
        return self.pid != 0

    def done(self) -> Owner:
        return replace(self, pid=0, pid_start=0)

    def age(self) -> str:
        return ago(time.time() - self.created)

    def claimed_by_its_dir(self) -> bool:
        """Does the directory this record names still hold the claim (the same id)?"""
        mine = read_claim(Path(self.dir))
        return mine is not None and mine.id == self.id

    def describe(self) -> str:
        where = self.dir if self.dir_exists else f"{self.dir} (gone)"
        return f"lab {self.lab!r} on this host belongs to {where} (started {self.age()})"


def ago(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 60:
        return f"{s} s ago"
    if s < 3600:
        return f"{s // 60} min ago"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min ago"
    return f"{s // 86400} d ago"


def new_owner(lab: str, provider: str, nodes: tuple[str, ...], lab_dir: Path) -> Owner:
    """A fresh claim for a lab this process is about to bring up."""
    pid = os.getpid()
    return Owner(lab=lab, id=secrets.token_hex(8), dir=str(lab_dir.resolve()), provider=provider,
                 nodes=nodes, created=time.time(), pid=pid, pid_start=start_ticks(pid))


def started_by_me(owner: Owner) -> Owner:
    """The same claim, now being brought up (again) by this process."""
    pid = os.getpid()
    return replace(owner, pid=pid, pid_start=start_ticks(pid))


def read_claim(lab_dir: Path) -> Owner | None:
    try:
        return Owner.from_json((lab_dir / CLAIM).read_text())
    except OSError:
        return None


def write_claim(lab_dir: Path, owner: Owner) -> None:
    path = lab_dir / CLAIM
    path.parent.mkdir(exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(owner.to_json() + "\n")
    os.replace(tmp, path)


def drop_claim(lab_dir: Path) -> None:
    (lab_dir / CLAIM).unlink(missing_ok=True)


def check(record: Owner | None, lab_dir: Path, lab_name: str) -> None:
    """Raise NotOwner unless the lab running under this name (record) is this directory's."""
    if record is None:
        return
    mine = read_claim(lab_dir)
    if mine is not None and mine.id == record.id and record.dir == str(lab_dir.resolve()):
        return
    fix = (f"labgen destroy {record.dir}" if record.claimed_by_its_dir()
           else f"labgen destroy --name {lab_name}")
    raise NotOwner(f"{record.describe()}; this directory's lab is not running: pass another "
                   f"--name, or remove that lab first ({fix})")
