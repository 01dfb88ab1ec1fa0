"""The CI recipes of examples/ci/ run for real: the one script (examples/ci/labgen-ci.sh) and
the GitLab job through gitlab-ci-local's shell executor. Each boots two VMs per tunnel, so
each is opt-in (labgen's own CI runs the script itself, and tests/e2e/test_vm_vxlan.py runs
it on one lab):
  LABGEN_TEST_CI_SCRIPT=1        runs labgen-ci.sh --box labgen/debian12 (gre and vxlan)
  LABGEN_TEST_GITLAB_CI_LOCAL=1  runs the GitLab job with gitlab-ci-local's shell executor
Checked statically: tests/unit/test_ci_recipes.py."""
from __future__ import annotations

import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from support import ROOT, bounds
from support.ci import GITLAB, SCRIPT, npm_tool

# 4.65.1: the last release that runs on Node 20 (later ones need Node 22).
GITLAB_CI_LOCAL = "gitlab-ci-local@4.65.1"
TUNNELS = os.environ.get("LABGEN_TUNNELS", "gre vxlan")     # LABGEN_TUNNELS=gre: one lab, half the time


def check_reports(out: Path) -> None:
    for tunnel in TUNNELS.split():
        suite = ET.parse(out / f"labgen-{tunnel}.xml").getroot().find("testsuite")
        assert int(suite.get("tests")) > 20, tunnel
        assert (suite.get("failures"), suite.get("errors")) == ("0", "0"), (out / f"create-{tunnel}.log").read_text()[-3000:]
        assert "VERIFIED" in (out / f"create-{tunnel}.log").read_text()


@pytest.mark.vm
@pytest.mark.skipif(os.environ.get("LABGEN_TEST_CI_SCRIPT") != "1",
                    reason="boots 2 VMs per tunnel: opt in with LABGEN_TEST_CI_SCRIPT=1 (CI runs the script itself)")
def test_script_for_real(tmp_path):
    out = tmp_path / "reports"
    proc = subprocess.run([str(SCRIPT), "--box", "labgen/debian12", "--no-setup", "--out", str(out),
                           "--name-prefix", "rcp", "--tunnels", TUNNELS],
                          capture_output=True, text=True, timeout=bounds.CI_RECIPE)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    check_reports(out)
    assert not (out / ".labs").exists()


@pytest.mark.vm
@pytest.mark.skipif(os.environ.get("LABGEN_TEST_GITLAB_CI_LOCAL") != "1",
                    reason="boots 2 VMs per tunnel through gitlab-ci-local: opt in with LABGEN_TEST_GITLAB_CI_LOCAL=1")
def test_gitlab_job_with_gitlab_ci_local(tmp_path):
    """The GitLab job as GitLab would run it on a shell executor, by gitlab-ci-local, on a
    copy of this repository with the recipe as its .gitlab-ci.yml and the local box."""
    cmd = npm_tool(GITLAB_CI_LOCAL, "gitlab-ci-local")
    if cmd is None:
        pytest.skip("npm is not installed")
    project = tmp_path / "project"
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(ROOT), str(project)], check=True)
    # gitlab-ci-local derives CI_PROJECT_* from the remote: give it a GitLab-shaped one.
    subprocess.run(["git", "-C", str(project), "remote", "set-url", "origin",
                    "git@gitlab.invalid:labgen/labgen.git"], check=True)
    # The working tree as it is now (the recipe under test may not be committed yet).
    for rel in ("examples/ci/labgen-ci.sh", "examples/ci/gitlab-ci.yml"):
        shutil.copy2(ROOT / rel, project / rel)
    shutil.copy2(GITLAB, project / ".gitlab-ci.yml")
    # The machine is set up already (as in .ci/run): scripts/setup would relink labgen to
    # this temporary copy.
    proc = subprocess.run([*cmd, "--shell-executor-no-image",
                           "--variable", "LABGEN_BOX=labgen/debian12", "--variable", "LABGEN_CI_SETUP=0",
                           "--variable", f"LABGEN_TUNNELS={TUNNELS}", "--variable", "LABGEN_CI_NAME_PREFIX=gcl",
                           "--variable", f"VAGRANT_HOME={os.environ.get('VAGRANT_HOME', Path.home() / '.vagrant.d')}",
                           "labgen"], cwd=project, capture_output=True, text=True, timeout=bounds.CI_RECIPE)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
    check_reports(project / "labgen-reports")
