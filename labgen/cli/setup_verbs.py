"""The verbs that prepare a host for labs: boxes, doctor, box build."""
from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from labgen import providers
from labgen.errors import ExitCode, LabgenError
from labgen.lab import boxes as box_catalog
from labgen.term import out

if TYPE_CHECKING:

    pass
from labgen.cli.common import ProgressPrinter, app, box_app, fail, tables
from labgen.cli.options import BoxOpt
from labgen.report.tables import (
    boxes_table,
    is_plain,
)


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
    hypervisor: Annotated[str | None, typer.Option("--host", metavar="URI", help="Also check this libvirt host, e.g. qemu+ssh://root@hv-b/system.")] = None,
) -> None:
    """Check this host for each provider; one line per problem with its fix. Exit 1 if any.

    Missing system packages are named with the one apt-get command that installs them all."""
    from labgen.cli.doctor import diagnose
    try:
        lines = diagnose(provider, box, hypervisor)
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
