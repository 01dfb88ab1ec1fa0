"""The CI recipes of examples/ci/ run for real: the one script (examples/ci/labgen-ci.sh) and
the GitLab job through gitlab-ci-local's shell executor. Each boots two VMs per tunnel, so
each is opt-in, and labgen's CI does not opt in: a slow-day lab takes 5-9 min, and CI's own
run of the script on one lab (the shared GRE lab of tests/e2e/test_vm_e2e.py) covers what it would add:
  LABGEN_TEST_CI_SCRIPT=1        runs labgen-ci.sh --box labgen/debian12 (gre and vxlan)
  LABGEN_TEST_GITLAB_CI_LOCAL=1  runs the GitLab job with gitlab-ci-local's shell executor
                                 (gitlab-ci-local from npm: needs npm, which scripts/setup --dev installs)
Both need what every VM test needs (scripts/setup --vm, the box labgen/debian12, built by
`labgen box build debian12`); LABGEN_TUNNELS=gre runs one lab instead of two.
Checked statically: tests/unit/test_ci_recipes.py."""
from __future__ import annotations

import os
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from support import ROOT, bounds, opt_in, require_tool
from support.ci import GITLAB, SCRIPT, npm_tool
from support.cli import run_group

# 4.65.1: the last release that runs on Node 20 (later ones need Node 22).
GITLAB_CI_LOCAL = "gitlab-ci-local@4.65.1"
TUNNELS = os.environ.get("LABGEN_TUNNELS", "gre vxlan")     # LABGEN_TUNNELS=gre: one lab, half the time
BOUND = bounds.CI_RECIPE * len(TUNNELS.split())             # one lab after the other


def check_reports(out: Path) -> None:
    for tunnel in TUNNELS.split():
        suite = ET.parse(out / f"labgen-{tunnel}.xml").getroot().find("testsuite")
        assert int(suite.get("tests")) > 20, tunnel
        assert (suite.get("failures"), suite.get("errors")) == ("0", "0"), (out / f"create-{tunnel}.log").read_text()[-3000:]
        assert "VERIFIED" in (out / f"create-{tunnel}.log").read_text()


@pytest.mark.vm
@opt_in("LABGEN_TEST_CI_SCRIPT", "runs examples/ci/labgen-ci.sh on 2 VMs per tunnel "
        f"({TUNNELS}; not in CI, which runs the script on the shared GRE lab of test_vm_e2e.py)")
@pytest.mark.timeout(bounds.BOX_BUILD + BOUND)
def test_script_for_real(tmp_path, box):
    out = tmp_path / "reports"
    proc = run_group([str(SCRIPT), "--box", box, "--no-setup", "--out", str(out),
                      "--name-prefix", "rcp", "--tunnels", TUNNELS], BOUND)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    check_reports(out)
    assert not (out / ".labs").exists()


@pytest.mark.vm
@opt_in("LABGEN_TEST_GITLAB_CI_LOCAL", f"runs the GitLab job through gitlab-ci-local ({GITLAB_CI_LOCAL} "
        f"from npm) on 2 VMs per tunnel ({TUNNELS}; not in CI, as for the script)")
@pytest.mark.timeout(bounds.BOX_BUILD + BOUND + 600)     # + npm's install of gitlab-ci-local
def test_gitlab_job_with_gitlab_ci_local(tmp_path, box):
    """The GitLab job as GitLab would run it on a shell executor, by gitlab-ci-local, on a
    copy of this repository with the recipe as its .gitlab-ci.yml and the local box."""
    require_tool("npm", "scripts/setup --dev installs it")
    cmd = npm_tool(GITLAB_CI_LOCAL, "gitlab-ci-local")
    assert cmd is not None
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
    proc = run_group([*cmd, "--shell-executor-no-image",
                      "--variable", f"LABGEN_BOX={box}", "--variable", "LABGEN_CI_SETUP=0",
                      "--variable", f"LABGEN_TUNNELS={TUNNELS}", "--variable", "LABGEN_CI_NAME_PREFIX=gcl",
                      "--variable", f"VAGRANT_HOME={os.environ.get('VAGRANT_HOME', Path.home() / '.vagrant.d')}",
                      "labgen"], BOUND, cwd=project)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]
    check_reports(project / "labgen-reports")
