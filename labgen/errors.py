"""Errors a user can act on. The CLI prints the message as one line and exits with `exit_code`."""


class LabgenError(Exception):
    """Something the user must fix; the message says what is wrong and how to fix it."""

    exit_code = 2


class InputError(LabgenError):
    """Bad option or spec: nothing has been written or created."""


class HostError(LabgenError):
    """The host lacks a tool, a permission or a daemon that the command needs."""


class ProviderError(LabgenError):
    """Bringing the lab up or down failed part way (after clean-up)."""

    exit_code = 1
