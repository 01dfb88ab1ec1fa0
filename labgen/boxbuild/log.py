"""The build log (build-NAME.log in the cache): every command with its output, each step
timed, and a failed step turned into one line that names the command and its last words."""
from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

from labgen.vagrant.command import last_line

from .errors import BoxBuildError

# BuildLog.run, as the steps' helpers take it: run(cmd, stdin=None, env=None).
Run = Callable[..., None]


class BuildLog:
    def __init__(self, path: Path, progress: Callable[[str], None]):
        self.path = path
        self.progress = progress

    def header(self, text: str) -> None:
        with self.path.open("a") as f:
            f.write(f"\n===== {time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")

    def step(self, name: str, func: Callable[..., None], *args: Any, **kwargs: Any) -> None:
        """Run one step with timing; turn any failure into one BoxBuildError line."""
        self.progress(f"{name}: started")
        self.header(f"step {name}")
        start = time.monotonic()
        try:
            func(*args, **kwargs)
        except BoxBuildError as e:
            raise BoxBuildError(f"step '{name}' failed: {e}; full log: {self.path}") from None
        except subprocess.CalledProcessError as e:
            cmd = e.cmd[0] if isinstance(e.cmd, list) else str(e.cmd)
            raise BoxBuildError(
                f"step '{name}' failed: {cmd} exited with {e.returncode} "
                f"({last_line(e.output)}); full log: {self.path}"
            ) from None
        except OSError as e:
            raise BoxBuildError(f"step '{name}' failed: {e}; full log: {self.path}") from None
        self.progress(f"{name}: done in {time.monotonic() - start:.1f} s")

    def run(self, cmd: list[str], *, stdin: IO[str] | None = None,
            env: dict[str, str] | None = None) -> None:
        """Run a command with its output appended to the log; raise with its last line."""
        with self.path.open("a") as f:
            f.write(f"$ {' '.join(cmd)}\n")
            f.flush()
            start = f.tell()
            proc = subprocess.run(cmd, stdin=stdin, stdout=f, stderr=subprocess.STDOUT,
                                  env={**os.environ, **(env or {})})
        if proc.returncode != 0:
            with self.path.open("rb") as f:
                f.seek(start)
                tail = f.read().decode(errors="replace")
            raise subprocess.CalledProcessError(proc.returncode, cmd, output=tail)

    def lines(self, cmd: list[str], lines: Iterable[str]) -> None:
        """Log a command whose output lines someone else reads (labgen/vagrant/command.py's stream)."""
        with self.path.open("a") as f:
            f.write(f"$ {' '.join(cmd)}\n")
            for line in lines:
                f.write(line + "\n")

