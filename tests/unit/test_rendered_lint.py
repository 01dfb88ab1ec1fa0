"""The rendered files pass their languages' own checkers: bash -n and shellcheck for the node
scripts, ruby -c and `vagrant validate` for the Vagrantfile. A missing checker skips with the
reason, except in CI (CI=true), where .ci/run installs them and a missing one is a failure."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from support.golden import CASES, render_case


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        message = f"{tool} is not installed"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}, but CI must run this check", pytrace=False)
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def labs(tmp_path_factory) -> dict[str, Path]:
    """Every golden case, rendered once by the CLI (fresh: not the golden copies)."""
    return {case: render_case(case, tmp_path_factory.mktemp(case)) for case in CASES}


def scripts(lab_dir: Path) -> list[Path]:
    found = sorted((lab_dir / "provision").glob("node*.sh"))
    assert found, f"no node scripts in {lab_dir}"
    return found


@pytest.mark.parametrize("case", sorted(CASES))
def test_node_scripts_parse_with_bash(labs, case):
    bash = need("bash")
    for script in scripts(labs[case]):
        proc = subprocess.run([bash, "-n", str(script)], capture_output=True, text=True)
        assert proc.returncode == 0, f"{script.name}: {proc.stderr}"


@pytest.mark.parametrize("case", sorted(CASES))
def test_node_scripts_pass_shellcheck(labs, case):
    shellcheck = need("shellcheck")
    files = [str(s) for s in scripts(labs[case])]
    proc = subprocess.run([shellcheck, "-S", "warning", "-s", "bash", *files],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("case", sorted(c for c in CASES if "--provider" not in CASES[c]))
def test_vagrantfile_is_valid_ruby(labs, case):
    ruby = need("ruby")
    vagrantfiles = sorted(labs[case].glob("**/Vagrantfile"))     # one per hypervisor
    assert vagrantfiles
    for vagrantfile in vagrantfiles:
        proc = subprocess.run([ruby, "-c", str(vagrantfile)], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0 and "Syntax OK" in proc.stdout, proc.stdout + proc.stderr


def test_netns_lab_has_no_vagrantfile(labs):
    assert not (labs["gre-3nodes"] / "Vagrantfile").exists()


def test_vagrant_validate(labs):
    """Vagrant loads the Vagrantfile with vagrant-libvirt: every option name is one it knows.
    Slow (~5-10 s), so only the gre case; the others differ only in values."""
    vagrant = need("vagrant")
    env = {**os.environ, "VAGRANT_DEFAULT_PROVIDER": "libvirt", "VAGRANT_CHECKPOINT_DISABLE": "1",
           "VAGRANT_NO_COLOR": "1"}
    plugins = subprocess.run([vagrant, "plugin", "list"], capture_output=True, text=True,
                             env=env, timeout=120)
    if "vagrant-libvirt" not in plugins.stdout:
        if os.environ.get("CI") == "true":
            pytest.fail("the vagrant-libvirt plugin is not installed, but CI must run this check",
                        pytrace=False)
        pytest.skip("the vagrant-libvirt plugin is not installed")
    proc = subprocess.run([vagrant, "validate"], cwd=labs["gre"], capture_output=True, text=True,
                          env=env, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "validated successfully" in proc.stdout, proc.stdout
