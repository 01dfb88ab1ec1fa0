"""The one exit-code table (labgen/errors.py) is what the README shows and what errors carry."""
from __future__ import annotations

from support import readme_block

from labgen import errors
from labgen.errors import ExitCode


def test_readme_table_is_generated_from_errors():
    assert readme_block("exit codes") == errors.readme_table()


def test_every_code_is_documented_once_and_errors_use_them():
    documented = [code for code, _ in errors.EXIT_CODES if code.isdigit()]
    assert sorted(map(int, documented)) == sorted(int(c) for c in ExitCode)
    assert errors.InputError("x").exit_code == errors.HostError("x").exit_code == ExitCode.USAGE
    assert errors.ProviderError("x").exit_code == ExitCode.PROVIDER != ExitCode.FAILED
