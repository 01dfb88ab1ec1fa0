"""Errors a user can act on, and the one table of exit codes. The CLI prints an error's
message as one line and exits with its `exit_code`; the README's table is generated from
EXIT_CODES (`python -m labgen.errors`; tests/unit/test_exit_codes.py keeps them equal)."""
from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILED = 1          # the lab or host is not what it should be (a check, doctor, capture)
    USAGE = 2           # could not run: nothing was created
    NOT_RUNNING = 3     # status: not every node runs
    PROVIDER = 4        # bring-up or tear-down failed part way
    INTERRUPTED = 130


EXIT_CODES: tuple[tuple[str, str], ...] = (
    (str(int(ExitCode.OK)), "done: the lab is verified (`create`, `verify`); every redundant link "
     "was cut and healed (`failover`, `create --failover`); every node runs (`status`); the host "
     "is ready (`doctor`); a `capture` stopped after its `--count` or on Ctrl-C"),
    (str(int(ExitCode.FAILED)), "a check failed: the report names the check, the node and the "
     "evidence, and `diagnostics/nodeK.txt` in the lab dir holds the node's firewall, `ovs-vsctl "
     "show`, STP state, addresses, routes and the OVS log tail (`create`, `verify`); `failover`: "
     "the spanning tree did not hold (before a cut, after one, after a restore), traffic did not "
     "come back, or an outage was above `--max-outage` (the report names the link); `doctor` found "
     "a problem; `capture`: tcpdump failed on the node or the node did not answer"),
    (str(int(ExitCode.USAGE)), "could not run: bad input, a missing tool or package, no root, a lab "
     "directory that cannot be written (read-only, full, a file in the way), an unknown node or "
     "namespace, a box that cannot be fetched; one line that says what to fix, and nothing is created"),
    (str(int(ExitCode.NOT_RUNNING)), "`status`: not every node is running"),
    (str(int(ExitCode.PROVIDER)), "bringing the lab up or down failed part way (`create`, `up`, "
     "`destroy`), after tearing down what that run created unless `--keep-on-failure`"),
    (str(int(ExitCode.INTERRUPTED)), "interrupted (Ctrl-C); `create` tears down what it started "
     "unless `--keep-on-failure`; `failover` first brings back up the link it had cut"),
    ("the command's", "`exec`: the exit code of the command run on the node (128+N when signal N "
     "ended it)"),
)


class LabgenError(Exception):
    """Something the user must fix; the message says what is wrong and how to fix it."""

    exit_code: int = ExitCode.USAGE


class InputError(LabgenError):
    """Bad option or spec: nothing has been written or created."""


class HostError(LabgenError):
    """The host lacks a tool, a permission or a daemon that the command needs."""


class ProviderError(LabgenError):
    """Bringing the lab up or down failed part way (after clean-up)."""

    exit_code = ExitCode.PROVIDER


def readme_table() -> str:
    rows = ["| code | meaning |", "|---|---|"]
    rows += [f"| {code} | {meaning} |" for code, meaning in EXIT_CODES]
    return "\n".join(rows)


if __name__ == "__main__":
    print(readme_table())
