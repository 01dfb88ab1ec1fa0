"""What the tests share, importable as `support` from tests/unit and tests/e2e (pyproject.toml's
[tool.pytest.ini_options] puts tests/ on sys.path). No test module imports another.

  support.cli           run the labgen CLI in a subprocess: the one way the tests do it
  support.netns         enter an emulated node; what a netns lab could leave on the host
  support.vm            what libvirt holds of a lab; firewalls inside the VM guests
  support.fake_vagrant  stand-in commands (vagrant, virsh) first on PATH, replaying recorded output
  support.sshd          a real OpenSSH server on loopback (behind the `sshd` fixture)
  support.golden        the golden render cases, rendered by the real CLI
  support.ci            the CI recipes in examples/ci/ and the npm tools that check them
"""
from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
ROOT = TESTS.parent                     # the repository
README = ROOT / "README.md"
OUTPUTS = TESTS / "data" / "outputs"    # outputs recorded on real labs
GOLDEN = TESTS / "golden"               # what `labgen render` writes, byte for byte


def readme_block(name: str) -> str:
    """The README's generated block `<!-- NAME: ... -->` ... `<!-- /NAME -->`, stripped: the
    tests compare it with what its module generates."""
    import re
    block = re.search(rf"<!-- {name}:.*?-->\n(.*?)<!-- /{name} -->", README.read_text(), re.S)
    assert block, f"README.md lost its generated {name} block"
    return block.group(1).strip()
