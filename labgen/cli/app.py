"""The command line: a thin layer that turns flags into Options and calls lifecycle;
tables and reports come from report.py, host checks from the providers (doctor.py)."""
from __future__ import annotations

import dataclasses
import inspect
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from labgen import __version__, lifecycle, providers
from labgen.errors import ExitCode, LabgenError
from labgen.lab import boxes as box_catalog
from labgen.lab import tunnels
from labgen.lab.model import Lab, Options, check_timeout
from labgen.term import err, out

if TYPE_CHECKING:
    from rich.console import Console

    from labgen.cli import nodeio
    from labgen.failover.run import FailoverReport
    from labgen.verify.results import Report
from labgen.report.tables import (
    PLAIN_WIDTH,
    boxes_table,
    is_plain,
    labs_table,
    print_report,
    status_json,
    status_table,
    summary,
    to_dict,
    to_json,
    unwritable,
)


def _either(words: list[str]) -> str:
    """'a, b or c': help names every tunnel kind from labgen/lab/tunnels.py."""
    return f"{', '.join(words[:-1])} or {words[-1]}"


app = typer.Typer(add_completion=True, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Stand up, prove and tear down Open vSwitch overlay labs: "
                       f"{_either([k.title for k in tunnels.KINDS.values()])} tunnels "
                       "between VMs or between network namespaces on this host.")
box_app = typer.Typer(no_args_is_help=True, help="Build boxes locally.")
app.add_typer(box_app, name="box")


def tables() -> Console:
    """The rich console for tables on standard output (rich is loaded only for these).
    CI logs and pipes are not terminals: rich would squeeze tables into 80 columns there;
    they get 100 columns (tables are laid out to fit), or what COLUMNS says."""
    console = out.rich
    if not console.is_terminal and not os.environ.get("COLUMNS", "").isdigit():
        console.width = PLAIN_WIDTH
    return console


class ProgressPrinter:
    """The providers' Progress callback for a terminal or a log: progress lines with elapsed time: '  12.3s node1: provisioning'."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self, node: str, message: str) -> None:
        # One line each, however long (a URL, a path): logs are read line by line.
        err.line((f"{time.monotonic() - self.started:6.1f}s", "dim"), " ", (node, "bold"), f": {message}")


def fail(message: str, code: int = ExitCode.USAGE) -> NoReturn:
    err.line(("error:", "bold red"), f" {message}")
    raise typer.Exit(code)


def _version(value: bool) -> None:
    if value:
        out.line(f"labgen {__version__}")
        raise typer.Exit()


@app.callback()
def root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                               help="Show the version and exit.")] = False) -> None:
    pass


# ---- the options that describe a lab: declared once, defaults from model.Options ---------
# (field of Options -> its type and typer option; the commands get them through @lab_options)
LAB_OPTIONS: dict[str, tuple[Any, Any]] = {
    "name": (str | None, typer.Option(help="Lab name: libvirt network, domain and namespace prefix (default: the tunnel type).")),
    "nodes": (int, typer.Option(help="Number of nodes, 2-8 (full tunnel mesh).")),
    "provider": (str, typer.Option("--provider", help="Where the nodes run: libvirt (Vagrant VMs) or netns (network namespaces on this host).")),
    "box": (str | None, typer.Option(help="Box from the catalog (labgen boxes) (default: the provider's, centos/stream9 for VMs).")),
    "datapath": (str | None, typer.Option(help="OVS datapath: system or netdev (default: system for VMs, netdev for netns).")),
    "stp": (str, typer.Option(help="Loop protection on br1/br2/br3: stp or rstp.")),
    "stp_timers": (str, typer.Option(help="STP timers: tuned (STP: forward-delay 4, max-age 6; RSTP: transmit hold count 10) or standard.")),
    "underlay": (str, typer.Option(help="Underlay network (node k = .k).")),
    "overlay": (str, typer.Option(help="Overlay network of the namespaces.")),
    "underlay_mtu": (int | None, typer.Option(help="Underlay MTU; the inner MTU is this minus the tunnel overhead (default: 1500, 1458 across hosts).")),
    "key": (int | None, typer.Option("--key", help="GRE key or VXLAN / Geneve VNI (or --vni).")),
    "memory": (int, typer.Option(help="MiB of memory per VM.")),
    "cpus": (int, typer.Option(help="vCPUs per VM.")),
    "libvirt_driver": (str, typer.Option(help="libvirt driver: kvm, qemu (software emulation) or auto.")),
    "hosts": (list[str] | None, typer.Option("--host", metavar="NODE=URI", help="Run NODE on the libvirt host at URI (repeatable; the other nodes run here).")),
}
Tunnel = Annotated[str, typer.Argument(help=f"Tunnel type: {', '.join(tunnels.NAMES[:-1])} or {tunnels.NAMES[-1]}.", show_default=False)]
Dir = Annotated[Path | None, typer.Option("--dir", help="Lab directory (default: ./lab-NAME).")]
Force = Annotated[bool, typer.Option(help="Write into a directory that is not a labgen lab.")]
BoxOpt = Annotated[str | None, typer.Option(help="Box from the catalog (labgen boxes).")]
# --vni is --key by another name: a parameter of its own, so that giving both is refused.
Vni = Annotated[int | None, typer.Option("--vni", help="The same number as --key (VXLAN and Geneve call it VNI).")]


MaxOutage = Annotated[float | None, typer.Option("--max-outage", metavar="SECONDS", help="Fail when traffic stops longer than this on any cut or restore.")]


def _given(ctx: typer.Context, param: str) -> bool:
    """Whether the user gave this option (its value may still equal the default)."""
    source = ctx.get_parameter_source(param)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def lab_options(fn: Callable[..., None]) -> Callable[..., None]:
    """Give a command the tunnel argument, --dir, every lab option and --force, and call it
    with them as (opts: Options, lab_dir: Path, force: bool, **its own options)."""
    defaults = {f.name: f.default for f in dataclasses.fields(Options)}
    kw = inspect.Parameter.KEYWORD_ONLY
    shared = [inspect.Parameter("tunnel", kw, annotation=Tunnel),
              inspect.Parameter("dir", kw, default=None, annotation=Dir)]
    defaults["hosts"] = None    # typer's "not given" for a repeatable option
    shared += [inspect.Parameter(field, kw, default=defaults[field], annotation=Annotated[typ, opt])
               for field, (typ, opt) in LAB_OPTIONS.items()]
    shared.insert([p.name for p in shared].index("key") + 1,
                  inspect.Parameter("vni", kw, default=None, annotation=Vni))
    shared.append(inspect.Parameter("force", kw, default=False, annotation=Force))
    shared.append(inspect.Parameter("ctx", kw, annotation=typer.Context))
    own = [p.replace(kind=kw) for name, p in inspect.signature(fn, eval_str=True).parameters.items()
           if name not in ("lab", "lab_dir", "force")]

    def command(**values: Any) -> None:
        ctx = values.pop("ctx")
        given = {f: values.pop(f) for f in LAB_OPTIONS}
        named = {f for f in LAB_OPTIONS if _given(ctx, f)}
        vni = values.pop("vni")
        if vni is not None:
            if given["key"] is not None:
                fail("--key and --vni name the same number: give one")
            given["key"], named = vni, named | {"key"}
        opts = Options(tunnel=values.pop("tunnel"), **given | {"hosts": tuple(given["hosts"] or ())},
                       given=frozenset(named))
        directory, force = values.pop("dir"), values.pop("force")
        try:
            lab = lifecycle.build_lab(opts)
        except LabgenError as exc:
            fail(str(exc), exc.exit_code)
        fn(lab=lab, lab_dir=directory or Path(f"lab-{lab.name}"), force=force, **values)

    command.__name__, command.__doc__ = fn.__name__, fn.__doc__
    command.__signature__ = inspect.Signature(shared + own)  # type: ignore[attr-defined]
    return command


@app.command()
@lab_options
def render(lab: Lab, lab_dir: Path, force: bool) -> None:
    """Write a lab directory: Vagrantfile, provision/nodeK.sh, lab.json, topology, README.

    A node on another libvirt host: --host node2=qemu+ssh://root@hv-b/system"""
    try:
        written = lifecycle.render(lab, lab_dir, force)
    except LabgenError as exc:
        fail(str(exc), exc.exit_code)
    out.line("rendered lab ", (lab.name, "bold"), f" ({lab.tunnel}, {len(lab.nodes)} nodes, "
             f"provider {lab.provider}) in {lab_dir}/")
    for path in written:
        out.line(f"  {path.relative_to(lab_dir)}")
    out.line(f"next: labgen up {lab_dir}  (or labgen create to render, boot and verify in one go)")


@app.command()
@lab_options
def create(
    lab: Lab, lab_dir: Path, force: bool,
    destroy: Annotated[bool, typer.Option("--destroy", help="Tear the lab down at the end, whatever the result (CI).")] = False,
    keep_on_failure: Annotated[bool, typer.Option(help="Keep a lab whose bring-up failed, for inspection.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the verification as JSON.")] = False,
    junit: Annotated[Path | None, typer.Option(help="Write the verification as JUnit XML.")] = None,
    timeout: Annotated[float | None, typer.Option(help="Seconds to wait for spanning tree (default: by STP mode).")] = None,
    failover: Annotated[bool, typer.Option("--failover", help="Once verified, cut every redundant link in turn and measure the outage (labgen failover).")] = False,
    max_outage: MaxOutage = None,
) -> None:
    """Render, bring up and verify a lab; exit 0 only when it is verified (and, with
    --failover, every redundant link healed).

    A node on another libvirt host: --host node2=qemu+ssh://root@hv-b/system"""
    if destroy and keep_on_failure:
        fail("--destroy tears the lab down whatever the result and --keep-on-failure keeps a "
             "failed one: give one")
    if max_outage is not None and not failover:
        fail("--max-outage gates the outages that --failover measures: add --failover")
    _check_run_options(timeout, junit)
    _check_max_outage(max_outage)
    say = ProgressPrinter()
    try:
        # Host checks come before anything is written: a lab that cannot start is not rendered.
        lifecycle.owned(lab, lab_dir)      # another directory's lab of this name: refused
        lifecycle.provider_of(lab).check(lab, lab_dir)
        lifecycle.render(lab, lab_dir, force)
    except LabgenError as exc:
        fail(str(exc), exc.exit_code)
    say("lab", f"rendered {lab.name} ({lab.tunnel}, {len(lab.nodes)} nodes, {lab.provider}) in {lab_dir}/")
    code = ExitCode.FAILED
    try:
        with lifecycle.locked(lab_dir):
            seconds = lifecycle.up(lab, lab_dir, say, keep_on_failure, done=False)
            say("lab", f"up in {seconds:.1f} s; verifying")
            report = lifecycle.run_verify(lab, lab_dir, timeout, progress=lambda s: say("verify", s))
            lifecycle.finished(lab, lab_dir)
            proven = None
            if failover and report.passed:
                from labgen.failover.redundancy import lab_links
                _terminate_as_interrupt()
                proven = lifecycle.run_failover(lab, lab_dir, lab_links(lab), timeout, max_outage, say)
            elif failover:
                say("failover", "not run: the lab is not verified")
            _emit(report, json_out, junit, lab_dir, proven)
            code = ExitCode.OK if report.passed and (proven is None or proven.passed) \
                and not (failover and proven is None) else ExitCode.FAILED
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
        fail("interrupted" + ("" if keep_on_failure else ": the lab was torn down"), ExitCode.INTERRUPTED)
    raise typer.Exit(code)


def _check_max_outage(seconds: float | None) -> None:
    if seconds is not None and not 0 <= seconds <= 3600:
        fail(f"--max-outage {seconds:g} is out of range: give 0 to 3600 seconds")


def _check_run_options(timeout: float | None, junit: Path | None) -> None:
    """create's and verify's own options, before anything is created or run: a --timeout in
    range, a --junit file that can be written (else it fails after the lab was built)."""
    try:
        check_timeout(timeout)
    except LabgenError as exc:
        fail(str(exc), exc.exit_code)
    problem = unwritable(junit, "--junit", "report.xml") if junit else None
    if problem:
        fail(problem)


def _quiet_destroy(lab: Lab, lab_dir: Path, say: ProgressPrinter) -> None:
    try:
        lifecycle.destroy(lab, lab_dir, say)
    except LabgenError as exc:
        err.line(("tear-down failed too:", "red"), f" {exc}")


def _emit(report: Report, json_out: bool, junit: Path | None, lab_dir: Path,
          proven: FailoverReport | None = None) -> None:
    from labgen.report import failover as failover_report
    if json_out:
        if proven is None:
            print(to_json(report))
        else:
            print(json.dumps({**to_dict(report), "failover": failover_report.to_dict(proven)}, indent=2))
    else:
        print_report(report, tables())
        if proven is not None:
            failover_report.print_report(proven, tables())
    if junit:
        from labgen.report.tables import junit_suite, write_suites
        write_suites([junit_suite(report)] + ([failover_report.junit_suite(proven)] if proven else []), junit)
    if not report.passed:
        for line in report.findings:
            err.line(line)
        err.line(f"diagnostics per node: {lab_dir / 'diagnostics'}/")
    elif json_out:
        err.line(summary(report))


LabDir = Annotated[Path | None, typer.Argument(help="Lab directory (default: . or the only ./lab-*).", show_default=False)]


def _load(directory: Path | None) -> tuple[Lab, Path]:
    lab_dir = lifecycle.find_lab_dir(directory)
    return lifecycle.load_lab(lab_dir), lab_dir


@app.command()
def up(lab_dir: LabDir = None,
       keep_on_failure: Annotated[bool, typer.Option(help="Keep what a failed bring-up created, for inspection.")] = False,
       ) -> None:
    """Bring a rendered lab up; on a running lab, provision again (changes nothing)."""
    say = ProgressPrinter()
    try:
        lab, lab_dir = _load(lab_dir)
        lifecycle.provider_of(lab).check(lab, lab_dir)
        with lifecycle.locked(lab_dir):
            seconds = lifecycle.up(lab, lab_dir, say, keep_on_failure)
    except LabgenError as exc:
        fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        fail("interrupted", ExitCode.INTERRUPTED)
    say("lab", f"up in {seconds:.1f} s; next: labgen verify {lab_dir}")


@app.command()
def verify(
    lab_dir: LabDir = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    junit: Annotated[Path | None, typer.Option(help="Write the result as JUnit XML.")] = None,
    timeout: Annotated[float | None, typer.Option(help="Seconds to wait for spanning tree (default: by STP mode).")] = None,
) -> None:
    """Prove the lab: nodes, config, underlay, spanning tree, overlay pings, tunnel capture, MTU.

    Exit 0 all passed, 1 some failed, 2 could not run."""
    _check_run_options(timeout, junit)
    try:
        lab, lab_dir = _load(lab_dir)
        with lifecycle.locked(lab_dir):
            report = lifecycle.run_verify(lab, lab_dir, timeout)
    except LabgenError as exc:
        fail(str(exc), ExitCode.USAGE)
    _emit(report, json_out, junit, lab_dir)
    raise typer.Exit(ExitCode.OK if report.passed else ExitCode.FAILED)


def _terminate_as_interrupt() -> None:
    """SIGTERM (a CI job's timeout, a kill) ends failover as Ctrl-C does: the link it cut is
    brought back up first. (Python's default for SIGTERM ends at once, mid-cut.)"""
    import signal

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, interrupt)


@app.command()
def failover(
    lab_dir: LabDir = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    junit: Annotated[Path | None, typer.Option(help="Write the result as JUnit XML.")] = None,
    max_outage: MaxOutage = None,
    link: Annotated[list[str] | None, typer.Option("--link", metavar="NAME", help="Cut only this link: NAME on every node (b12) or NODE:NAME (node1:b12); repeatable.")] = None,
    timeout: Annotated[float | None, typer.Option(help="Seconds to wait for the tree and the traffic after each cut and restore (default: by STP mode).")] = None,
) -> None:
    """Cut every redundant link in turn under a steady probe stream, measure how long traffic
    stops on the cut and on the restore, and judge the spanning tree after each. Exit 0 all
    healed, 1 an outage over --max-outage or a tree that did not hold, 2 could not run."""
    from labgen.failover.redundancy import lab_links, select
    from labgen.report import failover as failover_report
    _check_run_options(timeout, junit)
    _check_max_outage(max_outage)
    say = ProgressPrinter()
    _terminate_as_interrupt()
    try:
        lab, lab_dir = _load(lab_dir)
        chosen = select(lab_links(lab), tuple(link or ()))
        with lifecycle.locked(lab_dir):
            proven = lifecycle.run_failover(lab, lab_dir, chosen, timeout, max_outage, say)
    except LabgenError as exc:
        fail(str(exc), ExitCode.USAGE)
    except KeyboardInterrupt:
        fail("interrupted: every link that was cut is up again", ExitCode.INTERRUPTED)
    if json_out:
        print(failover_report.to_json(proven))
        err.line(failover_report.summary(proven))
    else:
        failover_report.print_report(proven, tables())
    if junit:
        from labgen.report.tables import write_suites
        write_suites([failover_report.junit_suite(proven)], junit)
    raise typer.Exit(ExitCode.OK if proven.passed else ExitCode.FAILED)


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
        print(status_json(states))
    else:
        console = tables()
        console.print(status_table(lab, lab_dir, states, is_plain(console)))
    raise typer.Exit(ExitCode.OK if all(s.state == "running" for s in states) else ExitCode.NOT_RUNNING)


HostUris = Annotated[list[str] | None, typer.Option("--host", metavar="URI", help="Also a libvirt host, e.g. qemu+ssh://root@hv-b/system (repeatable).")]


@app.command()
def destroy(
    lab_dir: LabDir = None,
    name: Annotated[str | None, typer.Option("--name", help="Remove the lab of this name on this host whose directory is gone (see labgen list).")] = None,
    provider: Annotated[str | None, typer.Option("--provider", help="With --name: the lab's provider, when both have one of that name.")] = None,
    host: HostUris = None,
) -> None:
    """Tear the lab down: leaves no namespaces, daemons, domains, networks or volumes.

    Only this directory's lab: another directory's lab of the same name is refused."""
    say = ProgressPrinter()
    if name is None and (provider or host):
        fail("--provider and --host go with --name (a lab directory names its own)")
    if provider == "netns" and host:
        fail("--host names libvirt hosts; the netns provider's labs are on this host: drop --host")
    if name is not None:
        from labgen.cli import inventory
        if lab_dir is not None:
            fail("give a lab directory or --name, not both")
        try:
            parts = inventory.by_name(name, provider, tuple(host or ()))
            for found in parts:
                inventory.refuse_if_owned(found)
            for found in parts:
                inventory.remove(found, say)
        except LabgenError as exc:
            fail(str(exc), exc.exit_code)
        say("lab", f"destroyed {parts[0].provider} lab {name}")
        return
    try:
        lab, lab_dir = _load(lab_dir)
        with lifecycle.locked(lab_dir):
            lifecycle.destroy(lab, lab_dir, say)
    except LabgenError as exc:
        fail(str(exc), exc.exit_code)
    say("lab", f"destroyed {lab.name}; the files stay in {lab_dir}/")


@app.command("list")
def list_(
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    host: HostUris = None,
) -> None:
    """Every labgen lab on this host (both providers) and on the libvirt hosts named with --host.

    Per lab: name, provider, state (whole, creating, partial, orphaned), nodes, age, directory."""
    from labgen.cli import inventory
    try:
        found = inventory.find_all(tuple(host or ()))
    except LabgenError as exc:
        fail(str(exc), exc.exit_code)
    if json_out:
        print(inventory.to_json(found))
        return
    if not found:
        out.line("no labgen labs on this host")
        return
    console = tables()
    console.print(labs_table(found, is_plain(console)))


@app.command()
def prune(
    yes: Annotated[bool, typer.Option("--yes", help="Remove them; without it, only show what would go.")] = False,
    all_: Annotated[bool, typer.Option("--all", help="Also labs that are whole and whose directory exists (a CI run's clean start).")] = False,
    host: HostUris = None,
) -> None:
    """Remove every orphaned or partial labgen lab on this host.

    Removes namespaces, daemons, links, mounts, domains, volumes and networks named by labgen; never anything labgen did not name, never a create still running.

    Without --yes: show what would go; exit 1 if anything would."""
    from labgen.cli import inventory
    say = ProgressPrinter()
    try:
        found = inventory.find_all(tuple(host or ()))
    except LabgenError as exc:
        fail(str(exc), exc.exit_code)
    doomed = [f for f in found if inventory.prunable(f, all_)]
    for f in found:
        if f not in doomed:
            out.line(f"keep: {inventory.describe(f)}")
    if not doomed:
        out.line("nothing to prune")
        raise typer.Exit(ExitCode.OK)
    failed = 0
    for f in doomed:
        if not yes:
            out.line(f"would remove: {inventory.describe(f)}: {'; '.join(f.resources) or 'its record'}")
            continue
        try:
            inventory.remove(f, say)
            out.line(f"removed: {inventory.describe(f)}: {'; '.join(f.resources) or 'its record'}")
        except LabgenError as exc:
            failed += 1
            err.line(("error:", "bold red"), f" removing {f.provider} lab {f.name}: {exc}")
    if not yes:
        out.line("run labgen prune --yes to remove them")
        raise typer.Exit(ExitCode.FAILED)
    raise typer.Exit(ExitCode.PROVIDER if failed else ExitCode.OK)


@app.command()
def shell(node: Annotated[str, typer.Argument(help="Node name, e.g. node1.")] = "node1",
          lab_dir: Annotated[Path | None, typer.Option("--dir", help="Lab directory.")] = None) -> None:
    """Open a root shell on a node: inside an emulated node's namespaces, or over vagrant ssh."""
    try:
        lab, lab_dir = _load(lab_dir)
        lab.node(node)
    except KeyError:
        fail(f"no node {node!r} in lab {lab.name}: use one of {', '.join(n.name for n in lab.nodes)}")
    except LabgenError as exc:
        fail(str(exc), exc.exit_code)
    try:
        if lifecycle.owned(lab, lab_dir) is None:
            fail(f"lab {lab.name!r} in {lab_dir} is not up: run labgen up {lab_dir}")
    except LabgenError as exc:
        fail(str(exc), exc.exit_code)
    argv = lifecycle.provider_of(lab).shell_argv(lab, lab_dir, node)
    os.execvp(argv[0], argv)


NodeArg = Annotated[str, typer.Argument(help="Node name, e.g. node1.", show_default=False)]
NodeDir = Annotated[Path | None, typer.Option("--dir", help="Lab directory (default: . or the only ./lab-*).")]


def _node_target(node: str, lab_dir: Path | None, namespace: str | None = None) -> nodeio.Target:
    from labgen.cli import nodeio
    lab, lab_dir = _load(lab_dir)
    lifecycle.owned(lab, lab_dir)      # another directory's lab of this name: refused
    return nodeio.target(lab, lab_dir, lifecycle.provider_of(lab), node, namespace)


@app.command("exec")
def exec_(
    node: NodeArg,
    command: Annotated[list[str], typer.Argument(help="The command and its arguments (after --).", show_default=False)],
    ns: Annotated[str | None, typer.Option("--ns", help="Run inside this namespace of the node, e.g. A1.")] = None,
    lab_dir: NodeDir = None,
) -> None:
    """Run a command on a node (or in one of its namespaces) and exit with its exit code.

    Example: labgen exec node1 --ns A1 -- ping -c 3 192.168.10.2"""
    from labgen.cli import nodeio
    try:
        t = _node_target(node, lab_dir, ns)
        code = nodeio.run_exec(t, command, ns)
    except LabgenError as exc:
        fail(str(exc), exc.exit_code)
    raise typer.Exit(code)


@app.command(help="Show the tunnel traffic on a node's underlay NIC, decoded (tcpdump -nn -v).\n\n"
             f"Only the lab's tunnel kind: {_either([k.label for k in tunnels.KINDS.values()])}, with "
             "what it carries (STP BPDUs, pings) decoded inside. Stops after --count packets or on Ctrl-C.")
def capture(
    node: NodeArg,
    count: Annotated[int, typer.Option("--count", "-c", help="Stop after this many packets (0: only on Ctrl-C).")] = 20,
    write: Annotated[Path | None, typer.Option("--write", "-w", help="Also save the packets to this pcap file.")] = None,
    lab_dir: NodeDir = None,
) -> None:
    from labgen.cli import nodeio
    if not 0 <= count <= 2**31 - 1:     # tcpdump -c takes a C int
        fail(f"--count {count} is out of range: give 1 to {2**31 - 1} packets, or 0 to stop only on Ctrl-C")
    problem = unwritable(write, "--write", "capture.pcap") if write else None
    if problem:
        fail(problem)
    try:
        t = _node_target(node, lab_dir)
        nodeio.run_capture(t, count, write, note=lambda s: err.line(f"capture {node}: {s}"))
    except LabgenError as exc:
        fail(str(exc), exc.exit_code)


@app.command()
def boxes() -> None:
    """The box catalog: one file per box in boxes/.

    Also the *.toml files in the directories of LABGEN_BOXES_DIR (colon-separated; a box there replaces a shipped one of that name)."""
    try:
        catalog = box_catalog.catalog(providers=providers.NAMES)
    except LabgenError as exc:
        fail(str(exc), exc.exit_code)
    console = tables()
    console.print(boxes_table(catalog, is_plain(console)))


@app.command()
def doctor(
    provider: Annotated[str | None, typer.Option(help=f"Check only this provider: {' or '.join(providers.NAMES)}.")] = None,
    box: BoxOpt = None,
    host: Annotated[str | None, typer.Option("--host", metavar="URI", help="Also check this libvirt host, e.g. qemu+ssh://root@hv-b/system.")] = None,
) -> None:
    """Check this host for each provider; one line per problem with its fix. Exit 1 if any.

    Missing system packages are named with the one apt-get command that installs them all."""
    from labgen.cli.doctor import diagnose
    try:
        lines = diagnose(provider, box, host)
    except LabgenError as exc:
        fail(str(exc), exc.exit_code)
    style = {"ok": "green", "note": "yellow", "problem": "red", "fix": "yellow"}
    for ln in lines:
        out.line((ln.kind, style[ln.kind]), f" {ln.provider}: {ln.text}")
    raise typer.Exit(ExitCode.FAILED if any(ln.kind == "problem" for ln in lines) else ExitCode.OK)


@box_app.command("build")
def box_build(
    name: Annotated[str, typer.Argument(help="Box recipe, e.g. debian12.")] = "debian12",
    force: Annotated[bool, typer.Option(help="Rebuild even when a built box is cached.")] = False,
) -> None:
    """Build a box locally from Debian's packages (OVS preinstalled) and add it to Vagrant."""
    from labgen.boxbuild import build_box
    say = ProgressPrinter()
    try:
        built = build_box(name, force=force, progress=lambda msg: say("box", msg))
    except LabgenError as exc:
        fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        fail("interrupted: nothing was added to Vagrant", ExitCode.INTERRUPTED)
    say("box", f"{built.name} {built.version} ready ({'reused' if built.reused else 'built'}: {built.path})")


# typer vendors click; its UsageError is BadParameter's base class (no public name for it).
_UsageError: type[Exception] = typer.BadParameter.__mro__[1]


def _invoked(argv: list[str]) -> typer.Typer:
    """The app to run: when the first argument names a command, an app with that command
    alone. typer builds a click command of every registered command on each run (~15 ms of
    `labgen render`'s ~0.2 s); shell completion and everything else get the whole app."""
    if not argv or "_LABGEN_COMPLETE" in os.environ:
        return app
    for info in app.registered_commands:
        if (info.name or typer.main.get_command_name(info.callback.__name__)) == argv[0]:  # type: ignore[union-attr]
            one = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
            one.registered_callback, one.registered_commands = app.registered_callback, [info]
            one.info = app.info
            return one
    return app


def main() -> None:
    try:
        code = _invoked(sys.argv[1:])(standalone_mode=False, prog_name="labgen")
    except typer.Exit as exc:
        code = exc.exit_code
    except _UsageError as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":
            sys.exit(ExitCode.OK)     # typer has printed the help already
        # One line, like every other error: what is wrong, and where help is.
        ctx = getattr(exc, "ctx", None)
        cmd = ctx.command_path if ctx else "labgen"
        err.line(("error:", "bold red"), f" {getattr(exc, 'format_message', exc.__str__)()} (see {cmd} --help)")
        sys.exit(ExitCode.USAGE)
    except (typer.Abort, KeyboardInterrupt):
        err.line("interrupted")
        sys.exit(ExitCode.INTERRUPTED)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
