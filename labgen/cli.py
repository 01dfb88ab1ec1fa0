"""The command line: a thin layer that turns flags into Options and calls lifecycle."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from . import __version__, lifecycle, tunnels
from . import boxes as box_catalog
from .errors import LabgenError
from .model import DEFAULT_BOX, Options, build_lab
from .render import load_lab
from .report import PLAIN_WIDTH, is_plain, new_table, print_report, summary, to_json, write_junit

app = typer.Typer(add_completion=True, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Stand up, prove and tear down Open vSwitch GRE/VXLAN overlay labs.")
box_app = typer.Typer(no_args_is_help=True, help="Build boxes locally.")
app.add_typer(box_app, name="box")

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)
# CI logs and pipes are not terminals: rich would squeeze tables into 80 columns there.
# They get 100 columns (tables are laid out to fit), or what COLUMNS says.
for _c in (out, err):
    if not _c.is_terminal and not os.environ.get("COLUMNS", "").isdigit():
        _c.width = PLAIN_WIDTH


class Progress:
    """Progress lines with elapsed time: '  12.3s node1: provisioning'."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self, node: str, message: str) -> None:
        # One line each, however long (a URL, a path): logs are read line by line.
        err.print(f"[dim]{time.monotonic() - self.started:6.1f}s[/] [bold]{node}[/]: {escape(message)}",
                  soft_wrap=True, highlight=False)


def fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {message}", markup=True, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _version(value: bool) -> None:
    if value:
        out.print(f"labgen {__version__}")
        raise typer.Exit()


@app.callback()
def root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                               help="Show the version and exit.")] = False) -> None:
    pass


# ---- the options that describe a lab (shared by render and create) -----------------------
Tunnel = Annotated[str, typer.Argument(help=f"Tunnel type: {', '.join(tunnels.NAMES[:-1])} or {tunnels.NAMES[-1]}.", show_default=False)]
Dir = Annotated[Optional[Path], typer.Option("--dir", help="Lab directory [default: ./lab-NAME].")]
Name = Annotated[Optional[str], typer.Option(help="Lab name: libvirt network, domain and namespace prefix [default: the tunnel type].")]
Nodes = Annotated[int, typer.Option(help="Number of nodes, 2-8 (full tunnel mesh).")]
ProviderOpt = Annotated[str, typer.Option("--provider", help="libvirt (Vagrant VMs) or netns (namespaces on this host).")]
BoxOpt = Annotated[Optional[str], typer.Option(help=f"Box from the catalog (labgen boxes) [default: {DEFAULT_BOX['libvirt']}].")]
Datapath = Annotated[Optional[str], typer.Option(help="OVS datapath: system or netdev [default: system for VMs, netdev for netns].")]
Stp = Annotated[str, typer.Option(help="Loop protection on br1/br2/br3: stp or rstp.")]
StpTimers = Annotated[str, typer.Option(help="STP timers: tuned (forward-delay 4, max-age 6) or standard.")]
Underlay = Annotated[str, typer.Option(help="Underlay network (node k = .k).")]
Overlay = Annotated[str, typer.Option(help="Overlay network of the namespaces.")]
UnderlayMtu = Annotated[int, typer.Option(help="Underlay MTU; the inner MTU is this minus the tunnel overhead.")]
Key = Annotated[Optional[int], typer.Option("--key", "--vni", help="GRE key or VXLAN VNI.")]
Memory = Annotated[int, typer.Option(help="MiB of memory per VM.")]
Cpus = Annotated[int, typer.Option(help="vCPUs per VM.")]
Driver = Annotated[str, typer.Option(help="libvirt driver: kvm, qemu (software emulation) or auto.")]
Force = Annotated[bool, typer.Option(help="Write into a directory that is not a labgen lab.")]


def _options(tunnel, name, nodes, provider, box, datapath, stp, stp_timers, underlay, overlay,
             underlay_mtu, key, memory, cpus, libvirt_driver) -> Options:
    return Options(tunnel=tunnel, nodes=nodes, provider=provider, box=box, datapath=datapath,
                   stp=stp, stp_timers=stp_timers, underlay=underlay, overlay=overlay,
                   underlay_mtu=underlay_mtu, key=key, memory=memory, cpus=cpus,
                   libvirt_driver=libvirt_driver, name=name)


def _model(opts: Options, directory: Optional[Path]):
    """The validated lab and where it goes (./lab-NAME unless --dir)."""
    lab = build_lab(opts)
    return lab, directory or Path(f"lab-{lab.name}")


@app.command()
def render(
    tunnel: Tunnel, dir: Dir = None, name: Name = None, nodes: Nodes = 2,
    provider: ProviderOpt = "libvirt", box: BoxOpt = None, datapath: Datapath = None,
    stp: Stp = "stp", stp_timers: StpTimers = "tuned", underlay: Underlay = "10.10.10.0/24",
    overlay: Overlay = "192.168.10.0/24", underlay_mtu: UnderlayMtu = 1500, key: Key = None,
    memory: Memory = 1024, cpus: Cpus = 1, libvirt_driver: Driver = "auto", force: Force = False,
) -> None:
    """Write a lab directory: Vagrantfile, provision/nodeK.sh, lab.json, topology, README."""
    try:
        lab, lab_dir = _model(_options(tunnel, name, nodes, provider, box, datapath, stp, stp_timers,
                                       underlay, overlay, underlay_mtu, key, memory, cpus,
                                       libvirt_driver), dir)
        written = lifecycle.render(lab, lab_dir, force)
    except LabgenError as exc:
        fail(str(exc), exc.exit_code)
    out.print(f"rendered lab [bold]{lab.name}[/] ({lab.tunnel}, {len(lab.nodes)} nodes, "
              f"provider {lab.provider}) in {lab_dir}/")
    for path in written:
        out.print(f"  {path.relative_to(lab_dir)}")
    out.print(f"next: labgen up {lab_dir}  (or labgen create to render, boot and verify in one go)")


@app.command()
def create(
    tunnel: Tunnel, dir: Dir = None, name: Name = None, nodes: Nodes = 2,
    provider: ProviderOpt = "libvirt", box: BoxOpt = None, datapath: Datapath = None,
    stp: Stp = "stp", stp_timers: StpTimers = "tuned", underlay: Underlay = "10.10.10.0/24",
    overlay: Overlay = "192.168.10.0/24", underlay_mtu: UnderlayMtu = 1500, key: Key = None,
    memory: Memory = 1024, cpus: Cpus = 1, libvirt_driver: Driver = "auto", force: Force = False,
    destroy: Annotated[bool, typer.Option("--destroy", help="Tear the lab down at the end, whatever the result (CI).")] = False,
    keep_on_failure: Annotated[bool, typer.Option(help="Keep a lab whose bring-up failed, for inspection.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the verification as JSON.")] = False,
    junit: Annotated[Optional[Path], typer.Option(help="Write the verification as JUnit XML.")] = None,
    timeout: Annotated[Optional[float], typer.Option(help="Seconds to wait for spanning tree [default: by STP mode].")] = None,
) -> None:
    """Render, bring up and verify a lab; exit 0 only when it is verified."""
    say = Progress()
    try:
        lab, lab_dir = _model(_options(tunnel, name, nodes, provider, box, datapath, stp, stp_timers,
                                       underlay, overlay, underlay_mtu, key, memory, cpus,
                                       libvirt_driver), dir)
        # Host checks come before anything is written: a lab that cannot start is not rendered.
        lifecycle.provider_of(lab).check(lab, lab_dir)
        lifecycle.render(lab, lab_dir, force)
    except LabgenError as exc:
        fail(str(exc), exc.exit_code)
    say("lab", f"rendered {lab.name} ({lab.tunnel}, {len(lab.nodes)} nodes, {lab.provider}) in {lab_dir}/")
    code = 1
    try:
        with lifecycle.locked(lab_dir):
            seconds = lifecycle.up(lab, lab_dir, say, keep_on_failure)
            say("lab", f"up in {seconds:.1f} s; verifying")
            report = lifecycle.run_verify(lab, lab_dir, timeout, progress=lambda s: say("verify", s))
            _emit(report, json_out, junit, lab_dir)
            code = 0 if report.passed else 1
            if destroy:
                lifecycle.destroy(lab, lab_dir, say)
                say("lab", "destroyed")
    except LabgenError as exc:
        if destroy:
            _quiet_destroy(lab, lab_dir, say)
        fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        if not keep_on_failure:
            _quiet_destroy(lab, lab_dir, say)
        fail("interrupted" + ("" if keep_on_failure else ": the lab was torn down"), 130)
    raise typer.Exit(code)


def _quiet_destroy(lab, lab_dir, say) -> None:
    try:
        lifecycle.destroy(lab, lab_dir, say)
    except LabgenError as exc:
        err.print(f"[red]tear-down failed too:[/] {exc}")


def _emit(report, json_out: bool, junit: Optional[Path], lab_dir: Path) -> None:
    if json_out:
        print(to_json(report))
    else:
        print_report(report, out)
    if junit:
        write_junit(report, junit)
    if not report.passed:
        for line in report.findings:
            err.print(line, markup=False, highlight=False)
        err.print(f"diagnostics per node: {lab_dir / 'diagnostics'}/", highlight=False)
    elif json_out:
        err.print(summary(report), markup=False)


LabDir = Annotated[Optional[Path], typer.Argument(help="Lab directory (default: . or the only ./lab-*).", show_default=False)]


def _load(directory: Optional[Path]):
    lab_dir = lifecycle.find_lab_dir(directory)
    return load_lab(lab_dir), lab_dir


@app.command()
def up(lab_dir: LabDir = None,
       keep_on_failure: Annotated[bool, typer.Option(help="Keep what a failed bring-up created, for inspection.")] = False,
       ) -> None:
    """Bring a rendered lab up; on a running lab, provision again (changes nothing)."""
    say = Progress()
    try:
        lab, lab_dir = _load(lab_dir)
        lifecycle.provider_of(lab).check(lab, lab_dir)
        with lifecycle.locked(lab_dir):
            seconds = lifecycle.up(lab, lab_dir, say, keep_on_failure)
    except LabgenError as exc:
        fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        fail("interrupted", 130)
    say("lab", f"up in {seconds:.1f} s; next: labgen verify {lab_dir}")


@app.command()
def verify(
    lab_dir: LabDir = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    junit: Annotated[Optional[Path], typer.Option(help="Write the result as JUnit XML.")] = None,
    timeout: Annotated[Optional[float], typer.Option(help="Seconds to wait for spanning tree [default: by STP mode].")] = None,
) -> None:
    """Prove the lab: nodes, underlay, spanning tree, overlay pings, tunnel capture, MTU.
    Exit 0 all passed, 1 some failed, 2 could not run."""
    try:
        lab, lab_dir = _load(lab_dir)
        with lifecycle.locked(lab_dir):
            report = lifecycle.run_verify(lab, lab_dir, timeout)
    except LabgenError as exc:
        fail(str(exc), 2)
    _emit(report, json_out, junit, lab_dir)
    raise typer.Exit(0 if report.passed else 1)


@app.command()
def status(lab_dir: LabDir = None,
           json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Per node: up or not, Open vSwitch answering, tunnel ports, spanning tree state."""
    try:
        lab, lab_dir = _load(lab_dir)
        states = lifecycle.status(lab, lab_dir)
    except LabgenError as exc:
        fail(str(exc), exc.exit_code)
    if json_out:
        import json
        print(json.dumps([{"node": s.node, "state": s.state, "detail": s.detail, **s.facts}
                          for s in states], indent=2))
    else:
        t = new_table(f"lab {lab.name} ({lab.tunnel}, {lab.provider}) in {lab_dir}", is_plain(out))
        for col in ("node", "state", "ovs", "tunnels", "stp", "detail"):
            t.add_column(col)
        for s in states:
            t.add_row(s.node, s.state, s.facts.get("ovs", "-"), s.facts.get("tunnels", "-"),
                      s.facts.get("stp", "-"), s.detail)
        out.print(t)
    raise typer.Exit(0 if all(s.state == "running" for s in states) else 3)


@app.command()
def destroy(lab_dir: LabDir = None) -> None:
    """Tear the lab down: leaves no namespaces, daemons, domains, networks or volumes."""
    say = Progress()
    try:
        lab, lab_dir = _load(lab_dir)
        with lifecycle.locked(lab_dir):
            lifecycle.destroy(lab, lab_dir, say)
    except LabgenError as exc:
        fail(str(exc), exc.exit_code)
    say("lab", f"destroyed {lab.name}; the files stay in {lab_dir}/")


@app.command()
def shell(node: Annotated[str, typer.Argument(help="Node name, e.g. node1.")] = "node1",
          lab_dir: Annotated[Optional[Path], typer.Option("--dir", help="Lab directory.")] = None) -> None:
    """Open a shell inside a node (netns labs; for VM labs use `vagrant ssh NODE`)."""
    try:
        lab, lab_dir = _load(lab_dir)
        lab.node(node)
    except KeyError:
        fail(f"no node {node!r} in lab {lab.name}: use one of {', '.join(n.name for n in lab.nodes)}")
    except LabgenError as exc:
        fail(str(exc), exc.exit_code)
    if lab.provider != "netns":
        fail(f"lab {lab.name} runs on VMs: cd {lab_dir} && vagrant ssh {node}")
    prov = lifecycle.provider_of(lab)
    argv = prov.enter(lab, node) + [os.environ.get("SHELL", "/bin/bash")]
    os.execvp(argv[0], argv)


NodeArg = Annotated[str, typer.Argument(help="Node name, e.g. node1.", show_default=False)]
NodeDir = Annotated[Optional[Path], typer.Option("--dir", help="Lab directory (default: . or the only ./lab-*).")]


def _node_target(node: str, lab_dir: Optional[Path], namespace: Optional[str] = None):
    from . import nodeio
    lab, lab_dir = _load(lab_dir)
    return nodeio.target(lab, lab_dir, lifecycle.provider_of(lab), node, namespace)


@app.command("exec")
def exec_(
    node: NodeArg,
    command: Annotated[list[str], typer.Argument(help="The command and its arguments (after --).", show_default=False)],
    ns: Annotated[Optional[str], typer.Option("--ns", help="Run inside this namespace of the node, e.g. A1.")] = None,
    lab_dir: NodeDir = None,
) -> None:
    """Run a command on a node (or in one of its namespaces) and exit with its exit code,
    e.g. labgen exec node1 --ns A1 -- ping -c 3 192.168.10.2"""
    from . import nodeio
    try:
        t = _node_target(node, lab_dir, ns)
        code = nodeio.run_exec(t, command, ns)
    except LabgenError as exc:
        fail(str(exc), exc.exit_code)
    raise typer.Exit(code)


@app.command()
def capture(
    node: NodeArg,
    count: Annotated[int, typer.Option("--count", "-c", help="Stop after this many packets (0: only on Ctrl-C).")] = 20,
    write: Annotated[Optional[Path], typer.Option("--write", "-w", help="Also save the packets to this pcap file.")] = None,
    lab_dir: NodeDir = None,
) -> None:
    """Show the tunnel traffic on a node's underlay NIC, decoded (tcpdump -nn -v): GRE with
    the STP BPDUs inside, or VXLAN on UDP 4789. Stops after --count packets or on Ctrl-C."""
    from . import nodeio
    try:
        t = _node_target(node, lab_dir)
        nodeio.run_capture(t, count, write, note=lambda s: err.print(f"capture {node}: {s}", markup=False,
                                                                      highlight=False, soft_wrap=True))
    except LabgenError as exc:
        fail(str(exc), exc.exit_code)


@app.command()
def boxes() -> None:
    """The box catalog: one file per box in boxes/, plus the *.toml files in the directories
    of LABGEN_BOXES_DIR (colon-separated; a box there replaces a shipped one of that name)."""
    t = new_table("labgen boxes", is_plain(out))
    for col in ("name", "family", "providers", "description", "source"):
        t.add_column(col, overflow="fold")
    try:
        catalog = box_catalog.catalog()
    except LabgenError as exc:
        fail(str(exc), exc.exit_code)
    for b in catalog.values():
        source = f"labgen box build {b.build}" if b.build else (b.url and "URL in catalog") or \
            ("this host" if b.family == "host" else "Vagrant catalog")
        t.add_row(b.name, b.family, ", ".join(b.providers),
                  b.description + (f" [yellow]({b.note})[/]" if b.note else ""), source)
    out.print(t)


@app.command()
def doctor(
    provider: Annotated[Optional[str], typer.Option(help="Check only this provider: libvirt or netns.")] = None,
    box: BoxOpt = None,
) -> None:
    """Check this host for each provider; one line per problem with its fix. Exit 1 if any.
    Missing system packages are named with the one apt-get command that installs them all."""
    import re

    from rich.markup import escape

    from . import providers
    from .hostfacts import apt_install_command
    bad = 0
    wanted: dict[str, list[str]] = {}   # provider -> the Debian packages it lacks
    for name in [provider] if provider else ["netns", "libvirt"]:
        try:
            lab = build_lab(Options(tunnel=tunnels.NAMES[0], provider=name, box=box if name == "libvirt" else None))
            problems = providers.get(name).host_problems(lab)
        except (LabgenError, KeyError) as exc:
            fail(str(exc) if isinstance(exc, LabgenError) else f"unknown provider {name!r}: use libvirt or netns")
        if name == "libvirt" and lab.libvirt_driver == "qemu":
            out.print("[yellow]note[/] libvirt: KVM is not usable here; VMs use software emulation "
                      "(qemu driver), about a minute per boot", soft_wrap=True)
        # Fine but worth knowing, e.g. a box that create will download first.
        for note in getattr(providers.get(name), "host_notes", lambda _lab: [])(lab):
            out.print(f"[yellow]note[/] {name}: {escape(note)}", soft_wrap=True, highlight=False)
        for p in problems:
            out.print(f"[red]problem[/] {name}: {escape(p)}", soft_wrap=True, highlight=False)
            wanted.setdefault(name, []).extend(re.findall(r"\(package ([^)\s]+)\)", p))
        if not problems:
            out.print(f"[green]ok[/] {name}: ready" + (f" (box {lab.box.name})" if name == "libvirt" else ""))
        bad += len(problems)
    if len([pkgs for pkgs in wanted.values() if pkgs]) > 1:
        everything = [pkg for pkgs in wanted.values() for pkg in pkgs]
        out.print(f"[yellow]fix[/] all providers: {apt_install_command(everything)}",
                  soft_wrap=True, highlight=False)
    raise typer.Exit(1 if bad else 0)


@box_app.command("build")
def box_build(
    name: Annotated[str, typer.Argument(help="Box recipe, e.g. debian12.")] = "debian12",
    force: Annotated[bool, typer.Option(help="Rebuild even when a built box is cached.")] = False,
) -> None:
    """Build a box locally from Debian's packages (OVS preinstalled) and add it to Vagrant."""
    from .boxbuild import build_box
    say = Progress()
    try:
        built = build_box(name, force=force, progress=lambda msg: say("box", msg))
    except LabgenError as exc:
        fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        fail("interrupted: nothing was added to Vagrant", 130)
    say("box", f"{built.name} {built.version} ready ({'reused' if built.reused else 'built'}: {built.path})")


# typer vendors click; its UsageError is BadParameter's base class (no public name for it).
_UsageError = typer.BadParameter.__mro__[1]


def main() -> None:
    try:
        code = app(standalone_mode=False)
    except typer.Exit as exc:
        code = exc.exit_code
    except _UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":
            sys.exit(0)     # typer has printed the help already
        # One line, like every other error: what is wrong, and where help is.
        cmd = exc.ctx.command_path if exc.ctx else "labgen"
        err.print(f"[bold red]error:[/] {exc.format_message()} (see {cmd} --help)", soft_wrap=True)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        err.print("interrupted")
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
