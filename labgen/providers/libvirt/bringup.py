"""`vagrant up` of a VM lab, one thread per hypervisor: Vagrant's lines to the log and to
per-node progress, each node's script run over SSH as soon as its guest answers labgen's
own connection, and the `vagrant ssh-config` answer kept beside Vagrant's state."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from labgen.errors import ProviderError
from labgen.nodes.runner import RunnerError
from labgen.providers import Progress
from labgen.providers.libvirt import console
from labgen.providers.libvirt.hypervisors import Hypervisor
from labgen.providers.libvirt.project import provisioned_mark, recorded_domains
from labgen.vagrant import command as vagrant_cli

if TYPE_CHECKING:
    from labgen.nodes.ssh import SSHRunner, SSHTarget

# What Vagrant prints -> the stage a node has reached.
STAGES = [
    (re.compile(r"Creating domain|Creating image \(snapshot"), "creating"),
    (re.compile(r"Starting domain"), "booting"),
    (re.compile(r"Waiting for domain to get an IP address"), "waiting for an IP address"),
    (re.compile(r"Waiting for machine to boot"), "waiting for SSH"),
    (re.compile(r"Machine booted and ready"), "SSH ready"),
    (re.compile(r"Configuring and enabling network interfaces"), "configuring the underlay NIC"),
]
# Stages before a guest has its address: `vagrant ssh-config` cannot answer for it yet.
BEFORE_ADDRESS = ("creating", "booting", "waiting for an IP address")
# Once a guest has its address (Vagrant writes how to reach it, ssh_dir), labgen tries SSH
# itself, this often while the answer is "connection refused" (sshd not up yet: the guest's
# kernel answers at once), starts the node's script on the first connection that works, and
# marks the machine so that Vagrant's wait for it ends without a login of its own
# (docs/benchmarks.md). Through another hypervisor each try is an ssh to it: less often.
SSH_RETRY = 0.25
SSH_RETRY_PROXIED = 1.0
_NODE_LINE = re.compile(r"^(?:==> )?(node\d+): (.*)$")
TAIL = 12


def ssh_dir(project: Path) -> Path:
    """Where, during a `vagrant up`, the Vagrantfile writes how to reach each machine
    (MACHINE.ssh-config) and labgen marks each machine whose SSH answered labgen (MACHINE),
    which ends Vagrant's wait for it (vagrant_cli.SSH_DIR_ENV)."""
    return project / ".vagrant" / "labgen-ssh"


def says_ssh_config(project: Path) -> bool:
    """Whether the project's Vagrantfile writes each machine's ssh-config into ssh_dir()
    (one rendered by an earlier labgen does not: `vagrant ssh-config` is asked instead)."""
    try:
        return vagrant_cli.SSH_DIR_ENV in (project / "Vagrantfile").read_text()
    except OSError:
        return False


def ssh_config_cache(project: Path) -> Path:
    return project / ".vagrant" / "labgen-ssh-config"


def fetch_ssh_config(project: Path) -> str:
    """`vagrant ssh-config` costs seconds: taken once per up, kept beside Vagrant's state."""
    text = vagrant_cli.ssh_config(project)
    ssh_config_cache(project).parent.mkdir(exist_ok=True)
    ssh_config_cache(project).write_text(text)
    return text


# Connections the node scripts of an up left open, by (lab dir, node), until a runner() of the
# node takes one: labgen makes a new provider object for each step of a command
# (labgen/providers: get), so they live here, for the process.
_KEPT: dict[tuple[str, str], SSHRunner] = {}


def hand_over(lab_dir: Path, runs: list[Bringup]) -> None:
    drop_kept(lab_dir)
    _KEPT.update({(str(lab_dir.resolve()), node): r for run in runs for node, r in run.kept.items()})


def take_over(lab_dir: Path, node: str) -> SSHRunner | None:
    return _KEPT.pop((str(lab_dir.resolve()), node), None)


def drop_kept(lab_dir: Path) -> None:
    for key in [k for k in _KEPT if k[0] == str(lab_dir.resolve())]:
        _KEPT.pop(key).close()


class Bringup:
    """`vagrant up --no-provision` of one hypervisor's project in a thread: its lines to the log and
    to progress, an event once its domains are past creation, each node's script run over SSH
    as soon as the guest answers (labgen/providers/nodescript.py; labgen tries from the moment
    every guest has its address; Vagrant's wait for SSH ends on labgen's mark), and a kill for
    Ctrl-C or a failed peer."""

    def __init__(self, hv: Hypervisor, project: Path, log: Path, progress: Progress,
                 scripts: dict[str, Path], logs: Path):
        self.hv, self.project, self.log, self.progress = hv, project, log, progress
        self.scripts, self.logs = scripts, logs
        self.past_creation = threading.Event()
        self.error: tuple[int, list[str]] | None = None     # vagrant up's exit code and last lines
        self.script_errors: list[str] = []                  # node scripts that failed
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread = threading.Thread(target=self._run, name=f"vagrant-up-{hv.name}", daemon=True)
        self._prefetch: threading.Thread | None = None
        self._said: Path | None = None      # ssh_dir() of this up, if its Vagrantfile writes there
        self._stage: dict[str, str] = {}    # each node's stage, as Vagrant's lines say it
        self._config_lock = threading.Lock()
        self._scripts: dict[str, threading.Thread] = {}
        self._runners: dict[str, SSHRunner] = {}
        # Each node's connection once its script passed, still open with its idle root shell:
        # verify, right after, reuses it (a new one costs an SSH handshake and a sudo, ~2-3 s
        # of an emulated guest).
        self.kept: dict[str, SSHRunner] = {}
        self._halted = False
        self._stop = threading.Event()      # set with _halted: ends the scripts' waits for SSH
        self._ready_said: set[str] = set()  # nodes whose "SSH ready" was said (ours or Vagrant's)
        self._ready_lock = threading.Lock()
        self.peers: list[Bringup] = []     # killed when this one fails: no point going on
        self.started: Callable[[int], None] = lambda pid: None     # told vagrant's PID
        self.stopped_for: str | None = None     # the peer whose failure stopped this one
        # Every guest of this hypervisor already runs in the domain Vagrant recorded for it: no
        # `vagrant up` (nothing for it to do), the scripts run at once.
        self.running = False
        self._console: console.Watcher | None = None     # the guests' boot phases, while they boot

    @property
    def failed(self) -> bool:
        return self.error is not None or bool(self.script_errors)

    def start(self) -> None:
        provisioned_mark(self.project).unlink(missing_ok=True)     # written again at the end
        # The scripts are labgen's to run (below), on a new lab and on a running one alike.
        if self.running:
            for node in self.hv.nodes:
                self.progress(node, "running: no boot, provisioning again")
            self.past_creation.set()
            self._thread.start()
            return
        if not self.hv.remote:      # the consoles are files on this machine (the Vagrantfile)
            self._console = console.Watcher(
                {n: self.logs / f"{n}-console.log" for n in self.hv.nodes},
                lambda node, phase: self.progress(node, phase.said()))
            self._console.start()
        extra_env = {}
        if says_ssh_config(self.project):
            self._said = ssh_dir(self.project)
            shutil.rmtree(self._said, ignore_errors=True)      # an earlier up's
            self._said.mkdir(parents=True)
            extra_env[vagrant_cli.SSH_DIR_ENV] = str(self._said.resolve())
        self._proc = vagrant_cli.start(["up", "--provider", "libvirt", "--no-provision"], cwd=self.project,
                                       timeout=vagrant_cli.up_timeout(self.project), extra_env=extra_env)
        self.started(self._proc.pid)
        self._thread.start()

    def _run(self) -> None:
        if self._proc is None:      # running already: no vagrant up
            self._provision_all()
            return
        stage = self._stage
        tail: list[str] = []
        try:
            with open(self.log, "a") as log:
                log.write(f"\n=== labgen up {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
                for line in vagrant_cli.lines(self._proc):
                    log.write(line + "\n")
                    log.flush()
                    tail = [*tail[-TAIL + 1:], line]
                    node = track(line, stage, self._vagrant_progress)
                    if any(s != "creating" for s in stage.values()):
                        self.past_creation.set()
                    if self._said is not None:      # each guest's script, once it has its address
                        if node is not None and stage[node] not in BEFORE_ADDRESS:
                            self._start_script(node)
                    elif self._prefetch is None and set(stage) >= set(self.hv.nodes) and \
                            not any(s in BEFORE_ADDRESS for s in stage.values()):
                        self._prefetch = threading.Thread(target=self._prefetch_ssh_config, daemon=True)
                        self._prefetch.start()
                        for each in self.hv.nodes:  # each waits for its guest's SSH itself
                            self._start_script(each)
                    if node is not None and stage[node] == "SSH ready":
                        self._start_script(node)
        except subprocess.CalledProcessError as exc:
            self.error = (exc.returncode, tail)
        except OSError as exc:
            self.error = (-1, [str(exc)])
        finally:
            self.past_creation.set()
            if self._console is not None:
                self._console.stop()
        if self.error is not None:
            self._halt()        # vagrant up failed: the scripts that run have no lab to finish
        self._provision_all()

    def _provision_all(self) -> None:
        """The scripts not started yet start now (a running lab: Vagrant reported no boot),
        and all are waited for."""
        if self.error is None:
            for node in self.hv.nodes:
                self._start_script(node)
        for thread in list(self._scripts.values()):
            thread.join()
        if self._prefetch is not None:
            self._prefetch.join()
        if self.failed and self.stopped_for is None:
            for peer in self.peers:
                peer.kill(because=self.hv.name)
        elif not self.failed and not self._halted:
            recorded = recorded_domains(self.project, self.hv)
            if recorded is not None:
                provisioned_mark(self.project).write_text(recorded)

    def _vagrant_progress(self, node: str, stage: str) -> None:
        if stage != "SSH ready" or self._say_ready(node):
            self.progress(node, stage)

    def _say_ready(self, node: str) -> bool:
        """Whether this is the first word that `node` answers SSH (labgen's or Vagrant's):
        the console's boot phases end there."""
        with self._ready_lock:
            if node in self._ready_said:
                return False
            self._ready_said.add(node)
        if self._console is not None:
            self._console.stop(node)
        return True

    def _wait_for_ssh(self, runner: SSHRunner, node: str) -> None:
        """Connect to the booting guest, trying again while its sshd is not up, until vagrant
        up fails (a halt) or its own time runs out."""
        deadline = time.monotonic() + vagrant_cli.up_timeout(self.project)
        pause = SSH_RETRY_PROXIED if runner.target.proxy_command else SSH_RETRY
        while True:
            try:
                runner.connect()
                break
            except RunnerError as exc:
                if self._halted:
                    raise ProviderError(f"{node}: stopped while waiting for SSH") from exc
                if time.monotonic() > deadline:
                    raise ProviderError(f"{node}: no SSH: {exc}") from exc
            self._stop.wait(pause)      # a poll of the guest's port, ended early by a halt
        if self._said is not None:      # Vagrant's wait for this machine ends (the Vagrantfile)
            (self._said / node).touch()
        if self._say_ready(node):
            self.progress(node, "SSH ready")

    def _prefetch_ssh_config(self) -> None:
        """How to reach the guests, asked once each has its address (while they boot):
        `vagrant ssh-config` costs ~3-4 s of Ruby and libvirt calls. It must not take the
        machine locks that `up` takes meanwhile (labgen/vagrant/command.py, ssh_config). On failure
        it is asked again when a node needs it."""
        try:
            with self._config_lock:
                fetch_ssh_config(self.project)
        except (ProviderError, OSError, subprocess.SubprocessError):
            pass

    def _target(self, node: str) -> SSHTarget:
        from labgen.nodes.ssh import parse_ssh_config
        said = self._said_target(node)
        if said is not None:
            return said
        if self._prefetch is not None:
            self._prefetch.join()
        targets: dict[str, SSHTarget] = {}
        with self._config_lock:
            cache = ssh_config_cache(self.project)
            try:
                if cache.exists():
                    targets = parse_ssh_config(cache.read_text())
                if node not in targets:
                    targets = parse_ssh_config(fetch_ssh_config(self.project))
            except ValueError as exc:       # no Host block at all
                raise ProviderError(f"{node}: vagrant ssh-config gave no address: {exc}") from exc
        if node not in targets:
            raise ProviderError(f"{node}: vagrant ssh-config gave no address for it")
        return targets[node]

    def _said_target(self, node: str) -> SSHTarget | None:
        """How to reach `node` as this up's Vagrant wrote it (MACHINE.ssh-config in ssh_dir()),
        waited for; once every machine's is there, they are kept as `vagrant ssh-config`'s
        answer (ssh_config_cache) for labgen's later commands. None: no such file to wait for
        (no vagrant up, or a Vagrantfile that does not write it, or a vagrant up that ended or
        found the guest ready by itself)."""
        from labgen.nodes.ssh import parse_ssh_config
        if self._said is None or self._proc is None:
            return None
        path = self._said / f"{node}.ssh-config"
        while not path.exists():
            if self._halted:
                raise ProviderError(f"{node}: stopped while waiting for SSH")
            if self._proc.poll() is not None or self._stage.get(node) == "SSH ready":
                return None
            self._stop.wait(0.1)    # a file's stat, while Vagrant waits for the address
        try:
            target = parse_ssh_config(path.read_text()).get(node)
        except ValueError as exc:
            raise ProviderError(f"{node}: Vagrant's ssh-config for it gave no address: {exc}") from exc
        if target is None:
            raise ProviderError(f"{node}: Vagrant's ssh-config names another machine ({path})")
        with self._config_lock:
            texts = [self._said / f"{n}.ssh-config" for n in self.hv.nodes]
            if all(t.exists() for t in texts):
                ssh_config_cache(self.project).write_text("".join(t.read_text() for t in texts))
        return target

    def _start_script(self, node: str) -> None:
        if node in self._scripts or self._halted:
            return
        self._scripts[node] = threading.Thread(target=self._script, args=(node,),
                                               name=f"provision-{node}", daemon=True)
        self._scripts[node].start()

    def _script(self, node: str) -> None:
        from labgen.nodes.ssh import SSHRunner
        from labgen.providers.nodescript import provision
        took = None
        try:
            runner = self._runners[node] = SSHRunner(node, self._target(node))
            self._wait_for_ssh(runner, node)
            self.progress(node, "provisioning")
            took = provision(runner, node, self.scripts[node], self.logs / f"{node}-provision.log",
                             step=lambda what: self.progress(node, what))
        except Exception as exc:    # any failure must reach up(), not die with the thread
            if not self._halted:    # else: stopped by another failure, which is the cause
                self.script_errors.append(str(exc) if isinstance(exc, ProviderError)
                                          else f"{node}: provisioning failed: {exc}")
                self._halt()
                for peer in self.peers:
                    peer.kill(because=self.hv.name)
            return
        finally:
            kept = self._runners.pop(node, None)
            if kept is not None and (took is None or self._halted):
                kept.close()
            elif kept is not None:
                self.kept[node] = kept
        self.progress(node, f"provisioned in {took:.1f} s")

    def kill(self, because: str | None = None) -> None:
        """Stop vagrant and the scripts (Ctrl-C; or a failure of the peer `because`)."""
        if because is not None and self.stopped_for is None:
            self.stopped_for = because
        self._halt()

    def _halt(self) -> None:
        self._halted = True
        self._stop.set()
        if self._proc is not None and self._proc.poll() is None:
            try:        # Vagrant runs in a session of its own: the whole group goes
                os.killpg(self._proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for runner in [*self._runners.values(), *self.kept.values()]:
            runner.close()      # a running script's channel closes: its run() returns

    def join(self) -> None:
        if self._thread.is_alive():
            self._thread.join()


def track(line: str, stage: dict[str, str], progress: Progress) -> str | None:
    """The node whose stage this line of Vagrant's changed, if any."""
    m = _NODE_LINE.match(line.strip())
    if not m:
        return None
    node, text = m.groups()
    for pattern, name in STAGES:
        if pattern.search(text) and stage.get(node) != name:
            stage[node] = name
            progress(node, name)
            return node
    return None
