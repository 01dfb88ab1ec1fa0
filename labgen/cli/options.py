"""The options that describe a lab, declared once with their defaults from model.Options,
and the other options more than one verb takes."""
from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from labgen import lifecycle
from labgen.errors import LabgenError
from labgen.lab import tunnels
from labgen.lab.model import Options

if TYPE_CHECKING:

    pass
from labgen.cli.common import fail

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
# The verbs that print a verification report: one line per stage unless --verbose.
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Print one row per check, not one line per stage (--json and --junit always hold every check).")]


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
