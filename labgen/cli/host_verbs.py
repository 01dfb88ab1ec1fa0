"""The verbs over every lab on this host (and hypervisors): list, prune."""
from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from labgen.errors import ExitCode, LabgenError
from labgen.term import err, out

if TYPE_CHECKING:

    pass
from labgen.cli.common import HypervisorUris, ProgressPrinter, app, fail, tables
from labgen.report.tables import (
    is_plain,
    labs_table,
)


@app.command("list")
def list_(
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    hypervisors: HypervisorUris = None,
) -> None:
    """Every labgen lab on this host (both providers) and on the libvirt hosts named with --host.

    Per lab: name, provider, state (whole, creating, partial, orphaned), nodes, age, directory."""
    from labgen.cli import inventory
    try:
        found = inventory.find_all(tuple(hypervisors or ()))
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
    hypervisors: HypervisorUris = None,
) -> None:
    """Remove every orphaned or partial labgen lab on this host.

    Removes namespaces, daemons, links, mounts, domains, volumes and networks named by labgen; never anything labgen did not name, never a create still running.

    Without --yes: show what would go; exit 1 if anything would."""
    from labgen.cli import inventory
    say = ProgressPrinter()
    try:
        found = inventory.find_all(tuple(hypervisors or ()))
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
