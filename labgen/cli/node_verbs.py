"""The verbs on one node of a lab: shell, exec, capture."""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from labgen import lifecycle
from labgen.errors import LabgenError
from labgen.lab import tunnels
from labgen.term import err

if TYPE_CHECKING:

    from labgen.cli import nodeio
from labgen.cli.common import app, either, fail, load
from labgen.report.tables import (
    unwritable,
)


@app.command()
def shell(node: Annotated[str, typer.Argument(help="Node name, e.g. node1.")] = "node1",
          lab_dir: Annotated[Path | None, typer.Option("--dir", help="Lab directory.")] = None) -> None:
    """Open a root shell on a node: inside an emulated node's namespaces, or over vagrant ssh."""
    try:
        lab, lab_dir = load(lab_dir)
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
    lab, lab_dir = load(lab_dir)
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
             f"Only the lab's tunnel kind: {either([k.label for k in tunnels.KINDS.values()])}, with "
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
