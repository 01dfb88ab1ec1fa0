"""What the tests share, importable as `support` from tests/unit and tests/e2e (pyproject.toml's
[tool.pytest.ini_options] puts tests/ on sys.path). No test module imports another.

  support.cli           run the labgen CLI in a subprocess: the one way the tests do it
  support.netns         enter an emulated node; what a netns lab could leave on the host
  support.vm            what libvirt holds of a lab; firewalls inside the VM guests
  support.fake_vagrant  stand-in commands (vagrant, virsh) first on PATH, replaying recorded output
  support.sshd          a real OpenSSH server on loopback (behind the `sshd` fixture)
  support.golden        the golden render cases, rendered by the real CLI
  support.ci            the CI recipes in examples/ci/ and the npm tools that check them
  support.bounds        how long each kind of operation may take, from recorded figures
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent.parent
ROOT = TESTS.parent                     # the repository
README = ROOT / "README.md"
DESIGN = ROOT / "docs" / "design.md"   # the internals, among them the full stage list
OUTPUTS = TESTS / "data" / "outputs"    # outputs recorded on real labs
GOLDEN = TESTS / "golden"               # what `labgen render` writes, byte for byte


def readme_block(name: str, doc: Path = README) -> str:
    """The generated block `<!-- NAME: ... -->` ... `<!-- /NAME -->` of the README (or of
    `doc`), stripped: the tests compare it with what its module generates."""
    import re
    block = re.search(rf"<!-- {name}:.*?-->\n(.*?)<!-- /{name} -->", doc.read_text(), re.S)
    assert block, f"{doc.relative_to(ROOT)} lost its generated {name} block"
    return block.group(1).strip()


# ---- tests that cannot run here ----------------------------------------------------------
# Under CI=true a skip is a failure (tests/conftest.py) unless its reason starts with OPT_IN:
# a test that runs only when asked for, listed by -ra with what it needs.
OPT_IN = "opt in"
IN_CI = os.environ.get("CI") == "true"


def require_tool(name: str, how: str = "scripts/setup --vm installs it") -> str:
    """The path of the command `name`. Missing, the test is skipped on a developer's machine
    and fails under CI=true, whose set-up installs every tool a test needs."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed ({how})"
        if IN_CI:
            pytest.fail(f"{message}: CI must run this test", pytrace=False)
        pytest.skip(message)
    return path


def opt_in(variable: str, what: str) -> pytest.MarkDecorator:
    """Skip unless the environment sets `variable`=1: a test too slow or too costly for every
    run. Its reason says so and what it needs (-ra lists it, and CI lets it skip)."""
    return pytest.mark.skipif(os.environ.get(variable) != "1",
                              reason=f"{OPT_IN} with {variable}=1: {what}")
