"""A steady stream of overlay probes on a node, run through its Runner (either provider):
started in the background, read while it runs, stopped. `ping -D -O` from one namespace to
an overlay address: every reply with the time it arrived, every probe still unanswered when
the next goes out (outage.parse reads both).

The stream is bounded by ping itself (-c: it ends after `limit` seconds' worth of probes
whatever happens to labgen; not -w, with which iputils' ping exits at its first error, and
a cut long enough for the source's ARP entry to fail gives "Destination Host Unreachable"),
runs in a session of its own, and is stopped by the PID ping itself has (`ip netns exec`
execs it), checked by its name first."""
from __future__ import annotations

import math
import shlex
from dataclasses import dataclass

from labgen.nodes.runner import Runner
from labgen.verify.batch import ns_exec

WORKDIR_PREFIX = "/tmp/labgen-probe."
# 10 ms between probes: the resolution of every outage measured; root may send this fast.
INTERVAL = 0.01


def start_command(ns: str, dst: str, limit: float, interval: float = INTERVAL, tag: str = "") -> str:
    """Starts the stream in the background and prints its work dir once ping runs; the work
    dir's name carries `tag` (the lab's name: whose stream a dir left behind was)."""
    ping = ns_exec(ns, f"ping -D -n -O -i {interval:g} -c {math.ceil(limit / interval)} {dst}")
    inner = f'echo $$ >"$1/pid"; exec {ping} >"$1/out" 2>"$1/err" </dev/null'
    return "\n".join([
        f"d=$(mktemp -d {WORKDIR_PREFIX}{tag + '.' if tag else ''}XXXXXX)",
        f'setsid sh -c {shlex.quote(inner)} _ "$d" </dev/null >/dev/null 2>&1 &',
        'n=0; until [ -s "$d/pid" ]; do',
        '  n=$((n+1)); [ $n -gt 200 ] && { echo "the probe stream did not start" >&2; exit 1; }',
        "  sleep 0.01   # polling for the stream's PID, not waiting an assumed time",
        "done",
        'echo "$d"',
    ])


def _alive(d: str) -> str:
    return f'p=$(cat {d}/pid) && [ "$(cat /proc/$p/comm 2>/dev/null)" = ping ]'


def stop_command(workdir: str) -> str:
    """SIGINT (ping prints its statistics and exits), a bounded poll for its end, SIGKILL
    if it is still there; prints everything ping wrote and removes the work dir."""
    return stop_script(shlex.quote(workdir))


def stop_script(d: str) -> str:
    """stop_command for a work dir given as a shell word (quoted, or e.g. "$d")."""
    return "\n".join([
        f"if {_alive(d)}; then kill -INT $p; fi",
        f"n=0; while {_alive(d)} && ! grep -q 'packets transmitted' {d}/out; do",
        "  n=$((n+1)); [ $n -gt 100 ] && { kill -KILL $p; break; }",
        "  sleep 0.02   # polling for ping's end, not waiting an assumed time",
        "done",
        f"cat {d}/out; cat {d}/err >&2; rm -rf {d}",
    ])


@dataclass
class Stream:
    """One running probe stream on a node."""
    runner: Runner
    workdir: str
    src: str
    dst: str

    def read(self) -> str:
        """What ping printed so far."""
        return self.runner.run(f"cat {shlex.quote(self.workdir)}/out", timeout=15 * self.runner.timeout_scale).stdout

    def stop(self) -> str:
        """Stop it; what it printed, with its statistics."""
        return self.runner.run(stop_command(self.workdir), timeout=30 * self.runner.timeout_scale).stdout


def start(runner: Runner, ns: str, dst: str, limit: float, tag: str = "") -> Stream:
    """Start a stream from namespace `ns` to overlay address `dst`, ending by itself after
    `limit` seconds. Raises RuntimeError with what the node said when it does not start."""
    res = runner.run(start_command(ns, dst, limit, tag=tag), timeout=30 * runner.timeout_scale)
    workdir = res.stdout.strip().splitlines()[-1] if res.ok and res.stdout.strip() else ""
    if not workdir.startswith(WORKDIR_PREFIX):
        raise RuntimeError(f"the probe stream from {ns} did not start: "
                           f"{res.output.strip() or f'exit {res.exit_code}'}")
    return Stream(runner, workdir, ns, dst)
