"""What a failover killed without warning (SIGKILL, a lost SSH session, a power cut) left
behind on a node, and taking it away before the next run cuts anything.

Ctrl-C and SIGTERM restore the cut link on the way out (run.py); nothing can run on SIGKILL.
So every cut marks its node first (marks.py), and the restore clears the mark. The next
failover reads each node's mark, undoes exactly what it names, and stops the lab's probe
streams still running (probes.py: each has a work dir named for the lab, with the PID of its
ping, checked by name before it is signalled)."""
from __future__ import annotations

from labgen.failover import marks, probes, tunnelcut


def sweep_command(lab_name: str) -> str:
    """Shell: undo what the node's mark names, clear it, and stop this lab's probe streams
    left running. Prints one line per thing undone ("cut: veth b12.1 b12.2", "probe: DIR");
    nothing when the node is clean. Exits non-zero when an undo failed (the mark stays)."""
    stop = probes.stop_script('"$d"')
    return "\n".join([
        f"m=$({marks.GET} | tr -d '\"')",
        'if [ -n "$m" ]; then',
        "  set -- $m",
        '  case "$1" in',
        '  veth) shift; for i in "$@"; do ip link set dev "$i" up || exit 1; done',
        f"    {marks.CLEAR} || exit 1 ;;",
        "  tunnel)",
        *("    " + ln for ln in [*tunnelcut.nic_command().splitlines(),
                               *tunnelcut.undo_lines(f'[ "$2" = {tunnelcut.ADDED} ]', if_there=True)]),
        "    ;;",
        "  esac",
        '  echo "cut: $m"',
        "fi",
        f"for d in {probes.WORKDIR_PREFIX}{lab_name}.*; do",
        '  [ -d "$d" ] || continue',
        "  { " + stop.replace("\n", "\n  ") + "; } >/dev/null 2>&1",
        '  echo "probe: $d"',
        "done",
    ])


def parse_sweep(stdout: str) -> list[str]:
    """sweep_command's output -> what it undid, one phrase each."""
    out = []
    for line in stdout.splitlines():
        what, _, rest = line.strip().partition(": ")
        if what == "cut" and rest:
            kind, *args = rest.split()
            out.append(f"{' '.join(args)} back up" if kind == "veth" else
                       "its underlay drop removed" if kind == "tunnel" else rest)
        elif what == "probe" and rest:
            out.append(f"probe stream {rest} stopped")
    return out
