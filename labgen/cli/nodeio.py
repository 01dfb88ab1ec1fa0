"""The article's hands-on steps as verbs: `labgen exec` and `labgen capture`.

Both run one command on a lab node and stream what it prints as it comes, on either
provider: an emulated node through the netns provider's nsenter prefix, a VM over the SSH
connection of the provider's runner (one extra channel, not Runner.run, which collects).
"""
from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from labgen.errors import ExitCode, InputError, LabgenError
from labgen.lab.model import Lab
from labgen.nodes.process import CHUNK, LocalProcess, NodeProcess
from labgen.providers import Provider
from labgen.verify import checks

DEFAULT_COUNT = 20
# Seconds a capture may take to stop after Ctrl-C (tcpdump prints its counts and flushes).
STOP_GRACE = 10.0


class NodeIOError(LabgenError):
    """The command could not be started or streamed (the node failed, not the input)."""

    exit_code = ExitCode.FAILED


@dataclass(frozen=True)
class Target:
    lab: Lab
    lab_dir: Path
    provider: Provider
    node: str


def target(lab: Lab, lab_dir: Path, provider: Provider, node: str,
           namespace: str | None = None) -> Target:
    """Check the node (and namespace) against the lab model, and that the node runs."""
    names = [n.name for n in lab.nodes]
    if node not in names:
        raise InputError(f"no node {node!r} in lab {lab.name}: use one of {', '.join(names)}")
    if namespace is not None:
        nss = [ns.name for ns in lab.node(node).namespaces]
        if namespace not in nss:
            raise InputError(f"no namespace {namespace!r} on {node}: use one of {', '.join(nss)}")
    state = {s.node: s for s in provider.status(lab, lab_dir)}.get(node)
    if state is None or state.state != "running":
        why = f"{state.state}: {state.detail}" if state else "unknown"
        raise InputError(f"{node} of lab {lab.name} is not running ({why}): labgen up {lab_dir}")
    return Target(lab, lab_dir, provider, node)


def in_namespace(argv: Sequence[str], namespace: str | None) -> list[str]:
    return ["ip", "netns", "exec", namespace, *argv] if namespace else list(argv)


def start(t: Target, command: str) -> NodeProcess:
    """Run `sh -c command` as root on the node, all three streams piped."""
    local = t.provider.local_argv(t.lab, t.node)
    if local is not None:
        return LocalProcess([*local, "sh", "-c", command])
    from labgen.nodes.runner import RunnerError
    runner = t.provider.runner(t.lab, t.lab_dir, t.node)
    try:
        return runner.start(command)
    except RunnerError as exc:
        raise NodeIOError(str(exc)) from None


def pump(proc: NodeProcess, on_out: Callable[[bytes], None], on_err: Callable[[bytes], None],
         on_interrupt: Callable[[], None] | None = None) -> tuple[int, bool]:
    """Stream until the command ends; returns (exit code, interrupted). The first Ctrl-C
    calls on_interrupt (default: stdin EOF, which asks the command to stop) and waits up to
    STOP_GRACE seconds for it; a second Ctrl-C, or the grace running out, kills it."""
    interrupted = False
    deadline = None
    while True:
        try:
            got = proc.chunks(0.5)
            if got is None:
                break
            for stream, data in got:
                (on_out if stream == "out" else on_err)(data)
            if deadline is not None and time.monotonic() > deadline:
                proc.kill()
                break
        except KeyboardInterrupt:
            if interrupted:
                proc.kill()
                raise
            interrupted = True
            deadline = time.monotonic() + STOP_GRACE
            (on_interrupt or proc.send_eof)()
        except BrokenPipeError:
            # Our own stdout went away (e.g. `| head`): stop the command like Ctrl-C does.
            interrupted = True
            deadline = deadline or time.monotonic() + STOP_GRACE
            proc.send_eof()
            on_out = on_err = lambda _data: None
    code = proc.exit_code(STOP_GRACE)
    if code is None:
        proc.kill()
        code = 124
    return code, interrupted


# ---- labgen exec ------------------------------------------------------------------------
def run_exec(t: Target, argv: Sequence[str], namespace: str | None = None) -> int:
    """Run argv on the node (in `namespace` when given) with the terminal's streams; returns
    its exit code (128+N when a signal N ended it)."""
    argv = in_namespace(argv, namespace)
    local = t.provider.local_argv(t.lab, t.node)
    if local is not None:
        full = [*local, *argv]
        # The command shares the terminal: a Ctrl-C is for it, and labgen waits for its end.
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            child = subprocess.Popen(full, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
            code = child.wait()
        except OSError as exc:
            raise NodeIOError(f"{t.node}: cannot run {full[0]}: {exc.strerror}") from None
        finally:
            signal.signal(signal.SIGINT, old)
        return 128 - code if code < 0 else code
    proc = start(t, shlex.join(argv))
    _feed_stdin(proc)
    def to(stream: BinaryIO) -> Callable[[bytes], None]:
        def write(data: bytes) -> None:
            stream.write(data)
            stream.flush()
        return write
    code, interrupted = pump(proc, to(sys.stdout.buffer), to(sys.stderr.buffer), on_interrupt=proc.kill)
    return 130 if interrupted else code


def _feed_stdin(proc: NodeProcess) -> None:
    """Forward our stdin to the command when it is a pipe or file; a terminal gets EOF
    (there is no pseudo-terminal: for an interactive shell use `vagrant ssh NODE`)."""
    stdin = sys.stdin
    if stdin is None or stdin.isatty():
        proc.send_eof()
        return

    def feed() -> None:
        try:
            while data := os.read(stdin.fileno(), CHUNK):
                proc.write(data)
        except (OSError, EOFError, ValueError):
            pass
        proc.send_eof()
    threading.Thread(target=feed, daemon=True).start()


# ---- labgen capture ---------------------------------------------------------------------


def capture_filter(lab: Lab) -> str:
    """The article's view of the tunnel: all of it, STP BPDUs and ARP inside included."""
    return lab.kind.capture_filter


def capture_command(nic: str, lab: Lab, count: int, pcap: bool) -> str:
    """tcpdump on the node, stopped by stdin EOF (the SSH channel or our pipe closing): a
    watcher holding stdin sends tcpdump SIGTERM, on which it prints its counts and flushes.
    (Background jobs of a script get /dev/null as stdin and ignore SIGINT, hence fd 3 and TERM.)"""
    opts = ["--immediate-mode", "-i", nic, "-nn"] + (["-c", str(count)] if count else [])
    opts += ["-U", "-w", "-"] if pcap else ["-v", "-l"]
    tcpdump = shlex.join(["tcpdump", *opts, *shlex.split(capture_filter(lab))])
    return (f"exec 3<&0; {tcpdump} </dev/null & p=$!; "
            f"(read -r _ <&3; kill -TERM $p) >/dev/null 2>&1 & w=$!; exec 3<&-; "
            f"wait $p; rc=$?; kill $w 2>/dev/null; exit $rc")


def underlay_nic(t: Target) -> str:
    from labgen.nodes.runner import RunnerError
    runner = t.provider.runner(t.lab, t.lab_dir, t.node)
    try:
        res = runner.run(checks.UNDERLAY_NIC, timeout=15)
    except RunnerError as exc:
        raise NodeIOError(str(exc)) from None
    finally:
        runner.close()
    nic = res.stdout.strip().strip('"')
    if not res.ok or not nic:
        raise NodeIOError(f"{t.node} has no underlay NIC recorded in Open vSwitch "
                          f"({(res.output.splitlines() or ['empty'])[-1]}): is it provisioned? "
                          f"labgen up {t.lab_dir}")
    return nic


def run_capture(t: Target, count: int = DEFAULT_COUNT, write: Path | None = None,
                note: Callable[[str], None] = lambda s: None) -> int:
    """Show (and with `write`, save as pcap) the tunnel traffic on the node's underlay NIC.
    Returns 0 when it stopped after `count` packets or on Ctrl-C."""
    if count < 0:
        raise InputError(f"--count must be 0 (no limit) or more, not {count}")
    nic = underlay_nic(t)
    stop = f"stops after {count} packets or on Ctrl-C" if count else "stops on Ctrl-C"
    note(f"{capture_filter(t.lab)} on {nic}, {stop}" + (f"; saving to {write}" if write else ""))
    out = sys.stdout.buffer
    err = sys.stderr.buffer
    pcap: BinaryIO | None = None
    decoder: subprocess.Popen[bytes] | None = None
    if write is not None:
        try:
            pcap = open(write, "wb")
        except OSError as exc:
            raise InputError(f"cannot write {write}: {(exc.strerror or str(exc)).lower()}: "
                             f"choose another --write") from None
        if shutil.which("tcpdump"):
            # Decode the same bytes here, so the packets are shown as they are saved.
            decoder = subprocess.Popen(["tcpdump", "-nn", "-v", "-l", "-r", "-"],
                                       stdin=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                       start_new_session=True)
        else:
            note("no tcpdump on this host to decode the packets; they go to the file only")
    proc = start(t, capture_command(nic, t.lab, count, pcap is not None))
    status: list[bytes] = []

    def on_out(data: bytes) -> None:
        if pcap is None:
            out.write(data)
            out.flush()
            return
        pcap.write(data)
        pcap.flush()
        if decoder is not None and decoder.stdin is not None:
            try:
                decoder.stdin.write(data)
                decoder.stdin.flush()
            except BrokenPipeError:
                pass

    def on_err(data: bytes) -> None:
        status.append(data)
        err.write(data)
        err.flush()

    try:
        code, _interrupted = pump(proc, on_out, on_err)
    finally:
        if pcap is not None:
            pcap.close()
        if decoder is not None and decoder.stdin is not None:
            try:
                decoder.stdin.close()
            except BrokenPipeError:
                pass
            try:
                decoder.wait(STOP_GRACE)
            except subprocess.TimeoutExpired:
                decoder.kill()
    if code != 0:
        tail = b"".join(status).decode(errors="replace").strip().splitlines()
        if write is not None and write.exists() and write.stat().st_size == 0:
            write.unlink()
        raise NodeIOError(f"tcpdump on {t.node} failed (exit {code})"
                          + (f": {tail[-1]}" if tail else ""))
    return 0
