"""The lab's life: render -> up -> verify -> destroy, as the CLI verbs use them.

Every verb after render reads lab.json from the lab dir, takes the lab's lock (two verbs on
one lab at once would race), and talks to the provider named there.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from labgen import providers
from labgen.errors import InputError, LabgenError
from labgen.lab import build, labfile
from labgen.lab.labfile import LAB_FILE, is_lab_dir
from labgen.lab.model import Lab, Options
from labgen.providers import REGISTERED, NodeStatus, Progress, Provider
from labgen.render.files import fs_error, write_lab
from labgen.system import owner
from labgen.system.locks import hold
from labgen.system.owner import NotOwner, Owner

if TYPE_CHECKING:
    from labgen.failover.redundancy import LabLink
    from labgen.failover.run import FailoverReport
    from labgen.verify.results import Report
    from labgen.verify.spantree import BridgeState
# The checks, the verification engine and the diagnostics are imported by the verbs that
# use them: render, up and destroy start faster without them.


def build_lab(opts: Options, kvm_usable: bool | None = None) -> Lab:
    """The lab of `opts`, validated by the model and by its provider."""
    return build.build_lab(opts, REGISTERED, kvm_usable)


def load_lab(directory: Path) -> Lab:
    """The lab in an existing lab dir (its lab.json)."""
    return labfile.load_lab(directory, REGISTERED)


@contextlib.contextmanager
def locked(lab_dir: Path) -> Iterator[None]:
    """Hold the lab's lock (a file in the lab dir) while the body runs. A lab dir that cannot
    hold it (gone, read-only, full) is one error line, and nothing is created on the way."""
    busy = InputError(f"another labgen command is working on {lab_dir}: wait for it to finish")
    with hold(lab_dir / ".labgen.lock", busy,
              unusable=lambda exc: fs_error(lab_dir, exc, "lock the lab directory")):
        yield


def find_lab_dir(given: Path | None) -> Path:
    """The lab dir the user means: the one given, else the current dir when it is a lab,
    else the only ./lab-* lab below it."""
    if given is not None:
        if not is_lab_dir(given):
            raise InputError(f"{given} is not a labgen lab (no {LAB_FILE}): pass the lab's directory")
        return given
    here = Path.cwd()
    if is_lab_dir(here):
        return Path(".")
    found = sorted(p.relative_to(here) for p in here.glob("lab-*") if is_lab_dir(p))
    if len(found) == 1:
        return found[0]
    if not found:
        raise InputError("no lab here: pass its directory (e.g. labgen verify lab-gre), "
                         "or create one with labgen create gre")
    raise InputError(f"several labs here ({', '.join(map(str, found))}): pass the one you mean")


def provider_of(lab: Lab) -> Provider:
    return providers.get(lab.provider)


def owned(lab: Lab, lab_dir: Path) -> Owner | None:
    """The owner recorded on the host for the lab's name, when it is this directory's (None:
    no lab of that name runs here). Every verb on a running lab asks this first: another
    directory's lab of the same name is refused (NotOwner), never verified or destroyed."""
    record = provider_of(lab).record(lab)
    owner.check(record, lab_dir, lab.name)
    return record


def _unattributed(lab: Lab) -> NotOwner:
    return NotOwner(f"resources named for lab {lab.name!r} exist on this host but record no owner "
                    f"(a create killed at its first step, or an older labgen's): "
                    f"`labgen destroy --name {lab.name}` removes them (`labgen list` shows them)")


def _claim(lab: Lab, lab_dir: Path, provider: Provider) -> None:
    """Record that this directory's lab is being brought up, in the lab dir and on the host,
    before anything is created (a new lab gets a new id)."""
    record = owned(lab, lab_dir)
    if record is None:
        if provider.exists(lab, lab_dir):
            raise _unattributed(lab)
        mine = owner.new_owner(lab.name, lab.provider, tuple(n.name for n in lab.nodes), lab_dir)
    else:
        mine = owner.started_by_me(record)
    owner.write_claim(lab_dir, mine)
    provider.write_record(lab, mine)


def finished(lab: Lab, lab_dir: Path) -> None:
    """The create or up that this process runs is complete: the lab is whole."""
    provider = provider_of(lab)
    record = provider.record(lab)
    if record is not None and record.unfinished:
        owner.write_claim(lab_dir, record.done())
        provider.write_record(lab, record.done())


def render(lab: Lab, lab_dir: Path, force: bool) -> list[Path]:
    """Write the lab dir. An existing lab dir whose lab has no resources left may be
    re-rendered without --force (a failed or destroyed lab is just files); one whose lab
    runs under another directory is just files here too."""
    if is_lab_dir(lab_dir) and not force:
        old = load_lab(lab_dir)
        try:
            running = owned(old, lab_dir) is not None
        except NotOwner:
            running = False
        if running:
            raise InputError(f"{lab_dir} holds lab {old.name!r}, which is still up: "
                             f"`labgen destroy {lab_dir}` first")
        force = True
    return write_lab(lab, lab_dir, provider_of(lab), force=force)


def up(lab: Lab, lab_dir: Path, say: Progress, keep_on_failure: bool = False,
       done: bool = True) -> float:
    """Bring the lab up. If that fails or is interrupted, tear down what THIS call created
    (a lab that was already running stays, whatever its state), unless keep_on_failure.
    done=False: the caller calls finished() once its own work (verify) is over."""
    started = time.monotonic()
    provider = provider_of(lab)
    existed = provider.exists(lab, lab_dir)
    _claim(lab, lab_dir, provider)
    try:
        provider.up(lab, lab_dir, say)
    except BaseException:
        if not existed and not keep_on_failure:
            say("lab", "bring-up failed: tearing down what was created (--keep-on-failure keeps it)")
            provider.destroy(lab, lab_dir, say)
            owner.drop_claim(lab_dir)
        raise
    if done:
        finished(lab, lab_dir)
    return time.monotonic() - started


def run_verify(lab: Lab, lab_dir: Path, timeout: float | None,
               progress: Callable[[str], None] = lambda _: None) -> Report:
    from labgen.verify import livetree
    from labgen.verify.diagnostics import collect_diagnostics
    from labgen.verify.run import verify
    provider = provider_of(lab)
    record = owned(lab, lab_dir)
    absent = [s.node for s in provider.status(lab, lab_dir) if s.state != "running"] \
        if record is not None else [n.name for n in lab.nodes]
    if len(absent) == len(lab.nodes):
        raise LabgenError(f"lab {lab.name!r} in {lab_dir} is not up: run labgen up {lab_dir}")
    runners = {n.name: provider.runner(lab, lab_dir, n.name) for n in lab.nodes}
    try:
        report = verify(lab, runners, provider, timeout=timeout, progress=progress)
        livetree.draw_after_verify(lab, lab_dir, runners)
        if not report.passed:
            report.findings = collect_diagnostics(lab, runners, lab_dir / "diagnostics")
        return report
    finally:
        for r in runners.values():
            r.close()


def run_failover(lab: Lab, lab_dir: Path, links: list[LabLink], timeout: float | None,
                 max_outage: float | None, say: Progress) -> FailoverReport:
    """Cut each of `links` in turn on the running lab (failover.py), through the same runners
    verify uses. Every node must run: a lab that is not whole cannot be proven to heal."""
    from labgen.failover.run import run_failover as run
    provider = provider_of(lab)
    record = owned(lab, lab_dir)
    absent = [s.node for s in provider.status(lab, lab_dir) if s.state != "running"] \
        if record is not None else [n.name for n in lab.nodes]
    if absent:
        raise LabgenError(f"lab {lab.name!r} in {lab_dir} is not up ({', '.join(absent)} not "
                          f"running): run labgen up {lab_dir}")
    from labgen.verify import livetree

    def draw(state: dict[str, dict[str, BridgeState]], step: str, cut: tuple[str, str, str] | None,
             took_over: tuple[tuple[str, str, str], ...]) -> None:
        livetree.write(lab_dir, livetree.dot_text(lab, state, step, cut, took_over))
    runners = {n.name: provider.runner(lab, lab_dir, n.name) for n in lab.nodes}
    try:
        return run(lab, runners, links, timeout if timeout is not None else lab.settle_timeout,
                   max_outage, say, draw)
    finally:
        for r in runners.values():
            r.close()


def destroy(lab: Lab, lab_dir: Path, say: Progress) -> None:
    """Remove this directory's lab; refused (NotOwner) when the lab running under its name
    is another directory's, or records no owner."""
    provider = provider_of(lab)
    record = owned(lab, lab_dir)
    if record is None and provider.exists(lab, lab_dir):
        raise _unattributed(lab)
    if record is not None:      # a destroy killed part way leaves the lab listed as partial
        provider.write_record(lab, owner.started_by_me(record))
    provider.destroy(lab, lab_dir, say)
    owner.drop_claim(lab_dir)


def status(lab: Lab, lab_dir: Path) -> list[NodeStatus]:
    """Per node: provider state, then what OVS says (tunnel ports, spanning tree: one poll of
    the same judgement verify uses, so 'converged' means one root for all nodes)."""
    from labgen.nodes.runner import RunnerError
    from labgen.verify.checks import run_stp_checks
    provider = provider_of(lab)
    if owned(lab, lab_dir) is None:
        return [NodeStatus(n.name, "absent", "not running (no lab of this directory here)") for n in lab.nodes]
    result = provider.status(lab, lab_dir)
    runners = {st.node: provider.runner(lab, lab_dir, st.node) for st in result if st.state == "running"}
    try:
        for st in result:
            if st.node not in runners:
                continue
            runner = runners[st.node]
            try:
                ovs = runner.run("ovs-vsctl --timeout=5 get Open_vSwitch . ovs_version", timeout=10)
                # the version is in the database: the switch daemon is asked on its own socket
                switch = runner.run("ovs-appctl --timeout=5 version", timeout=10) if ovs.ok else ovs
                st.facts["ovs"] = (ovs.stdout.strip().strip('"') if switch.ok else "ovs-vswitchd not answering") \
                    if ovs.ok else "ovsdb-server not answering"
                if ovs.ok:
                    ports = runner.run(f"ovs-vsctl --timeout=5 list-ports {lab.tunnel_bridge}", timeout=10)
                    tunnels = {t.port for t in lab.node(st.node).tunnels}
                    st.facts["tunnels"] = ", ".join(p for p in ports.stdout.split() if p in tunnels) or "none"
            except RunnerError as exc:
                st.facts["ovs"] = f"unreachable: {exc}"
        if len(runners) == len(lab.nodes):
            checks = run_stp_checks(lab, runners, timeout=0)
            tree = next(c for c in checks if c.node == "all")
            for check in checks:
                for st in (s for s in result if s.node == check.node):
                    st.facts["stp"] = "converged" if check.passed and tree.passed else \
                        ("not one spanning tree yet" if check.passed else check.evidence)
    finally:
        for r in runners.values():
            r.close()
    return result
