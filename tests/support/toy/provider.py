"""The toy provider: every member of labgen's Provider protocol, and nothing real behind it.
Its "host" is a dict in this process; its nodes are support.replay runners answering every
verification command from outputs recorded on a real netns lab (tests/data/outputs). It
renders through labgen's real pipeline from its own templates folder (templates/ here), and
labgen's real verification judges its nodes. docs/development.md: "Adding a provider"."""
from __future__ import annotations

from ipaddress import IPv4Network
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from labgen.errors import InputError
from labgen.lab.model import Lab, Options, ProviderSettings
from labgen.providers import Found, NodeState, NodeStatus, Progress, Provider
from labgen.system.owner import Owner
from support.replay import Fault, Replay

if TYPE_CHECKING:
    import jinja2

    from labgen.nodes.runner import Runner

HERE = Path(__file__).resolve().parent


class ToyProvider:
    name: ClassVar[str] = "toy"
    default_box: ClassVar[str] = "toy"
    datapaths: ClassVar[tuple[str, ...]] = ("netdev",)
    owns_system_files: ClassVar[bool] = False
    script_sets_underlay_address: ClassVar[bool] = False
    peer_wait: ClassVar[float] = 5.0
    remote_nodes: ClassVar[bool] = False
    stages_apart: ClassVar[bool] = True
    capture_wait: ClassVar[float] = 5.0
    templates: ClassVar[Path] = HERE / "templates"

    # The "host": owner records and running labs by lab name; faults the test puts into the
    # recordings. Class-level: every providers.get() makes a new instance.
    records: ClassVar[dict[str, Owner]] = {}
    running: ClassVar[set[str]] = set()
    faults: ClassVar[list[Fault]] = []

    def validate(self, opts: Options, underlay: IPv4Network, datapath: str) -> None:
        if opts.hosts:
            raise InputError("--host places nodes on other hosts; the toy provider has none: drop --host")

    def settings(self, opts: Options, kvm_usable: bool | None, lab_name: str) -> ProviderSettings | None:
        return None

    def read_settings(self, lab_json: dict[str, Any], nodes: list[str]) -> ProviderSettings | None:
        return None

    def files(self, lab: Lab, env: jinja2.Environment) -> dict[str, str]:
        return {"nodes.txt": env.get_template("toy/nodes.txt.j2").render(lab=lab)}

    def host_problems(self, lab: Lab) -> list[str]:
        return []

    def host_notes(self, lab: Lab) -> list[str]:
        return ["nodes are recorded outputs"]

    def check(self, lab: Lab, lab_dir: Path) -> None:
        pass

    def record(self, lab: Lab) -> Owner | None:
        return self.records.get(lab.name)

    def write_record(self, lab: Lab, owner: Owner) -> None:
        self.records[lab.name] = owner

    def up(self, lab: Lab, lab_dir: Path, progress: Progress) -> None:
        for node in lab.nodes:
            progress(node.name, "replaying")
        self.running.add(lab.name)

    def destroy(self, lab: Lab, lab_dir: Path, progress: Progress) -> None:
        self.running.discard(lab.name)
        self.records.pop(lab.name, None)

    def status(self, lab: Lab, lab_dir: Path) -> list[NodeStatus]:
        state: NodeState = "running" if lab.name in self.running else "absent"
        return [NodeStatus(n.name, state) for n in lab.nodes]

    def exists(self, lab: Lab, lab_dir: Path) -> bool:
        return lab.name in self.running or lab.name in self.records

    def inventory(self, uris: tuple[str, ...] = ()) -> list[Found]:
        return []

    def remove(self, found: Found, progress: Progress) -> None:
        self.running.discard(found.name)
        self.records.pop(found.name, None)

    def runner(self, lab: Lab, lab_dir: Path, node: str) -> Runner:
        return Replay(lab, node, tuple(self.faults))

    def local_argv(self, lab: Lab, node: str) -> list[str] | None:
        return None

    def shell_argv(self, lab: Lab, lab_dir: Path, node: str) -> list[str]:
        return ["false"]


def _complete() -> Provider:
    return ToyProvider()        # mypy checks the toy against the Provider protocol here
