"""The verbs of one lab's life: render, create, up, verify, failover, status, destroy."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from labgen import lifecycle
from labgen.errors import ExitCode, LabgenError
from labgen.lab.build import check_timeout
from labgen.lab.model import Lab
from labgen.term import err, out

if TYPE_CHECKING:
    from labgen.failover.run import FailoverReport
    from labgen.verify.results import Report
from labgen.cli.common import HypervisorUris, LabDir, ProgressPrinter, app, fail, load, tables
from labgen.cli.options import MaxOutage, Verbose, lab_options
from labgen.report.tables import (
    is_plain,
    print_report,
    status_json,
    status_table,
    summary,
    to_dict,
    to_json,
    unwritable,
)


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
    keep_on_failure: Annotated[bool, typer.Option("--keep-on-failure", help="Keep a lab whose bring-up failed, for inspection.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the verification as JSON.")] = False,
    junit: Annotated[Path | None, typer.Option(help="Write the verification as JUnit XML.")] = None,
    timeout: Annotated[float | None, typer.Option(help="Seconds to wait for spanning tree (default: by STP mode).")] = None,
    failover: Annotated[bool, typer.Option("--failover", help="Once verified, cut every redundant link in turn and measure the outage (labgen failover).")] = False,
    max_outage: MaxOutage = None,
    verbose: Verbose = False,
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
            _emit(report, json_out, junit, lab_dir, proven, verbose)
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
          proven: FailoverReport | None = None, verbose: bool = False) -> None:
    from labgen.report import failover as failover_report
    if json_out:
        if proven is None:
            print(to_json(report))
        else:
            print(json.dumps({**to_dict(report), "failover": failover_report.to_dict(proven)}, indent=2))
    else:
        print_report(report, tables(), verbose)
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


@app.command()
def up(lab_dir: LabDir = None,
       keep_on_failure: Annotated[bool, typer.Option("--keep-on-failure", help="Keep what a failed bring-up created, for inspection.")] = False,
       ) -> None:
    """Bring a rendered lab up; on a running lab, provision again (changes nothing)."""
    say = ProgressPrinter()
    try:
        lab, lab_dir = load(lab_dir)
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
    verbose: Verbose = False,
) -> None:
    """Prove the lab: nodes, config, underlay, spanning tree, overlay pings, tunnel capture, MTU.

    Exit 0 all passed, 1 some failed, 2 could not run."""
    _check_run_options(timeout, junit)
    try:
        lab, lab_dir = load(lab_dir)
        with lifecycle.locked(lab_dir):
            report = lifecycle.run_verify(lab, lab_dir, timeout)
    except LabgenError as exc:
        fail(str(exc), ExitCode.USAGE)
    _emit(report, json_out, junit, lab_dir, verbose=verbose)
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
        lab, lab_dir = load(lab_dir)
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
        lab, lab_dir = load(lab_dir)
        states = lifecycle.status(lab, lab_dir)
    except LabgenError as exc:
        fail(str(exc), exc.exit_code)
    if json_out:
        print(status_json(states))
    else:
        console = tables()
        console.print(status_table(lab, lab_dir, states, is_plain(console)))
    raise typer.Exit(ExitCode.OK if all(s.state == "running" for s in states) else ExitCode.NOT_RUNNING)


@app.command()
def destroy(
    lab_dir: LabDir = None,
    name: Annotated[str | None, typer.Option("--name", help="Remove the lab of this name on this host whose directory is gone (see labgen list).")] = None,
    provider: Annotated[str | None, typer.Option("--provider", help="With --name: the lab's provider, when both have one of that name.")] = None,
    hypervisors: HypervisorUris = None,
) -> None:
    """Tear the lab down: leaves no namespaces, daemons, domains, networks or volumes.

    Only this directory's lab: another directory's lab of the same name is refused."""
    say = ProgressPrinter()
    if name is None and (provider or hypervisors):
        fail("--provider and --host go with --name (a lab directory names its own)")
    if provider and hypervisors:
        from labgen import providers
        try:
            remote = providers.get(provider).remote_nodes
        except LabgenError as exc:
            fail(str(exc), exc.exit_code)
        if not remote:
            fail(f"--host names libvirt hosts; the {provider} provider's labs are on this host: drop --host")
    if name is not None:
        from labgen.cli import inventory
        if lab_dir is not None:
            fail("give a lab directory or --name, not both")
        try:
            parts = inventory.by_name(name, provider, tuple(hypervisors or ()))
            for found in parts:
                inventory.refuse_if_owned(found)
            for found in parts:
                inventory.remove(found, say)
        except LabgenError as exc:
            fail(str(exc), exc.exit_code)
        say("lab", f"destroyed {parts[0].provider} lab {name}")
        return
    try:
        lab, lab_dir = load(lab_dir)
        with lifecycle.locked(lab_dir):
            lifecycle.destroy(lab, lab_dir, say)
    except LabgenError as exc:
        fail(str(exc), exc.exit_code)
    say("lab", f"destroyed {lab.name}; the files stay in {lab_dir}/")
